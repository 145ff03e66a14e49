"""The audit log (``sluice audit list``): filtered by actor, action, tenant and time, a
page at a time, with the result of verifying its hash chain (``sluice audit verify``).

The verification walks the whole chain, so the page asks for it separately (htmx, on
load): the entries show at once, the verdict a moment later.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from starlette.responses import Response

from sluice.console.web import OperatorViewer, render
from sluice.errors import ValidationError
from sluice.ops.audit import audit_filter, audit_page, audit_verify, parse_instant
from sluice.ops.listings import int_cursor
from sluice.store.base import AuditFilter

__all__ = ["router"]

router = APIRouter()

FIELDS = ("actor", "action", "tenant", "since")
PAGE = 50
#: Longer values than these are refused before the filter is made (it allows 300).
MAX_TEXT = 300
MAX_TIME = 64


def _form(query: Mapping[str, str]) -> dict[str, str]:
    return {n: query.get(n, "")[:MAX_TEXT] for n in FIELDS}


def _filter(query: Mapping[str, str], now: datetime) -> AuditFilter:
    """The query string as an audit filter; ``ValidationError`` names the first field
    that is wrong."""
    texts = {n: (query.get(n) or "").strip() or None for n in ("actor", "action", "tenant")}
    for name, value in texts.items():
        if value is not None and not value.isprintable():
            raise ValidationError(name, "must be printable text (no control characters)")
    since_text = (query.get("since") or "").strip()
    if len(since_text) > MAX_TIME:
        raise ValidationError("since", f"is {len(since_text):,} characters; at most {MAX_TIME}")
    since = parse_instant(since_text, "since", now) if since_text else None
    raw_cursor = (query.get("cursor") or "").strip() or None
    return audit_filter(
        since=since, actor=texts["actor"], action=texts["action"], tenant=texts["tenant"],
        before_id=int_cursor(raw_cursor),
    )  # fmt: skip


@router.get("/audit")
async def audit(request: Request, viewer: OperatorViewer) -> Response:
    query = request.query_params
    form = _form(query)
    try:
        flt = _filter(query, request.app.state.clock.now())
        entries, older = await audit_page(request.app.state.store, flt, PAGE)
    except ValidationError as exc:
        return render(request, "audit.html", 400, form=form, entries=[], next_link=None,
                      error=str(exc))  # fmt: skip
    next_link = None
    if older is not None:
        next_link = "/audit?" + urlencode({**{k: v for k, v in form.items() if v},
                                           "cursor": str(older)})  # fmt: skip
    return render(request, "audit.html", form=form, entries=entries, next_link=next_link,
                  error=None, paged=bool(query.get("cursor")))  # fmt: skip


@router.get("/audit/verify")
async def audit_verified(request: Request, viewer: OperatorViewer) -> Response:
    """The hash chain's verdict (the fragment the audit page loads)."""
    check = await audit_verify(request.app.state.store)
    return render(request, "_audit_verify.html", check=check)
