"""What both stores do the same way for retention (``message_purge``): each status's
parameters, checked, and the removed rows as ``Purged``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sluice.errors import ValidationError
from sluice.retention import NON_FINAL
from sluice.store import _rows
from sluice.store._codec import Codec
from sluice.store.base import Purged, PurgeRule

__all__ = ["check_limit", "counts", "purged", "rule_params"]


def rule_params(c: Codec, rule: PurgeRule) -> list[dict[str, Any]]:
    """One parameter set per status of ``rule``; ``ValidationError`` naming ``status``
    for a status that is not final, ``tenant`` for an empty tenant."""
    if rule.tenant is not None and not rule.tenant.strip():
        raise ValidationError("tenant", "must not be empty")
    out = []
    for status, before in rule.before.items():
        if status in NON_FINAL:
            raise ValidationError("status", f"{status!r} is not final: it is never purged")
        out.append({"status": status, "before": c.write_time(before), "tenant": rule.tenant})
    return out


def check_limit(limit: int) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValidationError("batch", f"must be a whole number of at least 1, not {limit!r}")


def purged(
    c: Codec, messages: Sequence[Any], attempts: Sequence[Any], receipts: Sequence[Any]
) -> list[Purged]:
    """The export's rows: each message with its attempts and receipts, in their order."""
    out = {r[0]: Purged(_rows.full_message(c, r), [], []) for r in messages}
    for r in attempts:
        out[r[0]].attempts.append(_rows.attempt(c, r))
    for r in receipts:
        out[r[0]].receipts.append(_rows.receipt(c, r))
    return list(out.values())


def counts(statuses: Sequence[Any]) -> dict[str, int]:
    """Rows deleted per status, from ``purge_delete_messages``' ``RETURNING status``."""
    out: dict[str, int] = {}
    for (status,) in statuses:
        out[status] = out.get(status, 0) + 1
    return out
