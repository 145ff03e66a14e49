"""The console's test rig (fixtures in conftest.py): a real Sluice server (uvicorn,
in a thread, on the test's PostgreSQL database) and Debian's Chromium driven by
Playwright.

Chromium comes from Debian (``apt-get install chromium chromium-driver``; ``.ci/run``
installs it): Playwright's own browser download cannot be reached here. Without it the
suite stops and says so; it never skips.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import httpx
import uvicorn
from playwright.sync_api import Page

from sluice.api.app import create_app
from sluice.config import Settings
from sluice.ops.apikeys import api_key_create
from sluice.store import Store, create_store

T = TypeVar("T")

CHROMIUM = os.environ.get("SLUICE_TEST_CHROMIUM", "/usr/bin/chromium")
INSTALL = "apt-get update && apt-get install -y chromium chromium-driver"
#: Where the tests leave a screenshot of each page (git-ignored; the README shows three).
SHOTS = Path(__file__).resolve().parents[2] / "screenshots"
#: Chromium as root, headless, with nothing reaching for the network (closed here).
ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _with_store(url: str, fn: Callable[[Store], Awaitable[T]]) -> T:
    store = create_store(url)
    await store.open()  # type: ignore[attr-defined]
    try:
        return await fn(store)
    finally:
        await store.close()


class ConsoleServer:
    """``create_app`` under uvicorn on a free port, in a thread of its own; ``run``
    does something with the same database from the test (its own connection)."""

    def __init__(self, database_url: str, **settings: Any) -> None:
        self.database_url = database_url
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        app = create_app(Settings(database_url=database_url, **settings))
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError("the console's server did not start within 20 s")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def run(self, fn: Callable[[Store], Awaitable[T]]) -> T:
        """``fn(store)`` on a store of the same database, in a thread of its own (the
        sync Playwright API keeps an event loop running in the test's thread)."""
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, _with_store(self.database_url, fn)).result()

    def key(self, name: str, role: str = "operator", tenant: str | None = None) -> str:
        """A new API key's token."""

        async def make(store: Store) -> str:
            made = await api_key_create(store, name, role, tenant, actor="test")
            return made.token

        return self.run(make)


def sign_in(page: Page, base: str, token: str, name: str = "") -> None:
    """Sign in through the login form, as a person would."""
    page.goto(f"{base}/login")
    page.fill("input[name=key]", token)
    if name:
        page.fill("input[name=name]", name)
    page.click("button[type=submit]")
    page.wait_for_load_state()


def shot(page: Page, name: str) -> Path:
    """Save a full-page screenshot as ``screenshots/<name>.png``."""
    SHOTS.mkdir(exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
