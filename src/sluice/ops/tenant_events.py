"""Tenants' operational events, what an operator sets (issue 14): the URL a tenant's
events go to and the secret they are signed with (a Standard Webhooks ``whsec_``
secret, kept as the tenant's ``sluice_events`` connection: encrypted at rest like every
credential, re-encrypted by ``sluice keys rotate``). What is sent and when is in
``sluice.store.tenant_events`` (``emit_tenant_event``, re-exported here).
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sluice.clock import Clock, SystemClock
from sluice.config import Settings
from sluice.errors import ConfigError, NotFound, ValidationError
from sluice.model import AuditEntry
from sluice.netguard import NO_PRIVATE_TARGETS, check_url_syntax
from sluice.ops.actions import require_actor
from sluice.ops.connections import connection_add, connection_rotate
from sluice.secrets import SecretBox
from sluice.store.base import Store
from sluice.store.endpoints import TenantEvents
from sluice.store.tenant_events import EVENT_KINDS, EVENT_PROVIDER, emit_tenant_event

__all__ = [
    "EVENT_KINDS",
    "EventsUrl",
    "emit_tenant_event",
    "events_url_clear",
    "events_url_get",
    "events_url_set",
]


@dataclass(frozen=True, slots=True)
class EventsUrl:
    """A tenant's events URL; ``secret`` only when it was made or replaced just now (it is
    shown once, and never again)."""

    tenant: str
    events_url: str | None
    secret: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"tenant": self.tenant, "events_url": self.events_url, "secret": self.secret}


def _tenant(tenant: Any) -> str:
    if not isinstance(tenant, str) or not tenant.strip():
        raise ValidationError("tenant", "is required")
    if len(tenant) > 128 or not tenant.isprintable() or tenant != tenant.strip():
        raise ValidationError("tenant", f"{tenant[:80]!r} is not a tenant name")
    return tenant


def _url(url: Any, settings: Settings | None) -> str:
    if not isinstance(url, str) or not url.strip():
        raise ValidationError("events_url", "is required")
    if len(url) > 2048 or not url.isprintable():
        raise ValidationError("events_url", "is not a URL (too long, or control characters)")
    allow_loopback = settings.allow_loopback_targets if settings else False
    private = settings.private_targets if settings else NO_PRIVATE_TARGETS
    problem = check_url_syntax(url, allow_loopback=allow_loopback, private=private)
    if problem is not None:
        raise ValidationError("events_url", problem)
    parts = urlsplit(url)
    # https only: the events carry message ids and states. Plain http only to a loopback
    # receiver the operator allowed (SLUICE_ALLOW_LOOPBACK_TARGETS: the demo, the tests).
    local = (parts.hostname or "") in ("localhost", "127.0.0.1", "::1")
    if parts.scheme != "https" and not (allow_loopback and local):
        raise ValidationError("events_url", f"must be an https:// URL, not {url[:200]!r}")
    return url


def _secret(secret: str) -> str:
    body = secret.strip().removeprefix("whsec_")
    try:
        key = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if not secret.startswith("whsec_") or len(key) < 16:
        raise ValidationError(
            "secret", "must be a Standard Webhooks secret: whsec_ and base64 of 16 bytes or more"
        )
    return secret.strip()


async def events_url_set(
    store: Store,
    box: SecretBox | None,
    *,
    tenant: str,
    url: str,
    secret: str | None = None,
    actor: str,
    reason: str | None = None,
    settings: Settings | None = None,
    clock: Clock | None = None,
) -> EventsUrl:
    """Send ``tenant``'s events to ``url`` (https; refused where the SSRF guard refuses),
    signed with ``secret`` — or, when none is given, the tenant's current one, or a new
    one made here and returned once. Audited; the secret never is."""
    require_actor(actor)
    tenant, url = _tenant(tenant), _url(url, settings)
    new_secret = _secret(secret) if secret is not None else None
    if box is None:
        raise ConfigError("SLUICE_SECRET_KEY is not set: the events secret cannot be encrypted")
    try:
        current = await store.connection_get(tenant, EVENT_PROVIDER)
    except NotFound:
        current = None
    if current is None or current.state.value != "active" or new_secret is not None:
        made = new_secret or "whsec_" + base64.b64encode(os.urandom(24)).decode()
        secrets = {"secret": made}
        if current is None:
            await connection_add(store, box, tenant=tenant, provider=EVENT_PROVIDER,
                                 secrets=secrets, scopes=[], actor=actor, reason=reason,
                                 clock=clock)  # fmt: skip
        else:
            await connection_rotate(store, box, tenant=tenant, provider=EVENT_PROVIDER,
                                    secrets=secrets, scopes=None, actor=actor, reason=reason,
                                    clock=clock)  # fmt: skip
        shown: str | None = made if new_secret is None else None
    else:
        shown = None
    now = (clock or SystemClock()).now()
    audit = AuditEntry(
        at=now, actor=actor, action="tenant.events_url.set", target=tenant, reason=reason,
        detail={"tenant": tenant, "events_url": url, "secret_changed": current is None
                or new_secret is not None or shown is not None},
    )  # fmt: skip
    await store.tenant_events_set(tenant, url, now, audit)
    return EventsUrl(tenant, url, shown)


async def events_url_clear(
    store: Store, *, tenant: str, actor: str, reason: str | None = None, clock: Clock | None = None
) -> EventsUrl:
    """Stop sending ``tenant`` events (its secret is kept for a later ``set``). Audited."""
    require_actor(actor)
    tenant = _tenant(tenant)
    current = await store.tenant_events_get(tenant)
    if current is None or current.events_url is None:
        raise ValidationError("tenant", f"{tenant!r} has no events URL to clear")
    now = (clock or SystemClock()).now()
    audit = AuditEntry(
        at=now, actor=actor, action="tenant.events_url.clear", target=tenant, reason=reason,
        detail={"tenant": tenant, "events_url": current.events_url},
    )  # fmt: skip
    await store.tenant_events_set(tenant, None, now, audit)
    return EventsUrl(tenant, None)


async def events_url_get(store: Store, tenant: str | None = None) -> list[TenantEvents]:
    """The tenants with an events URL (``tenant``: that one, if it has one)."""
    if tenant is not None:
        tenant = _tenant(tenant)
        one = await store.tenant_events_get(tenant)
        return [one] if one is not None and one.events_url is not None else []
    return await store.tenant_events_list()
