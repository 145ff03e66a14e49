"""What a worker does about post-send verification (issue 15, seed 003 RB-03): with the
control sweep, sent messages whose ``verify_within`` has run out without a delivered or
read receipt move to ``needs_confirm`` (``sweep``), counted in
``sluice_messages_needs_confirm_total{why="timeout"}``. A person then confirms or fails
them (``sluice messages confirm|fail``, ``sluice.ops.verify``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sluice import metrics
from sluice.store.base import Store

__all__ = ["SWEEP_CHUNK", "sweep"]

#: Messages one sweep moves at most (the next sweep takes the rest).
SWEEP_CHUNK = 1000


async def sweep(store: Store, now: datetime, log: Any) -> int:
    """Move what is past its confirmation deadline to ``needs_confirm`` (one chunk);
    how many."""
    rows = await store.message_verify_due(now, SWEEP_CHUNK)
    for _, tenant, channel, provider in rows:
        labels = (metrics.tenant_label(tenant), channel, provider, "timeout")
        metrics.of(metrics.NEEDS_CONFIRM, *labels).inc()
    if rows:
        log.warning("sent messages not confirmed in time: needs_confirm", count=len(rows))
    return len(rows)
