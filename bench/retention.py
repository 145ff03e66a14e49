"""What retention's purge costs the claim path on PostgreSQL.

``python -m bench.retention`` (``--rows``, default 1,000,000; ``--live``, 60,000 per
purge setting; ``--slice``, 1.5 s; ``--purges``, the purge settings as batch/pause,
``1000/0.2,5000/0``).

A fresh PostgreSQL database gets ``--rows`` final messages old enough to purge (40 days;
85 % sent, 10 % delivered, 5 % dead, each with its attempt row), written by SQL in two
statements. Then, for each purge setting: ``--live`` messages over 10 tenants are
enqueued and ``ANALYZE``d (stale statistics that saw no queued row make the claim's plan
scan the whole queue: autovacuum would catch up, a benchmark should not wait for it),
``sluice purge --older-than 30d --batch B`` starts in its own process with
``SLUICE_RETENTION_PAUSE`` P, and one claim→complete loop drains the live messages, as a
worker whose provider answers at once would: claim up to 200 (the worker's default
batch), write every one back as sent with its attempt row, repeat until nothing is ready.

The purge is switched on and off every ``--slice`` seconds (``SIGCONT`` / ``SIGSTOP``) for
the whole drain, and each claim→complete round counts for the state the purge was in when
it began (rounds beginning within 0.25 s after a switch are left out: the purge's statement
in flight finishes after a stop). On a shared machine the load of other processes changes
by the minute; alternating within one drain puts both states under the same load, which
successive phases did not (their idle baselines moved threefold between runs). Reported per
state: each claim's time (p50, p99) and the drain rate (messages ÷ seconds of the rounds);
and the rows the purge removed per second it was running.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
#: Rounds beginning this soon after a switch count for neither state.
SETTLE = 0.25

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


def _live(i: int, spec: str) -> NewMessage:
    return NewMessage(
        tenant=f"live-{i % 10}",
        channel="bench",
        provider="null",
        recipient="bench",
        action="bench.noop",
        payload={"i": i, "spec": spec},
    )


async def _enqueue(store: Store, n: int, spec: str) -> None:
    for lo in range(0, n, 5_000):
        await store.enqueue_many([_live(i, spec) for i in range(lo, min(n, lo + 5_000))])


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


class _Switch:
    """Runs and stops the purge process every ``slice`` seconds; what state it is in."""

    def __init__(self, proc: subprocess.Popen[bytes], slice_s: float) -> None:
        self.proc = proc
        self.slice = slice_s
        self.on = True
        self.since = time.perf_counter()
        self.on_seconds = 0.0

    async def run(self, done: asyncio.Event) -> None:
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), self.slice)
            now = time.perf_counter()
            if self.on:
                self.on_seconds += now - self.since
            self.on = not self.on
            self.since = now
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGCONT if self.on else signal.SIGSTOP)
        self.proc.send_signal(signal.SIGCONT)


async def _drain(store: Store, switch: _Switch) -> dict[str, dict[str, float]]:
    """Claim and write back until nothing is ready, each round counted for the state the
    purge was in when it began."""
    claims: dict[bool, list[float]] = {True: [], False: []}
    work: dict[bool, list[float]] = {True: [0.0, 0.0], False: [0.0, 0.0]}  # messages, s
    while True:
        state = switch.on
        settled = time.perf_counter() - switch.since >= SETTLE
        now = datetime.now(UTC)
        t = time.perf_counter()
        got = await store.message_claim(WORKER, CLAIM, 30.0, now)
        claim_ms = (time.perf_counter() - t) * 1000
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
        if settled and state == switch.on:  # began and ended in one state
            claims[state].append(claim_ms)
            work[state][0] += len(got)
            work[state][1] += time.perf_counter() - t
    return {
        "on" if state else "off": {
            "claim_p50": statistics.median(claims[state]),
            "claim_p99": _pct(claims[state], 0.99),
            "rate": work[state][0] / work[state][1],
            "rounds": len(claims[state]),
        }
        for state in (False, True)
    }


async def measure(url: str, live: int, batch: int, pause: float, slice_s: float) -> Any:
    spec = f"{batch}/{pause:g}"
    store = create_store(url)
    await store.open()  # type: ignore[attr-defined]
    try:
        await _enqueue(store, live, spec)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ANALYZE sluice_messages")
        before = _old_rows(url)
        proc = _start_purge(url, batch, pause)
        try:
            await asyncio.sleep(1.5)  # its start-up: imports, settings, the store
            switch = _Switch(proc, slice_s)
            done = asyncio.Event()
            toggling = asyncio.create_task(switch.run(done))
            got: dict[str, Any] = await _drain(store, switch)
            done.set()
            await toggling
            if switch.on:
                switch.on_seconds += time.perf_counter() - switch.since
            ended = proc.poll() is not None
        finally:
            proc.send_signal(signal.SIGCONT)
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        got["purged_per_s"] = (before - _old_rows(url)) / switch.on_seconds
        got["note"] = "the purge ended before the drain did" if ended else ""
        return got
    finally:
        await store.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.retention", description=__doc__)
    p.add_argument("--rows", type=int, default=1_000_000, help="final rows old enough to purge")
    p.add_argument("--live", type=int, default=60_000, help="messages drained per setting")
    p.add_argument("--slice", type=float, default=1.5, help="seconds on, then off, ...")
    p.add_argument(
        "--purges", default="1000/0.2,5000/0", help="purge settings: batch/pause, comma-separated"
    )
    args = p.parse_args(argv)
    specs = [(int(b), float(q)) for b, q in (x.split("/") for x in args.purges.split(","))]
    results = []
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
        for batch, pause in specs:
            got = asyncio.run(measure(url, args.live, batch, pause, args.slice))
            results.append((f"{batch}/{pause:g}", got))
            print(f"{batch}/{pause:g}: {got}", flush=True)
        left = _old_rows(url)
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\n{args.live:,} live messages per setting, claims of {CLAIM}, purge switched every "
          f"{args.slice:g} s; {left:,} old rows left; {time.perf_counter() - t_all:.0f} s in "
          f"all; load average {load}\n")  # fmt: skip
    print("| purge batch/pause | claim p50 off → on (ms) | claim p99 off → on (ms) | p99 on ÷ off "
          "| drain off → on (msg/s) | drain on ÷ off | purged rows/s while on |")  # fmt: skip
    print("|---|---|---|---:|---|---:|---:|")
    for spec, got in results:
        off, on = got["off"], got["on"]
        print(
            f"| {spec} | {off['claim_p50']:.1f} → {on['claim_p50']:.1f} "
            f"| {off['claim_p99']:.1f} → {on['claim_p99']:.1f} "
            f"| {on['claim_p99'] / off['claim_p99']:.2f} "
            f"| {off['rate']:,.0f} → {on['rate']:,.0f} | {on['rate'] / off['rate']:.2f} "
            f"| {got['purged_per_s']:,.0f}{' (ended early)' if got['note'] else ''} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
