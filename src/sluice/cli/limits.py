"""``limits``: rate limits, quotas, recipient and action caps, concurrency — list them with
quota use, set and clear them at run time."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from sluice.cli.options import (
    ActionOpt,
    Actor,
    DatabaseUrl,
    JsonOutput,
    NeedReason,
    Provider,
    Tenant,
)
from sluice.cli.requests import gated, unless_filed
from sluice.cli.runtime import (
    actor_or_default,
    echo_json,
    echo_table,
    fail,
    on_store,
    settings_for,
)
from sluice.errors import SluiceError
from sluice.ops.render import listing

__all__ = ["limits_app"]

limits_app = typer.Typer(
    help="Rate limits, quotas, recipient caps and concurrency: list (with quota use), "
    "set and clear at run time.",
    no_args_is_help=True,
)

Kind = Annotated[str, typer.Argument(help="rate, quota, recipient, action or concurrency.")]


def _setting(s: Any) -> str:
    """A limit's setting in words, by its kind."""
    if s.kind == "rate":
        return f"{s.rate}/s, burst {s.burst}"
    if s.kind == "quota":
        resets = f"resets {s.reset} UTC" if s.anchor is not None else "rolling"
        return (
            f"{s.limit} per {s.window}s ({resets}), urgent ≥ {s.urgent_priority}, "
            f"reserve {s.reserve:.0%}"
        )
    if s.kind == "recipient":
        return f"max {s.max} per {s.window}s, cooldown {s.cooldown or 0}s"
    if s.kind == "action":
        return f"max {s.max} per {s.window}s"
    return f"max {s.max} in flight per worker"


@limits_app.command("list")
def limits_list(database_url: DatabaseUrl = None, as_json: JsonOutput = False) -> None:
    """Limits in force (sluice.toml, overridden by run-time ones), quotas with their use."""
    from sluice.flow.limits import configured_flow
    from sluice.ops.limits import limit_list

    settings = settings_for(database_url)
    try:
        configured, _ = configured_flow()
    except SluiceError as exc:
        raise fail(exc) from None
    views = on_store(settings, lambda s: limit_list(s, configured, settings))
    if as_json:
        echo_json(listing([v.as_dict() for v in views]))
        return
    if not views:
        typer.echo("no limits configured")
        return
    rows = [
        [
            v.spec.label(),
            _setting(v.spec),
            "" if v.used is None else f"{v.used} used, {v.remaining} left",
            v.spec.source,
        ]
        for v in views
    ]
    echo_table(["limit", "setting", "use", "source"], rows)


@limits_app.command("set")
def limits_set(
    kind: Kind,
    tenant: Tenant = None,
    provider: Provider = None,
    action: ActionOpt = None,
    rate: Annotated[float | None, typer.Option(help="rate: tokens per second.")] = None,
    burst: Annotated[float | None, typer.Option(help="rate: bucket size.")] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", help="quota: messages per window.")
    ] = None,
    window: Annotated[str | None, typer.Option(help="quota/recipient/action: 1d, 1h…")] = None,
    urgent_priority: Annotated[
        int | None, typer.Option(help="quota: priority that may use the reserve.")
    ] = None,
    reserve: Annotated[float | None, typer.Option(help="quota: fraction kept for urgent.")] = None,
    reset: Annotated[
        str | None,
        typer.Option(help="quota: rolling (default), or the provider's reset time HH:MM UTC."),
    ] = None,
    max_: Annotated[
        int | None, typer.Option("--max", help="recipient/action/concurrency: the cap.")
    ] = None,
    cooldown: Annotated[str | None, typer.Option(help="recipient: gap between two.")] = None,
    reason: NeedReason = "",
    actor: Actor = None,
    database_url: DatabaseUrl = None,
    as_json: JsonOutput = False,
) -> None:
    """Set a limit at run time (audited; every worker applies it on its next poll)."""
    raw: dict[str, Any] = {"kind": kind, "tenant": tenant or "", "provider": provider or "",
                           "action": action or ""}  # fmt: skip
    for name, value in (("rate", rate), ("burst", burst), ("limit", limit), ("window", window),
                        ("urgent_priority", urgent_priority), ("reserve", reserve),
                        ("reset", reset), ("max", max_), ("cooldown", cooldown)):  # fmt: skip
        if value is not None:
            raw[name] = value
    settings = settings_for(database_url)
    who = actor_or_default(actor)
    spec = unless_filed(
        on_store(settings, gated(settings, "limit.set", {"limit": raw}, actor=who, reason=reason)),
        as_json,
    )
    if as_json:
        echo_json(spec.as_dict())
    else:
        typer.echo(f"{spec.label()} set; workers apply it within SLUICE_CONTROL_POLL")


@limits_app.command("clear")
def limits_clear(
    kind: Kind,
    tenant: Tenant = None,
    provider: Provider = None,
    action: ActionOpt = None,
    reason: NeedReason = "",
    actor: Actor = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Remove a run-time limit (a limit of sluice.toml for the same scope applies again)."""
    settings = settings_for(database_url)
    who = actor_or_default(actor)
    args = {"kind": kind, "tenant": tenant or "", "provider": provider or "",
            "action": action or ""}  # fmt: skip
    unless_filed(
        on_store(settings, gated(settings, "limit.clear", args, actor=who, reason=reason)), False
    )
    typer.echo("run-time limit cleared")
