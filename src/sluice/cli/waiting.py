"""Acting on what waits: ``messages retry-now`` (waiting retries due at once, after a
provider recovered) and ``throttles list|clear`` (the 429 throttles every worker applies)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
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
    NeedReason,
    Provider,
    Reason,
    Tenant,
    message_filter,
)
from sluice.cli.requests import gated, unless_filed
from sluice.cli.runtime import (
    actor_or_default,
    echo_json,
    echo_moved,
    echo_table,
    run_async,
    settings_for,
    with_store,
)

__all__ = ["retry_now", "throttles_app"]

throttles_app = typer.Typer(
    help="The throttles providers asked for (429, Retry-After), as every worker applies "
    "them: list, clear.",
    no_args_is_help=True,
)

Ids = Annotated[
    str | None,
    typer.Option(
        "--ids",
        envvar="SLUICE_IDS",
        help="Only these message ids: comma- or space-separated, or - to read them from "
        "stdin (one per line, as `--ids` listings print them).",
    ),
]


def _read_ids(text: str | None) -> list[str] | None:
    if text is None:
        return None
    raw = sys.stdin.read() if text.strip() == "-" else text
    return [part for part in raw.replace(",", " ").split() if part]


def retry_now(
    tenant: Tenant = None,
    channel: Channel = None,
    provider: Provider = None,
    action: ActionOpt = None,
    error_code: ErrorCodeOpt = None,
    ids: Ids = None,
    limit: Limit = None,
    dry_run: DryRun = False,
    actor: Actor = None,
    reason: Reason = None,
    database_url: DatabaseUrl = None,
    as_json: JsonOutput = False,
) -> None:
    """Make queued messages waiting on a retry backoff or a deferral due now (after a
    provider recovered). Never touches messages sending, held, parked by a pause, final,
    or scheduled for later by their sender."""
    from sluice.ops.requests import message_args

    async def go() -> Any:
        settings = settings_for(database_url)
        flt = message_filter(
            tenant, channel, error_code, None, limit, provider=provider, action=action
        )
        args = message_args(flt, _read_ids(ids), dry_run=dry_run)
        who = actor_or_default(actor)
        act = gated(settings, "messages.retry_now", args, actor=who, reason=reason)
        return await with_store(settings, act)

    done = unless_filed(run_async(go), as_json)
    echo_moved(done, "waiting messages", "made due now", as_json=as_json)


@throttles_app.command("list")
def throttles_list(
    tenant: Tenant = None,
    provider: Annotated[
        str | None,
        typer.Option("--provider", envvar="SLUICE_PROVIDER", help="A provider or a target."),
    ] = None,
    database_url: DatabaseUrl = None,
    as_json: JsonOutput = False,
) -> None:
    """Throttles in force: tenant, target (a provider, or provider@endpoint), until when."""
    from sluice.ops.waiting import throttle_rows, throttles_list

    async def go() -> Any:
        settings = settings_for(database_url)
        return await with_store(
            settings, lambda s: throttles_list(s, tenant=tenant, provider=provider)
        )

    rows = throttle_rows(run_async(go), datetime.now(UTC))
    if as_json:
        echo_json({"items": rows, "count": len(rows), "next_cursor": None})
        return
    if not rows:
        typer.echo("no throttles in force")
        return
    echo_table(
        ["tenant", "target", "until", "left", "reason"],
        [
            [r["tenant"], r["target"], r["until"], f"{r['remaining_seconds']:g}s", r["reason"]]
            for r in rows
        ],
    )


@throttles_app.command("clear")
def throttles_clear(
    reason: NeedReason,
    tenant: Tenant = None,
    provider: Annotated[
        str | None,
        typer.Option(
            "--provider",
            envvar="SLUICE_PROVIDER",
            help="A provider (every endpoint of it) or one target (webhook@https://…).",
        ),
    ] = None,
    everything: Annotated[
        bool, typer.Option("--all", help="Every throttle in force (no selection needed).")
    ] = False,
    dry_run: DryRun = False,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait for every worker's ack.")
    ] = 10.0,
    actor: Actor = None,
    database_url: DatabaseUrl = None,
    as_json: JsonOutput = False,
) -> None:
    """Remove throttles (audited): every running worker forgets them at once and sends
    there again. Messages they deferred keep their time: `sluice messages retry-now`."""

    async def go() -> Any:
        settings = settings_for(database_url)
        who = actor_or_default(actor)
        args = {"tenant": tenant, "provider": provider, "all": everything,
                "dry_run": dry_run, "timeout": timeout}  # fmt: skip
        return await with_store(
            settings, gated(settings, "throttles.clear", args, actor=who, reason=reason)
        )

    result = unless_filed(run_async(go), as_json)
    if as_json:
        echo_json(result.as_dict())
        return
    verb = "would be cleared" if result.dry_run else "cleared"
    typer.echo(f"{'dry run: ' if result.dry_run else ''}{len(result.throttles)} throttles {verb}")
    for t in result.throttles:
        typer.echo(f"  {t.tenant}  {t.provider}  until {t.until.isoformat()}")
    if result.ack is not None:
        typer.echo(result.ack.summary())
