"""Operator listings on-call reads (issue 14): ``/v1/attempts`` and ``/v1/top``, through
``sluice.ops.listings`` as the CLI's ``attempts list`` and ``top`` are. (``/v1/status?by=``
and ``/v1/messages`` use the same module from their own routers.)"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import AwareDatetime

from sluice.api.auth import Operator
from sluice.api.schemas import PROBLEMS, Text
from sluice.model import AttemptOutcome
from sluice.ops import listings
from sluice.store.base import MessageFilter

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["operator"], responses=PROBLEMS)

_Name = Annotated[Text | None, Query(min_length=1, max_length=128)]


@router.get("/attempts")
async def attempts_list(
    who: Operator,
    request: Request,
    message_id: Annotated[Text | None, Query(min_length=1, max_length=64)] = None,
    worker_id: Annotated[Text | None, Query(min_length=1, max_length=300)] = None,
    provider: _Name = None,
    outcome: AttemptOutcome | None = None,
    error_code: _Name = None,
    since: Annotated[AwareDatetime | None, Query(description="Finished at or after")] = None,
    until: Annotated[AwareDatetime | None, Query(description="Finished before")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    cursor: Annotated[Text | None, Query(max_length=20)] = None,
) -> Any:
    """Attempts, newest first, a page at a time: ``{"items", "count", "next_cursor"}``."""
    page = await listings.attempt_page(
        request.app.state.store, message_id=message_id, worker_id=worker_id,
        provider=provider, outcome=outcome.value if outcome else None, error_code=error_code,
        since=since, until=until, cursor=cursor, limit=limit,
    )  # fmt: skip
    return page.as_dict()


@router.get("/top")
async def top(
    who: Operator,
    request: Request,
    by: Literal["tenant", "provider", "action", "channel"] = "tenant",
    since: Annotated[
        float, Query(gt=0, le=listings.MAX_WINDOW, description="The window: seconds back")
    ] = 3600,
    tenant: _Name = None,
    channel: _Name = None,
    provider: _Name = None,
    action: _Name = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
) -> Any:
    """The groups that created the most messages in the window, largest first, with
    where those messages are now (sent, failed at least once, dead, waiting, held)."""
    state = request.app.state
    flt = MessageFilter(tenant=tenant, channel=channel, provider=provider, action=action)
    page = await listings.top(state.store, by, since, limit=limit, flt=flt, clock=state.clock)
    return page.as_dict(by=by, since_seconds=since)
