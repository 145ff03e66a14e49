"""Evidence and markers (issue 15): ``/v1/annotations`` (record and list deploy, config
and note markers) and ``/v1/incidents/{id}/evidence`` (an incident's evidence archive),
through ``sluice.ops.annotations`` and ``sluice.ops.evidence`` as the CLI is. Operator
keys only; recording and archiving are audited with the key's name as the actor."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from sluice.api.auth import Operator
from sluice.api.schemas import PROBLEMS, Text
from sluice.ops.annotations import (
    MAX_PAGE,
    MAX_TEXT,
    annotation_add,
    annotation_as_dict,
    annotation_page,
)
from sluice.ops.evidence import build_evidence

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["incidents"], responses=PROBLEMS)


class AnnotationIn(BaseModel):
    """A marker: what happened, of which kind, for which tenant, when (default: now)."""

    model_config = ConfigDict(extra="forbid")

    text: Text = Field(min_length=1, max_length=MAX_TEXT)
    kind: Text = Field("note", min_length=1, max_length=32)
    tenant: Text | None = Field(None, min_length=1, max_length=128)
    at: AwareDatetime | None = None
    detail: dict[str, Any] = Field(default_factory=dict)


class AnnotationOut(BaseModel):
    id: int
    at: str
    actor: str
    kind: str
    text: str
    tenant: str
    detail: dict[str, Any]


class AnnotationPage(BaseModel):
    items: list[AnnotationOut]
    count: int
    next_cursor: str | None = None


@router.post("/annotations", response_model=AnnotationOut, status_code=201)
async def add_annotation(body: AnnotationIn, who: Operator, request: Request) -> dict[str, Any]:
    """Record a deploy, config or note marker (audited as ``annotation.add``)."""
    state = request.app.state
    a = await annotation_add(
        state.store, body.text, actor=who.actor, kind=body.kind, tenant=body.tenant,
        at=body.at, detail=body.detail, clock=state.clock,
    )  # fmt: skip
    return annotation_as_dict(a)


@router.get("/annotations", response_model=AnnotationPage)
async def list_annotations(
    who: Operator,
    request: Request,
    since: Annotated[AwareDatetime | None, Query(description="At or after")] = None,
    until: Annotated[AwareDatetime | None, Query(description="Before")] = None,
    kind: Annotated[Text | None, Query(min_length=1, max_length=32)] = None,
    tenant: Annotated[Text | None, Query(min_length=1, max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    cursor: Annotated[Text | None, Query(max_length=20)] = None,
) -> dict[str, Any]:
    """Annotations newest first (by when they mark), a page at a time."""
    page = await annotation_page(
        request.app.state.store, since=since, until=until, tenant=tenant, kind=kind,
        limit=limit, cursor=cursor,
    )  # fmt: skip
    return page.as_dict()


@router.get(
    "/incidents/{incident_id}/evidence",
    response_class=Response,
    responses={200: {"content": {"application/gzip": {}}, "description": "The archive"}},
)
async def incident_evidence(
    incident_id: str,
    who: Operator,
    request: Request,
    margin: Annotated[float, Query(ge=0, le=604_800, description="Seconds before opening")] = 900,
) -> Response:
    """The incident's evidence archive (``tar.gz``), as ``sluice incidents evidence``
    writes it; audited as ``incident.evidence``."""
    state = request.app.state
    ev = await build_evidence(
        state.store, incident_id, actor=who.actor, settings=state.settings, margin=margin,
        clock=state.clock,
    )  # fmt: skip
    return Response(
        ev.data,
        media_type="application/gzip",
        headers={"Content-Disposition": f'attachment; filename="{ev.filename}"'},
    )
