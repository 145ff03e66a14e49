"""Seeding for the dead-letter and held pages' tests: messages made dead or held the way
a worker makes them (claimed, then completed with that verdict), and direct posts that
skip the browser's own form checks, as a hostile client would."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from itertools import count

import httpx
from console_rig import ConsoleServer
from playwright.sync_api import BrowserContext, Page

from sluice.model import AuditEntry, Completion, Message, NewMessage, Status
from sluice.store import Store

_n = count()


def _new(tenant: str, channel: str, provider: str) -> NewMessage:
    i = next(_n)
    recipient = {"email": f"user{i}@example.com", "webhook": f"https://hooks.example.com/{i}"}.get(
        channel, f"+1415555{i % 10000:04d}"
    )
    return NewMessage(tenant=tenant, channel=channel, provider=provider, recipient=recipient,
                      payload={"n": i})  # fmt: skip


async def _finish(store: Store, n: int, tenant: str, channel: str, provider: str,
                  verdict: Callable[[Message], Completion]) -> list[str]:  # fmt: skip
    ids = await store.enqueue_many([_new(tenant, channel, provider) for _ in range(n)])
    claimed = await store.message_claim("w-seed", n, 30, datetime.now(UTC))
    assert sorted(m.id for m in claimed) == sorted(ids), "something else was queued"
    await store.message_complete_many("w-seed", [verdict(m) for m in claimed], datetime.now(UTC))
    await asyncio.sleep(0.002)  # the next seed is strictly younger
    return ids


def dead(n: int, code: str, *, tenant: str = "acme", channel: str = "sms",
         provider: str = "null") -> Callable[[Store], Awaitable[list[str]]]:  # fmt: skip
    """``n`` dead letters of ``code`` (for ``console.run``); their ids, oldest first."""
    return lambda store: _finish(
        store, n, tenant, channel, provider,
        lambda m: Completion(m.id, m.claim_seq, "w-seed", Status.DEAD, None,
                             error_code=code, error=f"{code.lower()}: seeded"),
    )  # fmt: skip


def held(n: int, reason: str, *, tenant: str = "acme", channel: str = "sms",
         provider: str = "null") -> Callable[[Store], Awaitable[list[str]]]:  # fmt: skip
    """``n`` messages held with ``reason`` (for ``console.run``); ids, oldest first."""
    return lambda store: _finish(
        store, n, tenant, channel, provider,
        lambda m: Completion(m.id, m.claim_seq, "w-seed", Status.HELD, None,
                             hold_reason=reason),
    )  # fmt: skip


def queued(n: int, tenant: str = "acme") -> Callable[[Store], Awaitable[list[str]]]:
    return lambda store: store.enqueue_many([_new(tenant, "sms", "null") for _ in range(n)])


def statuses(console: ConsoleServer, ids: list[str]) -> dict[str, str]:
    async def read(store: Store) -> dict[str, str]:
        return {i: (await store.message_get(i)).status.value for i in ids}

    return console.run(read)


def audit(console: ConsoleServer, action: str) -> list[AuditEntry]:
    async def read(store: Store) -> list[AuditEntry]:
        return [e for e in await store.audit_list(500) if e.action == action]

    return console.run(read)


def post(
    page: Page, context: BrowserContext, url: str, body: bytes | dict[str, str]
) -> httpx.Response:
    """POST a form with this page's session and CSRF token, as a client that skips the
    browser's checks would (``body`` as raw bytes for what a browser cannot send)."""
    csrf = page.locator("input[name=csrf]").first.get_attribute("value") or ""
    cookies = {c["name"]: c["value"] for c in context.cookies()}
    headers = {"X-CSRF-Token": csrf}
    if isinstance(body, bytes):
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        return httpx.post(url, content=body, cookies=cookies, headers=headers, timeout=30)
    return httpx.post(url, data=body, cookies=cookies, headers=headers, timeout=30)
