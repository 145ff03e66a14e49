"""``incidents``: what the built-in evaluator opened — list, show, acknowledge, resolve,
add a note."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from sluice.cli.options import Actor, DatabaseUrl, JsonOutput
from sluice.cli.runbooks import print_diagnosis
from sluice.cli.runtime import (
    actor_or_default,
    echo_json,
    echo_table,
    fail,
    on_store,
    settings_for,
)
from sluice.errors import SluiceError, ValidationError
from sluice.ops.render import age, jsonable, listing
from sluice.ops.runbooks import Diagnosis
from sluice.store.base import Incident, Store

__all__ = ["incidents_app"]

incidents_app = typer.Typer(
    help="Incidents the built-in alert evaluator opened: list, show, ack, resolve, note; "
    "postmortem drafts and stats.",
    no_args_is_help=True,
)

IncidentId = Annotated[str, typer.Argument(help="The incident's id (sluice incidents list).")]


@incidents_app.command("list")
def incidents_list(
    state: Annotated[
        str, typer.Option(help="active (open or acknowledged), open, acknowledged, resolved, all.")
    ] = "active",
    limit: Annotated[int, typer.Option(help="Most incidents to show.")] = 50,
    database_url: DatabaseUrl = None,
    as_json: JsonOutput = False,
) -> None:
    """Incidents newest first: severity, rule, scope, state, age, summary, runbook."""
    from sluice.ops.incidents import incident_list

    settings = settings_for(database_url)
    items = on_store(settings, lambda s: incident_list(s, state, limit))
    if as_json:
        echo_json(listing(items))
        return
    rows = [[i.id, i.severity, i.rule, i.scope_key or "-", i.state, _since(i.opened_at),
             i.summary[:50], i.runbook] for i in items]  # fmt: skip
    echo_table(["ID", "SEV", "RULE", "SCOPE", "STATE", "AGE", "SUMMARY", "RUNBOOK"], rows)


@incidents_app.command("show")
def incidents_show(
    incident_id: IncidentId, database_url: DatabaseUrl = None, as_json: JsonOutput = False
) -> None:
    """One incident, its timeline, and the diagnosis of its runbook now (issue 15)."""
    from sluice.ops.incidents import incident_show
    from sluice.ops.runbooks import configured_routes, incident_diagnosis

    settings = settings_for(database_url)

    async def both(s: Store) -> tuple[Incident, Diagnosis | None, str | None]:
        i = await incident_show(s, incident_id)
        try:  # the incident is shown even when its diagnosis cannot be made
            now = await s.clock_now()
            d = await incident_diagnosis(s, settings, i, routes=configured_routes(), now=now)
        except SluiceError as exc:
            return i, None, str(exc)
        return i, d, None

    i, diagnosis, problem = on_store(settings, both)
    if as_json:
        echo_json({**jsonable(i), "diagnosis": jsonable(diagnosis), "diagnosis_error": problem})
        return
    typer.echo(f"{i.id}  [{i.severity}] {i.rule}  {i.state}")
    typer.echo(f"  {i.summary}")
    typer.echo(f"  scope: {i.scope_key or 'everything'}   types: {', '.join(i.types)}")
    typer.echo(f"  runbook: {i.runbook}   value: {i.value:g} (peak {i.peak:g})")
    typer.echo(f"  opened {i.opened_at:%Y-%m-%d %H:%M:%S} UTC ({_since(i.opened_at)} ago)")
    if i.acknowledged_at:
        typer.echo(f"  acknowledged {i.acknowledged_at:%H:%M:%S} by {i.acknowledged_by}")
    if i.resolved_at:
        typer.echo(f"  resolved {i.resolved_at:%H:%M:%S} by {i.resolved_by}")
    rows = [
        [f"{e.at:%H:%M:%S}", e.kind, e.actor, ", ".join(f"{k}={v}" for k, v in e.detail.items())]
        for e in i.events
    ]
    echo_table(["AT", "WHAT", "WHO", "DETAIL"], rows)
    typer.echo("")
    if problem is not None:
        typer.echo(f"(no diagnosis: {problem})")
    elif diagnosis is None:
        typer.echo(f"(runbook {i.runbook!r} is not one Sluice has: no diagnosis)")
    else:
        print_diagnosis(diagnosis)


def _since(at: datetime) -> str:
    return age((datetime.now(UTC) - at).total_seconds())


def _act(act: str, incident_id: str, actor: str | None, text: str, url: str | None) -> None:
    from sluice.ops.incidents import incident_act

    settings = settings_for(url)
    i = on_store(
        settings,
        lambda s: incident_act(s, incident_id, act, actor=actor_or_default(actor), text=text),
    )
    typer.echo(f"{i.id} {i.rule}: {i.state}")


@incidents_app.command("ack")
def incidents_ack(
    incident_id: IncidentId,
    reason: Annotated[str, typer.Option(help="What you are doing about it (required).")],
    actor: Actor = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Acknowledge an open incident: on-call has it (audited)."""
    _act("ack", incident_id, actor, reason, database_url)


@incidents_app.command("resolve")
def incidents_resolve(
    incident_id: IncidentId,
    reason: Annotated[str, typer.Option(help="Why it is over (required).")],
    actor: Actor = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Resolve an incident now, without waiting for the evaluator (audited)."""
    _act("resolve", incident_id, actor, reason, database_url)


@incidents_app.command("note")
def incidents_note(
    incident_id: IncidentId,
    text: Annotated[str, typer.Argument(help="The note, for the timeline.")],
    actor: Actor = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Add a note to an incident's timeline (audited)."""
    _act("note", incident_id, actor, text, database_url)


# -- issue 15: postmortem drafts and incident statistics (sluice.ops.postmortem) --------


@incidents_app.command("postmortem")
def incidents_postmortem(
    incident_id: IncidentId,
    out: Annotated[
        Path | None,
        typer.Option("--out", envvar="SLUICE_POSTMORTEM_OUT", help="Write the draft to FILE."),
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """A Markdown postmortem draft (seed 003's template) with the facts filled in."""
    from sluice.ops.postmortem import postmortem_draft

    if out is not None and (out.is_dir() or not out.parent.is_dir()):
        raise fail(ValidationError("out", f"{str(out)!r} is not a file in a directory"))
    settings = settings_for(database_url)
    text = on_store(settings, lambda s: postmortem_draft(s, incident_id))
    if out is None:
        typer.echo(text)
        return
    out.write_text(text, encoding="utf-8")
    typer.echo(f"wrote {out}")


@incidents_app.command("stats")
def incidents_stats(
    since: Annotated[
        str,
        typer.Option(
            envvar="SLUICE_INCIDENTS_SINCE",
            help="The period: a span back from now (30d, 12h) or an ISO time.",
        ),
    ] = "30d",
    database_url: DatabaseUrl = None,
    as_json: JsonOutput = False,
) -> None:
    """MTTD, MTTR and time to contain, overall and per rule; counts per rule and severity."""
    from sluice.ops.postmortem import incident_stats

    settings = settings_for(database_url)
    st = on_store(settings, lambda s: incident_stats(s, since))
    if as_json:
        echo_json(st.as_dict())
        return
    o = st.overall
    typer.echo(f"incidents opened {st.since:%Y-%m-%d %H:%M} → {st.until:%Y-%m-%d %H:%M} UTC: "
               f"{o.incidents} ({o.open} open, {o.resolved} resolved; "
               f"{st.per_week:g} a week)")  # fmt: skip
    typer.echo(f"  MTTD {age(o.mttd_seconds)}   MTTC {age(o.mttc_seconds)}   "
               f"MTTR {age(o.mttr_seconds)}")  # fmt: skip
    typer.echo("  by severity: " + (", ".join(f"{k} {v}" for k, v in st.by_severity.items())
                                   or "none"))  # fmt: skip
    rows = [[r.rule, r.severity, r.incidents, r.open, age(r.mttd_seconds), age(r.mttc_seconds),
             age(r.mttr_seconds)] for r in st.by_rule]  # fmt: skip
    echo_table(["RULE", "SEV", "INCIDENTS", "OPEN", "MTTD", "MTTC", "MTTR"], rows)
    if st.truncated:
        typer.echo("  (only the newest 1000 incidents counted)")
