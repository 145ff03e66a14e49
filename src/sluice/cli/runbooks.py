"""``runbook``: the seeds' runbooks as Sluice runs them — list, show, and diagnose one
against the store now, with its commands filled in."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from sluice.cli.options import ActionOpt, Channel, DatabaseUrl, JsonOutput, Provider, Tenant
from sluice.cli.runtime import echo_json, echo_table, fail, on_store, settings_for
from sluice.errors import SluiceError
from sluice.ops.render import listing

__all__ = ["print_diagnosis", "runbook_app"]

runbook_app = typer.Typer(
    help="Runbooks: list, show, and diagnose one against live state (its commands filled in).",
    no_args_is_help=True,
)

RunbookId = Annotated[
    str, typer.Argument(help="The runbook's id (sluice runbook list) or seed section (003#RB-09).")
]


@runbook_app.command("list")
def runbook_list_cmd(as_json: JsonOutput = False) -> None:
    """Every runbook: id, seed section, title, the alert rules that point to it."""
    from sluice.ops.runbooks import runbook_list

    items = runbook_list()
    if as_json:
        echo_json(listing(items))
        return
    rows = [[r["id"], r["source"], r["title"], ", ".join(r["rules"]) or "-"] for r in items]
    echo_table(["ID", "SOURCE", "TITLE", "RULES"], rows)


@runbook_app.command("show")
def runbook_show_cmd(runbook_id: RunbookId, as_json: JsonOutput = False) -> None:
    """A runbook's checks, containment and recovery commands, and escalation notes."""
    from sluice.ops.runbooks import runbook_get, runbook_view

    try:
        view = runbook_view(runbook_get(runbook_id))
    except SluiceError as exc:
        raise fail(exc) from None
    if as_json:
        echo_json(view)
        return
    sources = ", ".join([view["source"], *view["also"]])
    typer.echo(f"{view['id']}: {view['title']}  (seed {sources})")
    typer.echo(f"  {view['summary']}")
    typer.echo(f"  alert rules: {', '.join(view['rules']) or '-'}")
    _section(
        "Diagnosis (live checks)", [f"[{c['probe']}] {c['looks_for']}" for c in view["diagnosis"]]
    )
    _section("Containment", [_cmd(c) for c in view["containment"]])
    _section("Recovery", [_cmd(c) for c in view["recovery"]])
    _section(
        "Verification (live checks)",
        [f"[{c['probe']}] {c['looks_for']}" for c in view["verification"]],
    )
    _section("Escalation", view["escalation"])
    if view["follow_ups"]:
        _section("Follow-ups", view["follow_ups"])


def _cmd(c: dict[str, Any]) -> str:
    return f"{c['command']}\n      # {c['why']}{' (dry run first)' if c['dry_run'] else ''}"


def _section(title: str, lines: list[str]) -> None:
    typer.echo(f"\n{title}:")
    for i, line in enumerate(lines, 1):
        typer.echo(f"  {i}. {line}")


@runbook_app.command("diagnose")
def runbook_diagnose_cmd(
    runbook_id: RunbookId,
    tenant: Tenant = None,
    provider: Provider = None,
    channel: Channel = None,
    action: ActionOpt = None,
    since: Annotated[
        str, typer.Option(help="The window: a span back from now (15m, 1h, 2d) or an ISO time.")
    ] = "1h",
    database_url: DatabaseUrl = None,
    as_json: JsonOutput = False,
) -> None:
    """Run a runbook's checks against the store now: what is wrong, and the commands that
    contain and repair it with the scope filled in. Reads only."""
    from sluice.ops.runbooks import diagnose_now

    settings = settings_for(database_url)
    d = on_store(
        settings,
        lambda s: diagnose_now(
            s, settings, runbook_id, since,
            tenant=tenant, provider=provider, channel=channel, action=action,
        ),
    )  # fmt: skip
    if as_json:
        echo_json(d)
        return
    print_diagnosis(d)


def print_diagnosis(d: Any) -> None:
    """A diagnosis as on-call reads it (also under ``sluice incidents show``)."""
    scope = " ".join(f"{k}={v}" for k, v in d.scope.items()) or "everything"
    typer.echo(f"runbook {d.runbook}: {d.title}  (seed {d.source})")
    typer.echo(f"  scope: {scope}   window: {d.since:%Y-%m-%d %H:%M:%S} → {d.at:%H:%M:%S} UTC")
    typer.echo("\nFindings:")
    if not d.causes:
        typer.echo("  nothing this runbook looks for is wrong now")
    for f in d.findings:
        typer.echo(f"  {'!!' if f.alarm else 'ok'} [{f.probe}] {f.headline}")
        for line in f.lines[:8]:
            typer.echo(f"       {line}")
    _section("Contain", [_cmd(c) for c in d.containment])
    _section("Recover", [_cmd(c) for c in d.recovery])
    _section("Verify", [f"[{f.probe}] now: {f.headline}" for f in d.verification])
    _section("Escalate", d.escalation)
