"""Memory: does a worker that drains for a long time keep its size?

One worker process (assembled as ``sluice worker`` assembles it, the ``null`` provider,
full bookkeeping) runs while this process enqueues ``messages`` at an even rate over
``seconds`` (1,000,000 over 600 s by default: about 1,700 a second, in a batch every
0.2 s), so the worker claims, sends and writes back all the time and the table grows
to ``messages`` rows. The worker's resident set size (``VmRSS`` in
``/proc/<pid>/status``) is sampled every ``sample_every`` seconds. Reported: the RSS
after the first minute (half the run, for runs shorter than two minutes), at the end
(everything sent), and their ratio; the target is ≤ 1.10.

``python -m bench.memory --seconds 120 --trace`` also takes ``tracemalloc`` snapshots in
the worker at the first minute and at the end and prints the lines whose allocations
grew most between the two (tracing slows the worker; its RSS figures are not the
untraced ones).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import time
import tracemalloc
from pathlib import Path
from typing import Any

import httpx
import psycopg

from bench.pg import fresh_db
from bench.sluice_bench import DRAIN_BATCH, DRAIN_CONCURRENCY, _message, _migrate, _Quiet
from sluice import heap
from sluice.config import Settings
from sluice.providers.null import NullProvider
from sluice.store import create_store
from sluice.worker.assemble import assemble_dispatcher

DB = "sluice_bench_memory"
SECONDS = 600.0
MESSAGES = 1_000_000
SAMPLE_EVERY = 5.0
#: The producer enqueues what is due every this many seconds.
TICK = 0.2
#: After the producer stops, the longest wait for the worker to send what is left (at
#: least; a run as long again on a machine so busy that the worker fell behind).
SETTLE_SECONDS = 120.0
TRACE_TOP = 15


def baseline_at(seconds: float) -> float:
    """When the reference RSS is read: one minute in, or half-way through a short run."""
    return 60.0 if seconds >= 120 else seconds / 2


def _worker(url: str, stop: Any, result: Any, trace_at: float | None) -> None:
    """Run a worker until ``stop`` is set; report what it sent (and, when tracing, the
    allocation growth from ``trace_at`` seconds in to the end)."""

    async def run() -> None:
        store = create_store(url)
        await store.open()  # type: ignore[attr-defined]
        try:
            settings = Settings(
                database_url=url,
                worker_concurrency=DRAIN_CONCURRENCY,
                worker_batch_size=DRAIN_BATCH,
                log_level="warning",
            )
            async with httpx.AsyncClient() as client:
                d = await assemble_dispatcher(
                    store, settings, client, providers={"null": NullProvider()}, logger=_Quiet()
                )
                heap.settle()  # as `sluice worker` does once started
            first: list[tracemalloc.Snapshot] = []
            if trace_at is not None:
                tracemalloc.start(8)
                asyncio.get_running_loop().call_later(
                    trace_at, lambda: first.append(tracemalloc.take_snapshot())
                )
            task = asyncio.create_task(d.run())
            await asyncio.to_thread(stop.wait)
            d.stop()
            stats = await task
            growth: list[str] = []
            if first:
                diff = tracemalloc.take_snapshot().compare_to(first[0], "traceback")
                growth = [_describe(s) for s in diff[:TRACE_TOP]]
            result.put((stats.sent, growth))
        finally:
            await store.close()

    asyncio.run(run())


def _describe(stat: tracemalloc.StatisticDiff) -> str:
    """Size and count change, and where: the innermost four frames, innermost first."""
    inner = list(stat.traceback)[::-1][:4]  # a Traceback runs from the oldest frame
    frames = " <- ".join(f"{Path(f.filename).name}:{f.lineno}" for f in inner)
    return f"{stat.size_diff / 1024:+,.0f} KiB in {stat.count_diff:+,} blocks: {frames}"


def rss_mb(pid: int) -> float:
    """The resident set size of process ``pid``, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmRSS for process {pid}")


async def _produce_and_sample(
    url: str, pid: int, seconds: float, messages: int, sample_every: float
) -> list[tuple[float, float]]:
    """Enqueue ``messages`` evenly over ``seconds``, sampling the worker's RSS; then wait
    until the worker has sent everything and sample once more."""
    store = create_store(url)
    await store.open()  # type: ignore[attr-defined]
    samples: list[tuple[float, float]] = []
    try:
        start = time.monotonic()
        enqueued, next_sample = 0, 0.0
        while (elapsed := time.monotonic() - start) < seconds or enqueued < messages:
            due = min(messages, int(messages * min(1.0, elapsed / seconds)))
            if due > enqueued:
                await store.enqueue_many([_message(i) for i in range(enqueued, due)])
                enqueued = due
            if elapsed >= next_sample:
                samples.append((elapsed, rss_mb(pid)))
                next_sample += sample_every
            await asyncio.sleep(TICK)
        await _settled(url, max(SETTLE_SECONDS, seconds))
        samples.append((time.monotonic() - start, rss_mb(pid)))
        return samples
    finally:
        await store.close()


async def _settled(url: str, limit: float) -> None:
    """Return once nothing is queued or sending (at most ``limit`` seconds): polled, the
    worker being another process."""
    settle = time.monotonic() + limit
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for _ in range(int(limit / 0.5)):
            cur = await conn.execute(
                "SELECT count(*) FROM sluice_messages WHERE status IN ('queued', 'sending')"
            )
            row = await cur.fetchone()
            if not row or not row[0] or time.monotonic() > settle:
                return
            await asyncio.sleep(0.5)


def measure(
    url: str,
    seconds: float = SECONDS,
    messages: int = MESSAGES,
    *,
    sample_every: float = SAMPLE_EVERY,
    trace: bool = False,
) -> dict[str, Any]:
    """The figures of one run in database ``url`` (migrated here)."""
    asyncio.run(_migrate(url))
    ctx = mp.get_context("spawn")
    stop, result = ctx.Event(), ctx.Queue()
    at = baseline_at(seconds)
    proc = ctx.Process(target=_worker, args=(url, stop, result, at if trace else None))
    proc.start()
    try:
        assert proc.pid is not None
        samples = asyncio.run(_produce_and_sample(url, proc.pid, seconds, messages, sample_every))
    finally:
        stop.set()
    sent, growth = result.get(timeout=120)
    proc.join(30)
    if proc.is_alive():
        proc.kill()
    first = next(mb for t, mb in samples if t >= at)
    end = samples[-1][1]
    if sent != messages and not trace:  # a traced worker is slow; its growth still tells
        raise RuntimeError(
            f"memory run incomplete: worker sent {sent} of {messages} "
            f"(RSS {first:.1f} MiB at {at:.0f} s, {end:.1f} MiB at the end)"
        )
    return {
        "memory_seconds": seconds,
        "memory_messages": messages,
        "memory_baseline_s": at,
        "memory_rss_1min_mb": first,
        "memory_rss_end_mb": end,
        "memory_rss_max_mb": max(mb for _, mb in samples),
        "memory_rss_ratio": end / first,
        "memory_rss_samples": [[round(t, 1), round(mb, 1)] for t, mb in samples],
        "memory_trace_growth": growth,
        "memory_sent": sent,
    }


def run(seconds: float = SECONDS) -> dict[str, Any]:
    """The harness's part: one measured run in a fresh database, at the full run's rate."""
    with fresh_db(DB) as url:
        return measure(url, seconds, int(MESSAGES * seconds / SECONDS))


def table(m: dict[str, Any]) -> str:
    """The part's own table."""
    return "\n".join(
        [
            f"Memory (one worker, {m['memory_messages']:,} messages over "
            f"{m['memory_seconds']:,.0f} s; target: end ≤ 1.10 x the RSS at "
            f"{m['memory_baseline_s']:.0f} s)",
            "| RSS at baseline MiB | RSS at end MiB | max MiB | end / baseline |",
            "|---:|---:|---:|---:|",
            f"| {m['memory_rss_1min_mb']:.1f} | {m['memory_rss_end_mb']:.1f} "
            f"| {m['memory_rss_max_mb']:.1f} | {m['memory_rss_ratio']:.3f} |",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__)
    p.add_argument("--seconds", type=float, default=SECONDS, help="producing time")
    p.add_argument(
        "--messages", type=int, default=None, help=f"default {MESSAGES:,} per {SECONDS:g} s"
    )
    p.add_argument("--sample-every", type=float, default=SAMPLE_EVERY)
    p.add_argument("--trace", action="store_true", help="tracemalloc growth in the worker")
    args = p.parse_args(argv)
    messages = args.messages or int(MESSAGES * args.seconds / SECONDS)
    with fresh_db(DB) as url:
        got = measure(url, args.seconds, messages, sample_every=args.sample_every, trace=args.trace)
    print(table(got))
    for line in got.pop("memory_trace_growth"):
        print(line)
    print(json.dumps(got))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
