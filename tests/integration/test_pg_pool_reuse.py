"""The PostgreSQL pool hands a recently used connection out without a check round trip;
when those connections die together (the server dropped them), one statement fails,
the pool replaces the rest at once, and the next statement works."""

from __future__ import annotations

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
