"""Held messages: ``held list``, and ``approve``, ``release`` or ``cancel`` them by id or filter."""

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
    run_async,
    settings_for,
    with_store,
)
from sluice.errors import ValidationError
from sluice.ops.render import listing
from sluice.store import MessageFilter

__all__ = ["approve", "cancel", "held_app", "release"]

held_app = typer.Typer(
    help="Held messages (see also approve, release, cancel).", no_args_is_help=True
)

HoldReasonOpt = Annotated[
    str | None,
    typer.Option(
        "--reason-contains",
        envvar="SLUICE_REASON_CONTAINS",
        help="Only holds whose reason has this.",
    ),
]
Ids = Annotated[
    list[str] | None,
    typer.Argument(help="Message ids (instead of filters); - reads them from standard input."),
]


def _held_filter(
    tenant: str | None,
    channel: str | None,
    provider: str | None,
    action: str | None,
    error_code: str | None,
    contains: str | None,
    since: str | None,
    limit: int | None,
) -> MessageFilter:
    return message_filter(
        tenant, channel, error_code, since, limit, provider=provider, action=action, reason=contains
    )


@held_app.command("list")
def held_list(
    tenant: Tenant = None,
    channel: Channel = None,
    provider: Provider = None,
    action: ActionOpt = None,
    error_code: ErrorCodeOpt = None,
    contains: HoldReasonOpt = None,
    since: Since = None,
    limit: Limit = None,
    database_url: DatabaseUrl = None,
    as_json: JsonOutput = False,
) -> None:
    """Held messages, oldest first, with why each is held."""
    from sluice.ops import controls as ops

    async def go() -> Any:
        settings = settings_for(database_url)
        flt = _held_filter(tenant, channel, provider, action, error_code, contains, since, limit)
        return await with_store(settings, lambda s: ops.held_list(s, flt))

    held = run_async(go)
    if as_json:
        echo_json(listing(held))
        return
    if not held:
        typer.echo("no held messages")
        return
    echo_table(
        ["id", "tenant", "channel", "provider", "action", "held since", "reason"],
        [
            [
                m.id,
                m.tenant,
                m.channel,
                m.provider,
                m.action,
                m.updated_at.isoformat(timespec="seconds") if m.updated_at else "",
                m.hold_reason,
            ]
            for m in held
        ],
    )


def _held_move(
    verb: str,
    ids: list[str] | None,
    tenant: str | None,
    channel: str | None,
    provider: str | None,
    action: str | None,
    error_code: str | None,
    contains: str | None,
    since: str | None,
    limit: int | None,
    dry_run: bool,
    actor: str | None,
    reason: str | None,
    database_url: str | None,
    as_json: bool,
) -> None:
    from sluice.ops.requests import message_args

    try:
        ids = read_ids(ids)
    except ValidationError as exc:
        raise fail(exc) from None
    filtered = any(v is not None for v in (tenant, channel, provider, action, error_code,
                                           contains, since))  # fmt: skip
    if not ids and not filtered:
        raise fail(
            ValidationError(
                "filter",
                f"name the messages to {verb}: ids, or at least one filter (--tenant, "
                "--channel, --provider, --action, --error-code, --reason-contains, --since)",
            )
        )

    async def go() -> Any:
        settings = settings_for(database_url)
        flt = _held_filter(tenant, channel, provider, action, error_code, contains, since, limit)
        args = message_args(flt, ids or None, dry_run)
        who = actor_or_default(actor)
        return await with_store(
            settings, gated(settings, f"held.{verb}", args, actor=who, reason=reason)
        )

    done = {"approve": "approved", "release": "released", "cancel": "cancelled"}[verb]
    echo_moved(unless_filed(run_async(go), as_json), "held messages", done, as_json=as_json)


def _held_command(verb: str, doc: str) -> Callable[..., None]:
    """``approve``, ``release`` and ``cancel``: the same options, a different move."""

    def command(
        ids: Ids = None,
        tenant: Tenant = None,
        channel: Channel = None,
        provider: Provider = None,
        action: ActionOpt = None,
        error_code: ErrorCodeOpt = None,
        contains: HoldReasonOpt = None,
        since: Since = None,
        limit: Limit = None,
        dry_run: DryRun = False,
        actor: Actor = None,
        reason: Reason = None,
        database_url: DatabaseUrl = None,
        as_json: JsonOutput = False,
    ) -> None:
        _held_move(verb, ids, tenant, channel, provider, action, error_code, contains, since,
                   limit, dry_run, actor, reason, database_url, as_json)  # fmt: skip

    command.__doc__ = doc
    return command


approve = _held_command(
    "approve",
    "Approve held messages: each passes an approval control once and goes to the queue.",
)
release = _held_command(
    "release",
    "Put held messages back in the queue (controls still apply to them).",
)
cancel = _held_command("cancel", "Cancel held messages for good; they stay visible as cancelled.")
