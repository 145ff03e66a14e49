"""Suppression lists, the operator's acts: list, add, remove. One implementation under
``sluice suppressions`` and ``/v1/suppressions`` (an operator's key, or a tenant's key for
its own list only).

A suppression stops every message of its tenant to its recipient on its medium
(``sms``, ``whatsapp``, ``email``) before any provider call: the message ends
``suppressed`` (``sluice.worker.hygiene``). Ingress adds and lifts them from provider
events (``sluice.ingress.hygiene``); here an operator does it by hand, with a reason.
Every change is audited (``suppression.add`` / ``suppression.remove``), whoever made it.

Recipients are taken in any spelling enqueue accepts and kept normalised
(``sluice.flow.hygiene.normalise``): ``whatsapp:+14155550100`` and ``14155550100`` name
the same WhatsApp user, ``Ann@Example.com`` the same address as ``ann@example.com``.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from sluice.clock import Clock, SystemClock
from sluice.errors import NotFound, ValidationError
from sluice.flow.hygiene import Suppression, check_suppression
from sluice.ops.actions import require_actor
from sluice.store.base import Store
from sluice.store.hygiene import lift, suppress

__all__ = [
    "MAX_PAGE",
    "MAX_REASON",
    "SuppressionPage",
    "suppression_add",
    "suppression_as_dict",
    "suppression_find",
    "suppression_list",
    "suppression_remove",
]

#: The most entries one page lists.
MAX_PAGE = 1000
#: The longest reason an entry keeps.
MAX_REASON = 500
_MAX_REASON = MAX_REASON


@dataclass(frozen=True, slots=True)
class SuppressionPage:
    """One page of a listing; ``next_cursor`` fetches the next (None: no more)."""

    items: list[Suppression]
    next_cursor: str | None

    def as_dict(self) -> dict[str, Any]:
        """The one listing shape: ``{"items", "count", "next_cursor"}``."""
        items = [suppression_as_dict(s) for s in self.items]
        return {"items": items, "count": len(items), "next_cursor": self.next_cursor}


def suppression_as_dict(s: Suppression) -> dict[str, Any]:
    """A suppression as JSON."""
    return {
        "tenant": s.tenant,
        "channel": s.channel,
        "recipient": s.recipient,
        "reason": s.reason,
        "source": s.source,
        "actor": s.actor,
        "created_at": s.created_at.isoformat(),
    }


async def suppression_list(
    store: Store,
    *,
    tenant: str | None = None,
    channel: str | None = None,
    recipient: str | None = None,
    limit: int = 100,
    cursor: str | None = None,
) -> SuppressionPage:
    """Suppressions by tenant, channel and recipient (each optional; a recipient needs its
    channel, which says how to read it), a page at a time."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise ValidationError("limit", f"must be a whole number from 1 to {MAX_PAGE}")
    if tenant is not None:
        check_suppression(tenant, "email", "probe@example.com")
    if channel is not None:
        check_suppression("probe", channel, _PROBES.get(channel, "+14155550100"))
    if recipient is not None:
        if channel is None:
            raise ValidationError("channel", "is required with recipient (it says how to read it)")
        recipient = check_suppression(tenant or "probe", channel, recipient)
    after = _decode(cursor) if cursor is not None else None
    rows = await store.suppression_list(tenant, channel, recipient, after, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    last = rows[-1] if rows and more else None
    nxt = _encode((last.tenant, last.channel, last.recipient)) if last is not None else None
    return SuppressionPage(rows, nxt)


async def suppression_add(
    store: Store,
    *,
    tenant: str,
    channel: str,
    recipient: str,
    actor: str,
    reason: str = "",
    clock: Clock | None = None,
) -> tuple[Suppression, bool]:
    """Suppress a recipient by hand (reason ``operator``; the operator's words are its
    source). The entry in force and whether it is new: adding one that exists changes
    nothing (the first entry, and why it was made, are kept)."""
    require_actor(actor)
    note = _reason(reason)
    value = check_suppression(tenant, channel, recipient, note)
    now = (clock or SystemClock()).now()
    entry = Suppression(tenant, channel, value, "operator", note, actor, now)
    if await suppress(store, entry):
        return entry, True
    (kept,) = await store.suppression_list(tenant, channel, value, None, 1) or [entry]
    return kept, False


async def suppression_remove(
    store: Store,
    *,
    tenant: str,
    channel: str,
    recipient: str,
    actor: str,
    reason: str = "",
    clock: Clock | None = None,
) -> Suppression:
    """Lift a suppression by hand, audited; ``NotFound`` (nothing written) when the
    recipient is not suppressed for that tenant and channel."""
    require_actor(actor)
    note = _reason(reason)
    value = check_suppression(tenant, channel, recipient, note)
    now = (clock or SystemClock()).now()
    removed = await lift(store, tenant, channel, value, actor, "operator", note, now)
    if removed is None:
        raise NotFound(f"{value} is not suppressed for tenant {tenant!r} on {channel}")
    return removed


async def suppression_find(
    store: Store, *, tenant: str, channel: str, recipient: str, reason: str = ""
) -> Suppression:
    """The suppression ``suppression_remove`` would lift, its arguments checked the same
    way; ``NotFound`` when there is none. Changes nothing (the two-person rule files a
    removal only when there is something to remove)."""
    value = check_suppression(tenant, channel, recipient, _reason(reason))
    found = await store.suppression_list(tenant, channel, value, None, 1)
    if not found:
        raise NotFound(f"{value} is not suppressed for tenant {tenant!r} on {channel}")
    return found[0]


_PROBES = {"email": "probe@example.com"}


def _reason(reason: Any) -> str:
    if not isinstance(reason, str) or len(reason) > _MAX_REASON:
        raise ValidationError("reason", f"must be text of at most {_MAX_REASON} characters")
    try:
        reason.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError("reason", "is not valid text (a lone surrogate)") from None
    if "\x00" in reason:
        raise ValidationError("reason", "must not contain NUL characters")
    return reason.strip()


def _encode(key: tuple[str, str, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode().rstrip("=")


def _decode(cursor: str) -> tuple[str, str, str]:
    try:
        if not isinstance(cursor, str) or len(cursor) > 4096:
            raise ValueError
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key = json.loads(raw)
        if not (isinstance(key, list) and len(key) == 3 and all(isinstance(k, str) for k in key)):
            raise ValueError
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ValidationError("cursor", "is not a cursor this listing gave") from None
    return key[0], key[1], key[2]
