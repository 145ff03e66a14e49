"""Operator routes of issue 14: endpoint health (``/v1/endpoints``) and tenants' events
URL (``/v1/tenants/{tenant}/events-url``). Each calls the ``sluice.ops`` act the CLI
calls."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from sluice.api.auth import Operator
from sluice.api.requests import FILED, gated
from sluice.api.schemas import PROBLEMS, Text
from sluice.ops.endpoints import endpoint_disable, endpoints_list
from sluice.ops.tenant_events import events_url_get, events_url_set
from sluice.secrets import SecretBox

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["operator"], responses=PROBLEMS)

_Tenant = Annotated[Text, Path(min_length=1, max_length=128)]


class EndpointActIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: Why (the audit log); required to disable.
    reason: Text | None = Field(None, min_length=1, max_length=1000)


class EventsUrlIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events_url: Text = Field(min_length=1, max_length=2048)
    #: A Standard Webhooks secret (``whsec_…``); omitted: keep the tenant's, or make one
    #: (returned once in the answer).
    secret: Text | None = Field(None, min_length=1, max_length=200)
    reason: Text | None = Field(None, max_length=1000)


@router.get("/endpoints")
async def endpoints(
    who: Operator,
    request: Request,
    tenant: Annotated[Text | None, Query(min_length=1, max_length=128)] = None,
    state: Literal["healthy", "failing", "disabled"] | None = None,
) -> Any:
    """Webhook and http endpoints: state, failing since, last success, failure rate."""
    found = await endpoints_list(request.app.state.store, tenant=tenant, state=state)
    return {"items": [e.as_dict() for e in found], "count": len(found), "next_cursor": None}


@router.post("/endpoints/{endpoint_id}/{verb}", responses=FILED)
async def endpoint_act(
    endpoint_id: Annotated[Text, Path(min_length=1, max_length=64)],
    verb: Literal["enable", "disable"],
    body: EndpointActIn,
    who: Operator,
    request: Request,
) -> Any:
    """Disable an endpoint (its messages are held; containment, never waits), or enable it
    (they are released; a two-person rule may file it: 202)."""
    state = request.app.state
    if verb == "enable":
        args = {"id": endpoint_id}
        return await gated(request, who, "endpoint.enable", args, body.reason, _as_dict)
    change = await endpoint_disable(
        state.store, endpoint_id, actor=who.actor, reason=body.reason, clock=state.clock
    )
    return change.as_dict()


def _as_dict(result: Any) -> Any:
    return result.as_dict()


@router.get("/tenants/{tenant}/events-url")
async def events_url(tenant: _Tenant, who: Operator, request: Request) -> Any:
    """Where the tenant's operational events go (its secret is never shown again)."""
    found = await events_url_get(request.app.state.store, tenant)
    url = found[0].events_url if found else None
    return {"tenant": tenant, "events_url": url}


@router.put("/tenants/{tenant}/events-url")
async def events_url_put(
    tenant: _Tenant, body: EventsUrlIn, who: Operator, request: Request
) -> Any:
    """Send the tenant's events to ``events_url``, signed (Standard Webhooks) with its
    secret; a secret made here is in the answer, once."""
    state = request.app.state
    settings = state.settings
    box = (
        SecretBox(settings.secret_key, settings.secret_key_previous)
        if settings.secret_key
        else None
    )
    done = await events_url_set(
        state.store, box, tenant=tenant, url=body.events_url, secret=body.secret,
        actor=who.actor, reason=body.reason, settings=settings, clock=state.clock,
    )  # fmt: skip
    return done.as_dict()


@router.delete("/tenants/{tenant}/events-url", responses=FILED)
async def events_url_delete(tenant: _Tenant, who: Operator, request: Request) -> Any:
    """Stop sending the tenant events (a two-person rule may file it: 202)."""
    return await gated(request, who, "events_url.clear", {"tenant": tenant}, None, _as_dict)
