"""The two-person rule over HTTP: ``/v1/requests`` lists, shows, approves and denies the
acts waiting for a second operator, and :func:`gated` is how every operator route of an
act a rule may name does it — the act's answer, or ``202 Accepted`` with the request filed.

The actor is the API key's (``api:<name>``): the key that filed a request can never
approve it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import JSONResponse

from sluice.api.auth import Operator, Principal
from sluice.api.schemas import PROBLEMS, Text
from sluice.ops import requests as ops
from sluice.ops.render import jsonable

__all__ = ["FILED", "gated", "router"]

router = APIRouter(prefix="/v1", tags=["operator"], responses=PROBLEMS)

#: The answer of an act a two-person rule filed instead of doing, for the OpenAPI document.
FILED: dict[int | str, dict[str, Any]] = {
    202: {"description": "Filed for a second operator (the two-person rule): the request"}
}

_Id = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[0-9a-f]+$")]


async def gated(
    request: Request,
    who: Principal,
    act: str,
    args: Mapping[str, Any],
    reason: str | None,
    shape: Callable[[Any], Any],
) -> Any:
    """Do ``act`` through the two-person rule: ``shape`` of what it returned, or 202
    with the request a rule filed instead."""
    state = request.app.state
    result = await ops.perform(
        state.store, state.settings, act, args, actor=who.actor, reason=reason, clock=state.clock
    )
    if isinstance(result, ops.Filed):
        return JSONResponse(jsonable(result.as_dict()), status_code=202)
    return shape(result)


class DecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Text | None = Field(None, max_length=1000)


@router.get("/requests")
async def requests_list(
    who: Operator,
    request: Request,
    state: Literal["pending", "approved", "denied", "expired", "all"] = "pending",
    limit: Annotated[int, Query(ge=1, le=ops.MAX_LIST)] = 50,
    before: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
) -> Any:
    """Requests of the two-person rule, newest first: ``items``, ``count``, ``next_cursor``
    (pass it as ``before`` for the next page)."""
    rows, cursor = await ops.request_page(
        request.app.state.store, None if state == "all" else state, limit, before,
        request.app.state.clock,
    )  # fmt: skip
    return {"items": jsonable(rows), "count": len(rows), "next_cursor": cursor}


@router.get("/requests/{request_id}")
async def requests_show(request_id: _Id, who: Operator, request: Request) -> Any:
    """One request: the act with its arguments, who filed it, its decision and result."""
    state = request.app.state
    return jsonable(await ops.request_get(state.store, request_id, state.clock))


@router.post("/requests/{request_id}/{verb}")
async def requests_decide(
    request_id: _Id,
    verb: Literal["approve", "deny"],
    body: DecisionIn,
    who: Operator,
    request: Request,
) -> Any:
    """Approve (the act is done now, as this key, with the recorded arguments) or deny a
    pending request. The key that filed it cannot approve it (422)."""
    state = request.app.state
    if verb == "approve":
        decided = await ops.request_approve(
            state.store, state.settings, request_id, actor=who.actor, reason=body.reason,
            clock=state.clock,
        )  # fmt: skip
    else:
        decided = await ops.request_deny(
            state.store, request_id, actor=who.actor, reason=body.reason, clock=state.clock
        )
    return decided.as_dict()
