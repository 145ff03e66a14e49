"""The audit log as an operator reads it: list it, filtered, and verify its hash chain.

One implementation for ``sluice audit list|verify`` and ``GET /v1/audit``. Which
entries a tenant or scope filter matches is written on :class:`sluice.store.AuditFilter`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sluice.errors import ValidationError
from sluice.store import AuditEntry, AuditFilter, Store
from sluice.store._audit import ChainCheck

__all__ = [
    "MAX_LIST",
    "AuditCheck",
    "audit_filter",
    "audit_list",
    "audit_page",
    "audit_verify",
    "parse_instant",
]

#: The most entries one ``audit list`` page returns.
MAX_LIST = 1000

_SPANS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True, slots=True)
class AuditCheck:
    """What ``audit_verify`` found: how many entries hold, and the first that does not."""

    checked: int
    broken_at: int | None = None
    why: str | None = None

    @property
    def ok(self) -> bool:
        return self.broken_at is None

    def as_dict(self) -> dict[str, object]:
        return {"ok": self.ok, "checked": self.checked, "broken_at": self.broken_at,
                "why": self.why}  # fmt: skip


def parse_instant(text: str, field: str, now: datetime) -> datetime:
    """An ISO 8601 time with a timezone (``2026-01-01T09:00:00Z``), or a span back from
    ``now`` (``90s``, ``15m``, ``2h``, ``7d``); ``ValidationError`` naming ``field``."""
    text = text.strip()
    if text and text[-1] in _SPANS and text[:-1].isdigit():
        return now - timedelta(seconds=int(text[:-1]) * _SPANS[text[-1]])
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValidationError(
            field, f"{text!r} is neither an ISO 8601 time nor a span like 15m, 2h, 7d"
        ) from None
    if when.tzinfo is None:
        raise ValidationError(field, f"{text!r} needs a timezone, e.g. 2026-01-01T09:00:00Z")
    return when


def audit_filter(
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    actor: str | None = None,
    action: str | None = None,
    tenant: str | None = None,
    channel: str | None = None,
    provider: str | None = None,
    scope_action: str | None = None,
    before_id: int | None = None,
) -> AuditFilter:
    """The filter, checked: ``ValidationError`` names the first field that is wrong."""
    for name, when in (("since", since), ("until", until)):
        if when is not None and when.tzinfo is None:
            raise ValidationError(name, "needs a timezone, e.g. 2026-01-01T09:00:00Z")
    if since is not None and until is not None and until <= since:
        raise ValidationError("until", f"must be after since ({since.isoformat()})")
    texts = (("actor", actor), ("action", action), ("tenant", tenant), ("channel", channel),
             ("provider", provider), ("action_name", scope_action))  # fmt: skip
    for name, value in texts:
        if value is None:
            continue
        if not value.strip():
            raise ValidationError(name, "must not be empty")
        if "\x00" in value:
            raise ValidationError(name, "must not contain NUL characters")
        if len(value) > 300:
            raise ValidationError(name, "must be at most 300 characters")
    if before_id is not None and before_id < 1:
        raise ValidationError("before", "must be an audit entry id (1 or more)")
    return AuditFilter(
        since=since, until=until, actor=actor, action=action, tenant=tenant, channel=channel,
        provider=provider, scope_action=scope_action, before_id=before_id,
    )  # fmt: skip


async def audit_list(store: Store, flt: AuditFilter, limit: int = 50) -> list[AuditEntry]:
    """The newest entries ``flt`` selects, newest first (at most ``limit``)."""
    if not 1 <= limit <= MAX_LIST:
        raise ValidationError("limit", f"must be between 1 and {MAX_LIST}")
    return await store.audit_list(limit, flt)


async def audit_page(
    store: Store, flt: AuditFilter, limit: int = 50
) -> tuple[list[AuditEntry], int | None]:
    """``audit_list``, and the ``before_id`` of the next (older) page (None: the last)."""
    if not 1 <= limit <= MAX_LIST:
        raise ValidationError("limit", f"must be between 1 and {MAX_LIST}")
    rows = await store.audit_list(limit + 1, flt)
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].id if more else None)


async def audit_verify(store: Store, page: int = 1000) -> AuditCheck:
    """Walk the whole hash chain, oldest first, ``page`` entries per read; stop at the
    first entry that breaks it. Entries appended meanwhile are checked too."""
    if page < 1:
        raise ValidationError("page_size", "must be at least 1")
    check = ChainCheck()
    while True:
        entries = await store.audit_walk(check.last_id, page)
        broken = check.feed(entries)
        if broken is not None:
            return AuditCheck(check.checked, broken[0], broken[1])
        if len(entries) < page:
            return AuditCheck(check.checked)
