"""Post-send verification in the store (issue 15, seed 003 RB-03), written once for both
dialects over their named queries; ``SqlDriver`` inherits it.

A message sent with ``verify_within`` carries a deadline (``verify_by``, set when it is
sent). ``message_verify_due`` moves the sent ones past it to ``needs_confirm``; a person
then confirms (``delivered``) or fails (``dead``, code ``NOT_CONFIRMED``, which
``sluice dlq retry`` can send again) them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sluice.model import AuditEntry
from sluice.store._hooks import DriverHooks

__all__ = ["VerifyMethods"]


class VerifyMethods(DriverHooks):
    """``message_verify_due``, ``message_confirm`` and ``message_fail`` of ``Store``."""

    async def message_verify_due(
        self, now: datetime, limit: int = 1000
    ) -> list[tuple[str, str, str, str]]:
        params = {"now": self.codec.write_time(now), "limit": limit}
        return [tuple(r) for r in await self._fetch("message_verify_due", params)]

    async def message_confirm(
        self, ids: Sequence[str], from_status: str, now: datetime, audit: AuditEntry
    ) -> list[str]:
        return await self._move("message_confirm", ids, from_status, now, audit)

    async def message_fail(
        self, ids: Sequence[str], from_status: str, now: datetime, audit: AuditEntry
    ) -> list[str]:
        return await self._move("message_fail", ids, from_status, now, audit)
