"""``status --watch``: the figures on-call needs first, redrawn every few seconds until
Ctrl-C, for when there is no dashboard. :func:`sluice.ops.watch.snapshot` reads them; this
module only draws them.

On a terminal the screen is redrawn in place (rich's ``Live``); when the output is a
pipe or a file every frame is printed after the last, so that it can be logged or read
by a test. A store that stops answering does not end the watch: the screen says so, keeps
the last figures (marked with their time) and tries again at the next tick.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from datetime import datetime

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from sluice.cli.runtime import run_async
from sluice.clock import Clock, SystemClock
from sluice.config import Settings
from sluice.errors import SluiceError
from sluice.ops.render import age
from sluice.ops.watch import DEPTH_STATUSES, Snapshot, redacted_url, snapshot
from sluice.store import open_store

__all__ = ["screen", "watch"]

#: Open incidents listed; the rest are counted.
INCIDENTS_SHOWN = 10

_Show = Callable[[RenderableType], None]


def watch(settings: Settings, interval: float, console: Console | None = None) -> None:
    """Redraw the screen every ``interval`` seconds until Ctrl-C (which returns: exit 0).
    A store that cannot be opened or read at the start is an error (exit 1), as for
    ``status``; one that stops answering later is shown on the screen and read again."""
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how a watch ends: no failure
        run_async(lambda: _watch(settings, interval, console or Console(), SystemClock()))


async def _watch(settings: Settings, interval: float, console: Console, clock: Clock) -> None:
    where = redacted_url(settings.database_url)
    store = await open_store(settings.database_url, settings)
    failing: tuple[datetime, str] | None = None
    try:
        # The first read is not retried: a store without the schema, or a wrong one,
        # is an error to fix (exit 1, as for `status`), not a screen to watch.
        now = clock.now()
        last = await snapshot(store, settings, now)
        with _frames(console) as show:
            while True:
                show(screen(last, where=where, now=now, interval=interval, failing=failing))
                await asyncio.sleep(interval)
                now = clock.now()
                try:
                    last = await snapshot(store, settings, now)
                    failing = None
                except SluiceError as exc:  # the database went away: say so, try again
                    failing = (failing[0] if failing else now, str(exc))
    finally:
        await store.close()


@contextlib.contextmanager
def _frames(console: Console) -> Iterator[_Show]:
    if not console.is_terminal:

        def append(frame: RenderableType) -> None:
            console.print(frame)
            console.print()

        yield append
        return
    with Live(console=console, auto_refresh=False, redirect_stdout=False) as live:
        yield lambda frame: live.update(frame, refresh=True)


def screen(
    snap: Snapshot | None,
    *,
    where: str,
    now: datetime,
    interval: float,
    failing: tuple[datetime, str] | None = None,
) -> RenderableType:
    """One frame of the store ``where``: ``snap`` (the last good read, or None before
    any) and, while the store does not answer, since when and the error."""
    parts: list[RenderableType] = [
        Text.assemble(
            ("sluice status --watch", "bold"),
            f"  {now:%Y-%m-%d %H:%M:%S} UTC  {where}  every {interval:g}s (Ctrl-C ends)",
        )
    ]
    if failing:
        since, error = failing
        stale = f"; figures below are from {snap.at:%H:%M:%S}" if snap else ""
        parts.append(
            Text(
                f"STORE NOT ANSWERING for {age((now - since).total_seconds())}: {error}"
                f" — retrying every {interval:g}s{stale}",
                style="bold red",
            )
        )
    if snap is None:
        return Group(*parts)
    parts += [
        _rates(snap),
        Text("depth  " + "  ".join(f"{s} {snap.depth[s]}" for s in DEPTH_STATUSES)),
        Text(f"oldest due message: {_old(snap.oldest_ready_age_seconds)}"),
        *_dead(snap),
        *_section(
            "held",
            ["reason", "count", "oldest"],
            [[h.reason, h.count, age(h.oldest_age_seconds)] for h in snap.held],
        ),
        *_section(
            "breakers not closed",
            ["breaker", "state", "since", "failure rate", "reason"],
            [
                [
                    b.key,
                    b.state.value + (" (forced)" if b.forced else ""),
                    _ago(snap, b.since),
                    "-" if b.failure_rate is None else f"{b.failure_rate:.0%}",
                    b.reason or "",
                ]
                for b in snap.breakers
            ],
        ),
        *_section(
            "throttles",
            ["tenant", "provider", "for", "reason"],
            [
                [t.tenant, t.provider, age((t.until - snap.at).total_seconds()), t.reason or ""]
                for t in snap.throttles
            ],
        ),
        *_section(
            f"workers: {snap.live_workers} live" if snap.workers else "workers",
            ["worker", "host", "heartbeat", "in flight"],
            [
                [w.id, w.host, age(w.heartbeat_age_seconds) + " ago", w.in_flight]
                for w in snap.workers
            ],
        ),
        *_incidents(snap),
    ]
    return Group(*parts)


def _rates(snap: Snapshot) -> Table:
    table = _table(["attempts", "sent/min", "failed/min", "deferred/min", "success"])
    for r in snap.rates:
        table.add_row(
            *_cells(
                [
                    f"last {r.window_seconds // 60}m",
                    f"{r.per_minute(r.sent):.1f}",
                    f"{r.per_minute(r.failed):.1f}",
                    f"{r.per_minute(r.deferred):.1f}",
                    "-" if r.success is None else f"{r.success:.1%}",
                ]
            )
        )
    return table


def _dead(snap: Snapshot) -> list[RenderableType]:
    title = f"dead letters: {snap.dead_total}"
    if snap.dead_groups > len(snap.dead):
        title += f" (largest {len(snap.dead)} of {snap.dead_groups} groups)"
    rows: list[list[object]] = [[g.channel, g.error_code, g.count] for g in snap.dead]
    return _section(title, ["channel", "error code", "count"], rows, empty=title)


def _incidents(snap: Snapshot) -> list[RenderableType]:
    shown = snap.incidents[:INCIDENTS_SHOWN]
    title = f"open incidents: {len(snap.incidents)}"
    if len(snap.incidents) > len(shown):
        title += f" (newest {len(shown)})"
    rows: list[list[object]] = [
        [i.severity, i.rule, i.scope_key or "all", i.state, _ago(snap, i.opened_at), i.summary]
        for i in shown
    ]
    headers = ["sev", "rule", "scope", "state", "age", "summary"]
    return _section(title, headers, rows, empty="open incidents: none")


def _section(
    title: str, headers: list[str], rows: list[list[object]], *, empty: str | None = None
) -> list[RenderableType]:
    """A titled table, or one line when there is nothing to list (the screen stays short)."""
    if not rows:
        return [Text(empty or f"{title}: none")]
    table = _table(headers)
    for row in rows:
        table.add_row(*_cells(row))
    return [Text(title, style="bold"), table]


def _table(headers: list[str]) -> Table:
    table = Table(box=None, pad_edge=False, padding=(0, 2, 0, 0), show_edge=False)
    for h in headers:
        table.add_column(h, style=None, header_style="dim", overflow="ellipsis", no_wrap=True)
    return table


def _cells(row: list[object]) -> list[Text]:
    # Text, not str: a str cell is rich markup, and a reason or an error code may hold "[".
    return [Text("" if c is None else str(c)) for c in row]


def _old(seconds: float | None) -> str:
    return "none due" if seconds is None else f"{age(seconds)} since it was created"


def _ago(snap: Snapshot, since: datetime | None) -> str:
    return "-" if since is None else age((snap.at - since).total_seconds()) + " ago"
