"""``purge``: remove final messages past their retention now (the worker does it by
itself every ``SLUICE_RETENTION_INTERVAL``); ``sluice.ops.retention`` does the work."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from sluice.cli.options import Actor, DatabaseUrl, DryRun, JsonOutput, Reason, Tenant
from sluice.cli.runtime import (
    actor_or_default,
    echo_json,
    echo_table,
    fail,
    on_store,
    settings_for,
)
from sluice.errors import SluiceError

__all__ = ["purge"]


def purge(
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than",
            envvar="SLUICE_PURGE_OLDER_THAN",
            help="Remove messages last changed longer ago than this span (90m, 36h, 30d, 2w). "
            "[default: each status's retention, SLUICE_RETENTION]",
        ),
    ] = None,
    status: Annotated[
        list[str] | None,
        typer.Option(
            "--status",
            envvar="SLUICE_PURGE_STATUS",
            help="Only this final status (repeatable): sent, delivered, read, bounced, "
            "shadowed, dead, cancelled, … [default: every final status]",
        ),
    ] = None,
    tenant: Tenant = None,
    dry_run: DryRun = False,
    export: Annotated[
        str | None,
        typer.Option(
            "--export",
            envvar="SLUICE_PURGE_EXPORT",
            help="Write what is removed to this new file first (JSON lines: each message "
            "with its attempts and receipts). [default: a new file in "
            "SLUICE_RETENTION_EXPORT_DIR, if set]",
        ),
    ] = None,
    batch: Annotated[
        int | None,
        typer.Option(
            "--batch",
            envvar="SLUICE_PURGE_BATCH",
            help="Messages per transaction. [default: SLUICE_RETENTION_BATCH, 1000]",
        ),
    ] = None,
    actor: Actor = None,
    reason: Reason = None,
    database_url: DatabaseUrl = None,
    as_json: JsonOutput = False,
) -> None:
    """Remove final messages (with their attempts and receipts) older than their retention
    or --older-than; --dry-run counts them per status. Never a queued, sending or held
    message; never audit rows. Audited: one entry per run."""
    from sluice.cli.requests import gated, unless_filed
    from sluice.ops.requests import purge_args
    from sluice.ops.retention import check_batch, export_file, purge_rule

    settings = settings_for(database_url)
    now = datetime.now(UTC)
    try:
        rule = purge_rule(
            now, older_than=older_than, statuses=status, tenant=tenant,
            retention=settings.retention,
        )  # fmt: skip
        batch = batch if batch is not None else settings.retention_batch
        check_batch(batch)
    except SluiceError as exc:
        raise fail(exc) from None
    if export is None and settings.retention_export_dir and not dry_run:
        export = str(export_file(settings.retention_export_dir, now))
    args = purge_args(rule, batch=batch, export=export, dry_run=dry_run)
    act = gated(settings, "purge", args, actor=actor_or_default(actor), reason=reason)
    result = unless_filed(on_store(settings, act), as_json)
    if as_json:
        echo_json(result.as_dict())
        return
    verb = "would remove" if result.dry_run else "removed"
    echo_table(
        ["status", "older than", "messages"],
        [[s, result.before[s].isoformat(timespec="seconds"), result.counts.get(s, 0)]
         for s in sorted(result.before)],
    )  # fmt: skip
    typer.echo(f"\n{'dry run: ' if result.dry_run else ''}{verb} {result.total} messages")
    if result.export:
        typer.echo(f"exported to {result.export}")
