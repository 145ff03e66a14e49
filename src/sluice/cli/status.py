"""``status``: the whole system on one screen."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from click.core import ParameterSource

from sluice.cli.options import DatabaseUrl, JsonOutput
from sluice.cli.runtime import echo_json, echo_table, fail, on_store, settings_for
from sluice.errors import ValidationError
from sluice.ops.render import age, jsonable
from sluice.store import Store

__all__ = ["status"]

#: The order statuses are listed in; any other status follows, sorted.
STATUS_ORDER = ["queued", "sending", "held", "sent", "delivered", "dead", "cancelled", "shadowed",
                "suppressed"]  # fmt: skip

#: Bounds of ``--interval``, in seconds: faster is load for nothing, slower is not a watch.
INTERVAL_MIN, INTERVAL_MAX = 0.1, 3600.0

Watch = Annotated[
    bool,
    typer.Option(
        "--watch",
        envvar="SLUICE_WATCH",
        help="Redraw a compact screen (rates, depth, dead letters, held, breakers, "
        "throttles, workers, open incidents) every --interval until Ctrl-C.",
    ),
]
Interval = Annotated[
    float,
    typer.Option(
        "--interval",
        envvar="SLUICE_WATCH_INTERVAL",
        help="Seconds between redraws under --watch (0.1 to 3600).",
    ),
]


def status(
    ctx: typer.Context,
    database_url: DatabaseUrl = None,
    as_json: JsonOutput = False,
    watch: Watch = False,
    interval: Interval = 2.0,
) -> None:
    """Counts by status, age of the oldest ready message, dead letters, workers; with
    --watch, a refreshing screen for on-call."""
    from sluice import ops

    if watch and as_json:
        raise fail(
            ValidationError(
                "--json",
                "cannot be combined with --watch, which redraws a screen for people; "
                "a program should run `sluice status --json` as often as it needs",
            )
        )
    if not watch and ctx.get_parameter_source("interval") == ParameterSource.COMMANDLINE:
        raise fail(ValidationError("--interval", "applies only with --watch"))
    if not INTERVAL_MIN <= interval <= INTERVAL_MAX:
        raise fail(
            ValidationError(
                "--interval",
                f"is {interval:g}; must be {INTERVAL_MIN:g} to {INTERVAL_MAX:g} seconds",
            )
        )
    settings = settings_for(database_url)
    if watch:
        from sluice.cli.watch import watch as watch_screen

        watch_screen(settings, interval)
        return

    async def gather(store: Store) -> tuple[Any, Any, Any]:
        report = await ops.status(store)
        controls = await ops.control_list(store)
        breakers = [b for b in await ops.breakers_list(store, settings) if b.state != "closed"]
        return report, controls, breakers

    report, controls, breakers = on_store(settings, gather)
    if as_json:
        document = jsonable(report)
        document["default_mode"] = settings.default_mode
        document["controls"] = [c.as_dict() for c in controls]
        document["breakers_not_closed"] = jsonable(breakers)
        echo_json(document)
        return
    if settings.default_mode != "live" or controls:
        typer.echo(f"default mode: {settings.default_mode}")
    for c in controls:
        until = f" until {c.expires_at.isoformat(timespec='seconds')}" if c.expires_at else ""
        typer.echo(f"CONTROL {c.mode.value.upper()} {c.scope}{until} — {c.actor}: {c.reason}")
    for b in breakers:
        typer.echo(f"BREAKER {b.key} {b.state.value} since {b.since} — {b.reason or ''}")
    if controls or breakers:
        typer.echo("")
    keys = STATUS_ORDER + sorted(k for k in report.counts if k not in STATUS_ORDER)
    echo_table(["status", "count"], [[k, report.counts.get(k, 0)] for k in keys])
    typer.echo(f"\noldest ready message waiting: {age(report.oldest_ready_age_seconds)}")
    dead_total = sum(g.count for g in report.dead)
    typer.echo(f"dead letters: {dead_total}")
    if report.dead:
        echo_table(
            ["channel", "error_code", "count", "last"],
            [[g.channel, g.error_code, g.count, g.last_at.isoformat()] for g in report.dead],
        )
    now = datetime.now(UTC)
    live = [w for w in report.workers if w.stopped_at is None]
    typer.echo(f"\nworkers: {len(live)} running")
    if report.workers:
        echo_table(
            ["worker", "state", "last seen", "in flight", "sent", "controls epoch"],
            [
                [
                    w.id,
                    "stopped" if w.stopped_at else "running",
                    age((now - w.last_seen_at).total_seconds()) + " ago",
                    w.in_flight,
                    w.sent_total,
                    w.flow_version,
                ]
                for w in report.workers
            ],
        )
