"""Endpoint health, what an operator does about it (issue 14): list endpoints with their
state, last success and failure rate; disable one (its messages are held); enable one
(its held messages go back to the queue). One implementation for the CLI and the API;
every change audited. The rules a worker applies live in ``sluice.worker.endpoints``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sluice.clock import Clock, SystemClock
from sluice.errors import ValidationError
from sluice.metrics import RELEASED
from sluice.model import AuditEntry, Status
from sluice.ops.actions import require_actor
from sluice.store.base import MessageFilter, Store
from sluice.store.endpoints import ENDPOINT_STATES, HOLD_PREFIX, EndpointInfo, endpoint_event
from sluice.store.tenant_events import emit_tenant_event

__all__ = [
    "EndpointChange",
    "checked_id",
    "endpoint_disable",
    "endpoint_enable",
    "endpoints_list",
]


@dataclass(frozen=True, slots=True)
class EndpointChange:
    """An endpoint after an operator's act, and the messages it released."""

    endpoint: EndpointInfo
    released: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {**self.endpoint.as_dict(), "released": len(self.released)}


async def endpoints_list(
    store: Store, *, tenant: str | None = None, state: str | None = None
) -> list[EndpointInfo]:
    """Every endpoint webhooks and ``http`` actions reached, by tenant and endpoint."""
    if state is not None and state not in ENDPOINT_STATES:
        raise ValidationError("state", f"{state!r} is not one of {', '.join(ENDPOINT_STATES)}")
    if tenant is not None and not tenant.strip():
        raise ValidationError("tenant", "must not be empty")
    return await store.endpoint_list(tenant=tenant, state=state)


async def endpoint_disable(
    store: Store,
    endpoint_id: str,
    *,
    actor: str,
    reason: str | None = None,
    clock: Clock | None = None,
) -> EndpointChange:
    """Disable an endpoint now: workers hold its messages (with this reason) until it is
    enabled. The tenant is told (``endpoint.disabled``)."""
    require_actor(actor, reason, need_reason=True)
    current = await store.endpoint_get(_checked(endpoint_id))
    now = (clock or SystemClock()).now()
    why = f"disabled by {actor}: {reason}"[:400]
    audit = AuditEntry(
        at=now, actor=actor, action="endpoint.disable", target=current.id, reason=reason,
        detail={"tenant": current.tenant, "endpoint": current.endpoint, "was": current.state},
    )  # fmt: skip
    moved = await store.endpoint_move(current.id, None, "disabled", why, now, audit)
    assert moved is not None  # any state moves; the row exists
    await emit_tenant_event(
        store, moved.tenant, "endpoint.disabled", endpoint_event(moved), now=now,
        about_provider=moved.provider, about_endpoint=moved.endpoint,
    )  # fmt: skip
    return EndpointChange(moved)


async def endpoint_enable(
    store: Store,
    endpoint_id: str,
    *,
    actor: str,
    reason: str | None = None,
    clock: Clock | None = None,
) -> EndpointChange:
    """Enable an endpoint (healthy again, its failing streak forgotten) and put the
    messages held for it back in the queue, audited like ``sluice held release``. A
    tenant whose endpoint was disabled is told (``endpoint.recovered``)."""
    require_actor(actor)
    current = await store.endpoint_get(_checked(endpoint_id))
    now = (clock or SystemClock()).now()
    audit = AuditEntry(
        at=now, actor=actor, action="endpoint.enable", target=current.id, reason=reason,
        detail={"tenant": current.tenant, "endpoint": current.endpoint, "was": current.state},
    )  # fmt: skip
    moved = await store.endpoint_move(current.id, None, "healthy", None, now, audit)
    assert moved is not None
    # The endpoint is enabled first: a worker that claims a released message then finds
    # it enabled (workers re-read the disabled set before they hold anything).
    flt = MessageFilter(tenant=current.tenant, reason=f"{HOLD_PREFIX}{current.endpoint} (")
    ids = await store.message_select(Status.HELD, flt)
    released: list[str] = []
    if ids:
        release = AuditEntry(
            at=now, actor=actor, action="held.release", target="messages", reason=reason,
            detail={"filter": {"tenant": flt.tenant, "reason": flt.reason}, "by_id": False,
                    "endpoint_id": current.id},
        )  # fmt: skip
        released = await store.message_requeue(ids, Status.HELD, now, release)
        RELEASED.labels("held_release").inc(len(released))
        store.wake()
    if current.state == "disabled":
        await emit_tenant_event(
            store, moved.tenant, "endpoint.recovered", endpoint_event(moved), now=now,
            about_provider=moved.provider, about_endpoint=moved.endpoint,
        )  # fmt: skip
    return EndpointChange(moved, released)


def checked_id(endpoint_id: Any) -> str:
    """``endpoint_id`` if it can name an endpoint; ``ValidationError`` naming ``id``."""
    return _checked(endpoint_id)


def _checked(endpoint_id: str) -> str:
    if not isinstance(endpoint_id, str) or not endpoint_id.strip():
        raise ValidationError("id", "an endpoint id is required (see: sluice endpoints list)")
    if len(endpoint_id) > 64 or not endpoint_id.isprintable():
        raise ValidationError("id", f"{endpoint_id[:80]!r} is not an endpoint id")
    return endpoint_id
