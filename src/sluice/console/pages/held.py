"""Held messages: how many wait for each reason and since when, the list of one reason,
and approve, release or cancel of exactly the messages a preview showed
(``sluice held list``, ``sluice approve|release|cancel``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from sluice.console.pages.bulk import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    act,
    age_text,
    form_filter,
    preview,
    previewed_again,
    raw_fields,
    read_ids,
    read_limit,
    read_reason,
    read_text,
    status_of,
    time_text,
)
from sluice.console.web import Acting, OperatorViewer, render
from sluice.errors import SluiceError, ValidationError
from sluice.model import Status
from sluice.ops.controls import held_list
from sluice.store.base import MessageFilter

__all__ = ["router"]

router = APIRouter()

FILTERS = ("tenant", "channel", "provider", "action", "contains", "since")
VERBS = {"approve": "approved", "release": "released", "cancel": "cancelled"}
#: The kinds of hold, each with the text its hold reasons start with (the list of one
#: kind filters on it). A recipient cap is a limit here.
KINDS = (
    ("approval", "control:approval"),
    ("control", "control:killed"),
    ("limit", "limit:"),
    ("connection", "connection:"),
    ("endpoint", "endpoint disabled:"),
)
#: The list shows this many held messages, oldest first.
SHOWN = 100


def kind_of(reason: str) -> str:
    return next((kind for kind, prefix in KINDS if reason.startswith(prefix)), "other")


@dataclass
class Waiting:
    """Held messages of one kind or one reason: how many, and the longest held."""

    name: str
    count: int = 0
    oldest: datetime | None = None
    reasons: list[Waiting] = field(default_factory=list)

    def add(self, count: int, oldest: datetime | None) -> None:
        self.count += count
        if oldest is not None and (self.oldest is None or oldest < self.oldest):
            self.oldest = oldest


async def _waiting(request: Request, flt: MessageFilter) -> list[Waiting]:
    """Held messages by kind, each with its reasons (largest first)."""
    state = request.app.state
    scope = MessageFilter(tenant=flt.tenant, channel=flt.channel, provider=flt.provider,
                          action=flt.action)  # fmt: skip
    rows = await state.store.message_breakdown("hold_reason", scope, "held", state.clock.now())
    kinds = {kind: Waiting(kind) for kind, _ in KINDS} | {"other": Waiting("other")}
    for row in rows:
        kind = kinds[kind_of(row.group)]
        kind.add(row.count, row.oldest_updated_at)
        reason = Waiting(row.group or "(no reason given)")
        reason.add(row.count, row.oldest_updated_at)
        kind.reasons.append(reason)
    for kind in kinds.values():
        kind.reasons.sort(key=lambda r: (-r.count, r.name))
    return list(kinds.values())


async def _page(
    request: Request, params: Mapping[str, Any], status: int = 200, **extra: Any
) -> Response:
    state = request.app.state
    now = state.clock.now()
    raw = raw_fields(params, FILTERS)
    try:
        flt = MessageFilter(**form_filter(params, now, FILTERS), limit=SHOWN)
    except ValidationError as exc:
        return render(request, "held.html", 400, raw=raw, kinds=[], messages=[],
                      error=extra.get("error") or str(exc))  # fmt: skip

    def age(when: datetime | None) -> str:
        return age_text((now - when).total_seconds() if when else None)

    return render(
        request, "held.html", status, raw=raw, kinds=await _waiting(request, flt),
        prefixes=dict(KINDS), messages=await held_list(state.store, flt), shown=SHOWN,
        filtered=bool(raw), max_limit=MAX_LIMIT, limit=extra.pop("limit", DEFAULT_LIMIT),
        age=age, time_text=time_text, **extra,
    )  # fmt: skip


@router.get("/held")
async def held(request: Request, viewer: OperatorViewer) -> Response:
    return await _page(request, request.query_params)


def _verb(raw: object) -> str:
    verb = read_text("act", raw, 20)
    if verb not in VERBS:
        raise ValidationError("act", "must be approve, release or cancel")
    return verb


@router.post("/held/preview")
async def held_preview(request: Request, viewer: Acting, operator: OperatorViewer) -> Response:
    """The dry run: exactly which held messages the act would move (oldest first)."""
    form = await request.form()
    try:
        verb, limit = _verb(form.get("verb")), read_limit(form.get("limit"))
        fields = form_filter(form, request.app.state.clock.now(), FILTERS)
        if not any(v is not None for v in fields.values()):
            raise ValidationError(
                "filter", f"name the messages to {verb}: filter by reason, tenant, channel, "
                "provider, action or since first",
            )  # fmt: skip
        shown = await preview(request, viewer, f"held.{verb}",
                              MessageFilter(**fields, limit=limit))  # fmt: skip
    except SluiceError as exc:
        return await _page(request, form, status_of(exc), error=str(exc))
    return await _page(request, form, verb=verb, limit=limit, preview=shown)


@router.post("/held/act")
async def held_act(request: Request, viewer: Acting, operator: OperatorViewer) -> Response:
    """Approve, release or cancel exactly the previewed ids, with a reason; audited as
    the viewer."""
    form = await request.form()
    try:
        verb, ids = _verb(form.get("verb")), read_ids(form.get("ids"))
        reason = read_reason(form.get("reason"))
        outcome = await act(request, viewer, f"held.{verb}", ids, Status.HELD, reason)
    except SluiceError as exc:
        return await _page(request, form, status_of(exc), error=str(exc),
                           **await previewed_again(request, form, VERBS, Status.HELD))  # fmt: skip
    return await _page(request, form, outcome=outcome, done=VERBS[outcome.verb])
