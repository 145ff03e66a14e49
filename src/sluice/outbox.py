"""Enqueue side effects inside the caller's own transaction (the transactional outbox).

::

    with psycopg.connect(url) as conn:          # or sqlite3, or SQLAlchemy
        create_order(conn, order)
        sluice.enqueue(conn, NewMessage(tenant="acme", channel="webhook", ...))
    # committed together; a rollback leaves neither the order nor the message

The message exists from the commit on and is never lost after it. A tenant's
idempotency key makes a repeated enqueue return the first message; the same key
with different content raises ``IdempotencyConflict``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sluice import tracing
from sluice.clock import Clock, SystemClock
from sluice.errors import ConfigError
from sluice.model import NewMessage
from sluice.store import _enqueue

__all__ = ["enqueue", "enqueue_async", "enqueue_many", "enqueue_many_async"]

_clock: Clock = SystemClock()


def _now(clock: Clock | None) -> datetime:
    return (clock or _clock).now()


def _pg_now(clock: Clock | None) -> datetime | None:
    """PostgreSQL stamps new messages with the server's time unless a clock is given."""
    return clock.now() if clock is not None else None


def _unwrap(conn: Any) -> Any:
    """The DB-API connection under a SQLAlchemy Connection or Session, else ``conn``.

    Writing on the raw connection keeps us inside the transaction SQLAlchemy opened.
    """
    if not type(conn).__module__.startswith("sqlalchemy"):
        return conn
    from sqlalchemy.engine import Connection
    from sqlalchemy.orm import Session

    if isinstance(conn, Session):
        conn = conn.connection()
    if not isinstance(conn, Connection):
        raise ConfigError(
            f"cannot enqueue on a SQLAlchemy {type(conn).__name__}: pass the Connection or "
            "Session whose transaction the messages belong to (engine.begin() / Session())"
        )
    return conn.connection.dbapi_connection


def enqueue_many(
    conn: Any, messages: Iterable[NewMessage], *, clock: Clock | None = None
) -> list[str]:
    """Write ``messages`` in ``conn``'s current transaction; return their ids in order.

    ``conn``: a ``psycopg.Connection``, a ``sqlite3.Connection``, or a SQLAlchemy
    ``Connection``/``Session`` over either. Nothing is committed here: the caller's
    commit makes the messages real, the caller's rollback makes them never exist.
    """
    with tracing.origin("python"):
        return _enqueue_many(conn, messages, clock)


def _enqueue_many(conn: Any, messages: Iterable[NewMessage], clock: Clock | None) -> list[str]:
    rows = _enqueue.prepare(messages)
    raw = _unwrap(conn)
    if isinstance(raw, sqlite3.Connection):
        from sluice.store.sqlite import sqlite_enqueue

        return sqlite_enqueue(raw, rows, _now(clock))
    import psycopg

    if isinstance(raw, psycopg.Connection):
        from sluice.store.postgres import pg_enqueue_sync

        return pg_enqueue_sync(raw, rows, _pg_now(clock))
    if isinstance(raw, psycopg.AsyncConnection):
        raise ConfigError("an AsyncConnection needs: await sluice.enqueue_many_async(conn, ...)")
    raise ConfigError(
        f"cannot enqueue on a {type(conn).__module__}.{type(conn).__name__}: pass a psycopg "
        "Connection, a sqlite3 Connection, or a SQLAlchemy Connection or Session"
    )


def enqueue(conn: Any, message: NewMessage, *, clock: Clock | None = None) -> str:
    """Write one message in ``conn``'s current transaction; return its id."""
    return enqueue_many(conn, [message], clock=clock)[0]


async def enqueue_many_async(
    conn: Any, messages: Iterable[NewMessage], *, clock: Clock | None = None
) -> list[str]:
    """Like ``enqueue_many`` for a ``psycopg.AsyncConnection`` or a Sluice ``Store``.

    On a Store the messages get their own transaction, committed before this returns.
    """
    with tracing.origin("python"):
        return await _enqueue_many_async(conn, messages, clock)


async def _enqueue_many_async(
    conn: Any, messages: Iterable[NewMessage], clock: Clock | None
) -> list[str]:
    import psycopg

    if isinstance(conn, psycopg.AsyncConnection):
        from sluice.store.postgres import pg_enqueue_async

        rows = _enqueue.prepare(messages)
        return await pg_enqueue_async(conn, rows, _pg_now(clock))
    if hasattr(conn, "enqueue_many") and hasattr(conn, "message_claim"):
        now = _pg_now(clock) if conn.dialect == "postgres" else _now(clock)
        ids: list[str] = await conn.enqueue_many(list(messages), now)
        return ids
    raise ConfigError(
        f"cannot enqueue asynchronously on {type(conn).__name__}: pass a psycopg "
        "AsyncConnection or a Sluice Store (use enqueue_many for sync connections)"
    )


async def enqueue_async(conn: Any, message: NewMessage, *, clock: Clock | None = None) -> str:
    """Like ``enqueue`` for a ``psycopg.AsyncConnection`` or a Sluice ``Store``."""
    return (await enqueue_many_async(conn, [message], clock=clock))[0]
