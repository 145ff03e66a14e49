"""Metrics as Prometheus would scrape them: a real ``sluice worker --metrics-port`` and a
real ``sluice serve`` on one PostgreSQL database, webhooks to the provider simulator,
10 % of them to a receiver that answers 410 Gone (dead-lettered at once).

Counted at both ``/metrics``: the worker's event metrics say what it did (sent, failed
by code, dead-lettered); the state metrics of both processes equal what the store holds
(dead letters by code, messages by status, live workers), read once per scrape.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_serve import cli, serve_process

from conftest import SimulatorProcess, Workers, free_port
from sluice.model import NewMessage
from sluice.store import create_store

N = 50
GONE = 5


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(url, timeout=10).text
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(samples: dict, name: str, **labels: str) -> float:  # type: ignore[type-arg]
    return sum(
        v for (n, ls), v in samples.items()
        if n == name and all(dict(ls).get(k) == want for k, want in labels.items())
    )  # fmt: skip


async def enqueue(url: str, base: str) -> None:
    store = create_store(url)
    await store.open()  # type: ignore[attr-defined]
    try:
        await store.enqueue_many([
            NewMessage(
                tenant="acme", channel="webhook", provider="webhook",
                recipient=f"{base}/webhook/{'gone' if i < GONE else 'ok'}", payload={"i": i},
            )
            for i in range(N)
        ])  # fmt: skip
    finally:
        await store.close()


async def dead_in_store(url: str) -> int:
    store = create_store(url)
    await store.open()  # type: ignore[attr-defined]
    try:
        seen = await store.observe(datetime.now(UTC))
        return sum(n for status, _, _, n in seen.messages if status == "dead")
    finally:
        await store.close()


@pytest.mark.slow
def test_metrics__worker_and_server_report_what_happened_and_what_is(
    clean_pg_url: str, tmp_path: Path, simulator: SimulatorProcess, workers: Workers
) -> None:
    url = clean_pg_url
    assert cli(url, "migrate").returncode == 0
    simulator.faults(path_prefix="/webhook/gone", status=410)
    port = free_port()
    # State metrics are reused for SLUICE_METRICS_REFRESH seconds (5 by default): a
    # scrape made while the queue was still draining would be read again unchanged.
    workers.start(
        url, simulator.secret, SLUICE_METRICS_PORT=str(port), SLUICE_METRICS_REFRESH="0.1"
    )
    asyncio.run(enqueue(url, simulator.url))
    worker_metrics = f"http://127.0.0.1:{port}/metrics"
    deadline = time.monotonic() + 60
    while True:
        try:
            seen = scrape(worker_metrics)
        except httpx.HTTPError:
            seen = {}
        done = total(seen, "sluice_attempts_total")
        if done >= N or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert total(seen, "sluice_attempts_total", outcome="sent") == N - GONE
    assert total(seen, "sluice_attempts_total", outcome="failed", code="ENDPOINT_GONE") == GONE
    assert total(seen, "sluice_dead_lettered_total", code="ENDPOINT_GONE") == GONE
    assert total(seen, "sluice_delivery_latency_seconds_count") == N - GONE
    assert asyncio.run(dead_in_store(url)) == GONE

    time.sleep(0.2)
    with serve_process(url, tmp_path, "--workers", "2") as (base, _):
        for where in (f"{base}/metrics", worker_metrics):
            state = scrape(where)
            assert total(state, "sluice_dead_letters", channel="webhook",
                         code="ENDPOINT_GONE") == GONE, where  # fmt: skip
            assert total(state, "sluice_messages", status="dead") == GONE, where
            assert total(state, "sluice_messages", status="queued") == 0, where
            assert total(state, "sluice_workers_live") == 1, where
            assert total(state, "sluice_state_up") == 1, where
            # Exported once per scrape, not once per server process.
            assert sum(1 for (n, _) in state if n == "sluice_workers_live") == 1, where
