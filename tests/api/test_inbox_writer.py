"""The ingress group commit (``InboxWriter``): an idle server writes a request at once;
requests that come in a stream wait up to ``gather`` seconds and share one write; a
client that hangs up or a server that shuts down loses nothing it was promised.

Each test counts the requests put in, the writes made and the events stored, on both
stores. The store is the real one; ``Counting`` only counts the calls it passes on.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from sluice.api.app import create_app
from sluice.api.ingress import InboxWriter
from sluice.config import Settings
from sluice.store import Store
from sluice.store.base import InboxItem

#: Longer than any test runs: a writer that waited this long would hang its test.
FOREVER = 3600.0
NOW = datetime(2026, 1, 1, tzinfo=UTC)


class Counting:
    """The store, with each ``inbox_put`` counted (the events it carried)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.writes: list[int] = []

    async def inbox_put(self, items: list[InboxItem], now: datetime) -> list[bool]:
        self.writes.append(len(items))
        return await self.store.inbox_put(items, now)


def _writer(store: Store, gather: float) -> tuple[InboxWriter, Counting]:
    counting = Counting(store)
    return InboxWriter(cast(Store, counting), gather=gather), counting


def _item(event_id: str) -> InboxItem:
    now = datetime.now(UTC)
    return InboxItem(
        id=0, provider="p", event_id=event_id, kind="inbound", status=None,
        message_id=None, provider_message_id=None, occurred_at=None, error_code=None,
        detail=None, address=None, data={"id": event_id}, received_at=now,
    )  # fmt: skip


async def _stored(store: Store) -> set[str]:
    return {i.event_id for i in await store.inbox_list(None, None, 1000)}


async def test_an_idle_writer_writes_a_request_at_once(store: Store) -> None:
    """Nothing was written lately: no wait, whatever ``gather`` is."""
    writer, counting = _writer(store, gather=FOREVER)
    got = await asyncio.wait_for(writer.put([_item("a")], datetime.now(UTC)), 30)
    assert (got, counting.writes, await _stored(store)) == ([True], [1], {"a"})


async def test_requests_in_a_stream_share_one_write(store: Store) -> None:
    """After a write, the requests that follow within ``gather`` go in one write, though
    they arrive one at a time (10 ms apart: without the wait, each would be its own)."""
    writer, counting = _writer(store, gather=2.0)
    now = datetime.now(UTC)
    assert await writer.put([_item("first")], now) == [True]
    stream = []
    for k in range(10):
        stream.append(asyncio.create_task(writer.put([_item(f"s{k}"), _item(f"t{k}")], now)))
        await asyncio.sleep(0.01)
    got = await asyncio.gather(*stream)
    assert got == [[True, True]] * 10
    assert counting.writes == [1, 20]  # 11 requests, 21 events, 2 writes
    assert len(await _stored(store)) == 21


async def test_a_full_write_does_not_wait(store: Store) -> None:
    """``MAX_EVENTS`` waiting already fill a write: it goes at once, however busy."""
    writer, counting = _writer(store, gather=FOREVER)
    now = datetime.now(UTC)
    await writer.put([_item("first")], now)  # the writer is now in a stream
    many = [_item(f"m{k}") for k in range(InboxWriter.MAX_EVENTS)]
    got = await asyncio.wait_for(writer.put(many, now), 30)
    assert got == [True] * InboxWriter.MAX_EVENTS
    assert counting.writes == [1, InboxWriter.MAX_EVENTS]


async def test_a_client_that_hangs_up_does_not_cancel_the_shared_write(store: Store) -> None:
    """One of five waiting requests is cancelled (its client left): the other four are
    answered and stored; the one that left may be stored too (it was never promised)."""
    writer, counting = _writer(store, gather=0.2)
    now = datetime.now(UTC)
    await writer.put([_item("first")], now)
    tasks = [asyncio.create_task(writer.put([_item(f"c{k}")], now)) for k in range(5)]
    await asyncio.sleep(0)  # all five are queued, the writer is gathering
    tasks[2].cancel()
    results: list[Any] = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[2], asyncio.CancelledError)
    assert [r for k, r in enumerate(results) if k != 2] == [[True]] * 4
    stored = await _stored(store)
    assert {"c0", "c1", "c3", "c4"} <= stored
    assert counting.writes == [1, 5]  # the write went on with all five


async def test_a_shutdown_while_gathering_fails_the_waiting_requests(store: Store) -> None:
    """The writer's task is cancelled during its wait (the server stops): every waiting
    request is cancelled, none hangs, and nothing was claimed to be stored."""
    writer, counting = _writer(store, gather=FOREVER)
    now = datetime.now(UTC)
    await writer.put([_item("first")], now)
    tasks = [asyncio.create_task(writer.put([_item(f"w{k}")], now)) for k in range(3)]
    await asyncio.sleep(0)
    flusher = writer._flusher
    assert flusher is not None and not flusher.done()
    flusher.cancel()
    results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)
    assert (counting.writes, await _stored(store)) == ([1], {"first"})
    # The writer is usable again: the next request starts a new flusher.
    writer.gather = 0.0
    assert await writer.put([_item("after")], now) == [True]


@pytest.mark.parametrize("requests", [1, 7, 60])
async def test_every_request_learns_which_of_its_events_were_new(
    store: Store, requests: int
) -> None:
    """Replays within one shared write: each request gets its own answer."""
    writer, _ = _writer(store, gather=0.05)
    now = datetime.now(UTC)
    await writer.put([_item("seen")], now)
    puts = [writer.put([_item(f"r{k}"), _item("seen")], now) for k in range(requests)]
    got = await asyncio.gather(*puts)
    assert got == [[True, False]] * requests
    assert len(await _stored(store)) == requests + 1


def test_no_request_waits_longer_than_gather() -> None:
    """The wait is measured from the last write or from the oldest waiting request's
    arrival, whichever is sooner: requests left over from a full write (they arrived
    during the last wait) do not wait a second ``gather``. Times are the event loop's,
    given here, not read from a clock."""
    writer = InboxWriter(cast(Store, None), gather=2.0)
    loop = asyncio.new_event_loop()
    try:

        def queued(events: int, at: float) -> None:
            future: asyncio.Future[list[bool]] = loop.create_future()
            writer._queue.append(([_item(f"e{k}") for k in range(events)], future, NOW, at))

        writer._written_at = 100.0
        queued(1, 100.5)
        assert writer._wait(100.5) == pytest.approx(1.5)  # 2 s after the last write
        writer._queue.clear()
        queued(1, 99.0)  # left over: it arrived during the wait before the last write
        assert writer._wait(100.2) == pytest.approx(0.8)  # 2 s after it arrived
        writer._queue.clear()
        queued(InboxWriter.MAX_EVENTS, 100.5)  # a full write goes at once
        assert writer._wait(100.5) == 0.0
        writer._queue.clear()
        writer._written_at = float("-inf")  # idle: nothing written yet
        queued(1, 100.5)
        assert writer._wait(100.5) < 0
    finally:
        loop.close()


async def test_the_server_writes_with_the_configured_gather(store: Store) -> None:
    """``SLUICE_INGRESS_GATHER`` reaches the API's writer; 0 turns the wait off."""
    for gather in (0.0, 0.25):
        app = create_app(Settings(ingress_gather=gather), store=store)
        assert app.state.inbox.gather == gather
