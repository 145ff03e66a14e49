"""``POST /v1/canary/run`` and ``GET /v1/canary``: golden-path canaries on demand and
their recent outcomes, through the same ``sluice.ops.canary`` as ``sluice canary`` and
the workers' schedule (operator keys only)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from sluice.api.auth import Operator
from sluice.api.schemas import PROBLEMS, Text
from sluice.ops.canary import MAX_WAIT, canary_config, canary_list, canary_run
from sluice.ops.render import listing

__all__ = ["router"]

router = APIRouter(prefix="/v1/canary", tags=["operator"], responses=PROBLEMS)


class CanaryRunIn(BaseModel):
    """Which targets to run (``provider``: its targets; all when left out) and how long
    to wait for each receipt (seconds; the target's timeout when left out)."""

    model_config = ConfigDict(extra="forbid")

    provider: Text | None = Field(None, min_length=1, max_length=64)
    wait: float | None = Field(None, gt=0, le=MAX_WAIT, allow_inf_nan=False)
    reason: Text | None = Field(None, max_length=1000)


@router.post("/run")
async def run(body: CanaryRunIn, who: Operator, request: Request) -> Any:
    """Send a canary to each target now and answer when each has an outcome (``ok``,
    ``failed`` or ``missing``): ``{"items": [...], "count": N, "ok": bool}``. A failed
    or missing canary opens an incident. Audited."""
    state = request.app.state
    runs = await canary_run(
        state.store, canary_config(), actor=who.actor, provider=body.provider,
        wait=body.wait, reason=body.reason, clock=state.clock,
    )  # fmt: skip
    return listing(runs, ok=all(r.outcome == "ok" for r in runs))


@router.get("")
async def recent(
    who: Operator,
    request: Request,
    provider: str | None = Query(None, min_length=1, max_length=64),
    limit: int = Query(50, ge=1, le=1000),
) -> Any:
    """Recent canaries, newest first."""
    return listing(await canary_list(request.app.state.store, provider, limit))
