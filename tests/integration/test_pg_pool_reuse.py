"""The PostgreSQL pool hands a recently used connection out without a check round trip;
when those connections die together (the server dropped them), one statement fails,
the pool replaces the rest at once, and the next statement works."""

from __future__ import annotations

import asyncio
import contextlib

import psycopg
import pytest

from sluice.errors import StoreUnavailable
from sluice.store.postgres import PostgresStore


def _terminate_backends(url: str) -> int:
    """End every server process serving the store's database (not a restart: only
    this test's database is touched)."""
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        ).fetchone()
    return int(row[0]) if row else 0


async def test_pool__dead_connections_fail_once_then_all_are_replaced(pg_url: str) -> None:
    store = PostgresStore(pg_url, pool_size=4, listen=False)
    await store.open()
    try:
        for _ in range(3):
            await store.flow_version()  # recently used: handed out again unchecked
        assert _terminate_backends(pg_url) >= 1
        with pytest.raises(StoreUnavailable):
            await store.flow_version()
        for _ in range(4):
            assert await store.flow_version() >= 0
    finally:
        await store.close()


async def test_pool__a_connection_given_back_in_a_transaction_survives_repeated_cancellation(
    pg_url: str,
) -> None:
    """A connection handed back with a transaction open (its task cancelled between
    statements) is rolled back by the pool, in the returning task; when that task is
    cancelled again during the rollback (an impatient shutdown), the pool closes the
    connection and opens another. Either way it keeps every slot: were the connection
    left outside it, the pool would be one short for good."""
    store = PostgresStore(pg_url, pool_size=2, listen=False, timeout=2)
    await store.open()
    try:
        for _ in range(3):
            inside = asyncio.Event()

            async def hold() -> None:
                async with store._conn() as conn:
                    await conn.execute("BEGIN")
                    await conn.execute("SELECT 1")
                    inside.set()
                    await asyncio.sleep(30)

            task = asyncio.create_task(hold())
            await inside.wait()
            for _ in range(200):  # again and again, whatever the task is waiting on
                task.cancel()
                await asyncio.sleep(0)
                if task.done():
                    break
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # Both slots are still there: two connections at once, within the timeout.
        async with store._conn() as a, store._conn() as b:
            assert a is not b
            assert (await (await a.execute("SELECT 1")).fetchone()) == (1,)
    finally:
        await store.close()
