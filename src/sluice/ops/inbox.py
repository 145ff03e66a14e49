"""The ingress inbox for operators: list events, retry the ones the projector gave up on."""

from __future__ import annotations

from collections.abc import Sequence

from sluice.clock import Clock, SystemClock
from sluice.errors import ValidationError
from sluice.ops.actions import require_actor
from sluice.store.base import AuditEntry, InboxItem, Store

__all__ = ["STATES", "inbox_list", "inbox_retry"]

STATES = ("pending", "done", "dead", "rejected")


async def inbox_list(
    store: Store,
    state: str | None = None,
    provider: str | None = None,
    limit: int = 100,
    before_id: int | None = None,
) -> list[InboxItem]:
    """Events newest first (ids below ``before_id``: the next page, see
    ``ops.listings.inbox_page``); ``state="dead"`` shows what waits for an operator, and
    why; ``state="rejected"`` what was refused for naming a message its source may not
    touch."""
    if state is not None and state not in STATES:
        raise ValidationError("state", f"must be one of {list(STATES)}, not {state!r}")
    if not 1 <= limit <= 10_000:
        raise ValidationError("limit", "must be between 1 and 10000")
    return await store.inbox_list(state, provider, limit, before_id)


def check_ids(ids: Sequence[int] | None) -> None:
    """``ValidationError`` naming the first id that is not an inbox event id."""
    if ids is not None and not ids:
        raise ValidationError("ids", "an empty list of ids matches nothing")
    for n, value in enumerate(ids or []):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value < 2**63:
            raise ValidationError(f"ids[{n}]", f"{value!r} is not an inbox event id")


async def inbox_retry(
    store: Store,
    ids: Sequence[int] | None = None,
    *,
    actor: str,
    reason: str | None = None,
    clock: Clock | None = None,
) -> list[int]:
    """Give dead events (``ids``, or all) back to the projector; audited. Their ids."""
    require_actor(actor)
    check_ids(ids)
    now = (clock or SystemClock()).now()
    audit = AuditEntry(
        at=now, actor=actor, action="inbox.retry", target="inbox", reason=reason,
        detail={"ids": list(ids) if ids is not None else "all dead"},
    )  # fmt: skip
    return await store.inbox_requeue(ids, now, audit)
