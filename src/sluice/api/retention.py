"""``POST /v1/purge``: remove final messages past their retention now, through the same
``sluice.ops.retention`` as ``sluice purge`` and the worker's passes (operator keys only)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from sluice.api.auth import Operator
from sluice.api.requests import FILED, gated
from sluice.api.schemas import PROBLEMS, Text
from sluice.ops.requests import purge_args
from sluice.ops.retention import MAX_BATCH, export_file, purge_rule

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["operator"], responses=PROBLEMS)


class PurgeIn(BaseModel):
    """What to remove: final messages last changed longer ago than ``older_than`` (a span:
    ``36h``, ``30d``), or than each status's retention when it is left out."""

    model_config = ConfigDict(extra="forbid")

    older_than: Text | None = Field(None, min_length=1, max_length=32)
    #: Only these final statuses (all when left out).
    statuses: list[Text] | None = Field(None, min_length=1, max_length=20)
    tenant: Text | None = Field(None, min_length=1, max_length=128)
    dry_run: bool = Field(False, strict=True)
    batch: int | None = Field(None, ge=1, le=MAX_BATCH, strict=True)
    reason: Text | None = Field(None, max_length=1000)


@router.post("/purge", responses=FILED)
async def purge_now(body: PurgeIn, who: Operator, request: Request) -> Any:
    """Counts per status of what was removed (or, with ``dry_run``, would be). With
    ``SLUICE_RETENTION_EXPORT_DIR`` set, what is removed is exported there first."""
    state = request.app.state
    settings = state.settings
    now = state.clock.now()
    rule = purge_rule(
        now, older_than=body.older_than, statuses=body.statuses, tenant=body.tenant,
        retention=settings.retention,
    )  # fmt: skip
    directory = settings.retention_export_dir
    export = export_file(directory, now) if directory and not body.dry_run else None
    args = purge_args(
        rule, batch=body.batch or settings.retention_batch,
        export=None if export is None else str(export), dry_run=body.dry_run,
    )  # fmt: skip
    return await gated(request, who, "purge", args, body.reason, lambda r: r.as_dict())
