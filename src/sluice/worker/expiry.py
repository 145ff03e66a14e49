"""What a worker does about message expiry (``sluice.expiry``): a claimed message past its
expiry is dropped just before the provider call (``expire_claimed``), and what waits past
it is swept to ``expired`` with the control sweep (``sweep``). Both are counted in
``sluice_messages_expired_total``; an expired message never reaches the dead letters."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sluice import metrics
from sluice.expiry import past
from sluice.model import Message
from sluice.store.base import Store

__all__ = ["SWEEP_CHUNK", "expire_claimed", "sweep"]

#: Messages one sweep expires at most (the next sweep takes the rest).
SWEEP_CHUNK = 1000


def expire_claimed(tally: metrics.Tally, msg: Message, now: datetime) -> bool:
    """Is ``msg`` past its expiry at ``now``? Then it is counted, and must not be sent."""
    if not past(msg, now):
        return False
    tenant = metrics.tenant_label(msg.tenant)
    tally.inc(metrics.EXPIRED, tenant, msg.channel, msg.provider, "before_send")
    return True


async def sweep(store: Store, now: datetime, log: Any) -> int:
    """Expire what waits past its expiry (one chunk); how many."""
    rows = await store.message_expire_past(now, SWEEP_CHUNK)
    for _, tenant, channel, provider in rows:
        metrics.of(metrics.EXPIRED, metrics.tenant_label(tenant), channel, provider, "sweep").inc()
    if rows:
        log.info("messages past their expiry expired", count=len(rows))
    return len(rows)
