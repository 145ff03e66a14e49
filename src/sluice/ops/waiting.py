"""Acting on what waits: pull retries in once a provider recovered (``retry_now``), and
see and clear the throttles providers asked for (``throttles_list``, ``throttle_clear``).
Shared by the CLI and the HTTP API; every change is audited.

``retry_now`` moves only queued messages waiting out a retry backoff or a deferral:
never one being sent, held, parked by a pause, final, or a first send the caller
scheduled for later. ``throttle_clear`` removes the marks from the store and from every
running worker's memory (a flow signal at once, and the flow epoch, which it waits for
every live worker to acknowledge, as a control change does).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sluice.clock import Clock, SystemClock
from sluice.errors import ValidationError
from sluice.metrics import RELEASED
from sluice.ops.actions import DlqAction, filter_dict, require_actor
from sluice.ops.controls import AckReport, wait_for_ack
from sluice.store._params import uuid_or_none
from sluice.store.base import AuditEntry, MessageFilter, Store, Throttle

__all__ = [
    "MAX_RETRY_NOW",
    "ThrottleClear",
    "retry_now",
    "throttle_clear",
    "throttle_matches",
    "throttle_rows",
    "throttles_list",
]

#: Most messages one ``retry_now`` moves (and ids it takes); run it again for more.
MAX_RETRY_NOW = 100_000


async def retry_now(
    store: Store,
    flt: MessageFilter,
    ids: Sequence[str] | None = None,
    *,
    dry_run: bool = False,
    actor: str,
    reason: str | None = None,
    clock: Clock | None = None,
) -> DlqAction:
    """Make queued messages waiting on a backoff or a deferral due now (those matching
    ``flt``, and among ``ids`` when given; soonest due first, at most ``flt.limit`` or
    ``MAX_RETRY_NOW``). Attempts and deferrals are kept. Audited as ``message.retry_now``;
    ``dry_run`` counts and changes nothing."""
    require_actor(actor)
    if flt.limit is not None and not 1 <= flt.limit <= MAX_RETRY_NOW:
        raise ValidationError("limit", f"must be between 1 and {MAX_RETRY_NOW}")
    if ids is not None:
        if isinstance(ids, str) or not 1 <= len(ids) <= MAX_RETRY_NOW:
            raise ValidationError("ids", f"must list between 1 and {MAX_RETRY_NOW} message ids")
        for i, mid in enumerate(ids):
            if not isinstance(mid, str) or uuid_or_none(mid) is None:
                raise ValidationError(f"ids[{i}]", f"{str(mid)[:80]!r} is not a message id")
    if flt.limit is None:
        flt = replace(flt, limit=MAX_RETRY_NOW)
    now = (clock or SystemClock()).now()
    found = await store.message_waiting(flt, now, ids)
    if dry_run or not found:
        return DlqAction("retry-now", dry_run, len(found), 0, found)
    detail: dict[str, Any] = {"filter": filter_dict(flt)}
    if ids is not None:
        detail["ids_given"] = len(ids)
    audit = AuditEntry(
        at=now, actor=actor, action="message.retry_now", target="messages", reason=reason,
        detail=detail,
    )  # fmt: skip
    moved = await store.message_retry_now(found, now, audit)
    RELEASED.labels("retry_now").inc(len(moved))
    return DlqAction("retry-now", False, len(found), len(moved), moved)


# -- throttles -------------------------------------------------------------------------


def throttle_matches(t: Throttle, tenant: str | None, provider: str | None) -> bool:
    """Does ``t`` fall under the selection? ``provider`` names a target exactly
    (``webhook@https://…``) or a provider, which covers each of its endpoints."""
    if tenant is not None and t.tenant != tenant:
        return False
    return provider is None or t.provider == provider or t.provider.startswith(provider + "@")


async def throttles_list(
    store: Store,
    *,
    tenant: str | None = None,
    provider: str | None = None,
    clock: Clock | None = None,
) -> list[Throttle]:
    """The throttles in force (every worker applies them), optionally of one tenant
    and/or provider (or target)."""
    now = (clock or SystemClock()).now()
    return [t for t in await store.throttle_list(now) if throttle_matches(t, tenant, provider)]


@dataclass(frozen=True, slots=True)
class ThrottleClear:
    """What ``throttle_clear`` removed (or, with ``dry_run``, would remove)."""

    dry_run: bool
    throttles: list[Throttle]
    ack: AckReport | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "count": len(self.throttles),
            "items": [_throttle_dict(t) for t in self.throttles],
            "ack": self.ack.as_dict() if self.ack else None,
        }


def _throttle_dict(t: Throttle) -> dict[str, Any]:
    return {
        "tenant": t.tenant,
        "target": t.provider,
        "until": t.until.isoformat(),
        "reason": t.reason,
        "set_at": t.set_at.isoformat(),
    }


async def throttle_clear(
    store: Store,
    *,
    tenant: str | None = None,
    provider: str | None = None,
    everything: bool = False,
    dry_run: bool = False,
    actor: str,
    reason: str,
    wait: bool = True,
    timeout: float = 10.0,
    clock: Clock | None = None,
) -> ThrottleClear:
    """Remove the throttles in force that match (``everything`` for all of them: a
    selection is required otherwise), audited as ``throttle.clear``; with ``wait``,
    return once every live worker has applied the change. Messages already deferred
    by a throttle keep their time: ``retry_now`` pulls them in."""
    require_actor(actor, reason, need_reason=True)
    for name, value in (("tenant", tenant), ("provider", provider)):
        if value is not None and (not value.strip() or len(value) > 2048 or "\x00" in value):
            raise ValidationError(name, "must be a non-empty name without NUL characters")
    if tenant is None and provider is None and not everything:
        raise ValidationError("provider", "name a tenant and/or a provider, or ask for all")
    clock = clock or SystemClock()
    found = await throttles_list(store, tenant=tenant, provider=provider, clock=clock)
    if dry_run or not found:
        return ThrottleClear(dry_run, found)
    now = clock.now()
    selection = {"tenant": tenant, "provider": provider, "all": everything}
    audit = AuditEntry(
        at=now, actor=actor, action="throttle.clear", target="throttles", reason=reason,
        detail={"filter": {k: v for k, v in selection.items() if v}},
    )  # fmt: skip
    cleared = await store.throttle_clear([(t.tenant, t.provider) for t in found], now, audit)
    ack = None
    if wait:
        ack = await wait_for_ack(store, await store.flow_version(), timeout=timeout, clock=clock)
    return ThrottleClear(False, cleared, ack)


def throttle_rows(throttles: Sequence[Throttle], now: datetime) -> list[dict[str, Any]]:
    """Throttles as the listing shows them, with the seconds each has left."""
    return [
        {**_throttle_dict(t), "remaining_seconds": round((t.until - now).total_seconds(), 1)}
        for t in throttles
    ]
