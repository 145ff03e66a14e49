"""The dead-letter and held pages end to end: a real ``sluice serve``, a ``sluice
worker`` and the provider simulator, each its own process, on the test's PostgreSQL.

Webhooks to an endpoint the simulator answers 410 go dead; on-call opens their group in
the browser, previews the retry, fixes the fault at the simulator and retries from the
page: each lands exactly once. A message held by an approval control is approved from
the held page and delivered once. Messages go in through the HTTP API and effects are
counted at the simulator.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
from console_rig import shot, sign_in
from playwright.sync_api import Page

from sluice.ops.apikeys import api_key_create
from sluice.store import create_store

WAIT = 60.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    # Webhooks go to the simulator on 127.0.0.1, which the SSRF guard refuses unless told.
    return {**env, "SLUICE_DATABASE_URL": url, "SLUICE_ALLOW_LOOPBACK_TARGETS": "true",
            "SLUICE_LOG_LEVEL": "warning", **extra}  # fmt: skip


def _cli(url: str, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "sluice.cli", *args], capture_output=True,
                          text=True, env=_env(url), timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout.strip()


def _key(url: str, name: str, role: str, tenant: str | None) -> str:
    """A new API key's token (made here: a CLI process costs seconds to start)."""

    async def make() -> str:
        store = create_store(url)
        await store.open()  # type: ignore[attr-defined]
        try:
            return (await api_key_create(store, name, role, tenant, actor="test")).token
        finally:
            await store.close()

    # In a thread of its own: the sync Playwright API keeps an event loop in this one.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, make()).result()


def _wait_up(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not come up: {log.read_text(errors='replace')}")
        time.sleep(0.05)


@dataclass
class Rig:
    """The three processes: the API's and the simulator's URLs, the simulator's secret."""

    db: str
    api: str
    sim: str

    def faults(self, **spec: object) -> None:
        httpx.post(f"{self.sim}/_sim/faults", json=spec, timeout=5).raise_for_status()

    def clear_faults(self) -> None:
        httpx.delete(f"{self.sim}/_sim/faults", timeout=5).raise_for_status()

    def effects(self) -> dict[str, int]:
        return dict(httpx.get(f"{self.sim}/_sim/effects/ids", timeout=30).json()["ids"])

    def enqueue(self, token: str, paths: list[str]) -> list[str]:
        """Webhooks to the simulator at ``paths``, through the HTTP API; their ids."""
        headers = {"Authorization": f"Bearer {token}"}
        ids = []
        for path in paths:
            body = {
                "channel": "webhook", "provider": "webhook",
                "recipient": f"{self.sim}/webhook/{path}", "payload": {"path": path},
            }  # fmt: skip
            r = httpx.post(f"{self.api}/v1/messages", json=body, headers=headers, timeout=10)
            assert r.status_code == 201, r.text
            ids.append(r.json()["id"])
        return ids

    def statuses(self, ids: list[str]) -> dict[str, str]:
        with psycopg.connect(self.db) as conn:
            rows = conn.execute(
                "SELECT id::text, status FROM sluice_messages WHERE id = ANY(%s::uuid[])", (ids,)
            ).fetchall()
        return dict(rows)

    def wait_for(self, ids: list[str], status: str) -> None:
        deadline = time.monotonic() + WAIT
        while (now := self.statuses(ids)) != dict.fromkeys(ids, status):
            assert time.monotonic() < deadline, f"still not all {status}: {now}"
            time.sleep(0.1)


def _start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        # Its own process group: teardown kills it with anything it started.
        return subprocess.Popen(
            [sys.executable, "-m", "sluice.cli", *cmd], env=env, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


@pytest.fixture
def rig(clean_pg_url: str, tmp_path: Path) -> Iterator[Rig]:
    secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    sim_port, api_port = _free_port(), _free_port()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        # All three start at once (each takes seconds to import); then the two servers
        # are waited for.
        sim = _start(
            ["simulator", "--port", str(sim_port)],
            _env(clean_pg_url, SLUICE_WEBHOOK_SECRET=secret),
            tmp_path / "simulator.log",
        )
        api = _start(["serve", "--port", str(api_port)], _env(clean_pg_url), tmp_path / "serve.log")
        worker = _start(["worker"], _env(clean_pg_url, SLUICE_WEBHOOK_SECRET=secret),
                        tmp_path / "worker.log")  # fmt: skip
        procs += [sim, api, worker]
        _wait_up(f"http://127.0.0.1:{sim_port}/_sim/health", sim, tmp_path / "simulator.log")
        _wait_up(f"http://127.0.0.1:{api_port}/healthz", api, tmp_path / "serve.log")
        yield Rig(clean_pg_url, f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{sim_port}")
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)


def test_retry_a_dead_letter_group_and_approve_a_held_message_from_the_pages(
    rig: Rig, page: Page
) -> None:
    operator = _key(rig.db, "oncall", "operator", None)
    acme, gamma = (
        _key(rig.db, "acme-app", "tenant", "acme"),
        _key(rig.db, "gamma-app", "tenant", "gamma"),
    )
    # gamma's sends wait for a person's approval (the worker acknowledges it first)
    _cli(rig.db, "controls", "set", "approval", "--tenant", "gamma",
         "--reason", "first campaign: marketing signs off", "--actor", "cli:lead")  # fmt: skip
    rig.faults(path_prefix="/webhook/gone", status=410)

    gone = rig.enqueue(acme, [f"gone/{i}" for i in range(6)])
    fine = rig.enqueue(acme, [f"fine/{i}" for i in range(3)])
    waiting = rig.enqueue(gamma, ["gamma/0"])
    rig.wait_for(gone, "dead")  # 410: ENDPOINT_GONE, permanent
    rig.wait_for(fine, "sent")
    rig.wait_for(waiting, "held")

    sign_in(page, rig.api, operator, name="ann")
    page.goto(rig.api + "/dlq")
    row = page.locator("table.dlq-groups tr[data-group='webhook/ENDPOINT_GONE']")
    assert row.locator("td.num").inner_text() == "6"
    row.locator("a").click()
    page.wait_for_selector("table.dlq-messages")
    page.select_option("form.bulk select[name=verb]", "retry")
    page.click("form.bulk button[type=submit]")
    page.wait_for_selector("section.preview")
    rows = page.locator("table.preview-ids tbody tr")
    previewed = [rows.nth(i).get_attribute("data-id") for i in range(rows.count())]
    assert sorted(previewed) == sorted(gone)
    assert rig.statuses(gone) == dict.fromkeys(gone, "dead")  # a preview changes nothing

    rig.clear_faults()  # the receiver is back
    page.fill("section.preview textarea[name=reason]", "receiver restored (INC-12)")
    page.click("section.preview button[type=submit]")
    notice = page.locator("p.notice[role=status]").inner_text()
    assert re.search(r"6 of the 6 previewed dead letters requeued\s+by console:ann", notice)
    rig.wait_for(gone, "sent")
    page.goto(rig.api + "/dlq")
    assert "No dead letters" in page.locator("main").inner_text()

    page.goto(rig.api + "/held")
    assert page.locator(".card[data-kind=approval] .figure").inner_text() == "1"
    page.click(".card[data-kind=approval]")
    page.select_option("form.bulk select[name=verb]", "approve")
    page.click("form.bulk button[type=submit]")
    page.wait_for_selector("section.preview")
    assert page.locator("table.preview-ids tbody tr").get_attribute("data-id") == waiting[0]
    page.fill("section.preview textarea[name=reason]", "signed off by marketing")
    page.click("section.preview button[type=submit]")
    assert "1 of the 1 previewed held messages approved" in page.locator(
        "p.notice[role=status]").inner_text()  # fmt: skip
    rig.wait_for(waiting, "sent")
    shot(page, "held-approved")

    effects = rig.effects()
    for mid in gone + fine + waiting:
        assert effects.get(mid) == 1, (mid, effects.get(mid))
    assert len(effects) == len(gone + fine + waiting)  # nothing else arrived
