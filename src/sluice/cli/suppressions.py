"""``suppressions``: recipients a tenant may not send to, per medium — list, add, remove.

The acts are ``sluice.ops.suppressions`` (audited); ingress adds and lifts entries by
itself from STOP / START replies, bounces and complaints (docs/recipients.md).
"""

from __future__ import annotations

from typing import Annotated

import typer

from sluice.cli.options import Actor, DatabaseUrl, JsonOutput, Reason
from sluice.cli.requests import gated, unless_filed
from sluice.cli.runtime import actor_or_default, echo_json, echo_table, on_store, settings_for

__all__ = ["suppressions_app"]

suppressions_app = typer.Typer(
    help="Suppression lists (opt-outs, bounces, complaints): list, add and remove "
    "recipients per tenant and channel (sms, whatsapp, email).",
    no_args_is_help=True,
)

TenantOpt = Annotated[
    str | None, typer.Option("--tenant", envvar="SLUICE_TENANT", help="Only this tenant.")
]
NeedTenant = Annotated[str, typer.Option("--tenant", envvar="SLUICE_TENANT", help="The tenant.")]
ChannelOpt = Annotated[
    str | None, typer.Option("--channel", help="Only this medium: sms, whatsapp or email.")
]
NeedChannel = Annotated[str, typer.Option("--channel", help="The medium: sms, whatsapp or email.")]
RecipientOpt = Annotated[
    str | None,
    typer.Option("--recipient", help="Only this recipient (any spelling; needs --channel)."),
]
NeedRecipient = Annotated[
    str, typer.Argument(help="The phone number or address, in any spelling enqueue accepts.")
]


@suppressions_app.command("list")
def suppressions_list(
    tenant: TenantOpt = None,
    channel: ChannelOpt = None,
    recipient: RecipientOpt = None,
    limit: Annotated[int, typer.Option("--limit", help="At most this many (1 to 1000).")] = 100,
    cursor: Annotated[
        str | None, typer.Option("--cursor", help="The next_cursor of the page before.")
    ] = None,
    database_url: DatabaseUrl = None,
    as_json: JsonOutput = False,
) -> None:
    """Suppressed recipients, by tenant, channel and recipient (a page at a time)."""
    from sluice.ops.suppressions import suppression_list

    settings = settings_for(database_url)
    page = on_store(
        settings,
        lambda s: suppression_list(
            s, tenant=tenant, channel=channel, recipient=recipient, limit=limit, cursor=cursor
        ),
    )
    if as_json:
        echo_json(page.as_dict())
        return
    if not page.items:
        typer.echo("no suppressed recipients")
        return
    rows = [
        [s.tenant, s.channel, s.recipient, s.reason, s.source, s.actor, s.created_at.isoformat()]
        for s in page.items
    ]
    echo_table(["tenant", "channel", "recipient", "reason", "source", "actor", "since"], rows)
    if page.next_cursor:
        typer.echo(f"more: --cursor {page.next_cursor}")


@suppressions_app.command("add")
def suppressions_add(
    recipient: NeedRecipient,
    tenant: NeedTenant,
    channel: NeedChannel,
    reason: Reason = None,
    actor: Actor = None,
    database_url: DatabaseUrl = None,
    as_json: JsonOutput = False,
) -> None:
    """Suppress a recipient for a tenant on one medium (audited): its messages there end
    'suppressed', unsent."""
    from sluice.ops.suppressions import suppression_add, suppression_as_dict

    settings = settings_for(database_url)
    who = actor_or_default(actor)
    entry, created = on_store(
        settings,
        lambda s: suppression_add(
            s, tenant=tenant, channel=channel, recipient=recipient, actor=who, reason=reason or ""
        ),
    )
    if as_json:
        echo_json({"suppression": suppression_as_dict(entry), "created": created})
    elif created:
        typer.echo(f"{entry.recipient} suppressed for {entry.tenant} on {entry.channel}")
    else:
        typer.echo(
            f"{entry.recipient} already suppressed for {entry.tenant} on {entry.channel} "
            f"({entry.reason}, since {entry.created_at.isoformat()}); nothing changed"
        )


@suppressions_app.command("remove")
def suppressions_remove(
    recipient: NeedRecipient,
    tenant: NeedTenant,
    channel: NeedChannel,
    reason: Reason = None,
    actor: Actor = None,
    database_url: DatabaseUrl = None,
    as_json: JsonOutput = False,
) -> None:
    """Lift a suppression (audited): the tenant may send to the recipient again."""
    from sluice.ops.suppressions import suppression_as_dict

    settings = settings_for(database_url)
    who = actor_or_default(actor)
    args = {"tenant": tenant, "channel": channel, "recipient": recipient}
    act = gated(settings, "suppression.remove", args, actor=who, reason=reason)
    removed = unless_filed(on_store(settings, act), as_json)
    if as_json:
        echo_json(suppression_as_dict(removed))
    else:
        r = removed
        typer.echo(f"{r.recipient} no longer suppressed for {r.tenant} on {r.channel}")
