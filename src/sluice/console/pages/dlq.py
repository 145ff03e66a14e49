"""Dead letters: groups by channel and error code, a group's messages, and retry or
cancel of exactly the messages a preview showed (``sluice dlq list|retry|cancel``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from sluice.console.pages.bulk import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    act,
    form_filter,
    messages_of,
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
from sluice.ops.actions import dlq_list
from sluice.store.base import MessageFilter

__all__ = ["router"]

router = APIRouter()

#: The filters of the page (the group adds channel and error code).
FILTERS = ("tenant", "provider", "action", "since")
GROUP = ("channel", "error_code")
VERBS = {"retry": "requeued", "cancel": "cancelled"}
#: A group's page lists this many of its messages, oldest first.
SHOWN = 100


@router.get("/dlq")
async def dead_letters(request: Request, viewer: OperatorViewer) -> Response:
    state = request.app.state
    raw = raw_fields(request.query_params, FILTERS)
    try:
        flt = MessageFilter(**form_filter(request.query_params, state.clock.now(), FILTERS))
    except ValidationError as exc:
        return render(request, "dlq.html", 400, raw=raw, groups=[], error=str(exc))
    groups = await dlq_list(state.store, flt)
    rows = [
        {"group": g, "first": time_text(g.first_at), "last": time_text(g.last_at),
         "query": {**raw, "channel": g.channel, "error_code": g.error_code}}
        for g in groups
    ]  # fmt: skip
    return render(request, "dlq.html", raw=raw, groups=rows,
                  total=sum(g.count for g in groups))  # fmt: skip


async def _group(request: Request, params: Any, status: int = 200, **extra: Any) -> Response:
    """A group's page: its figures and oldest messages, plus what ``extra`` adds (a
    preview, an act's outcome, an error)."""
    state = request.app.state
    raw, back = raw_fields(params, FILTERS + GROUP), raw_fields(params, FILTERS)
    try:
        fields = form_filter(params, state.clock.now(), FILTERS + GROUP)
        if not fields["channel"] or not fields["error_code"]:
            raise ValidationError("group", "name a channel and an error code (open one from /dlq)")
    except ValidationError as exc:
        return render(request, "dlq_group.html", 400, raw=raw, group=None, messages=[],
                      back=back, error=extra.get("error") or str(exc))  # fmt: skip
    groups = await dlq_list(state.store, MessageFilter(**fields))
    ids = await state.store.message_select(Status.DEAD, MessageFilter(**fields, limit=SHOWN))
    return render(
        request, "dlq_group.html", status, raw=raw, back=back, fields=fields,
        group=groups[0] if groups else None, messages=await messages_of(request, ids),
        shown=SHOWN, max_limit=MAX_LIMIT,
        limit=extra.pop("limit", DEFAULT_LIMIT), time_text=time_text, **extra,
    )  # fmt: skip


@router.get("/dlq/group")
async def dead_letter_group(request: Request, viewer: OperatorViewer) -> Response:
    return await _group(request, request.query_params)


def _verb(raw: object) -> str:
    verb = read_text("act", raw, 20)
    if verb not in VERBS:
        raise ValidationError("act", "must be retry or cancel")
    return verb


@router.post("/dlq/preview")
async def dead_letter_preview(
    request: Request, viewer: Acting, operator: OperatorViewer
) -> Response:
    """The dry run: exactly which dead letters the act would move (oldest first)."""
    form = await request.form()
    try:
        verb, limit = _verb(form.get("verb")), read_limit(form.get("limit"))
        fields = form_filter(form, request.app.state.clock.now(), FILTERS + GROUP)
        if not fields["channel"] or not fields["error_code"]:
            raise ValidationError("group", "name a channel and an error code")
        shown = await preview(request, viewer, f"dlq.{verb}",
                              MessageFilter(**fields, limit=limit))  # fmt: skip
    except SluiceError as exc:
        return await _group(request, form, status_of(exc), error=str(exc))
    return await _group(request, form, verb=verb, limit=limit, preview=shown)


@router.post("/dlq/act")
async def dead_letter_act(request: Request, viewer: Acting, operator: OperatorViewer) -> Response:
    """Retry or cancel exactly the previewed ids, with a reason; audited as the viewer."""
    form = await request.form()
    try:
        verb, ids = _verb(form.get("verb")), read_ids(form.get("ids"))
        reason = read_reason(form.get("reason"))
        outcome = await act(request, viewer, f"dlq.{verb}", ids, Status.DEAD, reason)
    except SluiceError as exc:
        return await _group(request, form, status_of(exc), error=str(exc),
                            **await previewed_again(request, form, VERBS, Status.DEAD))  # fmt: skip
    return await _group(request, form, outcome=outcome, done=VERBS[outcome.verb])
