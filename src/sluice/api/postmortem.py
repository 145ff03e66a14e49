"""``GET /v1/incidents/stats`` and ``GET /v1/incidents/{id}/postmortem``: seed 002's
post-incident metrics and seed 003's postmortem draft, through the same
``sluice.ops.postmortem`` as ``sluice incidents stats|postmortem`` (operator keys only).

Included before the operator router, whose ``/incidents/{incident_id}`` would otherwise
take ``stats`` for an incident id."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from sluice.api.auth import Operator
from sluice.api.schemas import PROBLEMS
from sluice.ops.postmortem import incident_stats, postmortem_draft

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["operator"], responses=PROBLEMS)


@router.get("/incidents/stats")
async def incidents_stats(
    who: Operator,
    request: Request,
    since: Annotated[str, Query(min_length=1, max_length=64)] = "30d",
) -> Any:
    """MTTD, MTTR and time to contain, overall and per rule (``items``), and incidents
    per severity, of the incidents opened since ``since`` (``30d``, ``12h``, ISO time)."""
    state = request.app.state
    return (await incident_stats(state.store, since, clock=state.clock)).as_dict()


@router.get(
    "/incidents/{incident_id}/postmortem",
    response_class=Response,
    responses={200: {"content": {"text/markdown": {}}}},
)
async def incidents_postmortem(incident_id: str, who: Operator, request: Request) -> Response:
    """The incident's postmortem draft in Markdown (seed 003 §6), facts filled in."""
    state = request.app.state
    text = await postmortem_draft(state.store, incident_id, clock=state.clock)
    return Response(text, media_type="text/markdown; charset=utf-8")
