"""Incidents and runbooks: what is open, an incident's timeline, acknowledge, note and
resolve it (``sluice.ops.incidents``, audited as the person), its runbook's diagnosis
against the store now (``sluice.ops.runbooks``), its evidence archive
(``sluice.ops.evidence``) and its postmortem draft (``sluice.ops.postmortem``); the
runbooks with their steps, each diagnosable live.

The diagnosis reads a good deal of state, so incident pages load it separately (htmx,
on load): the timeline and the acts show at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

from fastapi import APIRouter, Form, Request
from starlette.responses import RedirectResponse, Response

from sluice.console.sessions import Viewer
from sluice.console.web import Acting, ConsoleError, OperatorViewer, render
from sluice.errors import NotFound, SluiceError, ValidationError
from sluice.ops.evidence import build_evidence
from sluice.ops.incidents import incident_act, incident_list, incident_show
from sluice.ops.postmortem import postmortem_draft
from sluice.ops.runbooks import (
    configured_routes,
    diagnose_now,
    incident_diagnosis,
    runbook_get,
    runbook_list,
    runbook_view,
)
from sluice.runbooks import Runbook
from sluice.store.base import Incident, Store

__all__ = ["router"]

router = APIRouter()

ACTS = {"ack": "Acknowledged", "note": "Note added", "resolve": "Resolved"}
RECENT = 25
#: What a runbook's live diagnosis may be scoped by (the form's fields).
SCOPE_FIELDS = ("tenant", "provider", "channel", "action")
MAX_FIELD = 200


def _operator(viewer: Viewer) -> None:
    if not viewer.operator:
        raise ConsoleError(403, "This page is for operators; your key is a tenant's.")


async def _incident_or_404(store: Store, incident_id: str) -> Incident:
    try:
        return await incident_show(store, incident_id)
    except NotFound:
        raise ConsoleError(404, f"There is no incident {incident_id[:40]!r}.") from None


def _runbook_of(incident: Incident) -> Runbook | None:
    try:
        return runbook_get(incident.runbook)
    except NotFound:
        return None


# -- incidents --------------------------------------------------------------------------


@router.get("/incidents")
async def incidents(request: Request, viewer: OperatorViewer) -> Response:
    store = request.app.state.store
    active = await incident_list(store, "active", 200)
    recent = await incident_list(store, "resolved", RECENT)
    return render(request, "incidents.html", active=active, recent=recent)


async def _incident_page(
    request: Request, incident: Incident, *, status: int = 200, error: str | None = None,
    notice: str | None = None, failed: str = "", text: str = "",
) -> Response:  # fmt: skip
    """``failed``: the act refused, whose form gets ``text`` back to correct."""
    return render(
        request, "incident.html", status, incident=incident, runbook=_runbook_of(incident),
        error=error, notice=notice, failed=failed, text=text,
        events=sorted(incident.events, key=lambda e: e.at),
    )  # fmt: skip


@router.get("/incidents/{incident_id}")
async def incident(incident_id: str, request: Request, viewer: OperatorViewer) -> Response:
    found = await _incident_or_404(request.app.state.store, incident_id)
    done = request.query_params.get("done", "")
    notice = None
    if _did(found, done, viewer.actor):
        notice = f"{ACTS[done]}; the audit log names you as {viewer.actor}."
    return await _incident_page(request, found, notice=notice)


def _did(incident: Incident, act: str, actor: str) -> bool:
    """Is ``act`` on the incident's timeline as ``actor``'s latest entry of its kind?
    (The notice after an act says so only when it is true, whatever the link says.)"""
    kind = {"ack": "acknowledged", "note": "note", "resolve": "resolved"}.get(act)
    mine = [e for e in incident.events if e.kind == kind]
    return bool(mine) and mine[-1].actor == actor


@router.post("/incidents/{incident_id}/evidence")
async def evidence(incident_id: str, request: Request, viewer: Acting) -> Response:
    """The evidence archive ``sluice incidents evidence`` writes, as a download
    (audited as ``incident.evidence`` with the person's name)."""
    _operator(viewer)
    state = request.app.state
    found = await _incident_or_404(state.store, incident_id)
    ev = await build_evidence(state.store, found.id, actor=viewer.actor, settings=state.settings,
                              clock=state.clock)  # fmt: skip
    return Response(
        ev.data,
        media_type="application/gzip",
        headers={"Content-Disposition": f'attachment; filename="{ev.filename}"',
                 "Cache-Control": "no-store"},
    )  # fmt: skip


@router.post("/incidents/{incident_id}/{act}")
async def act(
    incident_id: str,
    act: str,
    request: Request,
    viewer: Acting,
    text: Annotated[str, Form()] = "",
) -> Response:
    """Acknowledge, note or resolve, with the text the form asked for (audited)."""
    _operator(viewer)
    store = request.app.state.store
    found = await _incident_or_404(store, incident_id)
    if act not in ACTS:
        raise ConsoleError(404, f"There is no act {act[:40]!r} on incidents.")
    try:
        if text.strip() and not text.isprintable() and not _multiline(text):
            raise ValidationError("text", "must be printable text (no control characters)")
        await incident_act(store, found.id, act, actor=viewer.actor, text=text.strip(),
                           clock=request.app.state.clock)  # fmt: skip
    except ValidationError as exc:
        fresh = await _incident_or_404(store, found.id)
        return await _incident_page(request, fresh, status=400, error=str(exc), failed=act,
                                    text=text[:2000])  # fmt: skip
    return RedirectResponse(f"/incidents/{found.id}?done={act}", status_code=303)


def _multiline(text: str) -> bool:
    """Printable but for line breaks and tabs (a note may have several lines)."""
    return "".join(c for c in text if c not in "\r\n\t").isprintable()


@router.get("/incidents/{incident_id}/diagnosis")
async def incident_diagnosed(
    incident_id: str, request: Request, viewer: OperatorViewer
) -> Response:
    """The incident's runbook run against the store now (the fragment its page loads)."""
    state = request.app.state
    found = await _incident_or_404(state.store, incident_id)
    try:
        d = await incident_diagnosis(state.store, state.settings, found,
                                     routes=configured_routes(),
                                     now=await state.store.clock_now())  # fmt: skip
    except SluiceError as exc:
        return render(request, "_diagnosis.html", diagnosis=None, problem=str(exc))
    problem = None if d else f"runbook {found.runbook!r} is not one Sluice has: no diagnosis"
    return render(request, "_diagnosis.html", diagnosis=d, problem=problem)


@router.get("/incidents/{incident_id}/postmortem")
async def postmortem(incident_id: str, request: Request, viewer: OperatorViewer) -> Response:
    """The postmortem draft (Markdown, facts filled in) shown as text to copy."""
    state = request.app.state
    found = await _incident_or_404(state.store, incident_id)
    draft = await postmortem_draft(state.store, found.id, clock=state.clock)
    return render(request, "postmortem.html", incident=found, draft=draft)


# -- runbooks ---------------------------------------------------------------------------


@router.get("/runbooks")
async def runbooks(request: Request, viewer: OperatorViewer) -> Response:
    return render(request, "runbooks.html", runbooks=runbook_list())


def _scope_form(query: Mapping[str, str]) -> dict[str, str]:
    return {n: query.get(n, "")[:MAX_FIELD] for n in (*SCOPE_FIELDS, "since")}


@router.get("/runbooks/{runbook_id}")
async def runbook(runbook_id: str, request: Request, viewer: OperatorViewer) -> Response:
    """A runbook's steps; with ``diagnose=1``, its checks run now over the scope asked."""
    try:
        view = runbook_view(runbook_get(runbook_id))
    except NotFound:
        raise ConsoleError(404, f"There is no runbook {runbook_id[:40]!r}.") from None
    query = request.query_params
    form = _scope_form(query)
    diagnosis, problem, status = None, None, 200
    if query.get("diagnose"):
        state = request.app.state
        labels = {n: (query.get(n) or "").strip() or None for n in SCOPE_FIELDS}
        try:
            since = (query.get("since") or "").strip() or "1h"
            if len(since) > 64:
                raise ValidationError("since", f"is {len(since):,} characters; at most 64")
            diagnosis = await diagnose_now(state.store, state.settings, view["id"], since,
                                           **labels)  # fmt: skip
        except ValidationError as exc:
            problem, status = str(exc), 400
    return render(request, "runbook.html", status, rb=view, form=form, diagnosis=diagnosis,
                  problem=problem)  # fmt: skip
