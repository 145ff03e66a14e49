"""The claim's plan on a table the planner knows nothing about (PostgreSQL).

A new database, or one whose backlog arrived faster than autovacuum analyses it, has
statistics that say the table is empty. The claim must still look each offer up by its
primary key: once, the planner took the ready index for that lookup instead and read
the whole backlog once per offer (231,896 buffers and 147 ms for a claim of 100 at
5,000 ready; 400 buffers by primary key). Buffers are counted, not time: the count is
the same on a busy machine.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from tests.conftest import _migrate, create_database, drop_database

from sluice.model import NewMessage
from sluice.store import create_store
from sluice.store.postgres import Q

READY = 5_000
CLAIM = 100


@pytest.fixture
def never_analysed() -> Iterator[str]:
    url = create_database("sluice_plan")
    try:
        asyncio.run(_migrate(url))
        yield url
    finally:
        drop_database(url)


def _buffers(plan: dict[str, int]) -> int:
    return plan.get("Shared Hit Blocks", 0) + plan.get("Shared Read Blocks", 0)


def test_claim_on_a_never_analysed_table_looks_offers_up_by_primary_key(
    never_analysed: str,
) -> None:
    async def fill() -> None:
        store = create_store(never_analysed)
        await store.open()  # type: ignore[attr-defined]
        try:
            await store.enqueue_many(
                [
                    NewMessage(
                        tenant=f"t{i % 10}",
                        channel="api",
                        provider="null",
                        recipient="r",
                        payload={"i": i},
                    )
                    for i in range(READY)
                ]
            )
        finally:
            await store.close()

    asyncio.run(fill())
    now = datetime.now(UTC)
    params = {"worker_id": "w1", "limit": CLAIM, "now": now,
              "lease_until": now + timedelta(seconds=30), "after": ""}  # fmt: skip
    with psycopg.connect(never_analysed, options="-c jit=off") as conn:
        never = conn.execute(
            "SELECT last_analyze IS NULL AND last_autoanalyze IS NULL FROM pg_stat_user_tables "
            "WHERE relname = 'sluice_messages'"
        ).fetchone()
        assert never == (True,), "the test needs a table without statistics"
        [(doc,)] = conn.execute(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + Q["message_claim"], params
        ).fetchall()
        conn.rollback()
    plan = (doc if isinstance(doc, list) else json.loads(doc))[0]["Plan"]
    assert plan["Actual Rows"] == CLAIM
    # By primary key: a few buffers per offer (about 400 in all). Reading the ready
    # index once per offer touches every ready row's entry each time (hundreds of
    # thousands).
    assert _buffers(plan) < 20 * CLAIM, f"claim touched {_buffers(plan):,} buffers"
