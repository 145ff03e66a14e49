"""The state metrics' read, shaped once for both dialects (``Store.observe``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sluice.metrics import hold_kind
from sluice.store.base import Observation

__all__ = ["QUERIES", "build"]

#: The named queries one refresh runs, each with ``now`` as its only parameter.
QUERIES = (
    "observe_messages",
    "observe_dead",
    "observe_ready",
    "observe_held",
    "observe_connections",
    "observe_expiring",
    "observe_inbox",
    "observe_tenancy",
)


def build(
    rows: Mapping[str, Sequence[Sequence[Any]]], at: Callable[[Any], datetime]
) -> Observation:
    """An ``Observation`` from the rows of ``QUERIES``; ``at`` decodes a stored time
    (a ``timestamptz`` on PostgreSQL, epoch seconds on SQLite)."""

    def when(value: Any) -> datetime | None:
        return None if value is None else at(value)

    ready = rows["observe_ready"]
    messages: dict[tuple[str, str, str], int] = {}
    for status, channel, provider, n in rows["observe_messages"]:
        messages[(status, channel, provider)] = int(n)
    for channel, provider, n, *_ in ready:
        key = ("queued", channel, provider)  # parked ones are in observe_messages
        messages[key] = messages.get(key, 0) + int(n)
    held: dict[str, tuple[int, datetime]] = {}
    for prefix, count, since in rows["observe_held"]:
        kind = hold_kind(prefix or "")
        n, first = held.get(kind, (0, at(since)))
        held[kind] = (n + int(count), min(first, at(since)))
    inbox = {state: int(n) for state, n, _ in rows["observe_inbox"]}
    pending = [oldest for state, _, oldest in rows["observe_inbox"] if state == "pending"]
    return Observation(
        messages=[(s, c, p, n) for (s, c, p), n in messages.items()],
        dead=[(c, code, int(n)) for c, code, n in rows["observe_dead"]],
        oldest_ready_created=when(_least(r[3] for r in ready)),
        oldest_ready_due=when(_least(r[4] for r in ready)),
        retrying={1: sum(int(r[5]) for r in ready), 3: sum(int(r[6]) for r in ready)},
        held=held,
        connections=[(p, s, int(n)) for p, s, n in rows["observe_connections"]],
        expiring=[(t, p, at(e)) for t, p, e in rows["observe_expiring"]],
        inbox=inbox,
        inbox_oldest_pending=when(pending[0]) if pending else None,
        tenancy_violations=int(rows["observe_tenancy"][0][0]),
    )


def _least(values: Iterable[Any]) -> Any:
    """The smallest of the stored times that are there (None when none is)."""
    return min((v for v in values if v is not None), default=None)
