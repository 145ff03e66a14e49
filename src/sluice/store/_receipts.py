"""How a delivery receipt moves a message: shared by both stores.

Receipts arrive in any order (a ``read`` before its ``delivered``, a late ``sent``).
Each status has a rank; a receipt moves the message only to a higher rank, so the
final status is the same whatever order the provider's webhooks arrived in.
"""

from __future__ import annotations

from sluice.model import Status
from sluice.store.base import Receipt

__all__ = ["NOT_READY", "advance", "failure_of"]

#: The message has no outcome yet (queued, sending, held): the receipt must wait.
NOT_READY = frozenset({Status.QUEUED, Status.SENDING, Status.HELD})

#: Where a receipt's canonical status takes the message (None: it records only).
_TARGET = {
    "accepted": None,
    "deferred": None,
    "sent": Status.SENT,
    "delivered": Status.DELIVERED,
    "read": Status.READ,
    "undelivered": Status.BOUNCED,
    "failed": Status.BOUNCED,
    "bounced": Status.BOUNCED,
}
#: ``needs_confirm`` (post-send verification, issue 15) sits between sent and delivered: a
#: late positive receipt settles it, a ``sent`` one does not. A failed or undelivered
#: receipt of a message that asked for verification lands there instead of ``bounced``
#: (``receipt_advance`` decides that, as it knows the message's ``verify_within``).
_RANK = {
    Status.SENT: 1.0,
    Status.NEEDS_CONFIRM: 1.5,
    Status.DELIVERED: 2.0,
    Status.BOUNCED: 2.0,
    Status.READ: 3.0,
}


def advance(current: Status, receipt_status: str) -> Status | None:
    """The status ``current`` moves to on this receipt, or None to stay.

    Only messages with a sending outcome move (``sent`` and the receipt statuses);
    dead, cancelled and shadowed messages keep their status, the receipt is kept.
    """
    target = _TARGET.get(receipt_status)
    if target is None or current not in _RANK:
        return None
    return target if _RANK[target] > _RANK[current] else None


def failure_of(receipt: Receipt, target: Status) -> tuple[str | None, str | None]:
    """``(last_error_code, last_error)`` a receipt writes on its message: set when it
    bounced (the provider's code and words), ``(None, None)`` (keep them) otherwise."""
    if target is not Status.BOUNCED:
        return None, None
    return (
        receipt.error_code or receipt.status,
        receipt.detail or f"provider reported {receipt.status}",
    )
