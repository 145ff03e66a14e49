"""The Store contract for ``snapshot``: the reads of one task inside the block see one
moment of the database (what ``sluice status``, ``GET /v1/status`` and the watch screen
read their figures in); every test runs against PostgreSQL and SQLite alike."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from dying import dying
from sluice.errors import StoreError
from sluice.model import NewMessage
from sluice.store import MessageFilter, Store, create_store

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def msg(i: int) -> NewMessage:
    return NewMessage(tenant="acme", channel="sms", provider="null", recipient="+15550001111",
                      payload={"i": i})  # fmt: skip


async def _counted(store: Store) -> tuple[int, int, int, int]:
    """Total and dead by the status counts, dead by the dead letters and total by the
    per-tenant breakdown: four reads, each its own query."""
    report = await store.status_report(NOW)
    letters = await store.dlq_groups(MessageFilter())
    groups = await store.message_breakdown("tenant", MessageFilter(), None, NOW)
    return (sum(report.counts.values()), report.counts.get("dead", 0),
            sum(g.count for g in letters), sum(g.count for g in groups))  # fmt: skip


async def test_snapshot__figures_read_one_by_one_agree_while_messages_move(
    store: Store, store_url: str
) -> None:
    """While another process claims messages and writes them back dead, the figures of
    four separate reads inside one snapshot always count every message once and agree
    on the dead; read outside a snapshot, they did not (checked: they disagreed within a
    few rounds on both stores)."""
    total = 120
    overlapped = 0
    async with dying(store, store_url, total, NOW) as moving:
        while not moving.done():
            async with store.snapshot():
                everything, dead_count, dead_letters, by_tenant = await _counted(store)
            assert everything == by_tenant == total, (everything, by_tenant)
            assert dead_count == dead_letters, (dead_count, dead_letters)
            overlapped += 0 < dead_count < total
    assert overlapped >= 3  # the snapshots did overlap the moves
    assert await _counted(store) == (total, total, total, total)


async def test_snapshot__sees_its_moment_while_others_see_the_present(
    store: Store, store_url: str
) -> None:
    """A write made elsewhere once the snapshot has begun, even before its first read, is
    not in it; a task started inside the block, and every read after the block, see it;
    a snapshot inside a snapshot is the same one; two stores' snapshots held by one task
    keep each its own."""
    await store.enqueue_many([msg(0)], NOW)
    other, writer = create_store(store_url), create_store(store_url)
    await other.open()  # type: ignore[attr-defined]
    await writer.open()  # type: ignore[attr-defined]
    try:
        async with store.snapshot():
            await writer.enqueue_many([msg(1)], NOW)
            first = (await store.status_report(NOW)).counts
            async with other.snapshot():
                await writer.enqueue_many([msg(2)], NOW)
                in_both = (await store.status_report(NOW)).counts
                others = (await other.status_report(NOW)).counts
            async with store.snapshot():
                nested = (await store.status_report(NOW)).counts
            alongside = (await asyncio.create_task(store.status_report(NOW))).counts
        after = (await store.status_report(NOW)).counts
    finally:
        await other.close()  # type: ignore[attr-defined]
        await writer.close()  # type: ignore[attr-defined]
    assert first == in_both == nested == {"queued": 1}
    assert others == {"queued": 2}
    assert alongside == after == {"queued": 3}


async def test_snapshot__a_write_inside_is_refused_and_changes_nothing(store: Store) -> None:
    await store.enqueue_many([msg(0)], NOW)
    async with store.snapshot():
        with pytest.raises(StoreError, match="a store snapshot only reads"):
            await store.enqueue_many([msg(1)], NOW)
    # The store goes on as before: reads and writes outside the block work.
    assert (await store.status_report(NOW)).counts == {"queued": 1}
    await store.enqueue_many([msg(2)], NOW)
    assert (await store.status_report(NOW)).counts == {"queued": 2}


async def test_snapshot__cancelled_inside_gives_its_connection_back(store: Store) -> None:
    """A task cancelled while it reads in a snapshot leaves nothing held: the store then
    reads, writes and takes new snapshots as before (PostgreSQL: the pooled connection
    came back; SQLite: the reader's connection was closed)."""
    await store.enqueue_many([msg(0)], NOW)
    entered = asyncio.Event()

    async def reader() -> None:
        async with store.snapshot():
            await store.status_report(NOW)
            entered.set()
            await asyncio.sleep(60)

    for _ in range(12):  # more than a pool's connections
        task = asyncio.create_task(reader())
        await entered.wait()
        entered.clear()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    await store.enqueue_many([msg(1)], NOW)
    async with store.snapshot():
        assert (await store.status_report(NOW)).counts == {"queued": 2}
