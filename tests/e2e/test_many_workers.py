"""Several worker processes on one PostgreSQL never send the same claim twice."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import psycopg

from sluice.model import NewMessage
from sluice.store import create_store

N = 10_000
WORKERS = 3


async def _enqueue(url: str, base: str) -> list[str]:
    store = create_store(url)
    await store.open()  # type: ignore[attr-defined]
    try:
        ids: list[str] = []
        for start in range(0, N, 2_000):
            ids += await store.enqueue_many(
                [
                    NewMessage(
                        tenant=f"t{i % 7}",
                        channel="webhook",
                        provider="webhook",
                        recipient=f"{base}/webhook/many/{i % 7}",
                        payload={"i": i},
                    )
                    for i in range(start, start + 2_000)
                ]
            )
        return ids
    finally:
        await store.close()


async def _report(url: str):  # type: ignore[no-untyped-def]
    store = create_store(url)
    await store.open()  # type: ignore[attr-defined]
    try:
        now = datetime.now(UTC)
        return (await store.status_report(now)).counts, await store.worker_list(
            now - timedelta(hours=1)
        )
    finally:
        await store.close()


def test_three_workers_10k_messages__each_sent_exactly_once(
    clean_pg_url, simulator, workers
) -> None:  # type: ignore[no-untyped-def]
    ids = asyncio.run(_enqueue(clean_pg_url, simulator.url))
    started = time.monotonic()
    for _ in range(WORKERS):
        workers.start(clean_pg_url, simulator.secret, SLUICE_WORKER_CONCURRENCY="100")
    deadline = time.monotonic() + 180
    while asyncio.run(_report(clean_pg_url))[0] != {"sent": N}:
        assert time.monotonic() < deadline, "timed out waiting for every message to be sent"
        time.sleep(0.2)
    elapsed = time.monotonic() - started
    workers.stop_all()

    delivered = simulator.ids()
    assert len(delivered) == N
    assert set(delivered) == set(ids)
    assert max(delivered.values()) == 1, "a message reached the provider twice"
    with psycopg.connect(clean_pg_url) as conn:
        rows = dict(
            conn.execute(
                "SELECT outcome, count(*) FROM sluice_attempts GROUP BY outcome"
            ).fetchall()
        )
    assert rows == {"sent": N}

    _, seen = asyncio.run(_report(clean_pg_url))
    per_worker = [w.sent_total for w in seen]
    assert sum(per_worker) == N
    assert sum(1 for n in per_worker if n > 0) >= 2, f"work was not shared: {per_worker}"
    print(
        f"\n{WORKERS} workers, {N} messages in {elapsed:.1f}s "
        f"({N / elapsed:.0f}/s over HTTP), split {per_worker}"
    )
