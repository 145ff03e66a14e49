"""Messages: search them (the listing ``sluice messages list`` and ``GET /v1/messages``
read), open one with its timeline, and cancel one that has not gone out.

The search form's values arrive as text and are checked here before anything is read;
a bad one comes back as the same page with the form filled in and the problem named
(status 400), never a 500. The timeline puts together what the store keeps about a
message: its enqueue, every attempt, the receipts applied to it, its hold and approval,
and the audit entries that name it, in time order.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Request
from starlette.responses import RedirectResponse, Response

from sluice.console.web import Acting, ConsoleError, OperatorViewer, render
from sluice.errors import Conflict, NotFound, ValidationError
from sluice.model import Message, Status
from sluice.ops.actions import CANCELLABLE, message_cancel, message_show, require_actor
from sluice.ops.audit import audit_filter, audit_page
from sluice.ops.evidence import redact_config
from sluice.ops.listings import message_page, parse_time
from sluice.store.base import AuditEntry, MessageFilter, Store

__all__ = ["TimelineEvent", "message_timeline", "router"]

router = APIRouter()

#: The search form's text fields, in the order the form shows them.
TEXT_FILTERS = ("tenant", "channel", "provider", "action", "error_code", "correlation_id")
PAGE_SIZES = (25, 50, 100, 200)
#: The longest value a text filter or a time may have (names and ids are far shorter).
MAX_FILTER = 200
MAX_TIME = 64
MAX_REASON = 2000
#: Audit actions that can name one message (by target or in their ``ids``), and how many
#: entries of each (and of control changes) the timeline reads at most.
AUDIT_PREFIXES = ("message.", "dlq.", "held.")
AUDIT_READ = 2000


# -- the search ------------------------------------------------------------------------


def _text(name: str, value: str | None, most: int = MAX_FILTER) -> str | None:
    """A filter's text: None when blank; ``ValidationError`` naming it when too long or
    not printable (control characters, a lone surrogate)."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if len(value) > most:
        raise ValidationError(name, f"is {len(value):,} characters; at most {most}")
    if not value.isprintable():
        raise ValidationError(name, "must be printable text (no control characters)")
    return value


def _message_id(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ValidationError("id", f"{value[:40]!r} is not a message id") from None


def _page_size(value: str | None) -> int:
    if value is None or not value.strip():
        return PAGE_SIZES[1]
    if not value.strip().isdigit() or int(value) not in PAGE_SIZES:
        raise ValidationError("limit", f"must be one of {', '.join(map(str, PAGE_SIZES))}")
    return int(value)


@dataclass(slots=True)
class Search:
    """The search as asked (``form``, shown back in the form) and as checked."""

    form: dict[str, str]
    flt: MessageFilter = field(default_factory=MessageFilter)
    message_id: str | None = None
    status: str | None = None
    cursor: str | None = None
    limit: int = PAGE_SIZES[1]


def _form(query: Mapping[str, str]) -> dict[str, str]:
    """The search as typed, to fill the form in again (cut short: it may be hostile)."""
    names = ("id", *TEXT_FILTERS, "status", "since", "until", "limit")
    return {n: query.get(n, "")[:MAX_FILTER] for n in names}


def _search(query: Mapping[str, str], now: datetime) -> Search:
    """The query string checked; ``ValidationError`` names the first field that is wrong
    (the listing itself checks status, the window and the cursor)."""
    t = {n: _text(n, query.get(n)) for n in TEXT_FILTERS}
    since = _text("since", query.get("since"), MAX_TIME)
    until = _text("until", query.get("until"), MAX_TIME)
    raw_id = _text("id", query.get("id"))
    flt = MessageFilter(
        tenant=t["tenant"], channel=t["channel"], provider=t["provider"], action=t["action"],
        error_code=t["error_code"], correlation_id=t["correlation_id"],
        since=parse_time("since", since, now), until=parse_time("until", until, now),
    )  # fmt: skip
    return Search(
        form=_form(query),
        flt=flt,
        message_id=_message_id(raw_id) if raw_id else None,
        status=_text("status", query.get("status")),
        cursor=_text("cursor", query.get("cursor")),
        limit=_page_size(query.get("limit")),
    )


async def _found(store: Store, s: Search) -> tuple[list[Message], str | None]:
    """The page of messages the search selects; by id, that one if it matches the rest."""
    if s.message_id is None:
        page = await message_page(store, s.flt, s.status, s.cursor, s.limit)
        return page.items, page.next_cursor
    try:
        msg = await store.message_get(s.message_id)
    except NotFound:
        return [], None
    await message_page(store, s.flt, s.status, None, 1)  # the rest checked as a listing
    return ([msg] if _matches(msg, s) else []), None


def _matches(msg: Message, s: Search) -> bool:
    f = s.flt
    wanted = {"tenant": f.tenant, "channel": f.channel, "provider": f.provider,
              "action": f.action, "last_error_code": f.error_code,
              "correlation_id": f.correlation_id}  # fmt: skip
    if any(v is not None and getattr(msg, k) != v for k, v in wanted.items()):
        return False
    if s.status is not None and msg.status.value != s.status:
        return False
    created = msg.created_at
    return created is None or (
        (f.since is None or created >= f.since) and (f.until is None or created < f.until)
    )


def _next_link(form: Mapping[str, str], cursor: str | None) -> str | None:
    """The link to the next page: the same search, from ``cursor``."""
    if cursor is None:
        return None
    return "/messages?" + urlencode({**{k: v for k, v in form.items() if v}, "cursor": cursor})


@router.get("/messages")
async def messages(request: Request, viewer: OperatorViewer) -> Response:
    store = request.app.state.store
    now = request.app.state.clock.now()
    query = request.query_params
    try:
        s = _search(query, now)
        items, cursor = await _found(store, s)
    except ValidationError as exc:
        return _list(request, _form(query), [], None, error=str(exc), status=400)
    return _list(request, s.form, items, _next_link(s.form, cursor))


def _list(
    request: Request,
    form: dict[str, str],
    items: list[Message],
    next_link: str | None,
    *,
    error: str | None = None,
    status: int = 200,
) -> Response:
    return render(
        request, "messages.html", status, form=form, items=items, next_link=next_link,
        error=error, statuses=[s.value for s in Status], page_sizes=PAGE_SIZES,
        text_filters=TEXT_FILTERS, searched=any(form.values()),
    )  # fmt: skip


# -- one message and its timeline ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TimelineEvent:
    """One line of a message's timeline: when, what kind, a headline, and the details."""

    at: datetime
    kind: str  # enqueued, attempt, receipt, approved, audit, control, held
    headline: str
    badge: str = ""
    details: list[tuple[str, str]] = field(default_factory=list)


def _names(entry: AuditEntry, message_id: str) -> bool:
    """Does the entry name this message: as its target, or among a bulk act's ids?"""
    ids = entry.detail.get("ids") if isinstance(entry.detail, dict) else None
    return entry.target == f"message:{message_id}" or (isinstance(ids, list) and message_id in ids)


def _covers(entry: AuditEntry, msg: Message) -> bool:
    """Is the message in the scope of this control change (a kill, pause, resume…)?
    Such a change holds or releases every message of its scope without naming them."""
    scope = entry.detail.get("scope") if isinstance(entry.detail, dict) else None
    if not isinstance(scope, dict):
        return False
    mine = {"tenant": msg.tenant, "channel": msg.channel, "provider": msg.provider,
            "action": msg.action}  # fmt: skip
    return all(scope.get(k) in (None, "", v) for k, v in mine.items())


async def _audit_since(store: Store, msg: Message, prefix: str) -> tuple[list[AuditEntry], bool]:
    """Up to ``AUDIT_READ`` entries of ``prefix`` since the message was made, newest
    first; True when there were more."""
    since = msg.created_at - timedelta(seconds=1) if msg.created_at else None
    rows: list[AuditEntry] = []
    older: int | None = None
    while len(rows) < AUDIT_READ:
        flt = audit_filter(since=since, action=prefix, before_id=older)
        page, older = await audit_page(store, flt, min(1000, AUDIT_READ - len(rows)))
        rows += page
        if older is None:
            return rows, False
    return rows, True


async def _audit_about(
    store: Store, msg: Message
) -> tuple[list[AuditEntry], list[AuditEntry], bool]:
    """The audit entries that name the message, and the control changes of its scope
    up to its last change; True when the log held more than was read."""
    named: list[AuditEntry] = []
    more = False
    for prefix in AUDIT_PREFIXES:
        rows, cut = await _audit_since(store, msg, prefix)
        named += [e for e in rows if _names(e, msg.id)]
        more = more or cut
    rows, cut = await _audit_since(store, msg, "control.")
    last = msg.updated_at
    controls = [e for e in rows if _covers(e, msg) and (last is None or e.at <= last)]
    return named, controls, more or cut


def _details(*pairs: tuple[str, Any]) -> list[tuple[str, str]]:
    return [(k, str(v)) for k, v in pairs if v not in (None, "", [])]


async def message_timeline(store: Store, msg: Message) -> tuple[list[TimelineEvent], bool]:
    """Everything the store keeps about ``msg``, oldest first: its enqueue, attempts,
    receipts, approval, the audit entries naming it, the control changes of its scope
    (which hold and release it without naming it) and its hold now. True when the audit
    log had more entries in the message's lifetime than were read for it."""
    _, attempts = await message_show(store, msg.id)
    receipts = await store.receipt_list(msg.id)
    entries, controls, more = await _audit_about(store, msg)
    events: list[TimelineEvent] = []
    if msg.created_at is not None:
        events.append(TimelineEvent(
            msg.created_at, "enqueued", f"enqueued for {msg.tenant}", "queued",
            _details(("channel", msg.channel), ("provider", msg.provider),
                     ("action", msg.action), ("priority", msg.priority),
                     ("correlation id", msg.correlation_id),
                     ("idempotency key", msg.idempotency_key)),
        ))  # fmt: skip
    for a in attempts:
        late = "" if a.applied else " (late: its claim had been taken back)"
        events.append(TimelineEvent(
            a.finished_at, "attempt", f"attempt {a.attempt_no}: {a.outcome.value}{late}",
            a.outcome.value,
            _details(("error code", a.error_code), ("provider status", a.provider_status),
                     ("provider code", a.provider_code),
                     ("latency", f"{a.latency_ms:.0f} ms" if a.latency_ms is not None else None),
                     ("worker", a.worker_id), ("provider", a.provider), ("detail", a.detail)),
        ))  # fmt: skip
    for r in receipts:
        events.append(TimelineEvent(
            r.received_at, "receipt", f"receipt: {r.status}", r.status,
            _details(("provider", r.provider), ("error code", r.error_code),
                     ("occurred", r.occurred_at and r.occurred_at.isoformat(timespec="seconds")),
                     ("detail", r.detail)),
        ))  # fmt: skip
    if msg.approved_at is not None:
        events.append(TimelineEvent(msg.approved_at, "approved",
                                    f"approved by {msg.approved_by}", "ok"))  # fmt: skip
    for e in entries:
        events.append(TimelineEvent(
            e.at, "audit", f"{e.action} by {e.actor}", "audit",
            _details(("reason", e.reason), ("audit entry", e.id)),
        ))  # fmt: skip
    for e in controls:
        mode = e.detail.get("mode")
        released = e.detail.get("released")
        events.append(TimelineEvent(
            e.at, "control", f"{e.action}{f' ({mode})' if mode else ''} on {e.target} by {e.actor}",
            "held" if e.action == "control.set" else "ok",
            _details(("reason", e.reason), ("released", released), ("audit entry", e.id)),
        ))  # fmt: skip
    if msg.status is Status.HELD and msg.updated_at is not None:
        events.append(TimelineEvent(msg.updated_at, "held", f"held: {msg.hold_reason or '?'}",
                                    "held"))  # fmt: skip
    events.sort(key=lambda ev: ev.at)  # stable: same instant keeps the order above
    return events, more


def _payload(msg: Message) -> dict[str, Any]:
    """The payload as the page shows it: secret-named fields and URL passwords and
    queries redacted (the template escapes what is left)."""
    return redact_config(msg.payload)


def _recipient(msg: Message) -> str:
    return str(redact_config({"recipient": msg.recipient})["recipient"])


async def _message_or_404(store: Store, message_id: str) -> Message:
    try:
        return await store.message_get(str(uuid.UUID(message_id)))
    except (ValueError, NotFound):
        raise ConsoleError(404, f"There is no message {message_id[:40]!r}.") from None


async def _message_page(
    request: Request, msg: Message, *, status: int = 200, error: str | None = None,
    notice: str | None = None, reason: str = "",
) -> Response:  # fmt: skip
    events, more = await message_timeline(request.app.state.store, msg)
    payload = json.dumps(_payload(msg), indent=2, sort_keys=True, ensure_ascii=False)
    return render(
        request, "message.html", status, msg=msg, events=events, audit_more=more,
        payload=payload, recipient=_recipient(msg), cancellable=msg.status in CANCELLABLE,
        error=error, notice=notice, reason=reason,
    )  # fmt: skip


@router.get("/messages/{message_id}")
async def message(message_id: str, request: Request, viewer: OperatorViewer) -> Response:
    msg = await _message_or_404(request.app.state.store, message_id)
    notice = None
    if request.query_params.get("done") == "cancelled" and msg.status is Status.CANCELLED:
        notice = f"Cancelled. The audit log names you as {viewer.actor}."
    return await _message_page(request, msg, notice=notice)


@router.post("/messages/{message_id}/cancel")
async def cancel(
    message_id: str,
    request: Request,
    viewer: Acting,
    reason: Annotated[str, Form()] = "",
) -> Response:
    """Cancel one message (``sluice.ops.actions.message_cancel``) with the reason asked."""
    if not viewer.operator:
        raise ConsoleError(403, "This page is for operators; your key is a tenant's.")
    store = request.app.state.store
    msg = await _message_or_404(store, message_id)
    try:
        require_actor(viewer.actor, reason, need_reason=True)
        _text("reason", reason, MAX_REASON)
        await message_cancel(store, msg.id, actor=viewer.actor, reason=reason.strip(),
                             clock=request.app.state.clock)  # fmt: skip
    except ValidationError as exc:
        return await _message_page(request, msg, status=400, error=str(exc), reason=reason[:200])
    except Conflict as exc:
        fresh = await store.message_get(msg.id)
        return await _message_page(request, fresh, status=409, error=str(exc))
    return RedirectResponse(f"/messages/{msg.id}?done=cancelled", status_code=303)
