"""What both stores do the same way above their connections: the store methods that are
one named query and a row mapping, or that are made of the store's other methods.

A driver (``PostgresStore``, ``SqliteStore``) subclasses ``SqlDriver`` and supplies
its ``codec``, ``_fetch`` (run one named query, give back its rows), ``_move`` (a bulk
status change with its audit entry, in one transaction) and ``wake``; everything that
depends on how it holds a connection or a transaction stays in the driver.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sluice.connections import Connection
from sluice.errors import NotFound
from sluice.flow.controls import Control
from sluice.model import Message
from sluice.store import _params, _rows
from sluice.store._codec import Codec
from sluice.store.base import (
    ApiKey,
    AuditEntry,
    BreakerInfo,
    DlqGroup,
    InboxItem,
    LimitRow,
    MessageFilter,
    Receipt,
    Throttle,
    WorkerInfo,
)

__all__ = ["SqlDriver"]


class SqlDriver:
    """The dialect-independent part of a SQL store."""

    #: How the dialect keeps times and JSON.
    codec: Codec

    async def _fetch(self, name: str, params: dict[str, Any]) -> list[Any]:
        """Run the named query; its rows (none for a statement that returns none)."""
        raise NotImplementedError

    async def _move(
        self, query: str, ids: Sequence[str], from_status: str, now: datetime, audit: AuditEntry
    ) -> list[str]:
        """Move ``ids`` that are in ``from_status`` with ``query``; audit it; the moved ids."""
        raise NotImplementedError

    def wake(self) -> None:
        """Wake a waiting worker in this process."""
        raise NotImplementedError

    # -- messages ----------------------------------------------------------------

    async def message_select(self, status: str, flt: MessageFilter) -> list[str]:
        params = _params.message_select(self.codec, status, flt)
        return [r[0] for r in await self._fetch("message_select_by_status", params)]

    async def message_list(
        self, flt: MessageFilter, status: str | None, before_id: str | None, limit: int
    ) -> list[Message]:
        params = _params.message_list(self.codec, flt, status, before_id, limit)
        return [
            _rows.full_message(self.codec, r) for r in await self._fetch("message_list", params)
        ]

    async def message_requeue(
        self, ids: Sequence[str], from_status: str, now: datetime, audit: AuditEntry
    ) -> list[str]:
        return await self._move("message_requeue", ids, from_status, now, audit)

    async def message_cancel(
        self, ids: Sequence[str], from_status: str, now: datetime, audit: AuditEntry
    ) -> list[str]:
        return await self._move("message_cancel", ids, from_status, now, audit)

    async def message_approve(
        self, ids: Sequence[str], from_status: str, now: datetime, audit: AuditEntry
    ) -> list[str]:
        moved = await self._move("message_approve", ids, from_status, now, audit)
        self.wake()
        return moved

    async def dlq_groups(self, flt: MessageFilter) -> list[DlqGroup]:
        rows = await self._fetch("dlq_groups", {"tenant": flt.tenant, "channel": flt.channel})
        return [_rows.dlq_group(self.codec, r) for r in rows]

    # -- flow --------------------------------------------------------------------

    async def flow_version(self) -> int:
        (version,) = (await self._fetch("flow_version", {}))[0]
        return int(version)

    async def throttle_list(self, now: datetime) -> list[Throttle]:
        rows = await self._fetch("throttle_list", {"now": self.codec.write_time(now)})
        return [_rows.throttle(self.codec, r) for r in rows]

    async def limit_list(self) -> list[LimitRow]:
        return [_rows.limit_row(self.codec, r) for r in await self._fetch("limit_select", {})]

    async def control_list(self) -> list[Control]:
        return [_rows.control(self.codec, r) for r in await self._fetch("control_select", {})]

    async def breaker_list(self) -> list[BreakerInfo]:
        return [_rows.breaker(self.codec, r) for r in await self._fetch("breaker_list", {})]

    async def worker_list(self, since: datetime) -> list[WorkerInfo]:
        rows = await self._fetch("worker_list", {"since": self.codec.write_time(since)})
        return [_rows.worker(self.codec, r) for r in rows]

    # -- connections -------------------------------------------------------------

    async def connection_list(
        self, tenant: str | None = None, provider: str | None = None
    ) -> list[Connection]:
        rows = await self._fetch("connection_select", {"tenant": tenant, "provider": provider})
        return [_rows.connection(self.codec, r) for r in rows]

    async def connection_get(self, tenant: str, provider: str) -> Connection:
        found = await self.connection_list(tenant, provider)
        if not found:
            raise NotFound(f"tenant {tenant!r} has no {provider} connection")
        return found[0]

    # -- the HTTP API and ingress -------------------------------------------------

    async def api_key_get(self, key_id: str) -> ApiKey:
        rows = await self._fetch("api_key_get", {"id": key_id})
        if not rows:
            raise NotFound(f"no API key {key_id!r}")
        return _rows.api_key(self.codec, rows[0])

    async def api_key_list(self) -> list[ApiKey]:
        return [_rows.api_key(self.codec, r) for r in await self._fetch("api_key_list", {})]

    async def inbox_list(
        self, state: str | None, provider: str | None, limit: int
    ) -> list[InboxItem]:
        params = {"state": state, "provider": provider, "limit": limit}
        return [_rows.inbox_item(self.codec, r) for r in await self._fetch("inbox_list", params)]

    async def inbox_counts(self) -> dict[str, int]:
        return {s: n for s, n in await self._fetch("inbox_counts", {})}

    async def receipt_list(self, message_id: str) -> list[Receipt]:
        rows = await self._fetch("receipt_list", {"id": _params.uuid_text(message_id)})
        return [_rows.receipt(self.codec, r) for r in rows]
