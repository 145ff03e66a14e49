"""A worker's claim keeps finding its rows by primary key as ``sluice_messages`` grows.

PostgreSQL keeps the generic plan of a prepared statement until something invalidates
it (an ANALYZE, a VACUUM). Planned while the table was nearly empty, the claim's UPDATE
read the whole table to find the rows it had just locked, and went on doing so as the
table grew, until autovacuum came round. The store plans the size-dependent statements
again once the table has doubled since they were planned; this counts the sequential
scans of the table that claims cause, before and after it grew; and those a write-back
of a few outcomes causes in a small table.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest
from tests.conftest import _migrate, create_database, drop_database

from sluice.model import Attempt, AttemptOutcome, Completion, NewMessage, Status
from sluice.store.postgres import SIZE_EVERY, PostgresStore


@pytest.fixture
def generic_db() -> Iterator[str]:
    """A database of its own whose sessions always use generic plans: what PostgreSQL
    settles on after five executions of a prepared statement, here from the first."""
    url = create_database("sluice_replan")
    asyncio.run(_migrate(url))
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" SET plan_cache_mode = force_generic_plan')
    yield url
    drop_database(url)


def _seq_scans(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT seq_scan FROM pg_stat_user_tables WHERE relname = 'sluice_messages'"
        ).fetchone()
    assert row is not None
    return int(row[0])


async def _claims(store: PostgresStore, n: int) -> None:
    for _ in range(n):
        claimed, _ = await store.message_claim_with_connections(
            "replan-test", 10, 30.0, datetime.now(UTC)
        )
        assert claimed == []
    # The backend's counters reach the shared statistics now, not up to 10 s later.
    async with store._conn() as conn:
        await conn.execute("SELECT pg_stat_force_next_flush()")


async def test_claim__planned_on_an_empty_table_stops_scanning_it_once_it_has_grown(
    generic_db: str,
) -> None:
    store = PostgresStore(generic_db, pool_size=2, listen=False)
    await store.open()
    try:
        # Planned on the empty table (psycopg prepares a statement at its 6th use).
        await _claims(store, 12)
        messages = [
            NewMessage(tenant=f"t{i % 7}", channel="sms", provider="null",
                       recipient="+14155550100", payload={"i": i, "pad": "x" * 200})
            for i in range(6000)
        ]  # fmt: skip
        for lo in range(0, len(messages), 2000):
            await store.enqueue_many(messages[lo : lo + 2000], None)
        with psycopg.connect(generic_db, autocommit=True) as conn:
            conn.execute("UPDATE sluice_messages SET status = 'sent'")
            pages = conn.execute("SELECT pg_relation_size('sluice_messages') / 8192").fetchone()
        assert pages is not None and pages[0] > 100
        await asyncio.sleep(SIZE_EVERY)  # the next claim asks how big the table is now
        await _claims(store, 12)  # learns it, then prepares the claim anew
        before = _seq_scans(generic_db)
        await _claims(store, 20)
        assert _seq_scans(generic_db) - before == 0
    finally:
        await store.close()


async def test_write_back__finds_a_few_rows_by_primary_key_in_a_small_table(
    generic_db: str,
) -> None:
    """A write-back of a few outcomes probes the primary key, whatever the table's size.

    The batch arrives as JSON, which the planner takes for 100 rows; against a table of
    a few thousand it found the rows to lock, and then the rows to update, each with a
    sequential scan of the whole table (2 to 3 ms for 10 outcomes at 2,500 rows, a
    worker's first minutes at 1,000 messages a second)."""
    store = PostgresStore(generic_db, pool_size=2, listen=False)
    await store.open()
    try:
        messages = [
            NewMessage(tenant=f"t{i % 7}", channel="sms", provider="null",
                       recipient="+14155550100", payload={"i": i})
            for i in range(3000)
        ]  # fmt: skip
        await store.enqueue_many(messages, None)
        claimed = await store.message_claim("replan-test", 100, 60.0, datetime.now(UTC))
        with psycopg.connect(generic_db, autocommit=True) as conn:
            conn.execute("ANALYZE sluice_messages")
        before = _seq_scans(generic_db)
        for lo in range(0, 100, 10):
            now = datetime.now(UTC)
            written = await store.message_complete_many(
                "replan-test",
                [Completion(m.id, m.claim_seq, "replan-test", Status.SENT,
                            Attempt(m.id, m.claim_seq, "replan-test", "null", now, now,
                                    AttemptOutcome.SENT))
                 for m in claimed[lo : lo + 10]],
                now,
            )  # fmt: skip
            assert len(written) == 10
        async with store._conn() as conn:
            await conn.execute("SELECT pg_stat_force_next_flush()")
        assert _seq_scans(generic_db) - before == 0
    finally:
        await store.close()
