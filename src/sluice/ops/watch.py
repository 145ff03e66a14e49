"""What ``sluice status --watch`` shows, read in one go: the figures on-call looks at first
when there is no dashboard, gathered here so that they are tested without a terminal
(the CLI only draws them).

The reads are the cheap ones the state metrics use (``Store.observe``, not the full count
by status of ``sluice status``), so a watch refreshing every second or two costs the
database what a Prometheus scrape does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit, urlunsplit

from sluice.config import Settings
from sluice.flow.breakers import BreakerStatus
from sluice.flow.controls import LIVE_WINDOW_SECONDS
from sluice.ops.breakers import breakers_list
from sluice.store.base import Incident, Store, Throttle

__all__ = [
    "DEPTH_STATUSES",
    "DeadGroup",
    "HeldGroup",
    "Rates",
    "Snapshot",
    "WorkerBeat",
    "redacted_url",
    "snapshot",
]

#: The statuses whose counts make the queue's depth, in the order they are shown.
DEPTH_STATUSES = ("queued", "sending", "held", "dead")
#: The windows the rates are taken over, in seconds.
RATE_WINDOWS = (60, 300)
#: Dead-letter groups shown; the total counts every group.
TOP_DEAD = 10
#: Open incidents read (the screen shows the newest few and how many more).
INCIDENTS_READ = 100
#: Attempt outcomes that put a message back without spending an attempt: a provider's
#: slow-down (429, 503, quota) and a send put back unstarted (limit, breaker, control).
DEFERRED_OUTCOMES = frozenset({"throttled", "deferred"})


@dataclass(frozen=True, slots=True)
class Rates:
    """Attempts finished in the last ``window_seconds``, by outcome."""

    window_seconds: int
    sent: int
    failed: int
    deferred: int

    def per_minute(self, count: int) -> float:
        """``count`` over this window, per minute."""
        return count * 60 / self.window_seconds

    @property
    def success(self) -> float | None:
        """``sent / (sent + failed)``; None with neither (deferrals are not failures)."""
        done = self.sent + self.failed
        return self.sent / done if done else None


@dataclass(frozen=True, slots=True)
class DeadGroup:
    """Dead letters of one channel and error code."""

    channel: str
    error_code: str
    count: int


@dataclass(frozen=True, slots=True)
class HeldGroup:
    """Messages held for one kind of reason, and how long the oldest has waited."""

    reason: str
    count: int
    oldest_age_seconds: float


@dataclass(frozen=True, slots=True)
class WorkerBeat:
    """A running worker and the seconds since its last heartbeat (``live``: within the
    window the controls count a worker as live)."""

    id: str
    host: str
    heartbeat_age_seconds: float
    in_flight: int
    live: bool


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The system at ``at``, as the watch screen shows it."""

    at: datetime
    #: The database read, without its password.
    store: str
    #: One per window of ``RATE_WINDOWS``, shortest first.
    rates: list[Rates]
    #: Messages per status of ``DEPTH_STATUSES`` (0 when none).
    depth: dict[str, int]
    #: Seconds since the oldest due queued message was created (not since it fell due: a
    #: message deferred for hours is not fresh); None when nothing is due.
    oldest_ready_age_seconds: float | None
    dead_total: int
    #: The ``TOP_DEAD`` largest dead-letter groups, largest first.
    dead: list[DeadGroup]
    dead_groups: int
    held: list[HeldGroup]
    #: Breakers open or half-open.
    breakers: list[BreakerStatus]
    throttles: list[Throttle]
    workers: list[WorkerBeat]
    #: Incidents open or acknowledged, newest first (at most ``INCIDENTS_READ``).
    incidents: list[Incident]

    @property
    def live_workers(self) -> int:
        """Workers whose heartbeat is recent enough to count as running."""
        return sum(1 for w in self.workers if w.live)


async def snapshot(store: Store, settings: Settings, now: datetime) -> Snapshot:
    """Read everything the watch screen shows from ``store`` as of ``now``, in one
    snapshot of the store (the screen's figures agree with each other)."""
    async with store.snapshot():
        return await _read(store, settings, now)


async def _read(store: Store, settings: Settings, now: datetime) -> Snapshot:
    seen = await store.observe(now)
    rates = [await _rates(store, now, seconds) for seconds in RATE_WINDOWS]
    depth = dict.fromkeys(DEPTH_STATUSES, 0)
    for status, _channel, _provider, n in seen.messages:
        depth[status] = depth.get(status, 0) + n
    dead = sorted(
        (DeadGroup(channel, code, n) for channel, code, n in seen.dead),
        key=lambda g: (-g.count, g.channel, g.error_code),
    )
    held = [
        HeldGroup(reason, n, _age(now, since)) for reason, (n, since) in sorted(seen.held.items())
    ]
    breakers = [b for b in await breakers_list(store, settings, now) if b.state != "closed"]
    workers = [
        WorkerBeat(w.id, w.host, age, w.in_flight, age <= LIVE_WINDOW_SECONDS)
        for w in await store.worker_list(now - timedelta(minutes=10))
        if w.stopped_at is None
        for age in [_age(now, w.last_seen_at)]
    ]
    return Snapshot(
        at=now,
        store=redacted_url(settings.database_url),
        rates=rates,
        depth=depth,
        oldest_ready_age_seconds=(
            None if seen.oldest_ready_created is None else _age(now, seen.oldest_ready_created)
        ),
        dead_total=sum(g.count for g in dead),
        dead=dead[:TOP_DEAD],
        dead_groups=len(dead),
        held=held,
        breakers=breakers,
        throttles=await store.throttle_list(now),
        workers=sorted(workers, key=lambda w: w.id),
        incidents=await store.incident_list("active", INCIDENTS_READ),
    )


async def _rates(store: Store, now: datetime, seconds: int) -> Rates:
    sent = failed = deferred = 0
    for labels, n in await store.tally("attempts", now - timedelta(seconds=seconds), now):
        outcome = labels["outcome"]
        if outcome == "sent":
            sent += n
        elif outcome == "failed":
            failed += n
        elif outcome in DEFERRED_OUTCOMES:
            deferred += n
    return Rates(seconds, sent, failed, deferred)


def _age(now: datetime, since: datetime) -> float:
    return max(0.0, (now - since).total_seconds())


def redacted_url(url: str) -> str:
    """``url`` without its password: how the screen names the store."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url
