"""Detection end to end (issue 13, "Done when"): a real ``sluice worker`` (with the
built-in evaluator and ``/metrics``) and a real ``sluice serve`` on PostgreSQL; 100
webhooks to the provider simulator, 10 % to a receiver that answers 410 Gone.

Proven: both ``/metrics`` show the dead letters the store holds; the dead-letter rule
fires in the evaluator and exactly one incident opens, with the rule's severity, incident
type and runbook; exactly one notification reaches on-call's receiver; ``sluice dlq
cancel`` clears the dead letters and the incident resolves by itself, announced by exactly
one more notification. The rule's ``for`` is shortened to 1 s by ``[alerts.for]``, the
evaluation interval and the clear period to fractions of a second; nothing else differs
from production.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_metrics import scrape, total
from test_serve import cli, serve_process

from conftest import SimulatorProcess, Workers, free_port
from sluice.model import NewMessage
from sluice.store import MessageFilter, create_store

N, GONE = 100, 10


async def on_store(url: str, fn: Callable[[Any], Any]) -> Any:
    store = create_store(url)
    await store.open()  # type: ignore[attr-defined]
    try:
        return await fn(store)
    finally:
        await store.close()


def wait_for(what: str, check: Callable[[], Any], seconds: float = 60) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {seconds:g} s for {what}")
        time.sleep(0.2)


def notifications(url: str) -> list[Any]:
    async def read(store: Any) -> list[Any]:
        ids = await store.message_select("sent", MessageFilter(tenant="_sluice"))
        ids += await store.message_select("queued", MessageFilter(tenant="_sluice"))
        ids += await store.message_select("sending", MessageFilter(tenant="_sluice"))
        return [await store.message_get(i) for i in ids]

    return asyncio.run(on_store(url, read))


@pytest.mark.slow
def test_dead_letters_page_on_call_once_and_resolve_by_themselves(
    clean_pg_url: str, tmp_path: Path, simulator: SimulatorProcess, workers: Workers
) -> None:
    url = clean_pg_url
    assert cli(url, "migrate").returncode == 0
    simulator.faults(path_prefix="/webhook/gone", status=410)
    config = tmp_path / "sluice.toml"
    oncall = f"{simulator.url}/webhook/oncall"
    config.write_text(
        "[alerts]\n"
        f'targets = [{{ name = "oncall", kind = "webhook", url = "{oncall}" }}]\n'
        "[alerts.for]\nSluiceDeadLetters = 1\n"
    )
    fast = {
        "SLUICE_CONFIG": str(config), "SLUICE_ALERTS_INTERVAL": "0.3",
        "SLUICE_ALERTS_CLEAR_FOR": "1", "SLUICE_METRICS_REFRESH": "0.1",
    }  # fmt: skip
    port = free_port()
    workers.start(url, simulator.secret, SLUICE_METRICS_PORT=str(port), **fast)

    async def enqueue(store: Any) -> None:
        await store.enqueue_many([
            NewMessage(tenant="acme", channel="webhook", provider="webhook",
                       recipient=f"{simulator.url}/webhook/{'gone' if i % 10 == 0 else 'ok'}",
                       payload={"i": i})
            for i in range(N)
        ])  # fmt: skip

    asyncio.run(on_store(url, enqueue))
    incidents = wait_for(
        "the incident", lambda: asyncio.run(on_store(url, lambda s: s.incident_list("")))
    )
    [incident] = incidents
    assert (incident.rule, incident.severity, incident.types, incident.runbook) == (
        "SluiceDeadLetters", "P2", ["QUEUE"], "000#remediation",
    )  # fmt: skip
    assert (incident.scope, incident.value) == ({"channel": "webhook"}, GONE)

    # Exactly one notification, delivered once.
    [opened] = wait_for("the notification", lambda: [m for m in notifications(url)
                                                     if m.status == "sent"])  # fmt: skip
    assert opened.action == "incident.opened" and opened.recipient.endswith("/webhook/oncall")
    assert opened.payload["incident_id"] == incident.id
    effects = simulator.ids()
    assert [n for key, n in effects.items() if opened.id in key] == [1]

    # Both processes' /metrics agree with the store.
    with serve_process(url, tmp_path, **fast) as (base, _):
        for where in (f"{base}/metrics", f"http://127.0.0.1:{port}/metrics"):
            seen = scrape(where)
            assert total(seen, "sluice_dead_letters", code="ENDPOINT_GONE") == GONE, where
            assert total(seen, "sluice_messages", status="dead") == GONE, where
        worker = scrape(f"http://127.0.0.1:{port}/metrics")
        assert total(worker, "sluice_dead_lettered_total", code="ENDPOINT_GONE") == GONE
        assert total(worker, "sluice_attempts_total", tenant="acme", outcome="sent") == N - GONE

    # On-call cancels the dead letters; the incident resolves by itself.
    r = cli(url, "dlq", "cancel", "--reason", "receiver retired", "--actor", "ops:ana")
    assert r.returncode == 0, r.stderr
    wait_for(
        "the incident to resolve",
        lambda: asyncio.run(on_store(url, lambda s: s.incident_get(incident.id))).state
        == "resolved",
    )
    sent = wait_for("the resolved notification",
                    lambda: [m for m in notifications(url) if m.status == "sent"]
                    if len([m for m in notifications(url) if m.status == "sent"]) == 2
                    else None)  # fmt: skip
    assert sorted(m.action for m in sent) == ["incident.opened", "incident.resolved"]
    time.sleep(1.0)  # a few more rounds: nothing more is announced
    assert len(notifications(url)) == 2
    effects = simulator.ids()
    assert all([n for key, n in effects.items() if m.id in key] == [1] for m in sent)
    assert len(asyncio.run(on_store(url, lambda s: s.incident_list("")))) == 1
