"""``attempts``: every try at a message, across messages — by message, worker, provider,
outcome, error code and when it finished (``sluice.ops.listings.attempt_page``, as
``GET /v1/attempts``)."""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Annotated

import typer

from sluice.cli.options import Cursor, DatabaseUrl, ErrorCodeOpt, JsonOutput, Provider
from sluice.cli.runtime import echo_json, echo_table, fail, on_store, settings_for
from sluice.errors import ValidationError
from sluice.store import Store

__all__ = ["attempts_app"]

attempts_app = typer.Typer(help="Attempts at delivery, across messages.", no_args_is_help=True)


@attempts_app.command("list")
def attempts_list(
    message: Annotated[
        str | None,
        typer.Option(
            "--message", envvar="SLUICE_MESSAGE_ID", help="Only the attempts at this message id."
        ),
    ] = None,
    worker: Annotated[
        str | None,
        typer.Option(
            "--worker", envvar="SLUICE_WORKER_ID", help="Only the attempts this worker made."
        ),
    ] = None,
    provider: Provider = None,
    outcome: Annotated[
        str | None,
        typer.Option(
            "--outcome",
            envvar="SLUICE_OUTCOME",
            help="Only this outcome: sent, failed, throttled, lease_expired, shadowed, deferred.",
        ),
    ] = None,
    error_code: ErrorCodeOpt = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            envvar="SLUICE_SINCE",
            help="Finished at or after: ISO time or a span (15m, 2h).",
        ),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option("--until", envvar="SLUICE_UNTIL", help="Finished before: ISO time or a span."),
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", envvar="SLUICE_LIMIT", help="Most attempts on this page.")
    ] = 50,
    cursor: Cursor = None,
    database_url: DatabaseUrl = None,
    as_json: JsonOutput = False,
) -> None:
    """Attempts newest first: message, try number, outcome, code, latency, worker; a page
    at a time (--cursor: the next_cursor printed)."""
    from sluice.ops.listings import Page, attempt_page, parse_time

    now = datetime.now(UTC)
    try:
        window = parse_time("since", since, now), parse_time("until", until, now)
    except ValidationError as exc:
        raise fail(exc) from None
    settings = settings_for(database_url)

    def read(s: Store) -> Awaitable[Page]:
        return attempt_page(
            s, message_id=message, worker_id=worker, provider=provider, outcome=outcome,
            error_code=error_code, since=window[0], until=window[1], cursor=cursor, limit=limit,
        )  # fmt: skip

    page = on_store(settings, read)
    if as_json:
        echo_json(page.as_dict())
        return
    echo_table(
        ["MESSAGE", "#", "OUTCOME", "CODE", "PROVIDER", "LATENCY MS", "WORKER", "FINISHED"],
        [[a.message_id, a.attempt_no, a.outcome.value + ("" if a.applied else " (late)"),
          a.error_code or "", a.provider, "" if a.latency_ms is None else round(a.latency_ms),
          a.worker_id, a.finished_at.isoformat(timespec="seconds")] for a in page.items],
    )  # fmt: skip
    if page.next_cursor is not None:
        typer.echo(f"\nmore: --cursor {page.next_cursor}")
