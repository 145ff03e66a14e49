"""Evidence and markers (issue 15): ``sluice annotate``, ``sluice annotations list`` and
``sluice incidents evidence``."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from sluice.cli.options import Actor, DatabaseUrl, JsonOutput
from sluice.cli.runtime import (
    actor_or_default,
    echo_json,
    echo_table,
    fail,
    on_store,
    settings_for,
)
from sluice.errors import ValidationError

__all__ = ["annotate", "annotations_app", "incidents_evidence"]

annotations_app = typer.Typer(
    help="Deploy, config and note markers (sluice annotate records one).", no_args_is_help=True
)

_Kind = Annotated[
    str,
    typer.Option(
        "--kind",
        envvar="SLUICE_ANNOTATION_KIND",
        help="deploy, config, note, rollback, maintenance or provider.",
    ),
]
_TenantOpt = Annotated[
    str | None,
    typer.Option(
        "--tenant", envvar="SLUICE_TENANT", help="The tenant it concerns [default: everything]."
    ),
]


def _instant(text: str | None, field: str) -> datetime | None:
    from sluice.ops.audit import parse_instant

    if text is None:
        return None
    try:
        return parse_instant(text, field, datetime.now(UTC))
    except ValidationError as exc:
        raise fail(exc) from None


def annotate(
    text: Annotated[str, typer.Argument(help='What happened, e.g. "deployed v1.4.2".')],
    kind: _Kind = "note",
    tenant: _TenantOpt = None,
    at: Annotated[
        str | None,
        typer.Option(
            "--at",
            envvar="SLUICE_ANNOTATION_AT",
            help="When it happened: ISO 8601 or a span back (15m) [default: now].",
        ),
    ] = None,
    actor: Actor = None,
    database_url: DatabaseUrl = None,
    as_json: JsonOutput = False,
) -> None:
    """Record a deploy, config or note marker; evidence and postmortems show it (audited)."""
    from sluice.ops.annotations import annotation_add, annotation_as_dict

    when = _instant(at, "at")
    settings = settings_for(database_url)
    a = on_store(
        settings,
        lambda s: annotation_add(
            s, text, actor=actor_or_default(actor), kind=kind, tenant=tenant, at=when
        ),
    )
    if as_json:
        echo_json(annotation_as_dict(a))
        return
    typer.echo(f"annotation {a.id}: {a.kind} at {a.at:%Y-%m-%d %H:%M:%S} UTC: {a.text}")


@annotations_app.command("list")
def annotations_list(
    since: Annotated[
        str | None,
        typer.Option(
            envvar="SLUICE_ANNOTATIONS_SINCE",
            help="From this time (ISO 8601, or a span back: 2h, 7d).",
        ),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(envvar="SLUICE_ANNOTATIONS_UNTIL", help="Before this time (same forms)."),
    ] = None,
    kind: Annotated[
        str | None, typer.Option("--kind", envvar="SLUICE_ANNOTATION_KIND", help="Only this kind.")
    ] = None,
    tenant: Annotated[
        str | None, typer.Option("--tenant", envvar="SLUICE_TENANT", help="Only this tenant.")
    ] = None,
    limit: Annotated[
        int, typer.Option(envvar="SLUICE_LIMIT", help="Most annotations on a page.")
    ] = 100,
    cursor: Annotated[
        str | None, typer.Option(envvar="SLUICE_CURSOR", help="next_cursor of the page before.")
    ] = None,
    database_url: DatabaseUrl = None,
    as_json: JsonOutput = False,
) -> None:
    """Annotations newest first (by when they mark)."""
    from sluice.ops.annotations import annotation_page

    lo, hi = _instant(since, "since"), _instant(until, "until")
    settings = settings_for(database_url)
    page = on_store(
        settings,
        lambda s: annotation_page(
            s, since=lo, until=hi, tenant=tenant, kind=kind, limit=limit, cursor=cursor
        ),
    )
    if as_json:
        echo_json(page.as_dict())
        return
    rows = [[a.id, f"{a.at:%Y-%m-%d %H:%M:%S}", a.kind, a.tenant or "-", a.actor, a.text[:60]]
            for a in page.items]  # fmt: skip
    echo_table(["ID", "AT", "KIND", "TENANT", "ACTOR", "TEXT"], rows)
    if page.next_cursor:
        typer.echo(f"more: --cursor {page.next_cursor}")


def incidents_evidence(
    incident_id: Annotated[str, typer.Argument(help="The incident's id (sluice incidents list).")],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            envvar="SLUICE_EVIDENCE_OUT",
            help="The archive to write (.tar.gz); must not exist.",
        ),
    ],
    margin: Annotated[
        float,
        typer.Option(
            envvar="SLUICE_EVIDENCE_MARGIN",
            help="Seconds before the incident opened that the window starts.",
        ),
    ] = 900.0,
    actor: Actor = None,
    database_url: DatabaseUrl = None,
    as_json: JsonOutput = False,
) -> None:
    """Write an incident's evidence archive: timeline, audit with its chain verified,
    changes, gauges, a sample of messages, settings (secrets redacted), annotations."""
    from sluice.ops.evidence import write_evidence

    settings = settings_for(database_url)
    ev = on_store(
        settings,
        lambda s: write_evidence(
            s, incident_id, out, actor=actor_or_default(actor), settings=settings, margin=margin
        ),
    )
    if as_json:
        echo_json({"incident_id": ev.incident_id, "out": str(out), "files": ev.files})
        return
    typer.echo(f"{out}: evidence of incident {ev.incident_id}, {len(ev.files) + 1} files")
