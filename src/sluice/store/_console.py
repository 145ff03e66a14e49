"""Console sessions in a SQL store (``sluice_console_sessions``): the part of
:class:`sluice.store._driver.SqlDriver` that keeps signed-in browsers and one-time login
links, the same for both dialects."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sluice.errors import NotFound
from sluice.store._codec import Codec
from sluice.store._hooks import DriverHooks
from sluice.store.base import ConsoleSession

__all__ = ["ConsoleSessionStore"]


def _session(c: Codec, r: Sequence[Any]) -> ConsoleSession:
    return ConsoleSession(
        token_hash=r[0], kind=r[1], key_id=r[2], actor=r[3], csrf=r[4],
        created_at=c.read_time(r[5]), seen_at=c.read_time(r[6]), expires_at=c.read_time(r[7]),
    )  # fmt: skip


class ConsoleSessionStore(DriverHooks):
    """Store methods of console sessions, over the driver's named queries."""

    async def console_session_insert(self, session: ConsoleSession) -> None:
        s, c = session, self.codec
        params = {
            "token_hash": s.token_hash, "kind": s.kind, "key_id": s.key_id, "actor": s.actor,
            "csrf": s.csrf, "created_at": c.write_time(s.created_at),
            "seen_at": c.write_time(s.seen_at), "expires_at": c.write_time(s.expires_at),
        }  # fmt: skip
        await self._script([("console_session_insert", params)])

    async def console_session_get(self, token_hash: str) -> ConsoleSession:
        rows = await self._fetch("console_session_get", {"token_hash": token_hash})
        if not rows:
            raise NotFound("no such console session")
        return _session(self.codec, rows[0])

    async def console_session_touch(self, token_hash: str, seen_at: datetime) -> None:
        params = {"token_hash": token_hash, "seen_at": self.codec.write_time(seen_at)}
        await self._script([("console_session_touch", params)])

    async def console_session_take(self, token_hash: str) -> ConsoleSession | None:
        rows = await self._script([("console_session_take", {"token_hash": token_hash})])
        return _session(self.codec, rows[0][0]) if rows[0] else None

    async def console_session_purge(self, now: datetime) -> int:
        rows = await self._script([("console_session_purge", {"now": self.codec.write_time(now)})])
        return len(rows[0])
