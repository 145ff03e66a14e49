"""Claims beside a paused backlog, and claims shared between a big tenant and a small one.

``python -m bench.claims`` (options: ``--paused``, ``--big``, ``--small``, ``--only``).

* **paused**: ``--paused`` queued messages (150,000) in a paused tenant, 2,000 ready ones
  in another; the workers' control sweep runs until it has nothing left to do, then 20
  claims of 100 are timed. What is reported is the median milliseconds one claim takes.
* **fair**: tenant ``big`` enqueues ``--big`` messages (150,000), then tenant ``small``
  enqueues ``--small`` (200). One loop claims 100 and writes every one back as sent, as
  a worker with a provider that answers at once would; it stops when the small tenant's
  last message was claimed. Reported: the small tenant's wait from the start of the loop
  to the claim of each of its messages (p50, p99), and how many of the big tenant's
  messages were claimed before the small tenant's last.

Each dialect gets a fresh database (PostgreSQL at ``SLUICE_BENCH_PG_ADMIN``, default
``postgresql://postgres@127.0.0.1:5432/postgres``; SQLite in a temporary directory).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.pg import fresh_db
from sluice.flow.controls import Mode, Scope
from sluice.model import Attempt, AttemptOutcome, Completion, NewMessage, Status
from sluice.store import Store, create_store

WORKER = "bench-claims"
CLAIM = 100


def _now() -> datetime:
    return datetime.now(UTC)


def _msg(tenant: str, i: int) -> NewMessage:
    return NewMessage(
        tenant=tenant,
        channel="bench",
        provider="null",
        recipient="bench",
        action="bench.noop",
        payload={"i": i},
    )


async def _enqueue(store: Store, tenant: str, n: int) -> None:
    for lo in range(0, n, 5_000):
        await store.enqueue_many([_msg(tenant, i) for i in range(lo, min(n, lo + 5_000))])


@asynccontextmanager
async def _store(dialect: str) -> AsyncIterator[Store]:
    if dialect == "postgres":
        with fresh_db("sluice_bench_claims") as url:
            store = create_store(url)
            await store.open()  # type: ignore[attr-defined]
            try:
                await store.migrate()
                yield store
            finally:
                await store.close()
    else:
        with tempfile.TemporaryDirectory() as tmp:
            store = create_store(f"sqlite:///{Path(tmp) / 'claims.db'}")
            await store.open()  # type: ignore[attr-defined]
            try:
                await store.migrate()
                yield store
            finally:
                await store.close()


async def _analyze(store: Store, dialect: str) -> None:
    if dialect == "postgres":
        async with store._conn() as conn:  # type: ignore[attr-defined]
            await conn.execute("ANALYZE sluice_messages")


async def _sent(store: Store, claimed: list[Any]) -> None:
    now = _now()
    await store.message_complete_many(
        WORKER,
        [
            Completion(
                message_id=m.id,
                claim_seq=m.claim_seq,
                worker_id=WORKER,
                status=Status.SENT,
                attempt=Attempt(
                    message_id=m.id,
                    attempt_no=m.attempts,
                    worker_id=WORKER,
                    provider=m.provider,
                    started_at=now,
                    finished_at=now,
                    outcome=AttemptOutcome.SENT,
                ),
            )
            for m in claimed
        ],
        now,
    )


async def paused(dialect: str, n_paused: int) -> dict[str, Any]:
    async with _store(dialect) as store:
        await _enqueue(store, "paused-co", n_paused)
        await _enqueue(store, "live-co", 20 * CLAIM)
        await store.control_set(
            Scope(tenant="paused-co"),
            Mode.PAUSED,
            actor="bench",
            reason="bench",
            now=_now(),
            expires_at=None,
        )
        # What a worker's control sweep does in the background, run to the end here.
        sweep: Callable[..., Any] | None = getattr(store, "control_park_queued", None)
        sweeps = 0
        t0 = time.perf_counter()
        while sweep is not None and await sweep(_now()):
            sweeps += 1
        sweep_s = time.perf_counter() - t0
        await _analyze(store, dialect)
        timings = []
        for _ in range(20):
            t = time.perf_counter()
            got = await store.message_claim(WORKER, CLAIM, 30.0, _now())
            timings.append((time.perf_counter() - t) * 1000)
            assert got and all(m.tenant == "live-co" for m in got), "claimed a paused message"
        return {
            "claim_ms_p50": statistics.median(timings),
            "claim_ms_max": max(timings),
            "sweep_s": sweep_s,
            "sweeps": sweeps,
        }


async def fair(dialect: str, n_big: int, n_small: int) -> dict[str, Any]:
    async with _store(dialect) as store:
        await _enqueue(store, "big", n_big)
        await _enqueue(store, "small", n_small)
        await _analyze(store, dialect)
        waits: list[float] = []
        big_before = 0
        t0 = time.perf_counter()
        while len(waits) < n_small:
            claimed = await store.message_claim(WORKER, CLAIM, 30.0, _now())
            if not claimed:
                raise RuntimeError("queue ran dry before the small tenant was served")
            at = time.perf_counter() - t0
            small = [m for m in claimed if m.tenant == "small"]
            waits.extend(at for _ in small)
            big_before += len(claimed) - len(small)
            await _sent(store, claimed)
        waits.sort()
        return {
            "small_p50_ms": waits[len(waits) // 2] * 1000,
            "small_p99_ms": waits[min(len(waits) - 1, int(len(waits) * 0.99))] * 1000,
            "big_claimed_before_small_done": big_before,
        }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.claims", description=__doc__)
    p.add_argument("--paused", type=int, default=150_000, help="queued rows in a paused scope")
    p.add_argument("--big", type=int, default=150_000, help="the big tenant's backlog")
    p.add_argument("--small", type=int, default=200, help="the small tenant's messages")
    p.add_argument("--only", default="postgres,sqlite", help="dialects, comma-separated")
    args = p.parse_args(argv)
    rows = []
    for dialect in args.only.split(","):
        pz = asyncio.run(paused(dialect, args.paused))
        fz = asyncio.run(fair(dialect, args.big, args.small))
        rows.append((dialect, pz, fz))
    print(
        f"| store | claim of {CLAIM} beside {args.paused:,} paused (median ms) | sweep to park (s) "
        f"| small tenant p50 / p99 behind {args.big:,} (ms) | big claimed first |"
    )
    print("|---|---|---|---|---|")
    for dialect, pz, fz in rows:
        print(
            f"| {dialect} | {pz['claim_ms_p50']:.1f} (max {pz['claim_ms_max']:.1f}) "
            f"| {pz['sweep_s']:.1f} | {fz['small_p50_ms']:.0f} / {fz['small_p99_ms']:.0f} "
            f"| {fz['big_claimed_before_small_done']:,} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
