"""The Store contract for flow signals: a throttle or a breaker move reaches every
listener, in this process and in another process sharing the store, without waiting
for anyone's poll. Every test runs against PostgreSQL and SQLite alike."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from sluice.store import AuditEntry, Store, create_store
from sluice.store.base import FlowSignal


@pytest.fixture
async def other(store_url: str) -> AsyncIterator[Store]:
    """A second store on the same database: another worker process's view of it."""
    s = create_store(store_url)
    await s.open()  # type: ignore[attr-defined]
    yield s
    await s.close()


async def heard(signals: list[FlowSignal], count: int, seconds: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while len(signals) < count:
        assert asyncio.get_running_loop().time() < deadline, f"heard {len(signals)} of {count}"
        await asyncio.sleep(0.005)


async def test_flow_listen__a_throttle_reaches_this_and_another_process(
    store: Store, other: Store
) -> None:
    here: list[FlowSignal] = []
    there: list[FlowSignal] = []
    store.flow_listen(here.append)
    other.flow_listen(there.append)
    await asyncio.sleep(0.2)  # the other store is listening (LISTEN / its first look)
    now = datetime.now(UTC)
    until = now + timedelta(seconds=7)
    await store.throttle_set("acme", "webhook@https://x.example/h", until, "RATE_LIMITED", now)
    await heard(here, 1)
    await heard(there, 1)
    for signals in (here, there):
        mark = signals[-1].throttle
        assert mark is not None
        assert (mark.tenant, mark.provider) == ("acme", "webhook@https://x.example/h")
        assert abs((mark.until - until).total_seconds()) < 0.001
    # A shorter mark never shortens the one in force, and says so.
    await store.throttle_set("acme", "webhook@https://x.example/h", now, "again", now)
    await heard(here, 2)
    assert here[-1].throttle is not None
    assert abs((here[-1].throttle.until - until).total_seconds()) < 0.001


async def test_flow_listen__a_breaker_move_reaches_another_process_and_can_stop(
    store: Store, other: Store
) -> None:
    there: list[FlowSignal] = []
    stop = other.flow_listen(there.append)
    await asyncio.sleep(0.2)
    now = datetime.now(UTC)
    audit = AuditEntry(at=now, actor="worker:w1", action="breaker.open", target="p:twilio")
    moved = await store.breaker_transition(
        "p:twilio", "twilio", "", "closed", "open",
        retry_at=now + timedelta(seconds=30), reason="10/10 failed", forced=False, now=now,
        audit=audit,
    )  # fmt: skip
    assert moved
    await heard(there, 1)
    row = there[-1].breaker
    assert row is not None
    assert (row.key, row.state, row.reason, row.forced) == (
        "p:twilio",
        "open",
        "10/10 failed",
        False,
    )
    # A move that did not happen (the compare-and-swap lost) says nothing.
    lost = await store.breaker_transition(
        "p:twilio", "twilio", "", "closed", "open",
        retry_at=None, reason="again", forced=False, now=now, audit=audit,
    )  # fmt: skip
    assert not lost
    stop()
    await store.throttle_set("acme", "twilio", now + timedelta(seconds=5), "x", now)
    await asyncio.sleep(0.3)
    assert len(there) == 1
