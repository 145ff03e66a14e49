"""Runbooks over HTTP (issue 15): ``GET /v1/runbooks``, ``GET /v1/runbooks/{id}``,
``GET`` or ``POST /v1/runbooks/{id}/diagnose`` and ``GET /v1/incidents/{id}/diagnosis``,
through ``sluice.ops.runbooks`` as the CLI. Operator keys only: a diagnosis reads every
tenant's state. It only reads, so nothing is audited."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from sluice.api.auth import Operator
from sluice.api.schemas import PROBLEMS, Text
from sluice.ops import incidents
from sluice.ops import runbooks as ops
from sluice.ops.render import jsonable, listing

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["operator"], responses=PROBLEMS)

_Label = Annotated[Text | None, Query(min_length=1, max_length=200)]


class DiagnoseIn(BaseModel):
    """The scope of a diagnosis (all optional) and its window (a span or an ISO time)."""

    model_config = ConfigDict(extra="forbid")

    tenant: Text | None = Field(None, min_length=1, max_length=200)
    provider: Text | None = Field(None, min_length=1, max_length=200)
    channel: Text | None = Field(None, min_length=1, max_length=200)
    action: Text | None = Field(None, min_length=1, max_length=200)
    since: Text = Field("1h", min_length=1, max_length=64)


@router.get("/runbooks")
async def runbooks_list(who: Operator) -> Any:
    """Every runbook: id, seed section, title, the alert rules that point to it."""
    return listing(ops.runbook_list())


@router.get("/runbooks/{runbook_id}")
async def runbooks_show(runbook_id: str, who: Operator) -> Any:
    """A runbook: its checks, commands (as templates) and escalation notes."""
    return ops.runbook_view(ops.runbook_get(runbook_id))


async def _diagnose(request: Request, runbook_id: str, body: DiagnoseIn) -> Any:
    state = request.app.state
    d = await ops.diagnose_now(
        state.store,
        state.settings,
        runbook_id,
        body.since,
        tenant=body.tenant,
        provider=body.provider,
        channel=body.channel,
        action=body.action,
    )
    return jsonable(d)


@router.post("/runbooks/{runbook_id}/diagnose")
async def runbooks_diagnose(
    runbook_id: str, who: Operator, request: Request, body: DiagnoseIn | None = None
) -> Any:
    """Run the runbook's checks against the store now; its commands filled in."""
    return await _diagnose(request, runbook_id, body or DiagnoseIn.model_validate({}))


@router.get("/runbooks/{runbook_id}/diagnose")
async def runbooks_diagnose_get(
    runbook_id: str,
    who: Operator,
    request: Request,
    tenant: _Label = None,
    provider: _Label = None,
    channel: _Label = None,
    action: _Label = None,
    since: Annotated[Text, Query(min_length=1, max_length=64)] = "1h",
) -> Any:
    """The same as ``POST``, the scope as query parameters."""
    body = DiagnoseIn.model_validate(
        {
            "tenant": tenant,
            "provider": provider,
            "channel": channel,
            "action": action,
            "since": since,
        }
    )
    return await _diagnose(request, runbook_id, body)


@router.get("/incidents/{incident_id}/diagnosis")
async def incident_diagnosis(incident_id: str, who: Operator, request: Request) -> Any:
    """The diagnosis of the incident's runbook over its scope (null when Sluice has no
    such runbook)."""
    state = request.app.state
    found = await incidents.incident_show(state.store, incident_id)
    d = await ops.incident_diagnosis(
        state.store,
        state.settings,
        found,
        routes=ops.configured_routes(),
        now=await state.store.clock_now(),
    )
    return {"incident": found.id, "runbook": found.runbook, "diagnosis": jsonable(d)}
