"""What retention's purge costs the claim path on PostgreSQL.

``python -m bench.retention`` (``--rows``, default 1,000,000; ``--live``, 60,000;
``--rounds``, 2).

A fresh PostgreSQL database gets ``--rows`` final messages old enough to purge (40 days;
85 % sent, 10 % delivered, 5 % dead, each with its attempt row), written by SQL in two
statements. Each phase enqueues ``--live`` messages over 10 tenants, runs ``ANALYZE``
(stale statistics that saw no queued row make the claim's plan scan the whole queue:
autovacuum would catch up, a benchmark should not wait for it) and drains them with one
claim→complete loop, as a worker whose provider answers at once would: claim up to 200
(the worker's default batch), write every one back as sent with its attempt row, repeat
until nothing is ready. Reported per phase: each claim's time
(p50, p99) and the drain rate (messages/s from the first claim to the last write-back).

Phases, in this order in odd rounds and the reverse in even ones: ``idle`` (nothing else
running), ``purge`` (``sluice purge --older-than 30d`` in its own process, with the
defaults: batches of 1,000, 0.2 s apart), ``purge-hard`` (batches of 5,000, no pause:
what an impatient operator might ask for). The purge starts before the drain and is
stopped when the drain ends; the rows it removed meanwhile give its rate. The ratios
compare each purge phase with the idle phase of the same round.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

import psycopg

from bench.pg import fresh_db
from sluice.model import Attempt, AttemptOutcome, Completion, NewMessage, Status
from sluice.store import Store, create_store

WORKER = "bench-retention"
CLAIM = 200

FILL_MESSAGES = """
INSERT INTO sluice_messages (
    id, tenant, channel, provider, action, recipient, payload, priority, status, run_at,
    attempts, max_attempts, claim_seq, content_hash, created_at, updated_at, last_error_code)
SELECT gen_random_uuid(), 'old-' || (i %% 50), 'sms', 'null', 'bench', 'r' || i,
       '{"body": "an old message"}', 0, s.status, t.at, 1, 5, 1, 'h', t.at, t.at,
       CASE WHEN s.status = 'dead' THEN 'INVALID_RECIPIENT' END
FROM generate_series(1, %(rows)s) AS i
CROSS JOIN LATERAL (SELECT now() - interval '40 days' - i * interval '1 second' AS at) t
CROSS JOIN LATERAL (SELECT CASE
    WHEN i %% 100 < 85 THEN 'sent' WHEN i %% 100 < 95 THEN 'delivered' ELSE 'dead'
    END AS status) s
"""
FILL_ATTEMPTS = """
INSERT INTO sluice_attempts (
    message_id, attempt_no, worker_id, provider, started_at, finished_at, outcome, error_code)
SELECT id, 1, 'w-old', provider, updated_at, updated_at,
       CASE WHEN status = 'dead' THEN 'failed' ELSE 'sent' END, last_error_code
FROM sluice_messages
"""


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def _live(i: int, round_no: int) -> NewMessage:
    return NewMessage(
        tenant=f"live-{i % 10}",
        channel="bench",
        provider="null",
        recipient="bench",
        action="bench.noop",
        payload={"i": i, "round": round_no},
    )


async def _enqueue(store: Store, n: int, round_no: int) -> None:
    for lo in range(0, n, 5_000):
        await store.enqueue_many([_live(i, round_no) for i in range(lo, min(n, lo + 5_000))])


async def _drain(store: Store) -> dict[str, float]:
    """Claim and write back until nothing is ready; each claim's ms and the rate."""
    claims: list[float] = []
    done = 0
    t0 = time.perf_counter()
    while True:
        now = datetime.now(UTC)
        t = time.perf_counter()
        got = await store.message_claim(WORKER, CLAIM, 30.0, now)
        claims.append((time.perf_counter() - t) * 1000)
        if not got:
            break
        await store.message_complete_many(
            WORKER,
            [
                Completion(m.id, m.claim_seq, WORKER, Status.SENT,
                           Attempt(m.id, m.attempts, WORKER, m.provider, now, now,
                                   AttemptOutcome.SENT))
                for m in got
            ],
            now,
        )  # fmt: skip
        done += len(got)
    seconds = time.perf_counter() - t0
    return {
        "claim_p50": statistics.median(claims),
        "claim_p99": _pct(claims, 0.99),
        "rate": done / seconds,
        "drained": done,
    }


def _old_rows(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM sluice_messages WHERE tenant LIKE 'old-%'")
        return int(row.fetchone()[0])  # type: ignore[index]


def _start_purge(url: str, batch: int, pause: float) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    env.update(
        SLUICE_DATABASE_URL=url, SLUICE_RETENTION_PAUSE=str(pause), SLUICE_LOG_LEVEL="warning"
    )
    return subprocess.Popen(
        [sys.executable, "-m", "sluice.cli", "purge", "--older-than", "30d",
         "--batch", str(batch), "--reason", "bench"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip


async def phase(url: str, live: int, round_no: int, purge: tuple[int, float] | None) -> Any:
    store = create_store(url)
    await store.open()  # type: ignore[attr-defined]
    try:
        await _enqueue(store, live, round_no)
        before = _old_rows(url)  # and the statistics that see the live queue, as claims.py
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ANALYZE sluice_messages")
        proc = _start_purge(url, *purge) if purge else None
        t0 = time.perf_counter()
        if proc is not None:
            await asyncio.sleep(1.0)  # let it reach its stride: the drain runs beside it
        got = await _drain(store)
        if proc is not None:
            if proc.poll() is not None:
                got["note"] = "the purge ended before the drain did"
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            got["purged_per_s"] = (before - _old_rows(url)) / (time.perf_counter() - t0)
        got["old_left"] = _old_rows(url)
        return got
    finally:
        await store.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.retention", description=__doc__)
    p.add_argument("--rows", type=int, default=1_000_000, help="final rows old enough to purge")
    p.add_argument("--live", type=int, default=60_000, help="messages each phase drains")
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args(argv)
    phases: list[tuple[str, tuple[int, float] | None]] = [
        ("idle", None), ("purge", (1000, 0.2)), ("purge-hard", (5000, 0.0)),
    ]  # fmt: skip
    results: list[tuple[int, str, dict[str, Any]]] = []
    t_all = time.perf_counter()
    with fresh_db("sluice_bench_retention") as url:
        store = create_store(url)

        async def migrate() -> None:
            await store.open()  # type: ignore[attr-defined]
            await store.migrate()
            await store.close()

        asyncio.run(migrate())
        t = time.perf_counter()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(FILL_MESSAGES, {"rows": args.rows})
            conn.execute(FILL_ATTEMPTS)
            conn.execute("VACUUM ANALYZE sluice_messages")
            conn.execute("VACUUM ANALYZE sluice_attempts")
        print(f"{args.rows:,} old final rows with their attempts loaded in "
              f"{time.perf_counter() - t:.0f} s", flush=True)  # fmt: skip
        for r in range(args.rounds):
            # Alternated, so that neither side always runs after the other's deletes.
            for name, purge in phases if r % 2 == 0 else phases[::-1]:
                got = asyncio.run(phase(url, args.live, r, purge))
                results.append((r, name, got))
                print(f"round {r + 1} {name}: {got}", flush=True)
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\n{args.live:,} live messages per phase, claims of {CLAIM}; "
          f"{time.perf_counter() - t_all:.0f} s in all; load average {load}\n")  # fmt: skip
    print("| round | phase | claim p50 ms | claim p99 ms | p99 ÷ idle | drain msg/s "
          "| drain ÷ idle | purged rows/s |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    idle = {r: got for r, name, got in results if name == "idle"}
    for r, name, got in results:
        base = idle[r]
        purged = f"{got['purged_per_s']:,.0f}" if "purged_per_s" in got else "—"
        print(
            f"| {r + 1} | {name} | {got['claim_p50']:.1f} | {got['claim_p99']:.1f} "
            f"| {got['claim_p99'] / base['claim_p99']:.2f} | {got['rate']:,.0f} "
            f"| {got['rate'] / base['rate']:.2f} | {purged} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
