"""End to end with real processes: a real ``sluice serve``, two ``sluice worker``
processes and the provider simulator. Kill a tenant from the Controls page and see both
workers' acknowledgements there; its messages enqueued after the kill are held; resume
from the page; each is then delivered exactly once (effects counted at the simulator)."""

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
from typing import Any, TypeVar

import httpx
import pytest
from console_rig import shot, sign_in
from playwright.sync_api import Page

from sluice.model import NewMessage, Status
from sluice.ops.apikeys import api_key_create
from sluice.store import Store, create_store
from sluice.store.base import MessageFilter

T = TypeVar("T")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    return {**env, "SLUICE_DATABASE_URL": url, "SLUICE_LOG_LEVEL": "warning",
            "SLUICE_ALLOW_LOOPBACK_TARGETS": "true", **extra}  # fmt: skip


def _wait_up(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(log.read_text(errors="replace"))
        time.sleep(0.05)


@contextlib.contextmanager
def _process(args: list[str], env: dict[str, str], log: Path,
             health: str | None = None) -> Iterator[subprocess.Popen[bytes]]:  # fmt: skip
    """A ``sluice`` subprocess in its own process group, killed with it afterwards."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sluice.cli", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            if health:
                _wait_up(health, proc, log)
            yield proc
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


def _on_store(url: str, fn: Callable[[Store], Awaitable[T]]) -> T:
    """``fn(store)`` in a thread of its own (Playwright's sync API owns this one's loop)."""

    async def go() -> T:
        store = create_store(url)
        await store.open()  # type: ignore[attr-defined]
        try:
            return await fn(store)
        finally:
            await store.close()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, go()).result()


def _until(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        time.sleep(0.2)


@pytest.fixture
def rig(
    clean_pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, Any]]:
    monkeypatch.setenv("SLUICE_ALLOW_LOOPBACK_TARGETS", "true")  # our enqueue checks targets too
    secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    url = clean_pg_url
    migrated = subprocess.run([sys.executable, "-m", "sluice.cli", "migrate"], env=_env(url),
                              capture_output=True, timeout=60, check=False)  # fmt: skip
    assert migrated.returncode == 0, migrated.stderr
    sim_port, api_port = _free_port(), _free_port()
    sim_url, api_url = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{api_port}"
    with contextlib.ExitStack() as stack:
        stack.enter_context(_process(["simulator", "--port", str(sim_port)],
                                     _env(url, SLUICE_WEBHOOK_SECRET=secret),
                                     tmp_path / "sim.log", f"{sim_url}/_sim/health"))  # fmt: skip
        stack.enter_context(_process(["serve", "--port", str(api_port)], _env(url),
                                     tmp_path / "serve.log", f"{api_url}/healthz"))  # fmt: skip
        for n in range(2):
            stack.enter_context(_process(["worker"], _env(url, SLUICE_WEBHOOK_SECRET=secret),
                                         tmp_path / f"worker-{n}.log"))  # fmt: skip
        yield {"url": url, "sim": sim_url, "api": api_url}


def _enqueue(rig: dict[str, Any], tenant: str, start: int, count: int) -> None:
    async def go(store: Store) -> None:
        await store.enqueue_many([
            NewMessage(tenant=tenant, channel="webhook", provider="webhook",
                       recipient=f"{rig['sim']}/webhook/console/{tenant}", payload={"i": i})
            for i in range(start, start + count)
        ])  # fmt: skip

    _on_store(rig["url"], go)


def _statuses(rig: dict[str, Any], tenant: str) -> dict[str, int]:
    async def go(store: Store) -> dict[str, int]:
        out: dict[str, int] = {}
        for m in await store.message_list(MessageFilter(tenant=tenant), None, None, 1000):
            out[m.status] = out.get(m.status, 0) + 1
        return out

    return _on_store(rig["url"], go)


def _live_workers(rig: dict[str, Any]) -> int:
    from datetime import UTC, datetime, timedelta

    async def go(store: Store) -> int:
        now = datetime.now(UTC)
        return sum(1 for w in await store.worker_list(now - timedelta(seconds=15))
                   if w.stopped_at is None)  # fmt: skip

    return _on_store(rig["url"], go)


def test_kill_from_the_page_both_workers_ack_held_then_resumed_and_delivered_once(
    rig: dict[str, Any], page: Page
) -> None:
    token = _on_store(rig["url"], lambda s: api_key_create(s, "ops", "operator", None,
                                                           actor="test"))  # fmt: skip
    _until(lambda: _live_workers(rig) == 2, 30, "two live workers")
    _enqueue(rig, "acme", 0, 5)
    _until(lambda: _statuses(rig, "acme") == {Status.SENT: 5}, 30, "the first 5 sent")

    sign_in(page, rig["api"], token.token, name="eve")
    page.goto(rig["api"] + "/controls")
    form = page.locator("form#set-control")
    form.locator("select[name=verb]").select_option("kill")
    form.locator("input[name=tenant]").fill("acme")
    form.locator("input[name=reason]").fill("RB-10: acme loops")
    form.locator("button[type=submit]").click()
    page.wait_for_load_state()
    page.wait_for_selector("#acks[data-complete='yes']", timeout=20_000)
    assert page.locator("#acks tr[data-ack='acknowledged']").count() == 2
    assert "Acknowledged by 2/2 live workers" in page.locator("#acks").inner_text()
    shot(page, "controls-kill-acks")

    _enqueue(rig, "acme", 5, 7)
    _until(lambda: _statuses(rig, "acme") == {Status.SENT: 5, Status.HELD: 7}, 30,
           "the 7 enqueued after the kill held")  # fmt: skip
    page.goto(rig["api"] + "/controls")
    row = page.locator("tr[data-scope='tenant=acme']")
    assert row.locator("td.num").inner_text() == "7"  # held by this control
    row.locator("input[name=reason]").fill("loop fixed")
    row.locator("button").click()
    page.wait_for_load_state()
    assert "7 held messages released" in page.locator(".notice").inner_text()
    _until(lambda: _statuses(rig, "acme") == {Status.SENT: 12}, 30, "all 12 sent")
    effects = httpx.get(f"{rig['sim']}/_sim/effects", timeout=10).json()
    assert (effects["unique"], effects["total"]) == (12, 12), effects
