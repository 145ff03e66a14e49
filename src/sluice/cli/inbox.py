"""``inbox``: provider events ingress took in — list them, retry the ones the projector
gave up on."""

from __future__ import annotations

from typing import Annotated

import typer

from sluice.cli.options import Actor, Cursor, DatabaseUrl, JsonOutput, Provider, Reason
from sluice.cli.requests import gated, unless_filed
from sluice.cli.runtime import actor_or_default, echo_json, echo_table, on_store, settings_for

__all__ = ["inbox_app"]

inbox_app = typer.Typer(
    help="Provider events taken in by ingress: list them, retry the ones the projector gave up on.",
    no_args_is_help=True,
)


@inbox_app.command("list")
def inbox_list(
    state: Annotated[
        str | None,
        typer.Option(
            help="pending, done, dead (what waits for you) or rejected (refused: tenancy)."
        ),
    ] = None,
    provider: Provider = None,
    limit: Annotated[
        int, typer.Option(envvar="SLUICE_LIMIT", help="Most events on this page (1-10000).")
    ] = 50,
    cursor: Cursor = None,
    database_url: DatabaseUrl = None,
    as_json: JsonOutput = False,
) -> None:
    """Events newest first: provider, event id, kind, state, attempts, last error; a
    page at a time (--cursor: the next_cursor printed)."""
    from sluice.ops.listings import inbox_page

    settings = settings_for(database_url)
    page = on_store(settings, lambda s: inbox_page(s, state, provider, cursor, limit))
    if as_json:
        echo_json(page.as_dict())
        return
    items = page.items
    rows = [[i.id, i.provider, i.event_id[:40], i.kind, i.status or "-", i.state, i.attempts,
             (i.result or i.last_error or "")[:60]] for i in items]  # fmt: skip
    headers = ["ID", "PROVIDER", "EVENT", "KIND", "STATUS", "STATE", "TRIES", "RESULT / ERROR"]
    echo_table(headers, rows)
    if page.next_cursor is not None:
        typer.echo(f"\nmore: --cursor {page.next_cursor}")


@inbox_app.command("retry")
def inbox_retry(
    ids: Annotated[
        list[int] | None, typer.Argument(help="Dead event ids; all dead events if none.")
    ] = None,
    actor: Actor = None,
    reason: Reason = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Give dead events back to the projector (audited)."""
    settings = settings_for(database_url)
    act = gated(settings, "inbox.retry", {"ids": ids or None}, actor=actor_or_default(actor),
                reason=reason)  # fmt: skip
    moved = unless_filed(on_store(settings, act), False)
    typer.echo(f"requeued {len(moved)} event(s)")
