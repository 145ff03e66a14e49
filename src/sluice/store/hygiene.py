"""Suppressing and lifting a recipient: the one way every writer does it.

Ingress (an inbound STOP, a provider's opt-out event, an email bounce or complaint), the
worker (a provider answering "unsubscribed") and the operator's acts
(``sluice.ops.suppressions``) all go through ``suppress`` and ``lift``, so each change is
audited the same way, in the same transaction, and a new suppression reaches the one
place where the tenant will be told of it (``suppression_added``).
"""

from __future__ import annotations

from datetime import datetime

from sluice.flow.hygiene import Suppression
from sluice.model import AuditEntry
from sluice.store.base import Store
from sluice.store.tenant_events import emit_tenant_event

__all__ = ["lift", "suppress", "suppression_added", "suppression_audit"]


def suppression_audit(
    s: Suppression, action: str, actor: str | None = None, at: datetime | None = None
) -> AuditEntry:
    """The audit row of a change to ``s`` (``suppression.add`` or ``suppression.remove``)."""
    return AuditEntry(
        at=at or s.created_at,
        actor=actor or s.actor,
        action=action,
        target=f"{s.tenant}/{s.channel}/{s.recipient}",
        reason=s.reason,
        detail={
            "tenant": s.tenant,
            "channel": s.channel,
            "recipient": s.recipient,
            "reason": s.reason,
            "source": s.source,
        },
    )


async def suppress(store: Store, s: Suppression) -> bool:
    """Suppress ``s.recipient`` for ``s.tenant`` on ``s.channel``, audited; False when
    they already were (nothing written, nobody told twice)."""
    added = await store.suppression_put(s, suppression_audit(s, "suppression.add"))
    if added:
        await suppression_added(store, s)
    return added


async def lift(
    store: Store, tenant: str, channel: str, recipient: str, actor: str, reason: str,
    source: str, now: datetime,
) -> Suppression | None:  # fmt: skip
    """Lift a suppression, audited with who and why; the entry removed, or None."""
    probe = Suppression(tenant, channel, recipient, reason, source, actor, now)
    audit = suppression_audit(probe, "suppression.remove", actor, now)
    return await store.suppression_delete(tenant, channel, recipient, audit)


async def suppression_added(store: Store, s: Suppression) -> None:
    """A recipient was newly suppressed: tell the tenant (``suppression.added`` to its
    events URL, through the outbox; nothing when it has none). Every new suppression,
    whoever recorded it, passes through here once; a repeated STOP or bounce does not
    (``suppress`` returns False first)."""
    await emit_tenant_event(
        store,
        s.tenant,
        "suppression.added",
        {
            "channel": s.channel,
            "recipient": s.recipient,
            "reason": s.reason,
            "source": s.source,
            "created_at": s.created_at.isoformat(),
        },
        now=s.created_at,
    )
