"""procrastinate 3.x peer: PostgreSQL job queue, async worker with concurrency 10.

Per job procrastinate does (and we time): ``procrastinate_fetch_job`` (a
``SELECT ... FOR UPDATE SKIP LOCKED`` + UPDATE to ``doing`` in a stored function),
runs the no-op async task, then ``procrastinate_finish_job`` (UPDATE to
``succeeded``, plus the ``procrastinate_events`` trigger inserts). Jobs are kept
(``delete_jobs="never"``, the default) so we can count them afterwards.

Fairness: the jobs table is ANALYZEd after enqueue and before the timed drain (see
``_run``): without it the fetch plan is O(backlog) per job on a fresh database.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from procrastinate import App, PsycopgConnector

from bench.pg import fresh_db

DB_NAME = "sluice_bench_procrastinate"
#: Jobs deferred one call at a time (``defer_async``) to measure the single-enqueue rate;
#: the rest of N goes through ``batch_defer_async``.
SINGLE_SAMPLE_MAX = 2000
BATCH_SIZE = 1000


async def _noop() -> None:
    return None


async def _run(url: str, n: int, concurrency: int, drain_timeout: float) -> dict[str, Any]:
    # Pool: the listener holds one connection for LISTEN/NOTIFY; give every concurrent job
    # its own connection on top so checkout never queues (fair best case for procrastinate).
    connector = PsycopgConnector(conninfo=url, min_size=concurrency + 2, max_size=concurrency + 2)
    app = App(connector=connector)
    task = app.task(name="bench_noop", queue="bench")(_noop)

    async with app.open_async():
        await app.schema_manager.apply_schema_async()

        n_single = min(SINGLE_SAMPLE_MAX, max(1, n // 10)) if n > 1 else n
        n_batch = n - n_single

        t0 = time.perf_counter()
        for _ in range(n_single):
            await task.defer_async()
        single_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        for start in range(0, n_batch, BATCH_SIZE):
            await task.batch_defer_async(*({} for _ in range(min(BATCH_SIZE, n_batch - start))))
        batch_s = time.perf_counter() - t0

        # The table was analyzed (by nobody) while empty; with those stale statistics the
        # planner sorts every todo row on each fetch, making the drain quadratic in the
        # backlog. Autovacuum would ANALYZE within a minute in a steady-state system, so do it
        # now, outside the timed window, to measure procrastinate at its realistic best.
        async with connector.pool.connection() as conn:
            await conn.execute("ANALYZE procrastinate_jobs")

        # wait=False: the worker stops as soon as a fetch finds no job left and the jobs
        # in flight have finished (procrastinate/worker.py: Worker.run -> _shutdown).
        t0 = time.perf_counter()
        async with asyncio.timeout(drain_timeout):
            await app.run_worker_async(
                queues=["bench"],
                concurrency=concurrency,
                wait=False,
                install_signal_handlers=False,
                delete_jobs="never",
            )
        drain_s = time.perf_counter() - t0

        async with connector.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT status::text, count(*) FROM procrastinate_jobs GROUP BY status"
            )
            counts = {status: int(c) for status, c in await cur.fetchall()}

    if counts.get("succeeded", 0) != n or sum(counts.values()) != n:
        raise RuntimeError(f"procrastinate: expected {n} succeeded jobs, got {counts}")

    return {
        "n": n,
        "concurrency": concurrency,
        "enqueue_batch_per_s": n_batch / batch_s if n_batch else None,
        "enqueue_single_per_s": n_single / single_s if n_single else None,
        "enqueue_single_sample": n_single,
        "drain_per_s": n / drain_s,
        "drain_s": drain_s,
    }


def run(n: int, concurrency: int = 10, timeout: float = 600.0) -> dict[str, Any]:
    """Fresh database, defer ``n`` no-op jobs, time a worker draining them."""
    with fresh_db(DB_NAME) as url:
        return asyncio.run(_run(url, n, concurrency, timeout))


if __name__ == "__main__":
    import sys

    print(run(int(sys.argv[1]) if len(sys.argv) > 1 else 2000))
