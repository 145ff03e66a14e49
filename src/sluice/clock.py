"""Time, passed in rather than read deep inside the logic, so tests control it.

Workers decide who owns a message and when it is due by comparing times written by
other workers, on other hosts: a lease one worker wrote is expired or not by another's
reading. Those times must come from one clock, and ``StoreClock`` is it: the store's
own time (the PostgreSQL server's), read now and then and carried forward in between by
this process's monotonic clock. A host whose wall clock is seconds off (no NTP, a VM
resumed from a snapshot) or is stepped while it runs then neither takes back live leases
nor holds messages too long.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

__all__ = ["Clock", "FrozenClock", "StoreClock", "SystemClock"]


class Clock(Protocol):
    """Source of the current time (aware, UTC)."""

    def now(self) -> datetime: ...


class SystemClock:
    """The wall clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class FrozenClock:
    """A clock that only moves when told to; for tests."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime.fromtimestamp(round(time.time()), UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``."""
        self._now += timedelta(seconds=seconds)


class StoreClock:
    """The store's time, carried forward by the monotonic clock between readings.

    ``read`` returns the store's current time (``Store.clock_now``). ``sync`` reads it
    and anchors the clock at the midpoint of the round trip, so the error is at most
    half of it; ``now`` needs no I/O. Call ``sync`` every few seconds (the worker does
    it with its heartbeat): between syncs the clock drifts only as fast as the monotonic
    clock does, and a failed sync keeps the last anchor.
    """

    def __init__(
        self,
        read: Callable[[], Awaitable[datetime]],
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._monotonic = monotonic
        self._anchor: tuple[datetime, float] | None = None
        self._epoch = 0.0

    async def sync(self) -> float:
        """Read the store's time now; return the round trip in seconds."""
        before = self._monotonic()
        at = await self._read()
        after = self._monotonic()
        self._anchor = (at, (before + after) / 2)
        # The store's time as Unix seconds at monotonic zero: ``now`` is one addition
        # and one conversion (it is read several times per message sent).
        self._epoch = at.timestamp() - self._anchor[1]
        return after - before

    @property
    def synced(self) -> bool:
        return self._anchor is not None

    def now(self) -> datetime:
        if self._anchor is None:
            raise RuntimeError("StoreClock.now() before its first sync()")
        return datetime.fromtimestamp(self._epoch + self._monotonic(), UTC)
