"""``/v1/suppressions``: list, add and remove suppressed recipients, through
``sluice.ops.suppressions`` (as ``sluice suppressions`` does).

An operator key names the tenant; a tenant key works on its own list only (its tenant
is set by the key: naming another is refused, and nothing of another tenant's is ever
listed). Every change is audited with the key's name as the actor.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from sluice.api.auth import Principal, Tenant
from sluice.api.problems import Problem
from sluice.api.requests import FILED, gated
from sluice.api.schemas import PROBLEMS, Text
from sluice.ops import suppressions as ops

__all__ = ["router"]

router = APIRouter(prefix="/v1/suppressions", tags=["suppressions"], responses=PROBLEMS)

Medium = Literal["email", "sms", "whatsapp"]


class SuppressionOut(BaseModel):
    tenant: str
    channel: str
    recipient: str
    reason: str
    source: str
    actor: str
    created_at: str


class SuppressionPage(BaseModel):
    items: list[SuppressionOut]
    count: int
    next_cursor: str | None = None


class SuppressionIn(BaseModel):
    """A recipient on one medium; ``tenant`` with an operator key only."""

    model_config = ConfigDict(extra="forbid")

    tenant: Text | None = Field(None, min_length=1, max_length=128)
    channel: Medium
    recipient: Text = Field(min_length=1, max_length=2048)
    reason: Text = Field("", max_length=500)


class Changed(BaseModel):
    suppression: SuppressionOut
    #: False: the recipient already was suppressed (the first entry is kept).
    created: bool


def _tenant(who: Principal, given: str | None, *, required: bool) -> str | None:
    if who.tenant is not None:
        if given is not None and given != who.tenant:
            raise Problem(
                422, "tenant: is set by your API key; leave it out", field="tenant",
                kind="validation",
            )  # fmt: skip
        return who.tenant
    if given is None and required:
        raise Problem(
            422, "tenant: is required with an operator key", field="tenant", kind="validation"
        )
    return given


@router.get("", response_model=SuppressionPage)
async def list_suppressions(
    who: Tenant,
    request: Request,
    tenant: Annotated[Text | None, Query(max_length=128, description="Operator keys only")] = None,
    channel: Medium | None = None,
    recipient: Annotated[Text | None, Query(min_length=1, max_length=2048)] = None,
    limit: Annotated[int, Query(ge=1, le=ops.MAX_PAGE)] = 100,
    cursor: Annotated[Text | None, Query(max_length=4096)] = None,
) -> dict[str, Any]:
    """Suppressed recipients, by tenant, channel and recipient, a page at a time."""
    page = await ops.suppression_list(
        request.app.state.store, tenant=_tenant(who, tenant, required=False), channel=channel,
        recipient=recipient, limit=limit, cursor=cursor,
    )  # fmt: skip
    return page.as_dict()


@router.post("", response_model=Changed)
async def add_suppression(body: SuppressionIn, who: Tenant, request: Request) -> dict[str, Any]:
    """Suppress a recipient for a tenant on one medium; audited. Adding one that exists
    changes nothing (``created`` false)."""
    entry, created = await ops.suppression_add(
        request.app.state.store, tenant=_tenant(who, body.tenant, required=True) or "",
        channel=body.channel, recipient=body.recipient, actor=who.actor, reason=body.reason,
        clock=request.app.state.clock,
    )  # fmt: skip
    return {"suppression": ops.suppression_as_dict(entry), "created": created}


@router.delete("", response_model=SuppressionOut, responses=FILED)
async def remove_suppression(
    who: Tenant,
    request: Request,
    channel: Medium,
    recipient: Annotated[Text, Query(min_length=1, max_length=2048)],
    tenant: Annotated[Text | None, Query(max_length=128, description="Operator keys only")] = None,
    reason: Annotated[Text, Query(max_length=500)] = "",
) -> Any:
    """Lift a suppression; audited. 404 when the recipient is not suppressed there; 202
    with the request when a two-person rule files it for a second operator."""
    args = {"tenant": _tenant(who, tenant, required=True) or "", "channel": channel,
            "recipient": recipient}  # fmt: skip
    return await gated(
        request, who, "suppression.remove", args, reason or None, ops.suppression_as_dict
    )
