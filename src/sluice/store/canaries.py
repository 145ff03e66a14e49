"""The plain type of a golden-path canary (issue 15): one marked message sent to a
configured test recipient, and what became of it (``sluice.ops.canary`` runs them)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sluice import metrics

__all__ = ["CANARY_ACTION", "CANARY_OUTCOMES", "CanaryRun"]

#: The action every canary message carries (defined with the metrics, which count it
#: apart): the mark that keeps canaries out of tenants' figures (``message_breakdown``,
#: the ``tenant`` label of counts) and that tenants may not use themselves.
CANARY_ACTION = metrics.CANARY_ACTION
#: What a canary can come to; ``pending`` while it waits for its receipt.
CANARY_OUTCOMES = ("pending", "ok", "failed", "missing")


@dataclass(frozen=True, slots=True)
class CanaryRun:
    """One canary: which target sent it, its message, and its outcome."""

    id: str
    target: str
    provider: str
    tenant: str
    recipient: str
    message_id: str | None
    sent_at: datetime
    outcome: str
    actor: str
    receipt_at: datetime | None = None
    error: str | None = None
