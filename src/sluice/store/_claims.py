"""What a claim shares between the dialects: where its scan of tenants starts.

A claim visits at most ``limit`` tenants that have something ready, in name order,
starting after a cursor each store keeps. When a claim filled its slots from ``limit``
tenants, there may be more after the last of them: the next claim starts there, so that
with more tenants than slots every tenant's turn comes round. Otherwise the scan saw
every tenant and the next one starts from the beginning again.
"""

from __future__ import annotations

from collections.abc import Sequence

from sluice.model import Message

__all__ = ["next_claim_start"]


def next_claim_start(claimed: Sequence[Message], limit: int) -> str:
    """The cursor for the claim after one that returned ``claimed``."""
    tenants = {m.tenant for m in claimed}
    if len(tenants) < limit:
        return ""
    return max(tenants)
