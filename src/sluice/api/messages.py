"""``/v1/messages``: enqueue (one or a batch), read, list and cancel.

A tenant key sees only its own tenant's messages; any other message answers 404
exactly as a missing one does, so ids of other tenants cannot even be confirmed.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.encoders import jsonable_encoder
from pydantic import AwareDatetime

from sluice import tracing
from sluice.addressing import Addressing, addressing_in_effect
from sluice.api.auth import Principal, Tenant
from sluice.api.idempotency import HEADER, HeldKey, idempotent
from sluice.api.problems import Problem
from sluice.api.request_id import request_id
from sluice.api.schemas import (
    PROBLEMS,
    AttemptOut,
    BatchIn,
    BatchOut,
    CancelIn,
    MessageDetail,
    MessageIn,
    MessageOrBatch,
    MessageOut,
    MessagePage,
    ReceiptOut,
    Text,
)
from sluice.errors import NotFound, ValidationError
from sluice.model import Message, NewMessage, Status
from sluice.ops.actions import message_cancel
from sluice.ops.listings import message_page
from sluice.store.base import MessageFilter
from sluice.store.canaries import CANARY_ACTION  # canaries (issue 15)
from sluice.store.tenant_events import is_event

__all__ = ["router"]

router = APIRouter(prefix="/v1/messages", tags=["messages"], responses=PROBLEMS)


def _tenant_of(who: Principal, given: str | None, where: str) -> str:
    if who.tenant is not None:
        if given is not None and given != who.tenant:
            raise Problem(
                422, f"{where}tenant: is set by your API key; leave it out",
                field=f"{where}tenant", kind="validation",
            )  # fmt: skip
        return who.tenant
    if given is None:
        raise Problem(
            422, f"{where}tenant: is required with an operator key",
            field=f"{where}tenant", kind="validation",
        )  # fmt: skip
    return given


def _new(
    who: Principal, m: MessageIn, where: str, addressing: Addressing, request_id: str | None
) -> NewMessage:
    new = NewMessage(
        tenant=_tenant_of(who, m.tenant, where), channel=m.channel, provider=m.provider,
        recipient=m.recipient, payload=m.payload, action=m.action, priority=m.priority,
        run_at=m.run_at, max_attempts=m.max_attempts, idempotency_key=m.idempotency_key,
        correlation_id=m.correlation_id or request_id, scopes=m.scopes,
        expires_at=m.expires_at, ttl=m.ttl,
        verify_within=m.verify_within,
    )  # fmt: skip
    new.validate(where, addressing)
    if is_event(new.provider):  # issue 14: only Sluice sends tenants' events
        raise ValidationError(
            f"{where}provider", "sluice_events is reserved for Sluice's own events"
        )
    if new.action == CANARY_ACTION:  # canaries (issue 15): the mark is Sluice's own
        raise ValidationError(f"{where}action", f"{CANARY_ACTION} is reserved for canaries")
    return new


async def _visible(request: Request, who: Principal, message_id: str) -> Message:
    """The message, or ``NotFound`` — worded alike for a missing one and for one of
    another tenant, so a tenant key cannot tell them apart."""
    msg: Message = await request.app.state.store.message_get(message_id)
    if not who.sees(msg.tenant):
        raise NotFound(f"no message with id {message_id!r}")
    return msg


@router.post(
    "",
    status_code=201,
    response_model=MessageOut | BatchOut,
    summary="Enqueue one message, or a batch of up to 1,000",
)
async def create(
    body: MessageOrBatch,
    who: Tenant,
    request: Request,
    idempotency_key: Annotated[str | None, Header(alias=HEADER, max_length=300)] = None,
) -> Any:
    """Store the message(s) for delivery; 201 with their ids and status ``queued``.

    With ``Idempotency-Key``, a retry of the same request within the key window gets
    the first response again and enqueues nothing more. A message given no
    ``correlation_id`` takes the request's ``X-Request-Id`` (echoed in the response;
    one is made up when the request has none)."""
    batch = isinstance(body, BatchIn)
    items = body.messages if isinstance(body, BatchIn) else [body]

    def respond(stored: list[Message]) -> tuple[int, Any]:
        out = [MessageOut.of(m) for m in stored]
        result: Any = BatchOut(messages=out) if batch else out[0]
        return 201, jsonable_encoder(result)

    async def handler(held: HeldKey | None) -> tuple[int, Any]:
        addressing = addressing_in_effect(request.app.state.settings)
        rid = request_id(request.scope)
        news = [
            _new(who, m, f"messages[{i}]." if batch else "", addressing, rid)
            for i, m in enumerate(items)
        ]
        if held is not None:  # the messages and the key's record of them: one commit
            return await held.enqueue(news, respond)
        store = request.app.state.store
        ids = await store.enqueue_many(news)
        return respond([await store.message_get(i) for i in ids])

    # Each message's trace starts here (sluice.tracing), linked to the caller's if it
    # sent a traceparent.
    with tracing.origin(
        "api", request_id=request_id(request.scope), traceparent=request.headers.get("traceparent")
    ):
        return await idempotent(
            request, who, idempotency_key, body.model_dump(mode="json"), handler
        )


@router.get("/{message_id}", response_model=MessageDetail)
async def get_one(message_id: str, who: Tenant, request: Request) -> MessageDetail:
    """A message, its payload, every attempt and every delivery receipt."""
    msg = await _visible(request, who, message_id)
    store = request.app.state.store
    attempts = await store.attempt_list(msg.id)
    receipts = await store.receipt_list(msg.id)
    return MessageDetail(
        **MessageOut.of(msg).model_dump(),
        payload=msg.payload,
        attempt_log=[AttemptOut.of(a) for a in attempts],
        receipts=[ReceiptOut.of(r) for r in receipts],
    )


@router.get("", response_model=MessagePage)
async def list_messages(
    who: Tenant,
    request: Request,
    status: Status | None = None,
    channel: Annotated[Text | None, Query(max_length=64)] = None,
    provider: Annotated[Text | None, Query(max_length=64)] = None,
    action: Annotated[Text | None, Query(max_length=128)] = None,
    error_code: Annotated[Text | None, Query(max_length=64)] = None,
    since: Annotated[AwareDatetime | None, Query(description="Created at or after")] = None,
    until: Annotated[AwareDatetime | None, Query(description="Created before")] = None,
    updated_since: Annotated[AwareDatetime | None, Query(description="Changed at or after")] = None,
    updated_until: Annotated[AwareDatetime | None, Query(description="Changed before")] = None,
    correlation_id: Annotated[Text | None, Query(min_length=1, max_length=255)] = None,
    tenant: Annotated[Text | None, Query(max_length=128, description="Operator keys only")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[Text | None, Query(max_length=200)] = None,
) -> MessagePage:
    """Messages, newest first, a page at a time (``next_cursor`` fetches the next)."""
    flt = MessageFilter(
        tenant=_tenant_of(who, tenant, "") if who.tenant else tenant,
        channel=channel, provider=provider, action=action, error_code=error_code, since=since,
        until=until, updated_since=updated_since, updated_until=updated_until,
        correlation_id=correlation_id,
    )  # fmt: skip
    page = await message_page(
        request.app.state.store, flt, status.value if status else None, cursor, limit
    )
    return MessagePage(items=[MessageOut.of(m) for m in page.items], next_cursor=page.next_cursor)


@router.post(
    "/{message_id}/cancel",
    response_model=MessageOut,
)
async def cancel(
    message_id: str, who: Tenant, request: Request, body: CancelIn | None = None
) -> MessageOut:
    """Cancel a message that has not gone out (queued, held or dead); audited."""
    msg = await message_cancel(
        request.app.state.store, message_id, actor=who.actor,
        reason=body.reason if body else None, tenant=who.tenant, clock=request.app.state.clock,
    )  # fmt: skip
    return MessageOut.of(msg)
