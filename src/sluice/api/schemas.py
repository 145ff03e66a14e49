"""The shapes the HTTP API reads and writes (they make its OpenAPI document)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
)

from sluice.expiry import MAX_TTL, check_ttl
from sluice.model import Attempt, AuditEntry, Message, Status
from sluice.store.base import Receipt

__all__ = [
    "PROBLEMS",
    "AttemptOut",
    "AuditOut",
    "AuditPage",
    "BatchIn",
    "BatchOut",
    "CancelIn",
    "MessageDetail",
    "MessageIn",
    "MessageOrBatch",
    "MessageOut",
    "MessagePage",
    "ProblemOut",
    "ReceiptOut",
    "Text",
]


#: Half of a UTF-16 surrogate pair on its own. JSON may spell one (``"\\ud800"``) and
#: Python decodes it, but no UTF-8 encoder, and so no store, can write it.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")

#: How deep a payload may nest. Real payloads stay within a handful of levels; far
#: deeper ones are refused here, with a reason, before serialisers hit their own limits.
MAX_PAYLOAD_DEPTH = 64


def _text_problem(value: str) -> str | None:
    if "\x00" in value:
        return "must not contain NUL characters"
    if _LONE_SURROGATE.search(value):
        return "must be valid Unicode (it has a lone surrogate such as \\ud800)"
    return None


def _storable(value: str) -> str:
    problem = _text_problem(value)
    if problem:
        raise ValueError(problem)
    return value


#: Text as every API input takes it: no NUL and no lone surrogate (no store keeps them).
Text = Annotated[str, AfterValidator(_storable)]


def _shown(path: str) -> str:
    """``path`` fit for an error message: ASCII-escaped, cut to a readable length."""
    shown = path.encode("ascii", "backslashreplace").decode()
    return shown if len(shown) <= 120 else shown[:117] + "..."


def _storable_payload(value: dict[str, Any]) -> dict[str, Any]:
    """Refuse a payload no store can write: too deep, or text it cannot encode.

    Walked with an explicit stack, so a hostile depth costs no recursion.
    """
    stack: list[tuple[Any, str, int]] = [(value, "payload", 1)]
    while stack:
        node, path, depth = stack.pop()
        if depth > MAX_PAYLOAD_DEPTH:
            raise ValueError(f"is nested deeper than {MAX_PAYLOAD_DEPTH} levels")
        children = node.items() if isinstance(node, dict) else enumerate(node)
        for key, child in children:
            if isinstance(key, str):
                problem = _text_problem(key)
                if problem:
                    raise ValueError(f"a key in {_shown(path)} {problem}")
                where = f"{path}.{key}"
            else:
                where = f"{path}[{key}]"
            if isinstance(child, str):
                problem = _text_problem(child)
                if problem:
                    raise ValueError(f"{_shown(where)} {problem}")
            elif isinstance(child, dict | list):
                stack.append((child, where, depth + 1))
    return value


class ProblemOut(BaseModel):
    """An error, as RFC 9457 problem details (``application/problem+json``)."""

    type: str
    title: str
    status: int
    detail: str
    #: The offending input: ``messages[3].recipient``, ``Idempotency-Key``, ``cursor``.
    field: str | None = None
    instance: str | None = None
    errors: list[dict[str, str]] | None = None
    existing_id: str | None = None


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/problem+json": {"schema": ProblemOut.model_json_schema()}},
    }


#: The error answers every endpoint may give, documented as what they are.
PROBLEMS: dict[int | str, dict[str, Any]] = {
    401: _problem("No valid API key"),
    403: _problem("The key may not do this"),
    404: _problem("Not found (or not visible to this key)"),
    409: _problem("Conflict with the current state, or an Idempotency-Key in use"),
    413: _problem("Request body too large"),
    422: _problem("Bad input; `field` names it"),
    503: _problem("The store is unavailable; retry"),
}


def _span(value: Any) -> float | None:
    """Seconds, or a span like ``10m`` (post-send verification, issue 15), as seconds:
    positive, finite, at most a year and a day."""
    from sluice.errors import ValidationError

    if value is None:
        return None
    try:
        return check_ttl(value, "verify_within")
    except ValidationError as exc:
        raise ValueError(exc.problem) from None


class MessageIn(BaseModel):
    """A side effect to deliver. With a tenant key, leave ``tenant`` out: the key says it."""

    model_config = ConfigDict(extra="forbid")

    tenant: Text | None = Field(None, min_length=1, max_length=128)
    channel: Text = Field(min_length=1, max_length=64)
    provider: Text = Field(min_length=1, max_length=64)
    recipient: Text = Field(min_length=1, max_length=2048)
    payload: Annotated[dict[str, Any], AfterValidator(_storable_payload)] = Field(
        default_factory=dict
    )
    action: Text = Field("send", min_length=1, max_length=128)
    # Strict: "5" and true are not numbers, as the Python API says. Datetimes stay lax,
    # since JSON can only carry them as ISO strings.
    priority: int = Field(0, ge=-1000, le=1000, strict=True)
    run_at: datetime | None = None
    max_attempts: int = Field(5, ge=1, le=100, strict=True)
    idempotency_key: Text | None = Field(None, min_length=1, max_length=255)
    correlation_id: Text | None = Field(None, min_length=1, max_length=255)
    scopes: list[Annotated[Text, Field(min_length=1, max_length=128)]] = Field(
        default_factory=list, max_length=64
    )
    #: Not sent by then, it ends ``expired`` (never sent late): a time with a timezone,
    #: or seconds from enqueue; neither: ``[expiry]`` of sluice.toml decides.
    expires_at: datetime | None = None
    ttl: float | None = Field(None, gt=0, le=MAX_TTL, strict=True, allow_inf_nan=False)
    #: Post-send verification (issue 15): seconds (or a span like ``10m``) after sending
    #: by which a delivered or read receipt must come, else the message needs a person.
    verify_within: Annotated[float | None, BeforeValidator(_span)] = Field(
        None, json_schema_extra={"examples": [600, "10m"]}
    )


class BatchIn(BaseModel):
    """Up to 1,000 messages, stored together or not at all."""

    model_config = ConfigDict(extra="forbid")

    messages: list[MessageIn] = Field(min_length=1, max_length=1000)


def _body_kind(value: Any) -> str:
    """Which shape a ``POST /v1/messages`` body has: a batch carries ``messages``.

    Deciding first, instead of trying both shapes, reports a batch's errors at
    ``messages[1].recipient`` rather than as a single message missing ``channel``.
    """
    return "BatchIn" if isinstance(value, dict) and "messages" in value else "MessageIn"


#: The body of ``POST /v1/messages``: one message, or a batch of them.
MessageOrBatch = Annotated[
    Annotated[MessageIn, Tag("MessageIn")] | Annotated[BatchIn, Tag("BatchIn")],
    Discriminator(_body_kind),
]


class MessageOut(BaseModel):
    id: str
    tenant: str
    channel: str
    provider: str
    action: str
    recipient: str
    status: Status
    priority: int
    run_at: datetime
    attempts: int
    max_attempts: int
    idempotency_key: str | None = None
    correlation_id: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    last_error_code: str | None = None
    last_error: str | None = None
    provider_message_id: str | None = None
    hold_reason: str | None = None
    #: Throttle-class answers and put-backs so far (no attempt spent on them), and when
    #: the first was; past SLUICE_MAX_DEFERRALS / SLUICE_MAX_DEFER_AGE it is dead.
    deferrals: int = 0
    deferred_since: datetime | None = None
    #: Not sent by then, it ends ``expired``.
    expires_at: datetime | None = None
    #: Post-send verification (issue 15): seconds asked for, and the deadline once sent.
    verify_within: float | None = None
    verify_by: datetime | None = None

    @classmethod
    def of(cls, m: Message) -> MessageOut:
        return cls(
            id=m.id, tenant=m.tenant, channel=m.channel, provider=m.provider, action=m.action,
            recipient=m.recipient, status=m.status, priority=m.priority, run_at=m.run_at,
            attempts=m.attempts, max_attempts=m.max_attempts, idempotency_key=m.idempotency_key,
            correlation_id=m.correlation_id, created_at=m.created_at, updated_at=m.updated_at,
            last_error_code=m.last_error_code, last_error=m.last_error,
            provider_message_id=m.provider_message_id, hold_reason=m.hold_reason,
            deferrals=m.deferrals, deferred_since=m.deferred_since, expires_at=m.expires_at,
            verify_within=m.verify_within, verify_by=m.verify_by,
        )  # fmt: skip


class AttemptOut(BaseModel):
    attempt_no: int
    provider: str
    started_at: datetime
    finished_at: datetime
    outcome: str
    error_code: str | None = None
    error_class: str | None = None
    provider_status: str | None = None
    provider_code: str | None = None
    detail: str | None = None
    latency_ms: float | None = None

    @classmethod
    def of(cls, a: Attempt) -> AttemptOut:
        return cls(
            attempt_no=a.attempt_no, provider=a.provider, started_at=a.started_at,
            finished_at=a.finished_at, outcome=a.outcome.value, error_code=a.error_code,
            error_class=a.error_class, provider_status=a.provider_status,
            provider_code=a.provider_code, detail=a.detail, latency_ms=a.latency_ms,
        )  # fmt: skip


class ReceiptOut(BaseModel):
    provider: str
    status: str
    occurred_at: datetime | None = None
    received_at: datetime
    error_code: str | None = None
    detail: str | None = None

    @classmethod
    def of(cls, r: Receipt) -> ReceiptOut:
        return cls(
            provider=r.provider, status=r.status, occurred_at=r.occurred_at,
            received_at=r.received_at, error_code=r.error_code, detail=r.detail,
        )  # fmt: skip


class MessageDetail(MessageOut):
    """A message with its payload, every attempt, and the delivery receipts applied."""

    payload: dict[str, Any]
    attempt_log: list[AttemptOut]
    receipts: list[ReceiptOut]


class BatchOut(BaseModel):
    messages: list[MessageOut]


class MessagePage(BaseModel):
    items: list[MessageOut]
    #: Pass as ``cursor`` for the next (older) page; null on the last page.
    next_cursor: str | None = None


class AuditOut(BaseModel):
    """One entry of the hash-chained audit log."""

    id: int
    at: datetime
    actor: str
    action: str
    target: str | None = None
    reason: str | None = None
    detail: dict[str, Any]
    prev_hash: str
    hash: str

    @classmethod
    def of(cls, e: AuditEntry) -> AuditOut:
        return cls(
            id=e.id or 0, at=e.at, actor=e.actor, action=e.action, target=e.target,
            reason=e.reason, detail=e.detail, prev_hash=e.prev_hash or "", hash=e.hash or "",
        )  # fmt: skip


class AuditPage(BaseModel):
    items: list[AuditOut]
    #: Pass as ``cursor`` for the next (older) page; null on the last page.
    next_cursor: str | None = None


class CancelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Text | None = Field(None, max_length=1000)
