"""A ``sluice worker`` started without ``SLUICE_WEBHOOK_SECRET``, as a real process.

It says so when it starts, naming the setting and what will happen. It still sends the
webhooks of a tenant whose webhook connection brings a secret of its own, and it leaves
every other webhook queued (no attempt spent, nothing in the dead-letter queue) for a
worker that has the secret, instead of dead-lettering them as ``UNKNOWN_PROVIDER``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from sluice.model import Message, NewMessage, Status
from sluice.ops.connections import connection_add
from sluice.secrets import SecretBox, generate_key
from sluice.store import Store, create_store

T = TypeVar("T")


def with_store(url: str, fn: Callable[[Store], Awaitable[T]]) -> T:
    async def go() -> T:
        store = create_store(url)
        await store.open()  # type: ignore[attr-defined]
        try:
            return await fn(store)
        finally:
            await store.close()

    return asyncio.run(go())


def hook(base: str, tenant: str, i: int) -> NewMessage:
    return NewMessage(
        tenant=tenant,
        channel="webhook",
        provider="webhook",
        recipient=f"{base}/webhook/unsigned/{tenant}",
        payload={"i": i},
    )


def messages(url: str, ids: list[str]) -> list[Message]:
    async def get(store: Store) -> list[Message]:
        return [await store.message_get(i) for i in ids]

    return with_store(url, get)


def test_worker_without_webhook_secret__warns_then_defers_what_it_cannot_sign(
    sqlite_url: str,
    simulator,
    workers,  # type: ignore[no-untyped-def]
) -> None:
    key = generate_key()

    async def setup(store: Store) -> tuple[list[str], list[str]]:
        # globex signs with a secret of its own (the one the simulator checks); acme has
        # no webhook connection and relies on the workers' SLUICE_WEBHOOK_SECRET.
        await connection_add(
            store, SecretBox(key), tenant="globex", provider="webhook",
            secrets={"secret": simulator.secret}, scopes=[], actor="test",
        )  # fmt: skip
        acme = await store.enqueue_many([hook(simulator.url, "acme", i) for i in range(3)])
        globex = await store.enqueue_many([hook(simulator.url, "globex", i) for i in range(2)])
        return acme, globex

    acme, globex = with_store(sqlite_url, setup)
    enqueued = datetime.now(UTC)
    workers.start(sqlite_url, None, SLUICE_SECRET_KEY=key)

    deadline = time.monotonic() + 30
    while True:
        acme_now, globex_now = messages(sqlite_url, acme), messages(sqlite_url, globex)
        deferred = all(m.run_at > enqueued + timedelta(seconds=20) for m in acme_now)
        if deferred and all(m.status is Status.SENT for m in globex_now):
            break
        assert time.monotonic() < deadline, workers.log(0)
        time.sleep(0.2)

    log = workers.log(0)
    assert "SLUICE_WEBHOOK_SECRET is not set" in log
    assert "messages for provider 'webhook'" in log and "deferred" in log
    # Before it claimed anything: the warning is about configuration, not a delivery.
    assert log.index("SLUICE_WEBHOOK_SECRET is not set") < log.index("cannot send these")
    for m in acme_now:
        assert (m.status, m.attempts, m.last_error_code) == (Status.QUEUED, 0, None)
    assert with_store(sqlite_url, lambda s: s.attempt_list(acme[0])) == []
    counts = with_store(sqlite_url, lambda s: s.status_report(datetime.now(UTC))).counts
    assert counts.get("dead", 0) == 0
    delivered = simulator.ids()
    assert all(delivered.get(mid) == 1 for mid in globex)
    assert not any(mid in delivered for mid in acme)
