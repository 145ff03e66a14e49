"""What the runbooks' "immediate actions" do, as functions of a store.

Each act that changes messages writes one audit row (actor, reason, filter, ids) in
the same transaction as the change.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sluice.clock import Clock, SystemClock
from sluice.errors import Conflict, NotFound, ValidationError
from sluice.metrics import RELEASED
from sluice.model import Attempt, Message, Status
from sluice.store.base import AuditEntry, DlqGroup, MessageFilter, StatusReport, Store

__all__ = [
    "CANCELLABLE",
    "DlqAction",
    "dlq_cancel",
    "dlq_list",
    "dlq_retry",
    "message_cancel",
    "message_show",
    "status",
]


@dataclass(frozen=True, slots=True)
class DlqAction:
    """The result of a dead-letter retry or cancel."""

    action: str
    dry_run: bool
    matched: int
    changed: int
    ids: list[str]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def status(store: Store, clock: Clock | None = None) -> StatusReport:
    """Counts by status, age of the oldest ready message, dead letters, workers."""
    return await store.status_report((clock or SystemClock()).now())


async def message_show(store: Store, message_id: str) -> tuple[Message, list[Attempt]]:
    """A message with every attempt made at it."""
    msg = await store.message_get(message_id)
    return msg, await store.attempt_list(message_id)


async def dlq_list(store: Store, flt: MessageFilter) -> list[DlqGroup]:
    """Dead letters grouped by channel and error code (the runbook's triage query)."""
    return await store.dlq_groups(flt)


#: What an operator (or the tenant, over the API) may still cancel.
CANCELLABLE = (Status.QUEUED, Status.HELD, Status.DEAD)


async def message_cancel(
    store: Store,
    message_id: str,
    *,
    actor: str,
    reason: str | None = None,
    tenant: str | None = None,
    clock: Clock | None = None,
) -> Message:
    """Cancel one message that has not gone out (queued, held or dead); audited.

    ``tenant`` limits the act to that tenant's messages: any other is ``NotFound``,
    exactly as if it did not exist. ``Conflict`` when it is already sending or done.
    """
    require_actor(actor)
    msg = await store.message_get(message_id)
    if tenant is not None and msg.tenant != tenant:
        raise NotFound(f"no message with id {message_id!r}")
    if msg.status is Status.CANCELLED:
        return msg
    if msg.status in CANCELLABLE:
        now = (clock or SystemClock()).now()
        audit = AuditEntry(
            at=now, actor=actor, action="message.cancel", target=f"message:{msg.id}",
            reason=reason, detail={"from": msg.status.value, "tenant": msg.tenant},
        )  # fmt: skip
        if await store.message_cancel([msg.id], msg.status, now, audit):
            return await store.message_get(msg.id)
        msg = await store.message_get(msg.id)  # it moved meanwhile
        if msg.status is Status.CANCELLED:
            return msg
    raise Conflict(
        f"message {msg.id} is {msg.status.value}; only "
        f"{', '.join(s.value for s in CANCELLABLE)} messages can be cancelled"
    )


def require_actor(actor: str, reason: str | None = None, *, need_reason: bool = False) -> None:
    """Every operator act names who does it; changes of controls and limits also why."""
    if not actor or not actor.strip():
        raise ValidationError("actor", "is required: who is doing this")
    if need_reason and (not reason or not reason.strip()):
        raise ValidationError("reason", "is required: why (it goes to the audit log)")


def check_ids(ids: list[str] | None) -> None:
    """Ids an operator named (instead of a filter): at least one, each a message id."""
    if ids is not None and not ids:
        raise ValidationError("ids", "an empty list of ids matches nothing")
    for n, value in enumerate(ids or []):
        try:
            uuid.UUID(value)
        except (ValueError, TypeError, AttributeError):
            raise ValidationError(f"ids[{n}]", f"{value!r} is not a message id") from None


def _check(flt: MessageFilter, actor: str, ids: list[str] | None = None) -> None:
    if flt.limit is not None and flt.limit < 1:
        raise ValidationError("limit", "must be at least 1")
    check_ids(ids)
    if ids is not None and filter_dict(flt):
        raise ValidationError("ids", "name ids or a filter, not both")
    require_actor(actor)


async def _dlq_move(
    store: Store,
    verb: str,
    flt: MessageFilter,
    *,
    dry_run: bool,
    actor: str,
    reason: str | None,
    clock: Clock | None,
    ids: list[str] | None = None,
) -> DlqAction:
    _check(flt, actor, ids)
    # Named ids (``sluice messages list --status dead --ids | sluice dlq retry -``): those
    # still dead move, as held acts by id do; the filter is then not applied.
    by_id = ids is not None
    if ids is None:
        ids = await store.message_select(Status.DEAD, flt)
    if dry_run or not ids:
        return DlqAction(verb, dry_run, len(ids), 0, ids)
    now = (clock or SystemClock()).now()
    audit = AuditEntry(
        at=now,
        actor=actor,
        action=f"dlq.{verb}",
        target="messages",
        reason=reason,
        detail={"filter": filter_dict(flt), "by_id": by_id},
    )
    move = store.message_requeue if verb == "retry" else store.message_cancel
    changed = await move(ids, Status.DEAD, now, audit)
    if verb == "retry":
        RELEASED.labels("dlq_retry").inc(len(changed))
        store.wake()
    return DlqAction(verb, False, len(ids), len(changed), changed)


async def dlq_retry(
    store: Store,
    flt: MessageFilter,
    *,
    dry_run: bool = False,
    actor: str,
    reason: str | None = None,
    clock: Clock | None = None,
    ids: list[str] | None = None,
) -> DlqAction:
    """Put dead letters matching ``flt`` back in the queue with fresh attempts.
    With ``ids``, those of them that are dead instead."""
    return await _dlq_move(
        store, "retry", flt, dry_run=dry_run, actor=actor, reason=reason, clock=clock, ids=ids
    )


async def dlq_cancel(
    store: Store,
    flt: MessageFilter,
    *,
    dry_run: bool = False,
    actor: str,
    reason: str | None = None,
    clock: Clock | None = None,
    ids: list[str] | None = None,
) -> DlqAction:
    """Cancel dead letters matching ``flt`` for good (they stay visible as cancelled).
    With ``ids``, those of them that are dead instead."""
    return await _dlq_move(
        store, "cancel", flt, dry_run=dry_run, actor=actor, reason=reason, clock=clock, ids=ids
    )


def filter_dict(flt: MessageFilter) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("tenant", "channel", "provider", "action", "error_code", "reason", "limit"):
        value = getattr(flt, key)
        if value is not None:
            out[key] = value
    if flt.since is not None:
        out["since"] = flt.since.isoformat()
    return out


def parse_since(text: str, now: datetime) -> datetime:
    """``2025-09-18T03:00Z``, or a span back from now: ``90s``, ``15m``, ``2h``, ``7d``."""
    from datetime import UTC, timedelta

    text = text.strip()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text and text[-1] in units and text[:-1].isdigit():
        return now - timedelta(seconds=int(text[:-1]) * units[text[-1]])
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValidationError(
            "since", f"{text!r} is neither an ISO time nor a span like 15m, 2h, 7d"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)
