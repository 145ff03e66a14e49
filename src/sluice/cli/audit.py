"""``audit``: read the audit log (``list``) and check its hash chain (``verify``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from sluice.cli.options import Channel, Cursor, DatabaseUrl, JsonOutput, Provider, Tenant
from sluice.cli.runtime import echo_json, echo_table, fail, on_store, settings_for
from sluice.errors import ValidationError
from sluice.ops.listings import int_cursor
from sluice.ops.render import listing

__all__ = ["audit_app"]

audit_app = typer.Typer(
    help="The append-only audit log: list entries, verify the hash chain (RB-11).",
    no_args_is_help=True,
)


@audit_app.command("list")
def audit_list(
    since: Annotated[
        str | None,
        typer.Option(
            envvar="SLUICE_AUDIT_SINCE",
            help="Entries at or after: ISO 8601 with a timezone, or a span (15m, 2h, 7d).",
        ),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(
            envvar="SLUICE_AUDIT_UNTIL",
            help="Entries before: ISO 8601 with a timezone, or a span (15m, 2h, 7d).",
        ),
    ] = None,
    actor: Annotated[
        str | None,
        typer.Option(envvar="SLUICE_AUDIT_ACTOR", help="Only this actor (api:<key>, cli:<user>…)."),
    ] = None,
    action: Annotated[
        str | None,
        typer.Option(
            envvar="SLUICE_AUDIT_ACTION",
            help="Audit actions starting with this: control., tenancy.violation, limit.…",
        ),
    ] = None,
    tenant: Tenant = None,
    channel: Channel = None,
    provider: Provider = None,
    action_name: Annotated[
        str | None,
        typer.Option(
            "--action-name",
            envvar="SLUICE_ACTION",
            help="Only entries scoped to this message action type (order.created…).",
        ),
    ] = None,
    limit: Annotated[
        int, typer.Option(envvar="SLUICE_AUDIT_LIMIT", help="Most entries to show (1-1000).")
    ] = 50,
    cursor: Cursor = None,
    database_url: DatabaseUrl = None,
    as_json: JsonOutput = False,
) -> None:
    """Audit entries, newest first, filtered; --json pages with next_cursor.

    --tenant matches the entries that name the tenant: its controls, limits,
    connections, breakers, bulk acts and tenancy violations (either side).
    """
    from sluice.ops.audit import audit_filter, audit_page, parse_instant

    now = datetime.now(UTC)
    try:  # checked before the store is opened: bad input touches nothing
        flt = audit_filter(
            since=parse_instant(since, "since", now) if since is not None else None,
            until=parse_instant(until, "until", now) if until is not None else None,
            actor=actor, action=action, tenant=tenant, channel=channel, provider=provider,
            scope_action=action_name, before_id=int_cursor(cursor),
        )  # fmt: skip
        if not 1 <= limit <= 1000:
            raise ValidationError("limit", "must be between 1 and 1000")
    except ValidationError as exc:
        raise fail(exc) from None
    settings = settings_for(database_url)
    entries, older = on_store(settings, lambda s: audit_page(s, flt, limit))
    if as_json:
        echo_json(listing(entries, None if older is None else str(older)))
        return
    rows = [[e.id, e.at.isoformat(timespec="seconds"), e.actor, e.action, e.target or "",
             (e.reason or "")[:60]] for e in entries]  # fmt: skip
    echo_table(["ID", "AT", "ACTOR", "ACTION", "TARGET", "REASON"], rows)


@audit_app.command("verify")
def audit_verify(
    page_size: Annotated[
        int,
        typer.Option(envvar="SLUICE_AUDIT_PAGE_SIZE", help="Entries read per query."),
    ] = 1000,
    database_url: DatabaseUrl = None,
    as_json: JsonOutput = False,
) -> None:
    """Check the whole hash chain; exit 1 naming the first broken entry.

    Reads the log oldest first, a page at a time. Exit 0 when every entry holds; exit 1
    naming the first entry changed, or the first after one removed.
    """
    from sluice.ops.audit import audit_verify as verify

    if page_size < 1:
        raise fail(ValidationError("page_size", "must be at least 1"))
    settings = settings_for(database_url)
    result = on_store(settings, lambda s: verify(s, page_size))
    if as_json:
        echo_json(result.as_dict())
    elif result.ok:
        typer.echo(f"audit chain intact: {result.checked} entries checked")
    else:
        typer.echo(
            f"audit chain BROKEN at entry {result.broken_at}: {result.why}; "
            f"{result.checked} entries before it hold. See RB-11 (Missing Audit/Telemetry).",
            err=True,
        )
    if not result.ok:
        raise typer.Exit(1)
