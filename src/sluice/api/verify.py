"""``POST /v1/messages/confirm`` and ``POST /v1/messages/fail``: a person decides about
messages in ``needs_confirm`` (post-send verification, issue 15, seed 003 RB-03), through
the same ``sluice.ops.verify`` as ``sluice messages confirm|fail``.

An operator key may name any tenant's messages; a tenant key only its own: an id of
another tenant answers 404 exactly as a missing one does, and nothing moves. The list of
what waits is ``GET /v1/messages?status=needs_confirm``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from sluice.api.auth import Tenant
from sluice.api.schemas import PROBLEMS, Text
from sluice.ops.verify import MAX_IDS, MAX_REASON, messages_confirm, messages_fail

__all__ = ["router"]

router = APIRouter(prefix="/v1/messages", tags=["operator"], responses=PROBLEMS)


class DecideIn(BaseModel):
    """The messages (by id) a person decided about, and why (kept in the audit log)."""

    model_config = ConfigDict(extra="forbid")

    ids: list[Annotated[Text, Field(min_length=1, max_length=64)]] = Field(
        min_length=1, max_length=MAX_IDS
    )
    reason: Text = Field(min_length=1, max_length=MAX_REASON)


@router.post("/confirm")
async def confirm(body: DecideIn, who: Tenant, request: Request) -> Any:
    """They arrived: ``needs_confirm`` → ``delivered``; audited as ``message.confirm``.
    409 when one of them is not in ``needs_confirm`` (then nothing moves)."""
    done = await messages_confirm(
        request.app.state.store, body.ids, actor=who.actor, reason=body.reason,
        tenant=who.tenant, clock=request.app.state.clock,
    )  # fmt: skip
    return done.as_dict()


@router.post("/fail")
async def fail(body: DecideIn, who: Tenant, request: Request) -> Any:
    """They did not arrive: ``needs_confirm`` → ``dead`` with code ``NOT_CONFIRMED``
    (``POST /v1/dlq/retry`` sends them again); audited as ``message.fail``."""
    done = await messages_fail(
        request.app.state.store, body.ids, actor=who.actor, reason=body.reason,
        tenant=who.tenant, clock=request.app.state.clock,
    )  # fmt: skip
    return done.as_dict()
