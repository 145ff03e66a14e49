"""What a store write decides, apart from how it is written: shared by both stores.

Which queued messages a connection's new state holds, what the audit log says about
an operator's act, and what a receipt does to its message. The drivers run the
queries; these decide.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sluice.connections import ConnectionState
from sluice.flow.controls import Control, Scope
from sluice.model import Status
from sluice.store._receipts import NOT_READY, advance
from sluice.store.base import AuditEntry, Throttle

__all__ = [
    "cleared_detail",
    "connection_state_audit",
    "control_clear_audit",
    "holds_queued",
    "moved_detail",
    "receipt_step",
]

#: How many moved ids an audit entry lists (the count is always whole).
AUDIT_IDS = 1000


def moved_detail(audit: AuditEntry, moved: Sequence[Any]) -> dict[str, Any]:
    """The detail of a bulk move's audit entry: what the caller gave, and what moved."""
    return {**audit.detail, "count": len(moved), "ids": list(moved[:AUDIT_IDS])}


def cleared_detail(audit: AuditEntry, cleared: Sequence[Throttle]) -> dict[str, Any]:
    """The detail of ``throttle.clear``: what the caller gave, and what was removed."""
    gone = [{"tenant": t.tenant, "target": t.provider, "until": t.until.isoformat()}
            for t in cleared]  # fmt: skip
    return {**audit.detail, "count": len(gone), "cleared": gone[:AUDIT_IDS]}


def holds_queued(state: ConnectionState, changed: bool, expected_version: int | None) -> bool:
    """Whether setting a connection to ``state`` holds its queued messages.

    An operator's act (no ``expected_version``) holds what is queued; a worker's only
    when it changed the state.
    """
    return state is not ConnectionState.ACTIVE and (changed or expected_version is None)


def connection_state_audit(
    tenant: str,
    provider: str,
    state: ConnectionState,
    reason: str,
    missing_scopes: Sequence[str],
    held: int,
    now: datetime,
    actor: str,
) -> AuditEntry:
    """The audit entry of a connection's state change."""
    return AuditEntry(
        at=now,
        actor=actor,
        action=f"connection.{state.value}",
        target=f"{tenant}/{provider}",
        reason=reason,
        detail={"missing_scopes": list(missing_scopes), "held": held},
    )


def control_clear_audit(
    scope: Scope, control: Control | None, released: int, now: datetime, actor: str, reason: str
) -> AuditEntry:
    """The audit entry of clearing a control (``control`` None: only held messages went)."""
    return AuditEntry(
        at=now,
        actor=actor,
        action="control.clear",
        target=str(scope),
        reason=reason,
        detail={
            "scope": scope.as_dict(),
            "mode": control.mode.value if control else None,
            "released": released,
        },
    )


def receipt_step(current: Status | None, receipt_status: str) -> tuple[str, Status | None]:
    """What a receipt does to a message now at ``current`` (None: no such message).

    ``(outcome, target)``: ``unmatched`` and ``not_ready`` store nothing (the latter
    waits to be tried again); ``stale`` stores the receipt only; ``applied`` stores it
    and moves the message to ``target``.
    """
    if current is None:
        return "unmatched", None
    if current in NOT_READY:
        return "not_ready", None
    target = advance(current, receipt_status)
    return ("stale", None) if target is None else ("applied", target)
