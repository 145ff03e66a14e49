"""Operator endpoints for what waits: ``POST /v1/messages/retry-now`` and the throttles
(``GET /v1/throttles``, ``POST /v1/throttles/clear``), through ``sluice.ops.waiting`` as
the CLI. Audited with the key's name as the actor."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from sluice.api.auth import Operator
from sluice.api.requests import FILED, gated
from sluice.api.schemas import PROBLEMS, Text
from sluice.ops import waiting
from sluice.ops.requests import message_args
from sluice.store.base import MessageFilter

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["operator"], responses=PROBLEMS)

_Name = Annotated[Text | None, Query(min_length=1, max_length=2048)]


class RetryNowIn(BaseModel):
    """Which waiting messages to make due now (all fields optional: together they narrow)."""

    model_config = ConfigDict(extra="forbid")

    tenant: Text | None = Field(None, min_length=1, max_length=128)
    channel: Text | None = Field(None, min_length=1, max_length=64)
    provider: Text | None = Field(None, min_length=1, max_length=64)
    action: Text | None = Field(None, min_length=1, max_length=128)
    error_code: Text | None = Field(None, min_length=1, max_length=64)
    ids: list[Text] | None = Field(None, min_length=1, max_length=waiting.MAX_RETRY_NOW)
    limit: int | None = Field(None, ge=1, le=waiting.MAX_RETRY_NOW, strict=True)
    dry_run: bool = Field(False, strict=True)
    reason: Text | None = Field(None, max_length=1000)

    def filter(self) -> MessageFilter:
        return MessageFilter(
            tenant=self.tenant, channel=self.channel, provider=self.provider,
            action=self.action, error_code=self.error_code, limit=self.limit,
        )  # fmt: skip


class ThrottleClearIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant: Text | None = Field(None, min_length=1, max_length=128)
    #: A provider (every endpoint of it) or one target (``webhook@https://…``).
    provider: Text | None = Field(None, min_length=1, max_length=2048)
    #: Every throttle in force (otherwise a tenant or a provider is required).
    all: bool = Field(False, strict=True)
    dry_run: bool = Field(False, strict=True)
    reason: Text = Field(min_length=1, max_length=1000)
    wait: bool = Field(True, strict=True)
    timeout: float = Field(10.0, gt=0, le=60, strict=True)


@router.post("/messages/retry-now", responses=FILED)
async def retry_now(body: RetryNowIn, who: Operator, request: Request) -> Any:
    """Make queued messages waiting on a retry backoff or a deferral due now; never one
    sending, held, parked by a pause, final or scheduled for later by its sender."""

    def shape(result: Any) -> Any:
        out = result.as_dict()
        out["ids"] = out["ids"][:1000] if body.dry_run else out["ids"]
        return out

    args = message_args(body.filter(), body.ids, dry_run=body.dry_run)
    return await gated(request, who, "messages.retry_now", args, body.reason, shape)


@router.get("/throttles")
async def throttles(
    who: Operator, request: Request, tenant: _Name = None, provider: _Name = None
) -> Any:
    """Throttles in force, as every worker applies them."""
    state = request.app.state
    found = await waiting.throttles_list(
        state.store, tenant=tenant, provider=provider, clock=state.clock
    )
    items = waiting.throttle_rows(found, state.clock.now())
    return {"items": items, "count": len(items), "next_cursor": None}


@router.post("/throttles/clear", responses=FILED)
async def throttles_clear(body: ThrottleClearIn, who: Operator, request: Request) -> Any:
    """Remove throttles (audited); with ``wait``, answer once every live worker forgot them."""
    args = body.model_dump(exclude={"reason"})
    return await gated(request, who, "throttles.clear", args, body.reason, lambda r: r.as_dict())
