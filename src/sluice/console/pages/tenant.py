"""The tenant's view (``/tenant/{tenant}``): one tenant's messages and why each one not
sent is waiting, their timelines, its endpoints' health and connections' state, and its
dead letters, which a tenant's own key may retry within the operator's limits
(``[console] tenant_retry_max`` per act, ``tenant_retry_per_hour``).

A tenant key sees its own tenant and nothing else: another tenant's pages and messages
answer 404, exactly as if they did not exist. An operator opens any tenant's view (and
``/tenants`` lists them), read-only: operators act on their own pages.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from starlette.responses import Response

from sluice.console.sessions import Viewer
from sluice.console.web import Acting, ConsoleError, OperatorViewer, SignedIn, render
from sluice.errors import NotFound, SluiceError, ValidationError
from sluice.model import Message, Status
from sluice.ops.actions import DlqAction
from sluice.ops.controls import control_list
from sluice.ops.endpoints import endpoints_list
from sluice.ops.explain import Explanation, explain, explain_error
from sluice.ops.listings import message_page, parse_time
from sluice.ops.requests import Filed, message_args, perform
from sluice.store.base import AuditEntry, AuditFilter, MessageFilter, Store
from sluice.store.endpoints import HOLD_PREFIX as ENDPOINT_HOLD

__all__ = ["router"]

router = APIRouter()

#: Messages per page of the tenant's listing, and dead letters shown on its DLQ page.
PAGE = 50
DEAD_SHOWN = 100
#: The statuses a tenant's messages are in that count as sent.
SENT = frozenset({Status.SENT, Status.DELIVERED, Status.READ})
#: Longest text a form or search field takes (a name, an error code, a reason; ids: as
#: many as the API takes, 10,000).
_LONGEST = {"tenant": 128, "status": 32, "channel": 64, "since": 64, "until": 64,
            "cursor": 200, "group": 200, "reason": 500, "error_code": 64, "limit": 8,
            "ids": 37 * 10_000}  # fmt: skip


# -- who sees what -------------------------------------------------------------------


def _tenant_seen(viewer: Viewer, tenant: str) -> str:
    """``tenant`` if the viewer may see it; otherwise 404, worded as for a tenant with
    nothing (a tenant key cannot tell another tenant from none)."""
    try:
        named = _text("tenant", tenant)
    except ValidationError:
        named = None
    if named is None or named != tenant or not viewer.sees(tenant):
        raise ConsoleError(404, "There is no such tenant here.")
    return tenant


async def _message_seen(store: Store, tenant: str, message_id: str) -> Message:
    """The tenant's message, or 404 alike for a bad id, a missing one and another's."""
    missing = ConsoleError(404, "There is no such message here.")
    try:
        uuid.UUID(message_id)
        msg = await store.message_get(message_id)
    except (ValueError, NotFound):
        raise missing from None
    if msg.tenant != tenant:
        raise missing
    return msg


def _text(name: str, value: str | None) -> str | None:
    """A search or form field: None when empty; ``ValidationError`` naming it when it is
    too long or is not plain text (control characters, lone surrogates)."""
    if value is None or not value.strip():
        return None
    if len(value) > _LONGEST[name]:
        raise ValidationError(name, f"is longer than {_LONGEST[name]} characters")
    # U+FFFD: what a lone surrogate (or any byte that is not UTF-8) was decoded to.
    if not value.isprintable() or any(0xD800 <= ord(c) <= 0xDFFF or c == "\ufffd" for c in value):
        raise ValidationError(name, "must be plain text (no control characters, valid UTF-8)")
    return value.strip()


# -- why not sent --------------------------------------------------------------------


async def _explainer(request: Request, tenant: str) -> Callable[[Message], Explanation]:
    """``explain`` with what this tenant's messages wait on, read once per page."""
    state = request.app.state
    store: Store = state.store
    now = state.clock.now()
    controls = await control_list(store, state.clock)
    connections = {c.provider: c for c in await store.connection_list(tenant)}
    endpoints = {e.endpoint: e for e in await endpoints_list(store, tenant=tenant)}

    def why(msg: Message) -> Explanation:
        held = msg.hold_reason or ""
        endpoint = None
        if held.startswith(ENDPOINT_HOLD):
            endpoint = endpoints.get(held[len(ENDPOINT_HOLD) :].split(" (", 1)[0])
        return explain(
            msg, now, controls=controls, connection=connections.get(msg.provider),
            endpoint=endpoint,
        )  # fmt: skip

    return why


# -- the operator's list of tenants --------------------------------------------------


@dataclass(slots=True)
class _TenantRow:
    name: str
    total: int = 0
    sent: int = 0
    waiting: int = 0
    held: int = 0
    dead: int = 0
    other: int = 0


#: The column of ``/tenants`` each status counts in (sent ones: ``sent``; the rest: other).
_COLUMN = {"queued": "waiting", "sending": "waiting", "held": "held", "dead": "dead"}


@router.get("/tenants")
async def tenants(request: Request, viewer: OperatorViewer) -> Response:
    state = request.app.state
    rows: dict[str, _TenantRow] = {}
    now = state.clock.now()
    for b in await state.store.message_breakdown("tenant", MessageFilter(), None, now):
        row = rows.setdefault(b.group, _TenantRow(b.group))
        row.total += b.count
        name = "sent" if b.status in SENT else _COLUMN.get(b.status, "other")
        setattr(row, name, getattr(row, name) + b.count)
    for conn in await state.store.connection_list():
        rows.setdefault(conn.tenant, _TenantRow(conn.tenant))
    ordered = sorted(rows.values(), key=lambda r: (-r.total, r.name))
    return render(request, "tenants.html", tenants=ordered)


# -- the tenant's view ---------------------------------------------------------------


@router.get("/tenant/{tenant}")
async def tenant_home(request: Request, tenant: str, viewer: SignedIn) -> Response:
    """Counts, and the messages (by status, channel and time), each not sent with why."""
    tenant = _tenant_seen(viewer, tenant)
    state = request.app.state
    q = request.query_params
    search = {k: q.get(k, "") for k in ("status", "channel", "since", "until")}
    error = None
    page = None
    try:
        page = await _search(request, tenant, q)
    except ValidationError as exc:
        error = str(exc)
    counts: dict[str, int] = {}
    for b in await state.store.message_breakdown(
        "", MessageFilter(tenant=tenant), None, state.clock.now()
    ):
        counts[b.status] = counts.get(b.status, 0) + b.count
    why = await _explainer(request, tenant)
    rows = [(m, why(m)) for m in page.items] if page else []
    nxt = None
    if page and page.next_cursor:
        nxt = _query({**search, "cursor": page.next_cursor})
    return render(
        request, "tenant.html", 422 if error else 200, tenant=tenant, tab="messages",
        counts=counts, rows=rows, search=search, error=error, next=nxt,
        statuses=[s.value for s in Status],
    )  # fmt: skip


async def _search(request: Request, tenant: str, q: Any) -> Any:
    now = request.app.state.clock.now()
    status = _text("status", q.get("status"))
    since, until = _text("since", q.get("since")), _text("until", q.get("until"))
    flt = MessageFilter(
        tenant=tenant, channel=_text("channel", q.get("channel")),
        since=parse_time("since", since, now), until=parse_time("until", until, now),
    )  # fmt: skip
    cursor = _text("cursor", q.get("cursor"))
    return await message_page(request.app.state.store, flt, status, cursor, PAGE)


def _query(params: dict[str, str]) -> str:
    return "?" + urlencode({k: v for k, v in params.items() if v})


@router.get("/tenant/{tenant}/messages/{message_id}")
async def tenant_message(
    request: Request, tenant: str, message_id: str, viewer: SignedIn
) -> Response:
    """One message's timeline, and (not sent) why and what would release it."""
    tenant = _tenant_seen(viewer, tenant)
    store: Store = request.app.state.store
    msg = await _message_seen(store, tenant, message_id)
    attempts = await store.attempt_list(msg.id)
    receipts = await store.receipt_list(msg.id)
    why = (await _explainer(request, tenant))(msg)
    acts = [_acted(e, viewer) for e in await _acts_on(store, msg)]
    return render(
        request, "tenant_message.html", tenant=tenant, tab="messages", msg=msg,
        why=why, timeline=_timeline(msg, attempts, receipts, acts, why),
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Event:
    """One line of a message's timeline (``tone``: its dot's colour)."""

    at: datetime | None
    title: str
    text: str = ""
    tone: str = ""


#: The audited acts that move one message, and how its timeline names them.
_ACTS = {"held.approve": "Approved", "held.release": "Released", "held.cancel": "Cancelled",
         "dlq.retry": "Retried", "dlq.cancel": "Cancelled", "message.cancel": "Cancelled",
         "message.retry_now": "Retried now"}  # fmt: skip
#: How many audit entries of each family a message page reads back (newest first).
_AUDIT_READ = 200


async def _acts_on(store: Store, msg: Message) -> list[AuditEntry]:
    """The audited acts since ``msg`` was created that moved it (releases, approvals,
    retries, cancels): those naming it as their target or among their ids."""
    found = []
    for family in ("held.", "dlq.", "message"):
        flt = AuditFilter(action=family, since=msg.created_at)
        for e in await store.audit_list(_AUDIT_READ, flt):
            if e.action in _ACTS and (
                e.target == f"message:{msg.id}" or msg.id in (e.detail.get("ids") or ())
            ):
                found.append(e)
    return found


def _acted(e: AuditEntry, viewer: Viewer) -> _Event:
    """An act on the timeline: a tenant sees who only when it was itself, and never an
    operator's reason (it may speak of other tenants)."""
    if viewer.operator:
        who, why = e.actor, f": {e.reason}" if e.reason else ""
    else:
        who, why = ("you" if e.actor == viewer.actor else "an operator"), ""
    return _Event(e.at, _ACTS[e.action], f"by {who}{why}", "sent")


def _timeline(
    msg: Message, attempts: list[Any], receipts: list[Any], acts: list[_Event], why: Explanation
) -> list[_Event]:
    """Enqueue, every attempt, every receipt, every act on it, and where it stands now."""
    what = f"{msg.action} by {msg.channel} via {msg.provider} to {msg.recipient}"
    events = [_Event(msg.created_at, "Enqueued", what)]
    for a in attempts:
        parts = [a.outcome.value]
        if a.error_code:
            parts.append(f"{a.error_code}: {explain_error(a.error_code)[0]}")
        if a.provider_status:
            parts.append(f"provider said {a.provider_status}")
        if a.latency_ms is not None:
            parts.append(f"{a.latency_ms:.0f} ms")
        tone = "sent" if a.outcome.value == "sent" else "dead" if a.error_code else ""
        events.append(_Event(a.started_at, f"Attempt {a.attempt_no}", " · ".join(parts), tone))
    for r in receipts:
        code = f" ({r.error_code})" if r.error_code else ""
        events.append(_Event(r.occurred_at or r.received_at, "Receipt", f"{r.status}{code}"))
    events.extend(acts)
    events.sort(key=lambda e: (e.at is None, e.at or datetime.min))
    if not why.sent:
        status = msg.status.value
        title = "Dead letter" if status == "dead" else status.replace("_", " ").capitalize()
        events.append(_Event(msg.updated_at, title, why.reason, "held"))
    return events


@router.get("/tenant/{tenant}/health")
async def tenant_health(request: Request, tenant: str, viewer: SignedIn) -> Response:
    """Its endpoints' health and its connections' state (never a secret)."""
    tenant = _tenant_seen(viewer, tenant)
    store: Store = request.app.state.store
    now = request.app.state.clock.now()
    return render(
        request, "tenant_health.html", tenant=tenant, tab="health", now=now,
        endpoints=await endpoints_list(store, tenant=tenant),
        connections=await store.connection_list(tenant),
    )  # fmt: skip


# -- dead letters: the tenant's own retry --------------------------------------------


@dataclass(frozen=True, slots=True)
class _Retry:
    """A retry as the form gives it, checked."""

    channel: str | None
    error_code: str | None
    limit: int
    reason: str | None

    @property
    def group(self) -> str:
        """The form's ``group`` value again (empty: all)."""
        return f"{self.channel}|{self.error_code or ''}" if self.channel else ""

    def filter(self, tenant: str) -> MessageFilter:
        return MessageFilter(
            tenant=tenant, channel=self.channel, error_code=self.error_code, limit=self.limit
        )


def _retry_form(form: Any, most: int) -> _Retry:
    if most < 1:
        raise ConsoleError(403, "Retrying dead letters yourself is off here; ask your operator.")
    raw = _text("limit", _field(form, "limit"))
    if raw is None or not raw.isascii() or not raw.isdigit() or int(raw) < 1:
        raise ValidationError("limit", "must be a whole number of dead letters, at least 1")
    if int(raw) > most:
        raise ValidationError(
            "limit", f"at most {most} dead letters per retry (your operator's setting); "
            "retry them in several goes",
        )  # fmt: skip
    channel, code = _group(_field(form, "group"))
    return _Retry(channel, code, int(raw), _text("reason", _field(form, "reason")))


def _field(form: Any, name: str) -> str | None:
    """A form field's text (a file sent in its place counts as missing)."""
    value = form.get(name)
    return value if isinstance(value, str) else None


def _group(raw: str | None) -> tuple[str | None, str | None]:
    """``channel|error_code`` of a dead-letter group (empty: all of them)."""
    if not raw:
        return None, None
    if len(raw) > 200 or "|" not in raw:
        raise ValidationError("group", "is not one of your dead-letter groups")
    channel, code = raw.split("|", 1)
    return _text("channel", channel), _text("error_code", code)


async def _retried_last_hour(request: Request, tenant: str) -> int:
    """Dead letters of ``tenant`` retried in the last hour (anyone's retries)."""
    now = request.app.state.clock.now()
    flt = AuditFilter(action="dlq.retry", tenant=tenant, since=now - timedelta(hours=1))
    entries = await request.app.state.store.audit_list(1000, flt)
    return sum(int(e.detail.get("count", 0)) for e in entries)


async def _dlq_page(
    request: Request, tenant: str, viewer: Viewer, status: int = 200, **extra: Any
) -> Response:
    state = request.app.state
    store: Store = state.store
    groups = await store.dlq_groups(MessageFilter(tenant=tenant))
    dead = await message_page(store, MessageFilter(tenant=tenant), "dead", None, DEAD_SHOWN)
    why = await _explainer(request, tenant)
    settings = state.settings
    return render(
        request, "tenant_dlq.html", status, tenant=tenant, tab="dlq", groups=groups,
        rows=[(m, why(m)) for m in dead.items], more=dead.next_cursor is not None,
        most=settings.tenant_retry_max, per_hour=settings.tenant_retry_per_hour,
        used=await _retried_last_hour(request, tenant), explain_error=explain_error, **extra,
    )  # fmt: skip


@router.get("/tenant/{tenant}/dlq")
async def tenant_dlq(request: Request, tenant: str, viewer: SignedIn) -> Response:
    return await _dlq_page(request, _tenant_seen(viewer, tenant), viewer)


def _tenant_acts(viewer: Viewer, tenant: str) -> str:
    tenant = _tenant_seen(viewer, tenant)
    if viewer.operator:
        raise ConsoleError(
            403, "Operators retry dead letters from the Dead letters page, not a tenant's view."
        )
    return tenant


@router.post("/tenant/{tenant}/dlq/preview")
async def tenant_dlq_preview(request: Request, tenant: str, viewer: Acting) -> Response:
    """The dry run: exactly which dead letters a retry would take."""
    tenant = _tenant_acts(viewer, tenant)
    state = request.app.state
    try:
        ask = _retry_form(await request.form(), state.settings.tenant_retry_max)
        run = await _dry_run(request, tenant, viewer, ask)
        await _within_the_hour(request, tenant, run.matched)
    except ValidationError as exc:
        return await _dlq_page(request, tenant, viewer, 422, error=str(exc))
    return await _dlq_page(request, tenant, viewer, preview=run, ask=ask)


async def _dry_run(request: Request, tenant: str, viewer: Viewer, ask: _Retry) -> DlqAction:
    state = request.app.state
    args = message_args(ask.filter(tenant), dry_run=True)
    result = await perform(state.store, state.settings, "dlq.retry", args, actor=viewer.actor,
                           clock=state.clock)  # fmt: skip
    assert isinstance(result, DlqAction)  # a dry run is never held back
    return result


@router.post("/tenant/{tenant}/dlq/retry")
async def tenant_dlq_retry(request: Request, tenant: str, viewer: Acting) -> Response:
    """Retry what the preview showed: the same filter and limit, refused when the dead
    letters changed since (a replayed form), above the limits, or with no reason."""
    tenant = _tenant_acts(viewer, tenant)
    state = request.app.state
    form = await request.form()
    try:
        ask = _retry_form(form, state.settings.tenant_retry_max)
        if ask.reason is None:
            raise ValidationError("reason", "is required: say why (it goes to the audit log)")
        previewed = await _previewed(state.store, tenant, _field(form, "ids"))
        await _within_the_hour(request, tenant, len(previewed))
        now_selected = await _dry_run(request, tenant, viewer, ask)
        if now_selected.ids != previewed:
            raise ValidationError(
                "ids", "the dead letters changed since your preview (retried, cancelled or "
                "new ones): nothing was retried; preview again",
            )  # fmt: skip
        args = message_args(ask.filter(tenant))
        result = await perform(
            state.store, state.settings, "dlq.retry", args, actor=viewer.actor,
            reason=ask.reason, clock=state.clock,
        )  # fmt: skip
    except ValidationError as exc:
        return await _dlq_page(request, tenant, viewer, 422, error=str(exc))
    except SluiceError as exc:
        return await _dlq_page(request, tenant, viewer, 409, error=str(exc))
    if isinstance(result, Filed):
        done = (f"Your retry of {len(previewed)} dead letter(s) waits for an operator's "
                f"approval (request {result.request.id}).")  # fmt: skip
    else:
        done = (f"Retried {result.changed} dead letter(s); they are back in the queue. "
                f"Audited as {viewer.actor}.")  # fmt: skip
    return await _dlq_page(request, tenant, viewer, notice=done)


async def _previewed(store: Store, tenant: str, raw: str | None) -> list[str]:
    """The ids the preview showed, each one a message of this tenant (404 otherwise)."""
    text = _text("ids", raw)
    if text is None:
        raise ValidationError("ids", "preview the retry first")
    ids = [i.strip() for i in text.split(",") if i.strip()]
    for message_id in ids:
        await _message_seen(store, tenant, message_id)
    return ids


async def _within_the_hour(request: Request, tenant: str, count: int) -> None:
    per_hour = request.app.state.settings.tenant_retry_per_hour
    used = await _retried_last_hour(request, tenant)
    if used + count > per_hour:
        left = max(0, per_hour - used)
        raise ValidationError(
            "limit", f"at most {per_hour} dead letters may be retried an hour (your operator's "
            f"setting); {used} were in the last hour, so {left} more may be now",
        )  # fmt: skip
