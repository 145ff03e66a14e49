"""Stores: one protocol, a PostgreSQL and a SQLite implementation, picked by URL."""

from __future__ import annotations

from sluice.config import Settings
from sluice.errors import ConfigError
from sluice.store.base import (
    Activity,
    AuditEntry,
    AuditFilter,
    DlqGroup,
    MessageFilter,
    RescueResult,
    StatusReport,
    Store,
    WorkerInfo,
)

__all__ = [
    "Activity",
    "AuditEntry",
    "AuditFilter",
    "DlqGroup",
    "MessageFilter",
    "RescueResult",
    "StatusReport",
    "Store",
    "WorkerInfo",
    "create_store",
    "open_store",
]


def create_store(url: str, settings: Settings | None = None, *, create: bool = True) -> Store:
    """A store for ``url`` (``postgresql://…`` or ``sqlite:///…``), not yet opened.

    ``create=False`` refuses to make a new SQLite file where none exists. ``settings``
    also decide what its ``enqueue_many`` accepts (loopback webhook targets); without
    them the configuration in effect does.
    """
    pool_size = settings.pool_size if settings else 8
    if url.startswith(("postgresql://", "postgres://")):
        from sluice.store.postgres import PostgresStore

        timeout = settings.db_timeout if settings else 5.0
        return PostgresStore(url, pool_size=pool_size, timeout=timeout, settings=settings)
    if url.startswith("sqlite:"):
        from sluice.store.sqlite import SqliteStore

        return SqliteStore(url, create=create, settings=settings)
    raise ConfigError(
        f"database URL {url!r} is not supported: use sqlite:///file.db or postgresql://…"
    )


async def open_store(url: str, settings: Settings | None = None, *, create: bool = True) -> Store:
    """Create and open a store; raises ``StoreUnavailable`` if it cannot be reached."""
    store = create_store(url, settings, create=create)
    await store.open()
    return store
