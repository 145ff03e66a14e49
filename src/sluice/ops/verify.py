"""Post-send verification (issue 15, seed 003 RB-03): a person decides about messages in
``needs_confirm``.

A message sent with ``verify_within`` that got no delivered or read receipt in time (or
got a failed one) waits in ``needs_confirm``. ``messages_confirm`` says it arrived: it
becomes ``delivered``. ``messages_fail`` says it did not: it becomes ``dead`` with code
``NOT_CONFIRMED``, so ``sluice dlq retry`` (by that code) sends it again. Each act names
its messages by id, takes a reason, and is audited (``message.confirm``,
``message.fail``) with the ids it moved. The CLI (``sluice messages confirm|fail``) and
the API (``POST /v1/messages/confirm|fail``) call these.

``tenant`` limits an act to that tenant's messages: an id of another tenant is
``NotFound``, worded as for a missing one, and nothing moves. Every id is checked before
anything moves: one wrong id refuses the whole act.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from sluice.clock import Clock, SystemClock
from sluice.errors import Conflict, NotFound, ValidationError
from sluice.model import AuditEntry, Message, Status
from sluice.ops.actions import check_ids, require_actor
from sluice.outcome import ErrorCode
from sluice.store.base import Store

__all__ = ["MAX_IDS", "VerifyAct", "messages_confirm", "messages_fail"]

#: Most messages one confirm or fail names (a person decides about each).
MAX_IDS = 1000
#: Longest reason kept in the audit log.
MAX_REASON = 1000

Verb = Literal["confirm", "fail"]
#: Where each act takes a message in ``needs_confirm``.
TARGET: dict[str, Status] = {"confirm": Status.DELIVERED, "fail": Status.DEAD}


@dataclass(slots=True)
class VerifyAct:
    """What a confirm or fail did: the ids it moved, and those that were already where it
    would have put them (a repeated act changes nothing)."""

    action: str
    status: str
    changed: int
    ids: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_reason(reason: object) -> str:
    """A person's reason: required, at most ``MAX_REASON`` characters, storable text."""
    if not isinstance(reason, str) or not reason.strip():
        raise ValidationError("reason", "is required: why (it goes to the audit log)")
    if len(reason) > MAX_REASON:
        raise ValidationError("reason", f"is longer than {MAX_REASON} characters")
    if "\x00" in reason:
        raise ValidationError("reason", "must not contain NUL characters")
    try:
        reason.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError("reason", "is not valid text (a lone surrogate)") from None
    return reason


def _already(verb: Verb, msg: Message) -> bool:
    """Is ``msg`` where this act would put it (by a person's earlier decision)?"""
    if verb == "confirm":
        return msg.status is Status.DELIVERED
    return msg.status is Status.DEAD and msg.last_error_code == ErrorCode.NOT_CONFIRMED


async def _act(
    store: Store,
    verb: Verb,
    ids: list[str],
    *,
    actor: str,
    reason: str,
    tenant: str | None,
    clock: Clock | None,
) -> VerifyAct:
    require_actor(actor)
    if isinstance(ids, str) or not isinstance(ids, list | tuple):
        raise ValidationError("ids", "must be a list of message ids")
    check_ids(list(ids))
    if len(ids) > MAX_IDS:
        raise ValidationError("ids", f"names {len(ids)} messages; at most {MAX_IDS} at once")
    check_reason(reason)
    wanted = list(dict.fromkeys(ids))
    found: list[Message] = []
    for mid in wanted:
        msg = await store.message_get(mid)  # NotFound for a missing one
        if tenant is not None and msg.tenant != tenant:
            raise NotFound(f"no message with id {mid!r}")
        found.append(msg)
    wrong = [m for m in found if m.status is not Status.NEEDS_CONFIRM and not _already(verb, m)]
    if wrong:
        listed = ", ".join(f"{m.id} is {m.status.value}" for m in wrong[:10])
        raise Conflict(f"only needs_confirm messages can be {verb}ed: {listed}")
    todo = [m.id for m in found if m.status is Status.NEEDS_CONFIRM]
    already = [m.id for m in found if m.status is not Status.NEEDS_CONFIRM]
    target = TARGET[verb]
    if not todo:
        return VerifyAct(f"message.{verb}", target.value, 0, [], already)
    now = (clock or SystemClock()).now()
    tenants = sorted({m.tenant for m in found})
    detail: dict[str, Any] = {"to": target.value, "tenants": tenants}
    if len(tenants) == 1:
        detail["tenant"] = tenants[0]  # the audit read path filters on it
    audit = AuditEntry(
        at=now, actor=actor, action=f"message.{verb}", target="messages", reason=reason,
        detail=detail,
    )  # fmt: skip
    move = store.message_confirm if verb == "confirm" else store.message_fail
    moved = await move(todo, Status.NEEDS_CONFIRM, now, audit)
    return VerifyAct(f"message.{verb}", target.value, len(moved), moved, already)


async def messages_confirm(
    store: Store,
    ids: list[str],
    *,
    actor: str,
    reason: str,
    tenant: str | None = None,
    clock: Clock | None = None,
) -> VerifyAct:
    """A person says these messages arrived: ``needs_confirm`` → ``delivered``; audited
    as ``message.confirm``. ``NotFound`` for an unknown id (or another tenant's, with
    ``tenant``), ``Conflict`` for one not in ``needs_confirm``: then nothing moves."""
    return await _act(store, "confirm", ids, actor=actor, reason=reason, tenant=tenant, clock=clock)


async def messages_fail(
    store: Store,
    ids: list[str],
    *,
    actor: str,
    reason: str,
    tenant: str | None = None,
    clock: Clock | None = None,
) -> VerifyAct:
    """A person says these messages did not arrive: ``needs_confirm`` → ``dead`` with
    code ``NOT_CONFIRMED`` (``dlq retry --code NOT_CONFIRMED`` sends them again);
    audited as ``message.fail``. Refuses as ``messages_confirm`` does."""
    return await _act(store, "fail", ids, actor=actor, reason=reason, tenant=tenant, clock=clock)
