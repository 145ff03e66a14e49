"""What on-call reads: messages and attempts a page at a time, counts per tenant,
provider or action, and the high-volume senders of a window.

One implementation for the CLI (``sluice messages list``, ``attempts list``, ``status
--by``, ``top``) and the HTTP API (``GET /v1/messages``, ``/v1/attempts``,
``/v1/status?by=``, ``/v1/top``). Every function checks its input before it reads
anything and names the option that is wrong. Reads only: nothing here is audited.
"""

from __future__ import annotations

import base64
import binascii
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sluice.clock import Clock, SystemClock
from sluice.errors import ValidationError
from sluice.model import Attempt, AttemptOutcome, Message, Status
from sluice.ops.render import jsonable, listing
from sluice.store.base import AttemptFilter, InboxItem, MessageFilter, Store, WorkerInfo

__all__ = [
    "GROUP_BY",
    "MAX_PAGE",
    "TOP_BY",
    "Group",
    "HeldReason",
    "Page",
    "StatusView",
    "TopRow",
    "attempt_page",
    "inbox_page",
    "int_cursor",
    "message_page",
    "parse_time",
    "status_view",
    "top",
]

#: The most rows one page may hold.
MAX_PAGE = 10_000
#: What ``status --by`` may group by, and ``top --by``.
GROUP_BY = ("tenant", "provider", "action", "channel")
TOP_BY = GROUP_BY
#: The longest window ``top`` looks back over (a year).
MAX_WINDOW = 366 * 86400.0
#: The statuses counted as sent (the provider took it; a receipt may have followed).
SENT = ("sent", "delivered", "read", "bounced")

_SPAN = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a listing and the cursor of the next (None on the last)."""

    items: list[Any]
    next_cursor: str | None = None

    def as_dict(self, **extra: Any) -> dict[str, Any]:
        return listing(self.items, self.next_cursor, **extra)


# -- input ---------------------------------------------------------------------------


def parse_time(option: str, text: str | None, now: datetime) -> datetime | None:
    """``2026-01-01T09:00Z`` (no zone: UTC) or a span back from ``now``: ``90s``, ``15m``,
    ``2h``, ``7d``; ``ValidationError`` naming ``option`` for anything else."""
    if text is None:
        return None
    text = text.strip()
    if text and text[-1] in _SPAN and text[:-1].isdigit() and text[:-1].isascii():
        seconds = int(text[:-1]) * _SPAN[text[-1]]
        if seconds > MAX_WINDOW * 10:
            raise ValidationError(option, f"{text!r} reaches back more than ten years")
        return now - timedelta(seconds=seconds)
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValidationError(
            option, f"{text!r} is neither an ISO time nor a span like 15m, 2h, 7d"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _window(lower: tuple[str, datetime | None], upper: tuple[str, datetime | None]) -> None:
    (lo_name, lo), (hi_name, hi) = lower, upper
    if lo is not None and hi is not None and lo >= hi:
        raise ValidationError(hi_name, f"must be after {lo_name} ({lo.isoformat()})")


def _limit(limit: int, most: int = MAX_PAGE) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= most:
        raise ValidationError("limit", f"must be between 1 and {most}, not {limit!r}")
    return limit


def _status(status: str | None) -> str | None:
    if status is not None and status not in {s.value for s in Status}:
        names = ", ".join(s.value for s in Status)
        raise ValidationError("status", f"{status!r} is not one of {names}")
    return status


def _by(by: str, allowed: tuple[str, ...] = GROUP_BY) -> str:
    if by not in allowed:
        raise ValidationError("by", f"{by!r} is not one of {', '.join(allowed)}")
    return by


# -- messages ------------------------------------------------------------------------


def message_cursor(message_id: str) -> str:
    """The cursor after ``message_id`` (what the API has always returned)."""
    return base64.urlsafe_b64encode(message_id.encode()).decode().rstrip("=")


def _message_after(cursor: str | None) -> str | None:
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if len(raw) != 36 or not cursor.isascii():
            raise ValueError
        return raw
    except (binascii.Error, ValueError, UnicodeError):
        raise ValidationError("cursor", "is not a cursor this listing returned") from None


async def message_page(
    store: Store,
    flt: MessageFilter,
    status: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> Page:
    """Messages matching ``flt`` (and ``status``), newest first, ``limit`` at a time;
    ``cursor`` is the ``next_cursor`` of the page before."""
    _status(status)
    _limit(limit)
    _window(("since", flt.since), ("until", flt.until))
    _window(("updated_since", flt.updated_since), ("updated_until", flt.updated_until))
    if flt.correlation_id is not None and not flt.correlation_id.strip():
        raise ValidationError("correlation_id", "must not be empty")
    rows: list[Message] = await store.message_list(flt, status, _message_after(cursor), limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, message_cursor(rows[-1].id) if more else None)


# -- attempts ------------------------------------------------------------------------


def int_cursor(cursor: str | None) -> int | None:
    """A numeric cursor (attempts, the inbox, the audit log): the id the next page is
    below; ``ValidationError`` naming ``cursor`` for anything else."""
    if cursor is None:
        return None
    if not cursor.isascii() or not cursor.isdigit() or not 0 < int(cursor) < 2**63:
        raise ValidationError("cursor", "is not a cursor this listing returned")
    return int(cursor)


async def attempt_page(
    store: Store,
    *,
    message_id: str | None = None,
    worker_id: str | None = None,
    provider: str | None = None,
    outcome: str | None = None,
    error_code: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> Page:
    """Attempts newest first (by message, worker, provider, outcome, error code and a
    window on when they finished), ``limit`` at a time."""
    if outcome is not None and outcome not in {o.value for o in AttemptOutcome}:
        names = ", ".join(o.value for o in AttemptOutcome)
        raise ValidationError("outcome", f"{outcome!r} is not one of {names}")
    _limit(limit)
    _window(("since", since), ("until", until))
    flt = AttemptFilter(
        message_id=message_id, worker_id=worker_id, provider=provider, outcome=outcome,
        error_code=error_code, since=since, until=until, before_id=int_cursor(cursor),
    )  # fmt: skip
    rows: list[Attempt]
    rows, older = await store.attempt_search(flt, limit)
    return Page(rows, None if older is None else str(older))


# -- the inbox -----------------------------------------------------------------------


async def inbox_page(
    store: Store,
    state: str | None = None,
    provider: str | None = None,
    cursor: str | None = None,
    limit: int = 100,
) -> Page:
    """Inbox events newest first (by state and provider), ``limit`` at a time."""
    from sluice.ops.inbox import STATES

    if state is not None and state not in STATES:
        raise ValidationError("state", f"{state!r} is not one of {', '.join(STATES)}")
    before = int_cursor(cursor)
    _limit(limit)
    rows: list[InboxItem] = await store.inbox_list(state, provider, limit + 1, before)
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, str(rows[-1].id) if more else None)


# -- counts per group ----------------------------------------------------------------


def _age(now: datetime, then: datetime | None) -> float | None:
    return None if then is None else max(0.0, (now - then).total_seconds())


@dataclass(slots=True)
class Group:
    """One tenant's (provider's, action's) messages by status."""

    group: str
    total: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    #: The oldest queued message ready to go: how long past its ``run_at``, and how long
    #: since it was created (a message deferred again and again is young by the first).
    oldest_ready_age_seconds: float | None = None
    oldest_queued_created_age_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class HeldReason:
    """Messages held for one reason and how long the oldest has waited."""

    reason: str
    count: int
    #: Since it was held (its last change) and since it was created.
    oldest_held_age_seconds: float | None
    oldest_created_age_seconds: float | None


@dataclass(slots=True)
class StatusView:
    """What ``sluice status`` adds to ``StatusReport``: the oldest ages by creation time
    too, held messages by reason, inbox events by state, who each worker is, and with
    ``by`` the counts per group."""

    oldest_ready_age_seconds: float | None
    oldest_queued_created_age_seconds: float | None
    held_by_reason: list[HeldReason]
    inbox: dict[str, int]
    workers: list[dict[str, Any]]
    by: str | None = None
    groups: list[Group] = field(default_factory=list)


def _worker(w: WorkerInfo, now: datetime) -> dict[str, Any]:
    """A worker as ``status`` shows it: its row (id, host, pid, in flight…), whether it
    runs and how long ago it was last heard from."""
    return {
        **jsonable(w),
        "running": w.stopped_at is None,
        "last_seen_age_seconds": _age(now, w.last_seen_at),
    }


def _groups(rows: list[Any], now: datetime) -> list[Group]:
    groups: dict[str, Group] = {}
    for r in rows:
        g = groups.setdefault(r.group, Group(r.group))
        g.counts[r.status] = g.counts.get(r.status, 0) + r.count
        g.total += r.count
        if r.status == "queued":
            g.oldest_ready_age_seconds = _age(now, r.oldest_ready_at)
            g.oldest_queued_created_age_seconds = _age(now, r.oldest_created_at)
    return sorted(groups.values(), key=lambda g: (-g.total, g.group))


async def status_view(
    store: Store, by: str | None = None, clock: Clock | None = None
) -> StatusView:
    """The figures ``sluice status`` shows beyond the counts, and with ``by`` (tenant,
    provider, action, channel) the counts per status of each group."""
    if by is not None:
        _by(by)
    now = (clock or SystemClock()).now()
    everything = _groups(await store.message_breakdown("", MessageFilter(), "queued", now), now)
    held = await store.message_breakdown("hold_reason", MessageFilter(), "held", now)
    view = StatusView(
        oldest_ready_age_seconds=everything[0].oldest_ready_age_seconds if everything else None,
        oldest_queued_created_age_seconds=(
            everything[0].oldest_queued_created_age_seconds if everything else None
        ),
        held_by_reason=sorted(
            (
                HeldReason(
                    r.group, r.count, _age(now, r.oldest_updated_at), _age(now, r.oldest_created_at)
                )
                for r in held
            ),
            key=lambda h: (-h.count, h.reason),
        ),
        inbox=await store.inbox_counts(),
        workers=[_worker(w, now) for w in await store.worker_list(now - timedelta(minutes=10))],
        by=by,
    )
    if by is not None:
        view.groups = _groups(await store.message_breakdown(by, MessageFilter(), None, now), now)
    return view


# -- the high-volume senders ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TopRow:
    """One group's messages created in the window."""

    group: str
    created: int
    sent: int
    #: Created in the window and failed at least once (retrying, bounced or dead).
    failed: int
    dead: int
    waiting: int
    held: int


async def top(
    store: Store,
    by: str,
    since_seconds: float,
    *,
    limit: int = 20,
    flt: MessageFilter | None = None,
    clock: Clock | None = None,
) -> Page:
    """The groups that created the most messages in the last ``since_seconds`` (the
    runbook's "identify high-volume senders"), largest first, at most ``limit``; ``flt``
    narrows (``channel="whatsapp"``). Counts are of the messages created in the window,
    by where they are now."""
    _by(by, TOP_BY)
    if (
        isinstance(since_seconds, bool)
        or not isinstance(since_seconds, int | float)
        or not math.isfinite(since_seconds)
        or not 0 < since_seconds <= MAX_WINDOW
    ):
        raise ValidationError("since", f"must be a window of 1 second to {MAX_WINDOW:g} seconds")
    _limit(limit, 1000)
    now = (clock or SystemClock()).now()
    base = flt or MessageFilter()
    window = MessageFilter(
        tenant=base.tenant, channel=base.channel, provider=base.provider, action=base.action,
        since=now - timedelta(seconds=since_seconds),
    )  # fmt: skip
    groups: dict[str, dict[str, int]] = {}
    errored: dict[str, int] = {}
    for r in await store.message_breakdown(by, window, None, now):
        groups.setdefault(r.group, {})[r.status] = r.count
        errored[r.group] = errored.get(r.group, 0) + r.errored
    rows = [
        TopRow(
            group=g,
            created=sum(c.values()),
            sent=sum(c.get(s, 0) for s in SENT),
            failed=errored[g],
            dead=c.get("dead", 0),
            waiting=c.get("queued", 0) + c.get("sending", 0),
            held=c.get("held", 0),
        )
        for g, c in groups.items()
    ]
    rows.sort(key=lambda r: (-r.created, r.group))
    return Page(rows[:limit])
