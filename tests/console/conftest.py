"""Fixtures of the console's tests: a real server per test and one Chromium per module
(``console_rig`` has the parts)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from console_rig import ARGS, CHROMIUM, INSTALL, ConsoleServer
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright


def pytest_configure(config: pytest.Config) -> None:
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        raise pytest.UsageError(
            f"Chromium is not installed ({CHROMIUM} is missing); the console tests drive it. "
            f"Install it with: {INSTALL}"
        )


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def console(clean_pg_url: str) -> Iterator[ConsoleServer]:
    server = ConsoleServer(clean_pg_url)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 860})
    ctx.set_default_timeout(30_000)  # generous: CI shares two cores
    yield ctx
    ctx.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()
