"""The overview: what is happening now, refreshing itself (the first page on-call opens).

It reads what the state metrics read (``Store.observe``, workers, breakers, throttles),
plus the controls, the open incidents and ``Store.activity`` (messages created and
attempts finished per minute over the last hour): each an indexed query, so the page
costs the same with a million messages of history as with a hundred. htmx reloads the
live part every few seconds; the charts are SVG drawn here.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from sluice.console.web import OperatorViewer, render, templates
from sluice.flow.breakers import BreakerInfo
from sluice.flow.controls import LIVE_WINDOW_SECONDS, Control
from sluice.store import Activity, Store, WorkerInfo
from sluice.store.base import Incident, Observation, Throttle

__all__ = ["Chart", "age", "chart", "router"]

router = APIRouter()

#: Minutes the charts cover, and the statuses the depth counts (the work still to do or
#: to look at; sent history is what the charts show).
WINDOW_MINUTES = 60
DEPTH = ("queued", "sending", "held", "dead")
#: Rows a table shows before it says how many more there are (its page has them all).
TOP = 8
#: Chart size in SVG units: one unit per minute across, and this high.
CHART_HEIGHT = 40


_Rest = tuple[
    Activity, list[WorkerInfo], list[BreakerInfo], list[Throttle], list[Control], list[Incident]
]


@dataclass(frozen=True, slots=True)
class Chart:
    """One series drawn as bars, one a minute: the SVG path and what it shows."""

    path: str
    peak: int
    total: int
    last: int


def chart(series: Sequence[int]) -> Chart:
    """Bars of ``series`` (oldest first) scaled to the largest, as one SVG path."""
    peak = max(series, default=0)
    bars = []
    for i, n in enumerate(series):
        if n:
            h = max(1.0, CHART_HEIGHT * n / peak)
            bars.append(f"M{i + 0.1:g} {CHART_HEIGHT}v{-h:.1f}h0.8v{h:.1f}z")
    return Chart(path="".join(bars), peak=peak, total=sum(series), last=series[-1] if series else 0)


def age(seconds: float | None) -> str:
    """A duration the way a person reads it at a glance: 42 s, 7 min, 3 h 5 min, 2 d."""
    if seconds is None:
        return "—"
    s = max(0, int(seconds))
    if s < 90:
        return f"{s} s"
    if s < 90 * 60:
        return f"{s // 60} min"
    if s < 48 * 3600:
        h, m = divmod(s // 60, 60)
        return f"{h} h {m} min" if m else f"{h} h"
    return f"{s // 86_400} d"


async def _figures(request: Request) -> dict[str, Any]:
    """Everything the overview shows, read now."""
    state = request.app.state
    store: Store = state.store
    now: datetime = state.clock.now()
    seen, (activity, workers, breakers, throttles, controls, incidents) = await asyncio.gather(
        store.observe(now), _the_rest(store, now)
    )
    return {
        "now": now,
        "age": age,
        **_rates(activity),
        **_work(seen, now),
        **_workers(workers, now),
        "breakers": [b for b in breakers if b.state != "closed"],
        "throttles": throttles,
        "controls": [c for c in controls if c.active(now)],
        "incidents": incidents,
    }


def _rates(activity: Activity) -> dict[str, Any]:
    """Each series' chart, with the page that lists what it counts."""
    return {
        "rates": [
            ("enqueued", "Enqueued", chart(activity.enqueued), "/messages"),
            ("sent", "Sent", chart(activity.sent), "/messages?status=sent"),
            ("failed", "Failed", chart(activity.failed), "/dlq"),
            ("deferred", "Deferred", chart(activity.deferred), "/limits"),
        ],
        "chart_height": CHART_HEIGHT,
        "minutes": activity.minutes,
    }


def _work(seen: Observation, now: datetime) -> dict[str, Any]:
    """The work waiting: depth by status and by channel and provider, the oldest ready,
    dead letters by code and held messages by reason (largest first)."""
    by_place: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
    depth = dict.fromkeys(DEPTH, 0)
    for status, channel, provider, n in seen.messages:
        depth[status] = depth.get(status, 0) + n
        place = by_place[(channel, provider)]
        place[status] = place.get(status, 0) + n
    places = sorted(by_place.items(), key=lambda p: (-sum(p[1].values()), p[0]))
    held = [(kind, n, _seconds(now, since)) for kind, (n, since) in seen.held.items()]
    return {
        "depth": depth,
        "by_place": _top(places, lambda p: sum(p[1].values())),
        "oldest_ready": _seconds(now, seen.oldest_ready_created),
        "oldest_wait": _seconds(now, seen.oldest_ready_due),
        "dead": _top(sorted(seen.dead, key=lambda d: (-d[2], d[0], d[1])), lambda d: d[2]),
        "held": sorted(held, key=lambda h: -h[1]),
    }


def _workers(workers: Sequence[WorkerInfo], now: datetime) -> dict[str, Any]:
    """Workers heard from within the live window, and how many running ones were not."""
    running = [w for w in workers if w.stopped_at is None]
    live = [w for w in running if (now - w.last_seen_at).total_seconds() <= LIVE_WINDOW_SECONDS]
    return {
        "live_workers": live,
        "silent_workers": len(running) - len(live),
        "live_window": int(LIVE_WINDOW_SECONDS),
    }


async def _the_rest(store: Store, now: datetime) -> _Rest:
    """Everything but ``observe``, one query after another on one connection: together
    they take less time than ``observe`` alone, which runs beside them on another (a
    poll costs the pool two connections, not seven)."""
    return (
        await store.activity(now, WINDOW_MINUTES),
        await store.worker_list(now - timedelta(minutes=10)),
        await store.breaker_list(),
        await store.throttle_list(now),
        await store.control_list(),
        await store.incident_list("active", limit=20),
    )


@dataclass(frozen=True, slots=True)
class Top:
    """The first rows of a table, and how many rows and messages are left out."""

    rows: list[Any]
    more_rows: int
    more_messages: int


def _top(rows: Sequence[Any], count: Callable[[Any], int]) -> Top:
    rest = rows[TOP:]
    return Top(list(rows[:TOP]), len(rest), sum(count(r) for r in rest))


def _seconds(now: datetime, since: datetime | None) -> float | None:
    return None if since is None else max(0.0, (now - since).total_seconds())


def _compile_now() -> None:
    """Compile the overview's templates when the server starts: compiling takes longer
    than the page's queries, and would otherwise fall on the first visit."""
    for name in ("overview.html", "_overview_live.html"):
        templates.get_template(name)


_compile_now()


@router.get("/")
async def overview(request: Request, viewer: OperatorViewer) -> Response:
    return render(request, "overview.html", **await _figures(request))


@router.get("/overview/live")
async def overview_live(request: Request, viewer: OperatorViewer) -> Response:
    """The part of the overview that htmx reloads every few seconds."""
    return render(request, "_overview_live.html", **await _figures(request))
