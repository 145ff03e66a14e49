"""Operational events to tenants (issue 14): what a tenant must act on, sent to the
``events_url`` it configured as Standard Webhooks signed with its own secret.

An event is a message like any other, enqueued through the store (so it gets retries,
breakers, controls and the audit of every attempt): tenant = the tenant it is about,
provider ``sluice_events`` (a webhook adapter that signs only with the tenant's
``sluice_events`` connection, never with the operator's secret), recipient = the
events URL, action = the event's kind, which the receiver reads as the body's
``type``. Rules kept here, in one place:

- an event goes only to the tenant it is about (``tenant`` is the message's tenant);
- a tenant without an events URL gets nothing, and nothing is enqueued;
- events about event deliveries are never sent (no loops): a dead event message is
  not reported as ``message.dead``, and the health of a tenant's events endpoint is
  not reported to that endpoint;
- an event that cannot be enqueued is logged, never raised into the path that caused
  it (a send, a refresh, an operator's act).

This module sits in the store layer so that the worker, ops and the API can all call
``emit_tenant_event``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import structlog

from sluice.errors import SluiceError, ValidationError
from sluice.model import NewMessage, Status
from sluice.store.base import MessageFilter, Store
from sluice.store.canaries import CANARY_ACTION

__all__ = [
    "DEAD_DIGEST_EVERY",
    "EVENT_KINDS",
    "EVENT_PROVIDER",
    "connection_event",
    "dead_digest",
    "emit_tenant_event",
    "is_event",
    "quota_event",
]

#: The provider (a webhook adapter) that carries events, and the connection name under
#: which each tenant's signing secret is kept.
EVENT_PROVIDER = "sluice_events"
#: Every kind of event a tenant can receive.
EVENT_KINDS = frozenset(
    {
        "endpoint.disabled",
        "endpoint.recovered",
        "message.dead",
        "connection.needs_reconsent",
        "connection.pending_reauth",
        "quota.threshold",
        "suppression.added",
    }
)
#: At most one ``message.dead`` digest per tenant this often.
DEAD_DIGEST_EVERY = timedelta(minutes=1)
#: Message ids a ``message.dead`` digest lists at most (the rest go in the next one).
DEAD_DIGEST_MAX = 1000

_log = structlog.get_logger("sluice.events")


def is_event(provider: str) -> bool:
    """Is a message of ``provider`` an event delivery (never itself the subject of one)?"""
    return provider == EVENT_PROVIDER


async def emit_tenant_event(
    store: Store,
    tenant: str,
    kind: str,
    data: Mapping[str, Any],
    *,
    now: datetime | None = None,
    about_provider: str | None = None,
    about_endpoint: str | None = None,
) -> str | None:
    """Enqueue the ``kind`` event about ``tenant`` to its events URL; its message id, or
    None when the tenant has none (or the event is about event deliveries themselves:
    ``about_provider`` is ``sluice_events``, or ``about_endpoint`` is its events URL).

    ``kind`` must be one of ``EVENT_KINDS`` (``ValidationError`` naming ``kind``
    otherwise: a programming error, raised). Anything the store says is logged and
    None returned: an event never fails what caused it."""
    if kind not in EVENT_KINDS:
        raise ValidationError("kind", f"{kind!r} is not one of {', '.join(sorted(EVENT_KINDS))}")
    if about_provider is not None and is_event(about_provider):
        return None
    try:
        settings = await store.tenant_events_get(tenant)
        if settings is None or settings.events_url is None:
            return None
        if about_endpoint is not None and _same_endpoint(about_endpoint, settings.events_url):
            return None
        event = NewMessage(
            tenant=tenant,
            channel="webhook",
            provider=EVENT_PROVIDER,
            recipient=settings.events_url,
            action=kind,
            payload={"tenant": tenant, **data},
            max_attempts=10,
        )
        [mid] = await store.enqueue_many([event], now)  # type: ignore[call-arg]
    except SluiceError as exc:
        _log.warning("could not enqueue a tenant event", tenant=tenant, kind=kind, error=str(exc))
        return None
    _log.info("tenant event enqueued", tenant=tenant, kind=kind, message_id=mid)
    return mid


def _same_endpoint(endpoint: str, url: str) -> bool:
    from urllib.parse import urlsplit

    a, b = urlsplit(endpoint), urlsplit(url)
    return (a.scheme, a.netloc.lower(), a.path or "/") == (
        b.scheme,
        b.netloc.lower(),
        b.path or "/",
    )


async def dead_digest(store: Store, now: datetime) -> dict[str, str]:
    """One ``message.dead`` event per tenant with an events URL whose messages went dead
    since its last digest, at most one per ``DEAD_DIGEST_EVERY``: the tenant's mark is
    moved first (compare-and-set), so of several workers only one sends each digest.
    Returns tenant -> the event's message id."""
    sent: dict[str, str] = {}
    for settings in await store.tenant_events_list():
        since = settings.dead_seen_until
        if since is not None and now - since < DEAD_DIGEST_EVERY:
            continue
        flt = MessageFilter(tenant=settings.tenant, since=since, limit=DEAD_DIGEST_MAX)
        dead = await store.message_select(Status.DEAD, flt)
        if dead:
            events = MessageFilter(
                tenant=settings.tenant, since=since, limit=DEAD_DIGEST_MAX, provider=EVENT_PROVIDER
            )
            skip = set(await store.message_select(Status.DEAD, events))
            # canaries (issue 15): one sent with the tenant's connection is Sluice's own
            canaries = replace(events, provider=None, action=CANARY_ACTION)
            skip |= set(await store.message_select(Status.DEAD, canaries))
            dead = [mid for mid in dead if mid not in skip]
        moved = await store.tenant_events_dead_seen(settings.tenant, since, now)
        if not moved or not dead:
            continue
        data = {"message_ids": dead, "count": len(dead), "since": since and since.isoformat()}
        mid = await emit_tenant_event(store, settings.tenant, "message.dead", data, now=now)
        if mid is not None:
            sent[settings.tenant] = mid
    return sent


async def connection_event(
    store: Store,
    tenant: str,
    provider: str,
    state: str,
    reason: str | None,
    now: datetime,
    missing_scopes: Sequence[str] = (),
) -> str | None:
    """``connection.pending_reauth`` / ``connection.needs_reconsent`` when a connection
    just moved to that state (any other state: nothing)."""
    if state not in ("pending_reauth", "needs_reconsent"):
        return None
    data = {"provider": provider, "state": state, "reason": reason,
            "missing_scopes": list(missing_scopes)}  # fmt: skip
    return await emit_tenant_event(
        store, tenant, f"connection.{state}", data, now=now, about_provider=provider
    )


async def quota_event(
    store: Store, key: str, label: str, fraction: float, now: datetime
) -> str | None:
    """``quota.threshold`` for the tenant a quota's key names (``q:<tenant>|…``); a
    quota of no one tenant tells no tenant."""
    tenant = key[2:].split("|", 1)[0] if key.startswith("q:") else ""
    if not tenant or "*" in tenant:
        return None
    data = {"limit": label, "threshold": fraction, "used_pct": round(fraction * 100)}
    return await emit_tenant_event(store, tenant, "quota.threshold", data, now=now)
