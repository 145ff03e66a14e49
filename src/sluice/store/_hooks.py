"""What the store's method mixins (``_endpoints``, ``_requests``, ``_annotations``,
``_canaries``, ``_verify``) and ``SqlDriver`` need from a dialect's driver: declared
once here, implemented by ``PostgresStore`` and ``SqliteStore``."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sluice.model import AuditEntry
from sluice.store._codec import Codec

__all__ = ["DriverHooks"]


class DriverHooks:
    """The driver's primitives every dialect-independent store method is written with."""

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

    async def _script(
        self,
        steps: Sequence[tuple[str, dict[str, Any]]],
        audit: AuditEntry | None = None,
        audit_if: int | None = None,
    ) -> list[list[Any]]:
        """Run named queries in one transaction, then append ``audit`` in it (only if step
        ``audit_if`` returned rows, when given); the rows of each step."""
        raise NotImplementedError

    def _read_transaction(self) -> contextlib.AbstractAsyncContextManager[Any]:
        """A connection of its own in a read-only transaction whose reads all see one
        moment of the database, ended (and the connection given back) on exit: what
        ``SqlDriver.snapshot`` pins a task's reads to."""
        raise NotImplementedError
