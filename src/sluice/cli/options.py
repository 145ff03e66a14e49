"""The options more than one command group takes, each defined once, and what they parse to.

An option only one group takes is defined in that group's module.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from sluice.errors import ValidationError
from sluice.store import MessageFilter

__all__ = [
    "ActionOpt",
    "Actor",
    "Channel",
    "Cursor",
    "DatabaseUrl",
    "DryRun",
    "ErrorCodeOpt",
    "IdsOut",
    "JsonOutput",
    "Limit",
    "NeedReason",
    "Provider",
    "Reason",
    "Since",
    "Tenant",
    "message_filter",
    "read_ids",
]

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="SLUICE_DATABASE_URL",
        help="sqlite:///file.db or postgresql://user@host:port/db [default: sqlite:///sluice.db]",
    ),
]
JsonOutput = Annotated[
    bool, typer.Option("--json", envvar="SLUICE_JSON", help="Print JSON for programs.")
]

# -- who and why (the audit log) ----------------------------------------------------

Actor = Annotated[
    str | None,
    typer.Option(
        "--actor", envvar="SLUICE_ACTOR", help="Who is acting (audit log) [default: cli:<user>]."
    ),
]
Reason = Annotated[
    str | None, typer.Option("--reason", envvar="SLUICE_REASON", help="Why (for the audit log).")
]
NeedReason = Annotated[
    str,
    typer.Option("--reason", envvar="SLUICE_REASON", help="Why (required; goes to the audit log)."),
]

# -- scope: whose messages ----------------------------------------------------------

Tenant = Annotated[
    str | None, typer.Option("--tenant", envvar="SLUICE_TENANT", help="Only this tenant.")
]
Channel = Annotated[
    str | None, typer.Option("--channel", envvar="SLUICE_CHANNEL", help="Only this channel.")
]
Provider = Annotated[
    str | None, typer.Option("--provider", envvar="SLUICE_PROVIDER", help="Only this provider.")
]
ActionOpt = Annotated[
    str | None,
    typer.Option("--action", envvar="SLUICE_ACTION", help="Only this action type."),
]

# -- filters on messages ------------------------------------------------------------

ErrorCodeOpt = Annotated[
    str | None,
    typer.Option("--error-code", envvar="SLUICE_ERROR_CODE", help="Only this error code."),
]
Since = Annotated[
    str | None,
    typer.Option(
        "--since",
        envvar="SLUICE_SINCE",
        help="Only messages dead-lettered since: ISO time or a span (15m, 2h, 7d).",
    ),
]
Limit = Annotated[
    int | None,
    typer.Option("--limit", envvar="SLUICE_LIMIT", help="At most this many messages."),
]
DryRun = Annotated[
    bool,
    typer.Option(
        "--dry-run", envvar="SLUICE_DRY_RUN", help="Show what would change; change nothing."
    ),
]


def message_filter(
    tenant: str | None = None,
    channel: str | None = None,
    error_code: str | None = None,
    since: str | None = None,
    limit: int | None = None,
    *,
    provider: str | None = None,
    action: str | None = None,
    reason: str | None = None,
) -> MessageFilter:
    """The filter the options name; a bad ``--since`` or ``--limit`` is a ValidationError."""
    from sluice.ops.actions import parse_since

    if limit is not None and limit < 1:
        raise ValidationError("limit", "must be at least 1")
    return MessageFilter(
        tenant=tenant,
        channel=channel,
        error_code=error_code,
        since=parse_since(since, datetime.now(UTC)) if since else None,
        limit=limit,
        provider=provider,
        action=action,
        reason=reason,
    )


# -- listings (issue 14): pages, ids piped from one command into another -------------

Cursor = Annotated[
    str | None,
    typer.Option(
        "--cursor",
        envvar="SLUICE_CURSOR",
        help="Start after this point: the next_cursor a --json page printed.",
    ),
]
IdsOut = Annotated[
    bool,
    typer.Option(
        "--ids",
        envvar="SLUICE_IDS_ONLY",
        help="Print only the ids, one a line (to pipe into a command that takes -).",
    ),
]


def read_ids(ids: list[str] | None) -> list[str] | None:
    """The ids named; ``-`` reads them from standard input, one a line (blank lines and
    surrounding spaces ignored), as ``messages list --ids`` prints them."""
    if not ids or "-" not in ids:
        return ids
    import sys

    piped = [line.strip() for line in sys.stdin.read().splitlines() if line.strip()]
    out = [i for i in ids if i != "-"] + piped
    if not out:
        raise ValidationError("ids", "none were given on standard input")
    return out
