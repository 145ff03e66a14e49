"""``breakers``: circuit breakers — list them, force one open or closed, reset it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer

from sluice.cli.options import Actor, DatabaseUrl, JsonOutput
from sluice.cli.requests import gated, unless_filed
from sluice.cli.runtime import (
    actor_or_default,
    echo_json,
    echo_table,
    on_store,
    run_async,
    settings_for,
    with_store,
)
from sluice.ops.render import listing

__all__ = ["breakers_app"]

breakers_app = typer.Typer(
    help="Circuit breakers per provider (p:<provider>), per connection "
    "(c:<tenant>:<provider>) and per webhook / http endpoint (e:<tenant>:<URL>): "
    "list, force open or closed, reset.",
    no_args_is_help=True,
)

BreakerKey = Annotated[
    str,
    typer.Argument(
        help="p:<provider>, c:<tenant>:<provider>, e:<tenant>:<endpoint URL>, "
        "or a provider name (p:<name>)."
    ),
]
BreakerReason = Annotated[
    str, typer.Option("--reason", envvar="SLUICE_REASON", help="Why (required; audit log).")
]


@breakers_app.command("list")
def breakers_list(database_url: DatabaseUrl = None, as_json: JsonOutput = False) -> None:
    """Every breaker: state, since, retry at, forced, reason, and its window's figures."""
    from sluice.ops.breakers import breakers_list as list_breakers

    settings = settings_for(database_url)
    found = on_store(settings, lambda s: list_breakers(s, settings))
    if as_json:
        echo_json(listing(found))
        return
    if not found:
        typer.echo("no breakers: every provider and connection is closed with no outcomes")
        return
    echo_table(
        ["key", "state", "ok", "failed", "rate", "since", "retry at", "reason"],
        [
            [
                b.key,
                b.state.value + (" (forced)" if b.forced else ""),
                b.ok,
                b.failed,
                "-" if b.failure_rate is None else f"{b.failure_rate:.0%}",
                b.since.isoformat(timespec="seconds") if b.since else "-",
                b.retry_at.isoformat(timespec="seconds") if b.retry_at else "-",
                b.reason or "",
            ]
            for b in found
        ],
    )


def _breaker_command(verb: str, doc: str) -> Callable[..., None]:
    """``breakers open``, ``close`` and ``reset``: the same options, a different act."""

    def command(
        key: BreakerKey,
        reason: BreakerReason,
        actor: Actor = None,
        database_url: DatabaseUrl = None,
        as_json: JsonOutput = False,
    ) -> None:
        async def go() -> Any:
            settings = settings_for(database_url)
            who = actor_or_default(actor)
            act, args = ("breaker.reset", {"key": key}) if verb == "reset" else (
                "breaker.force", {"key": key, "state": verb})  # fmt: skip
            return await with_store(settings, gated(settings, act, args, actor=who, reason=reason))

        row = unless_filed(run_async(go), as_json)
        if as_json:
            echo_json(row)
        elif verb == "reset":
            typer.echo(f"breaker {row.key} reset: closed, back to automatic")
        else:
            typer.echo(
                f"breaker {row.key} forced {row.state}; workers leave it so until: "
                f"sluice breakers reset {row.key}"
            )

    command.__doc__ = doc
    return command


breakers_app.command("open")(
    _breaker_command(
        "open", "Force a breaker open: nothing goes through it (messages wait) until reset."
    )
)
breakers_app.command("close")(
    _breaker_command(
        "closed", "Force a breaker closed: everything goes through it, whatever fails, until reset."
    )
)
breakers_app.command("reset")(
    _breaker_command(
        "reset", "Hand a breaker back to the workers: closed, automatic, its window emptied."
    )
)
