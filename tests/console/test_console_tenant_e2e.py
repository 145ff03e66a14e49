"""The tenant's view end to end, with real processes: ``sluice serve``, a ``sluice
worker`` and the provider simulator. A tenant's webhooks die at a receiver that is
gone; once it is back, the tenant signs in, previews and retries some of its dead
letters in Chromium, and exactly those are delivered, once each (counted at the
simulator); another tenant's dead letter and those left out stay dead."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
from console_rig import shot, sign_in
from playwright.sync_api import Page

from sluice.model import NewMessage, Status
from sluice.ops.apikeys import api_key_create
from sluice.store import Store, create_store

T = TypeVar("T")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_up(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not come up: {log.read_text(errors='replace')}")
        time.sleep(0.05)


@contextlib.contextmanager
def _process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``sluice <args>`` in its own process group, killed with it at the end."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sluice.cli", *args], env=env, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            yield proc
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


async def _on_store(url: str, fn: Callable[[Store], Awaitable[T]]) -> T:
    store = create_store(url)
    await store.open()  # type: ignore[attr-defined]
    try:
        return await fn(store)
    finally:
        await store.close()


def _run(url: str, fn: Callable[[Store], Awaitable[T]]) -> T:
    """``fn(store)`` in a thread of its own (sync Playwright runs a loop in this one)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, _on_store(url, fn)).result()


def _wait_for(what: str, check: Callable[[], bool], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _statuses(url: str, ids: list[str]) -> list[Status]:
    async def read(store: Store) -> list[Status]:
        return [(await store.message_get(i)).status for i in ids]

    return _run(url, read)


@pytest.mark.slow
def test_a_tenant_retries_its_dead_letters_and_exactly_those_are_delivered_once(
    clean_pg_url: str, tmp_path: Path, page: Page, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = clean_pg_url
    monkeypatch.setenv("SLUICE_ALLOW_LOOPBACK_TARGETS", "true")  # the simulator's webhooks
    secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    env = {**os.environ, "SLUICE_DATABASE_URL": url, "SLUICE_WEBHOOK_SECRET": secret,
           "SLUICE_LOG_LEVEL": "warning", "SLUICE_TENANT_RETRY_MAX": "3"}  # fmt: skip
    sim, api = _free_port(), _free_port()
    sim_url, api_url = f"http://127.0.0.1:{sim}", f"http://127.0.0.1:{api}"
    with (
        _process(["simulator", "--port", str(sim)], env, tmp_path / "sim.log") as simulator,
        _process(["serve", "--port", str(api)], env, tmp_path / "serve.log") as server,
        _process(["worker"], env, tmp_path / "worker.log"),
    ):
        _wait_up(f"{sim_url}/_sim/health", simulator, tmp_path / "sim.log")
        _wait_up(f"{api_url}/healthz", server, tmp_path / "serve.log")
        httpx.post(f"{sim_url}/_sim/faults", json={"path_prefix": "/webhook/down", "status": 410})

        def hook(tenant: str, n: int) -> NewMessage:
            to = f"{sim_url}/webhook/down/{n}"
            return NewMessage(tenant=tenant, channel="webhook", provider="webhook",
                              recipient=to, payload={"n": n})  # fmt: skip

        async def enqueue(store: Store) -> list[str]:
            return await store.enqueue_many([hook("acme", n) for n in range(4)]
                                            + [hook("globex", 9)])  # fmt: skip

        ids = _run(url, enqueue)
        acme, globex = ids[:4], ids[4]
        _wait_for("the dead letters", lambda: _statuses(url, ids) == [Status.DEAD] * 5)
        httpx.delete(f"{sim_url}/_sim/faults").raise_for_status()  # the receiver is back

        async def key(store: Store) -> str:
            return (await api_key_create(store, "acme-key", "tenant", "acme", actor="t")).token

        sign_in(page, api_url, _run(url, key), name="amy")
        page.goto(f"{api_url}/tenant/acme/dlq")
        page.select_option("select[name=group]", "webhook|ENDPOINT_GONE")
        page.fill("input[name=limit]", "3")
        page.click("section.retry button.secondary")
        page.wait_for_load_state()
        retried = page.locator("ul.ids li").all_inner_texts()  # the first three to die
        assert len(retried) == 3 and set(retried) < set(acme)
        [left] = set(acme) - set(retried)
        page.fill("input[name=reason]", "our receiver is back")
        page.click("section.retry form.stack button")
        page.wait_for_load_state()
        assert "Retried 3 dead letter(s)" in page.locator(".notice").inner_text()

        _wait_for("the retried letters sent", lambda: _statuses(url, retried) == [Status.SENT] * 3)
        time.sleep(1.0)  # a worker's few more rounds: nothing else goes out
        assert _statuses(url, [left, globex]) == [Status.DEAD, Status.DEAD]
        effects = httpx.get(f"{sim_url}/_sim/effects/ids", timeout=10).json()["ids"]
        for message_id in ids:
            delivered = [n for k, n in effects.items() if message_id in k]
            assert delivered == ([1] if message_id in retried else []), message_id
        page.goto(f"{api_url}/tenant/acme/messages/{retried[0]}")
        timeline = page.locator("ol.timeline").inner_text()
        assert "Retried by you" in timeline and "ENDPOINT_GONE" in timeline
        shot(page, "tenant-message-retried")
