"""Annotations: deploy, config and note markers an operator records (``sluice annotate``,
``POST /v1/annotations``), listed by ``sluice annotations list`` and ``GET
/v1/annotations``, and shown in an incident's evidence archive when they fall in its
window. Recording one is audited (``annotation.add``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sluice.clock import Clock, SystemClock
from sluice.errors import ValidationError
from sluice.ops.actions import require_actor
from sluice.store.base import Annotation, AuditEntry, Store

__all__ = [
    "KINDS",
    "MAX_DETAIL",
    "MAX_PAGE",
    "MAX_TEXT",
    "AnnotationPage",
    "annotation_add",
    "annotation_as_dict",
    "annotation_page",
]

#: The kinds an annotation may have (what ``--kind`` takes).
KINDS = ("deploy", "config", "note", "rollback", "maintenance", "provider")
#: Longest text an annotation keeps.
MAX_TEXT = 2000
#: Largest detail, as JSON text.
MAX_DETAIL = 8192
#: The most annotations one page lists.
MAX_PAGE = 1000


@dataclass(frozen=True, slots=True)
class AnnotationPage:
    """One page of a listing; ``next_cursor`` fetches the next, older one (None: no more)."""

    items: list[Annotation]
    next_cursor: str | None

    def as_dict(self) -> dict[str, Any]:
        """The one listing shape: ``{"items", "count", "next_cursor"}``."""
        items = [annotation_as_dict(a) for a in self.items]
        return {"items": items, "count": len(items), "next_cursor": self.next_cursor}


def annotation_as_dict(a: Annotation) -> dict[str, Any]:
    """An annotation as JSON."""
    return {"id": a.id, "at": a.at.isoformat(), "actor": a.actor, "kind": a.kind,
            "text": a.text, "tenant": a.tenant, "detail": a.detail}  # fmt: skip


def _text(field: str, value: str, most: int, *, required: bool = True) -> str:
    if not isinstance(value, str):
        raise ValidationError(field, "must be text")
    if required and not value.strip():
        raise ValidationError(field, "must not be empty")
    if len(value) > most:
        raise ValidationError(field, f"is {len(value)} characters; at most {most}")
    if "\x00" in value:
        raise ValidationError(field, "must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(field, "is not valid text (a lone surrogate)") from None
    return value


def _detail(detail: dict[str, Any] | None) -> dict[str, Any]:
    if detail is None:
        return {}
    if not isinstance(detail, dict):
        raise ValidationError("detail", "must be a JSON object")

    def finite(v: Any) -> None:
        if isinstance(v, float) and not math.isfinite(v):
            raise ValidationError("detail", f"must hold finite numbers only, not {v!r}")
        if isinstance(v, dict):
            for k, x in v.items():
                _text("detail", str(k), 200)
                finite(x)
        elif isinstance(v, list):
            for x in v:
                finite(x)
        elif isinstance(v, str):
            _text("detail", v, MAX_DETAIL, required=False)

    finite(detail)
    try:
        size = len(json.dumps(detail))
    except (TypeError, ValueError):
        raise ValidationError("detail", "must be plain JSON") from None
    if size > MAX_DETAIL:
        raise ValidationError("detail", f"is {size} bytes of JSON; at most {MAX_DETAIL}")
    return detail


def _when(field: str, at: datetime | None) -> datetime | None:
    if at is not None and at.tzinfo is None:
        raise ValidationError(field, "needs a timezone, e.g. 2026-01-01T09:00:00Z")
    return at


async def annotation_add(
    store: Store,
    text: str,
    *,
    actor: str,
    kind: str = "note",
    tenant: str | None = None,
    at: datetime | None = None,
    detail: dict[str, Any] | None = None,
    clock: Clock | None = None,
) -> Annotation:
    """Record a marker (``at``: when the marked thing happened; now by default); audited
    as ``annotation.add``. ``ValidationError`` names the first field that is wrong."""
    require_actor(actor)
    _text("actor", actor, 300)
    text = _text("text", text, MAX_TEXT)
    if kind not in KINDS:
        raise ValidationError("kind", f"{kind!r} is not one of {', '.join(KINDS)}")
    if tenant is not None:
        tenant = _text("tenant", tenant, 128)
    now = (clock or SystemClock()).now()
    when = _when("at", at) or now
    body = _detail(detail)
    a = Annotation(at=when, actor=actor, kind=kind, text=text, tenant=tenant or "", detail=body)
    audit = AuditEntry(
        at=now, actor=actor, action="annotation.add", target=f"{kind}({tenant or 'all'})",
        detail={"kind": kind, "tenant": tenant or None, "at": when.isoformat(),
                "text": text[:200]},
    )  # fmt: skip
    return await store.annotation_add(a, audit)


async def annotation_page(
    store: Store,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    tenant: str | None = None,
    kind: str | None = None,
    limit: int = 100,
    cursor: str | None = None,
) -> AnnotationPage:
    """Annotations newest first (by when they mark), ``since`` inclusive and ``until``
    exclusive, a page at a time."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise ValidationError("limit", f"must be a whole number from 1 to {MAX_PAGE}")
    _when("since", since)
    _when("until", until)
    if since is not None and until is not None and until <= since:
        raise ValidationError("until", f"must be after since ({since.isoformat()})")
    if tenant is not None:
        _text("tenant", tenant, 128)
    if kind is not None and kind not in KINDS:
        raise ValidationError("kind", f"{kind!r} is not one of {', '.join(KINDS)}")
    before: int | None = None
    if cursor is not None:
        if not cursor.isascii() or not cursor.isdigit() or len(cursor) > 19 or int(cursor) < 1:
            raise ValidationError("cursor", "is not a cursor this listing gave")
        before = int(cursor)
    rows = await store.annotation_list(
        since, until, tenant=tenant, kind=kind, before_id=before, limit=limit + 1
    )
    more = len(rows) > limit
    rows = rows[:limit]
    nxt = str(rows[-1].id) if more and rows else None
    return AnnotationPage(rows, nxt)
