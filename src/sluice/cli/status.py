"""``status``: the whole system on one screen."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from click.core import ParameterSource

from sluice.cli.options import ActionOpt, Channel, DatabaseUrl, JsonOutput, Provider, Tenant
from sluice.cli.runtime import echo_json, echo_table, fail, on_store, settings_for
from sluice.errors import ValidationError
from sluice.ops.listings import StatusView
from sluice.ops.render import age, jsonable
from sluice.store import MessageFilter, Store

__all__ = ["status", "top"]

#: The order statuses are listed in; any other status follows, sorted.
STATUS_ORDER = [
    "queued", "sending", "held", "sent", "delivered", "dead", "cancelled", "shadowed", "expired",
    "suppressed", "needs_confirm",
]  # fmt: skip

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


By = Annotated[
    str | None,
    typer.Option(
        "--by",
        envvar="SLUICE_STATUS_BY",
        help="Also count per tenant, provider, action or channel.",
    ),
]


def status(
    ctx: typer.Context,
    by: By = None,
    database_url: DatabaseUrl = None,
    as_json: JsonOutput = False,
    watch: Watch = False,
    interval: Interval = 2.0,
) -> None:
    """Counts by status (--by tenant: per tenant), the oldest ready message's age, held
    messages by reason, dead letters, inbox events, workers (host, pid, in flight); with
    --watch, a refreshing screen for on-call."""
    from sluice import ops
    from sluice.ops.listings import GROUP_BY, status_view

    if by is not None and by not in GROUP_BY:
        raise fail(ValidationError("--by", f"{by!r} is not one of {', '.join(GROUP_BY)}"))
    if watch and by is not None:
        raise fail(ValidationError("--by", "cannot be combined with --watch"))
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

    async def gather(store: Store) -> tuple[Any, Any, Any, StatusView]:
        # One moment for every figure: read one by one, a message dying between two
        # reads would be in the dead count and not the dead letters, or the reverse.
        async with store.snapshot():
            report = await ops.status(store)
            controls = await ops.control_list(store)
            breakers = [b for b in await ops.breakers_list(store, settings) if b.state != "closed"]
            return report, controls, breakers, await status_view(store, by)

    report, controls, breakers, view = on_store(settings, gather)
    if as_json:
        document = {**jsonable(report), **jsonable(view)}
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
    typer.echo(
        f"\noldest ready message waiting: {age(view.oldest_ready_age_seconds)} past its run_at"
        f"; oldest queued message created {age(view.oldest_queued_created_age_seconds)} ago"
    )
    if view.groups:
        _by_table(view)
    if view.held_by_reason:
        typer.echo("\nheld, by reason:")
        echo_table(
            ["reason", "count", "oldest held", "oldest created"],
            [[h.reason[:70], h.count, age(h.oldest_held_age_seconds),
              age(h.oldest_created_age_seconds)] for h in view.held_by_reason],
        )  # fmt: skip
    dead_total = sum(g.count for g in report.dead)
    typer.echo(f"\ndead letters: {dead_total}")
    if report.dead:
        echo_table(
            ["channel", "error_code", "count", "last"],
            [[g.channel, g.error_code, g.count, g.last_at.isoformat()] for g in report.dead],
        )
    inbox = ", ".join(f"{k} {n}" for k, n in sorted(view.inbox.items())) or "empty"
    typer.echo(f"\ninbox events: {inbox}")
    live = [w for w in view.workers if w["running"]]
    typer.echo(f"\nworkers: {len(live)} running")
    if view.workers:
        echo_table(
            ["worker", "host", "pid", "state", "last seen", "in flight", "sent", "controls epoch"],
            [[w["id"], w["host"], w["pid"], "running" if w["running"] else "stopped",
              age(w["last_seen_age_seconds"]) + " ago", w["in_flight"], w["sent_total"],
              w["flow_version"]] for w in view.workers],
        )  # fmt: skip


def _by_table(view: StatusView) -> None:
    """Counts per status of each group, the statuses any group has, in the usual order."""
    seen = {k for g in view.groups for k in g.counts}
    keys = [k for k in STATUS_ORDER if k in seen] + sorted(seen - set(STATUS_ORDER))
    typer.echo(f"\nby {view.by}:")
    echo_table(
        [view.by or "", "total", *keys, "oldest ready"],
        [[g.group, g.total, *[g.counts.get(k, 0) for k in keys],
          age(g.oldest_ready_age_seconds)] for g in view.groups],
    )  # fmt: skip


def top(
    by: Annotated[
        str,
        typer.Option(
            "--by", envvar="SLUICE_TOP_BY", help="Group by tenant, provider, action or channel."
        ),
    ] = "tenant",
    since: Annotated[
        str,
        typer.Option(
            "--since",
            envvar="SLUICE_TOP_SINCE",
            help="The window, back from now: 15m, 1h, 7d (up to 366d).",
        ),
    ] = "1h",
    tenant: Tenant = None,
    channel: Channel = None,
    provider: Provider = None,
    action: ActionOpt = None,
    limit: Annotated[
        int, typer.Option("--limit", envvar="SLUICE_LIMIT", help="Most groups to show (1-1000).")
    ] = 20,
    database_url: DatabaseUrl = None,
    as_json: JsonOutput = False,
) -> None:
    """The high-volume senders: messages created in the window per tenant (provider,
    action, channel), largest first, with how many were sent, failed at least once, died,
    still wait or are held."""
    from sluice.ops.listings import top as top_groups

    span = since.strip()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if not (span[:-1].isascii() and span[:-1].isdigit() and span[-1:] in units):
        raise fail(ValidationError("--since", f"{since!r} is not a span like 15m, 1h, 7d"))
    seconds = int(span[:-1]) * units[span[-1]]
    flt = MessageFilter(tenant=tenant, channel=channel, provider=provider, action=action)
    settings = settings_for(database_url)
    page = on_store(settings, lambda s: top_groups(s, by, seconds, limit=limit, flt=flt))
    if as_json:
        echo_json(page.as_dict(by=by, since_seconds=seconds))
        return
    if not page.items:
        typer.echo(f"no messages created in the last {span}")
        return
    echo_table(
        [by, "created", "sent", "failed", "dead", "waiting", "held"],
        [[r.group, r.created, r.sent, r.failed, r.dead, r.waiting, r.held] for r in page.items],
    )
