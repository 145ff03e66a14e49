"""The reference drain: a bare ``FOR UPDATE SKIP LOCKED`` loop, what PostgreSQL allows.

What any outbox on PostgreSQL must do at the least, and nothing more: claim a batch of
ready rows (``SKIP LOCKED``, so processes never wait on each other), mark them taken,
then mark them done with one UPDATE per batch. No lease, no attempt rows, no controls,
no limits: the floor Sluice's drain is measured against, at the same claim size and
the same number of processes, on its own fresh database.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from typing import Any

import psycopg

SCHEMA = """
CREATE TABLE jobs (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant text NOT NULL,
    payload jsonb NOT NULL,
    status text NOT NULL DEFAULT 'queued',
    attempts int NOT NULL DEFAULT 0,
    run_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX jobs_ready ON jobs (run_at) WHERE status = 'queued';
"""

FILL = """
INSERT INTO jobs (tenant, payload)
SELECT 'tenant-' || (i %% 10), jsonb_build_object('i', i) FROM generate_series(1, %s) AS i
"""

CLAIM = """
UPDATE jobs SET status = 'running', attempts = attempts + 1
WHERE id IN (SELECT id FROM jobs WHERE status = 'queued' AND run_at <= now()
             ORDER BY run_at LIMIT %s FOR UPDATE SKIP LOCKED)
RETURNING id, tenant, payload
"""

COMPLETE = "UPDATE jobs SET status = 'done' WHERE id = ANY(%s)"


def _drain(url: str, batch: int, ready: Any, start: Any, out: Any) -> None:
    """One process: claim and complete batches until a claim comes back empty."""
    done = 0
    with psycopg.connect(url, autocommit=True) as conn:
        ready.put(None)
        start.wait()
        while True:
            rows = conn.execute(CLAIM, (batch,)).fetchall()
            if not rows:
                break
            conn.execute(COMPLETE, ([r[0] for r in rows],))
            done += len(rows)
    out.put((time.perf_counter(), done))


def loop_drain(url: str, n: int, *, batch: int = 500, processes: int = 1) -> dict[str, Any]:
    """Fill ``n`` jobs, then drain them with ``processes`` processes; jobs per second from
    the start signal until the last process finds nothing left."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SCHEMA)
        conn.execute(FILL, (n,))
        conn.execute("ANALYZE jobs")
    ctx = mp.get_context("spawn")
    ready, start, out = ctx.Queue(), ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=_drain, args=(url, batch, ready, start, out)) for _ in range(processes)
    ]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=60)  # every process connected, waiting for the signal
    began = time.perf_counter()
    start.set()
    ends = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(30)
    done = sum(d for _, d in ends)
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM jobs WHERE status = 'done'").fetchone()
    if done != n or row is None or row[0] != n:
        raise RuntimeError(f"loop drain incomplete: {done} claimed, {row} done of {n}")
    return {"drain_per_s": n / (max(t for t, _ in ends) - began)}
