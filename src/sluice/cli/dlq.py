"""``dlq``: the dead-letter queue — list it grouped, retry or cancel what a filter names."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer

from sluice.cli.options import (
    ActionOpt,
    Actor,
    Channel,
    DatabaseUrl,
    DryRun,
    ErrorCodeOpt,
    JsonOutput,
    Limit,
    Provider,
    Reason,
    Since,
    Tenant,
    message_filter,
    read_ids,
)
from sluice.cli.requests import gated, unless_filed
from sluice.cli.runtime import (
    actor_or_default,
    echo_json,
    echo_moved,
    echo_table,
    fail,
    on_store,
    run_async,
    settings_for,
    with_store,
)
from sluice.errors import SluiceError
from sluice.ops.render import listing

__all__ = ["dlq_app"]

dlq_app = typer.Typer(help="The dead-letter queue: list, retry, cancel.", no_args_is_help=True)


@dlq_app.command("list")
def dlq_list(
    tenant: Tenant = None,
    channel: Channel = None,
    provider: Provider = None,
    action: ActionOpt = None,
    error_code: ErrorCodeOpt = None,
    since: Since = None,
    database_url: DatabaseUrl = None,
    as_json: JsonOutput = False,
) -> None:
    """Dead letters grouped by channel and error code, largest group first."""
    from sluice import ops

    settings = settings_for(database_url)
    try:
        flt = message_filter(tenant, channel, error_code, since, provider=provider, action=action)
    except SluiceError as exc:
        raise fail(exc) from None
    groups = on_store(settings, lambda s: ops.dlq_list(s, flt))
    if as_json:
        echo_json(listing(groups, total=sum(g.count for g in groups)))
        return
    if not groups:
        typer.echo("the dead-letter queue is empty")
        return
    echo_table(
        ["channel", "error_code", "count", "first", "last"],
        [
            [g.channel, g.error_code, g.count, g.first_at.isoformat(), g.last_at.isoformat()]
            for g in groups
        ],
    )
    typer.echo(f"\ntotal: {sum(g.count for g in groups)}")


def _move_command(verb: str, done: str, doc: str) -> Callable[..., None]:
    """``dlq retry`` and ``dlq cancel``: the same options, a different move."""

    def command(
        ids: Annotated[
            list[str] | None,
            typer.Argument(
                help="Dead message ids instead of filters; - reads them from standard input "
                "(sluice messages list --status dead --ids | sluice dlq retry -)."
            ),
        ] = None,
        error_code: ErrorCodeOpt = None,
        channel: Channel = None,
        tenant: Tenant = None,
        since: Since = None,
        limit: Limit = None,
        dry_run: DryRun = False,
        actor: Actor = None,
        reason: Reason = None,
        database_url: DatabaseUrl = None,
        as_json: JsonOutput = False,
    ) -> None:
        from sluice.ops.requests import message_args

        async def go() -> Any:
            settings = settings_for(database_url)
            flt = message_filter(tenant, channel, error_code, since, limit)
            args = message_args(flt, read_ids(ids), dry_run=dry_run)
            who = actor_or_default(actor)
            act = gated(settings, f"dlq.{verb}", args, actor=who, reason=reason)
            return await with_store(settings, act)

        echo_moved(unless_filed(run_async(go), as_json), "dead letters", done, as_json=as_json)

    command.__doc__ = doc
    return command


dlq_app.command("retry")(
    _move_command(
        "retry",
        "requeued",
        "Put dead letters back in the queue with fresh attempts (oldest first).",
    )
)
dlq_app.command("cancel")(
    _move_command(
        "cancel",
        "cancelled",
        "Cancel dead letters for good; they stay visible with status cancelled.",
    )
)
