"""Sluice parts of the benchmark (the contract is in ``bench/harness.py``'s docstring).

Each function creates Sluice's schema in the store it is given, starts and stops what
it needs, verifies its own counts, and returns plain numbers.

- ``sluice_drain``: enqueue (single transactional calls, then batches), then one worker
  process drains everything through the ``null`` provider with full bookkeeping: every
  message claimed under a lease, one attempt row written per message, the outcome
  written back under the claim guard, all committed before it counts.
- ``sluice_idle_latency``: a worker in another process waits on LISTEN/NOTIFY; the
  bench commits one message at a time on its own connection and measures commit →
  provider call (``time.perf_counter`` is the system-wide monotonic clock on Linux, so
  the two processes' readings compare).
- ``sluice_http``: signed Standard Webhooks POSTs through the real ``webhook`` adapter
  to the provider simulator running in its own process.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg

import sluice
from bench.sysload import _pg_backend_db
from sluice import heap
from sluice.config import Settings
from sluice.model import NewMessage, Outcome
from sluice.providers.null import NullProvider
from sluice.store import create_store
from sluice.worker.assemble import assemble_dispatcher, run_worker_loop

#: Worker settings for the no-op drain: many sends in flight, large claims. These are
#: what an operator would set for a provider that answers in microseconds.
DRAIN_CONCURRENCY = 1000
DRAIN_BATCH = 500
#: Share of N enqueued one transaction at a time (the rest goes through batches).
SINGLE_SHARE = 0.05


def _message(
    i: int, provider: str = "null", recipient: str = "bench", channel: str = "bench"
) -> NewMessage:
    return NewMessage(
        tenant=f"tenant-{i % 10}",
        channel=channel,
        provider=provider,
        recipient=recipient,
        action="bench.noop",
        payload={"i": i},
    )


async def _migrate(url: str) -> None:
    store = create_store(url)
    await store.open()  # type: ignore[attr-defined]
    try:
        await store.migrate()
    finally:
        await store.close()


#: Messages per ``Store.enqueue_many`` call (and per COPY of the reference).
BATCH = 5_000
#: Single enqueues and bare INSERTs alternate in blocks of this many, so drift in a
#: shared machine hits both alike.
SINGLE_BLOCK = 50
#: The references write to a table of the same shape as Sluice's (columns, defaults,
#: constraints, indexes), in the same database.
BARE_TABLE = "bench_bare_messages"
BARE_COLUMNS = (
    "id, tenant, channel, provider, action, recipient, payload, priority, status, run_at, "
    "max_attempts, content_hash, created_at, updated_at"
)
BARE_INSERT = (
    f"INSERT INTO {BARE_TABLE} ({BARE_COLUMNS}) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 'queued', now(), %s, '', now(), now())"
)


def _bare_row(m: NewMessage) -> tuple[Any, ...]:
    """What a hand-written outbox would store for ``m``: its fields, the payload as JSON."""
    return (m.id, m.tenant, m.channel, m.provider, m.action, m.recipient,
            json.dumps(m.payload), m.priority, m.max_attempts)  # fmt: skip


def _make_bare_table(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {BARE_TABLE} (LIKE sluice_messages INCLUDING ALL)")


def _enqueue_single(url: str, count: int) -> dict[str, float]:
    """``count`` messages, each in its own transaction on the application's connection;
    on PostgreSQL, alternating in blocks with the reference: a bare one-row INSERT +
    commit on the same kind of connection (psycopg), ``count`` of them too."""
    if not url.startswith("postgresql"):
        conn = sqlite3.connect(url[len("sqlite:///") :])
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        try:
            start = time.perf_counter()
            for i in range(count):
                sluice.enqueue(conn, _message(i))
                conn.commit()
            return {"enqueue_single_per_s": count / (time.perf_counter() - start)}
        finally:
            conn.close()
    _make_bare_table(url)
    sluice_s = bare_s = 0.0
    timed = 0
    with psycopg.connect(url) as conn, psycopg.connect(url) as bare:
        for lo in range(0, count, SINGLE_BLOCK):
            block = range(lo, min(count, lo + SINGLE_BLOCK))
            t = time.perf_counter()
            for i in block:
                sluice.enqueue(conn, _message(i))
                conn.commit()
            t2 = time.perf_counter()
            for i in block:
                bare.execute(BARE_INSERT, _bare_row(_message(i)))
                bare.commit()
            if lo == 0 and count > SINGLE_BLOCK:
                # The first block warms both sides up and is not timed: the first
                # sluice.enqueue of a process imports and reads the configuration (about
                # 50 ms, 6 % of a 1,000-message run), and each connection prepares its
                # statement after its fifth use. Its rows still count in the drain.
                continue
            timed += len(block)
            sluice_s += t2 - t
            bare_s += time.perf_counter() - t2
    return {"enqueue_single_per_s": timed / sluice_s, "bare_insert_per_s": timed / bare_s}


async def _enqueue_batches(
    url: str, start_at: int, count: int, *, reference: bool = True
) -> dict[str, float]:
    """``count`` messages with ``Store.enqueue_many`` in batches of ``BATCH``; on
    PostgreSQL each batch is followed by the reference: the same messages' rows in one
    COPY + commit on an async psycopg connection (as the store's), into the table
    ``_enqueue_single`` made (``reference=False``: only Sluice's, as the growth part
    fills its tables)."""
    store = create_store(url)
    await store.open()  # type: ignore[attr-defined]
    pg = reference and url.startswith("postgresql")
    bare = await psycopg.AsyncConnection.connect(url) if pg else None
    try:
        sluice_s = bare_s = 0.0
        for lo in range(start_at, start_at + count, BATCH):
            hi = min(start_at + count, lo + BATCH)
            t = time.perf_counter()
            await store.enqueue_many([_message(i) for i in range(lo, hi)])
            sluice_s += time.perf_counter() - t
            if bare is not None:
                t = time.perf_counter()
                await _copy_batch(bare, [_message(i) for i in range(lo, hi)])
                bare_s += time.perf_counter() - t
        rates = {"enqueue_batch_per_s": count / sluice_s}
        if bare is not None:
            rates["bare_copy_per_s"] = count / bare_s
        return rates
    finally:
        if bare is not None:
            await bare.close()
        await store.close()


async def _copy_batch(conn: psycopg.AsyncConnection[Any], messages: list[NewMessage]) -> None:
    now = datetime.now(UTC)
    sql = f"COPY {BARE_TABLE} ({BARE_COLUMNS}) FROM STDIN"
    async with conn.cursor() as cur, cur.copy(sql) as copy:
        for m in messages:
            row = _bare_row(m)
            await copy.write_row((*row[:8], "queued", now, row[8], "", now, now))
    await conn.commit()


def _drain_worker(url: str, result: Any, ready: Any, start: Any, metrics: bool = True) -> None:
    """One worker process: once told to start, drain until nothing is ready; report
    when it finished and what it sent. Its event loop is the one `sluice worker` runs."""

    async def run() -> None:
        store = create_store(url)
        await store.open()  # type: ignore[attr-defined]
        try:
            settings = Settings(
                database_url=url,
                worker_concurrency=DRAIN_CONCURRENCY,
                worker_batch_size=DRAIN_BATCH,
                log_level="warning",
                metrics=metrics,
            )
            # Assembled as `sluice worker` assembles it: connection gate included.
            async with httpx.AsyncClient() as client:
                d = await assemble_dispatcher(
                    store, settings, client, providers={"null": NullProvider()}, logger=_Quiet()
                )
                heap.settle()  # as `sluice worker` does once started
            ready.put(None)
            await asyncio.to_thread(start.wait)
            stats = await d.run(until_idle=True)
            result.put((time.perf_counter(), stats.sent))
        finally:
            await store.close()

    run_worker_loop(run())


class _Quiet:
    """A logger that keeps the benchmark's output to its table."""

    def bind(self, **_: Any) -> _Quiet:
        return self

    def __getattr__(self, _: str) -> Any:
        return lambda *a, **k: None


async def _counts(url: str) -> dict[str, int]:
    store = create_store(url)
    await store.open()  # type: ignore[attr-defined]
    try:
        return (await store.status_report(datetime.now(UTC))).counts
    finally:
        await store.close()


def _attempt_count(url: str) -> int:
    if url.startswith("postgresql"):
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT count(*) FROM sluice_attempts WHERE applied").fetchone()
    else:
        with sqlite3.connect(url[len("sqlite:///") :]) as conn:
            row = conn.execute("SELECT count(*) FROM sluice_attempts WHERE applied").fetchone()
    assert row is not None
    return int(row[0])


def sluice_drain(
    store_url: str, n: int, *, metrics: bool = True, processes: int = 1
) -> dict[str, Any]:
    """Enqueue ``n`` (5 % singly, the rest in batches), then drain with ``processes``
    worker processes (``metrics`` False: the workers count no event metrics, to measure
    what they cost). The drain is timed from the moment every worker, assembled and
    connected, is told to start until the last one has found nothing left."""
    asyncio.run(_migrate(store_url))
    single = max(1, int(n * SINGLE_SHARE))
    single_rates = _enqueue_single(store_url, single)
    batch_rates = asyncio.run(_enqueue_batches(store_url, single, n - single))
    if store_url.startswith("postgresql"):
        with psycopg.connect(store_url, autocommit=True) as conn:
            conn.execute(f"DROP TABLE {BARE_TABLE}")  # the drain sees Sluice's tables only
            conn.execute("ANALYZE sluice_messages")  # as autovacuum would; see README
    ctx = mp.get_context("spawn")
    result, ready, start = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [
        ctx.Process(target=_drain_worker, args=(store_url, result, ready, start, metrics))
        for _ in range(processes)
    ]
    for proc in procs:
        proc.start()
    for _ in procs:
        ready.get(timeout=120)
    began = time.perf_counter()
    start.set()
    ends = [result.get(timeout=600) for _ in procs]
    for proc in procs:
        proc.join(30)
    sent = sum(s for _, s in ends)
    counts = asyncio.run(_counts(store_url))
    if counts != {"sent": n} or sent != n or _attempt_count(store_url) != n:
        raise RuntimeError(f"drain incomplete: counts {counts}, workers sent {sent} of {n}")
    return {
        **batch_rates,
        **single_rates,
        "drain_per_s": n / (max(t for t, _ in ends) - began),
        "worker_concurrency": DRAIN_CONCURRENCY,
        "worker_batch_size": DRAIN_BATCH,
        "worker_processes": processes,
    }


class _Clocked:
    """A provider that reports when it was called, to the measuring process (in the
    null adapter's place: enqueue accepts only providers Sluice knows)."""

    name = "null"

    def __init__(self, out: Any) -> None:
        self.out = out

    async def send(self, message: Any, credentials: Any = None) -> Outcome:
        self.out.put((message.id, time.perf_counter()))
        return Outcome.success(message.id)


def _latency_worker(url: str, out: Any, ready: Any, stop: Any) -> None:
    async def run() -> None:
        store = create_store(url)
        await store.open()  # type: ignore[attr-defined]
        try:
            settings = Settings(database_url=url, log_level="warning")
            async with httpx.AsyncClient() as client:
                d = await assemble_dispatcher(
                    store, settings, client, providers={"null": _Clocked(out)}, logger=_Quiet()
                )
                heap.settle()  # as `sluice worker` does once started
            task = asyncio.create_task(d.run())
            await asyncio.sleep(0.5)  # LISTEN is established
            ready.set()
            await asyncio.to_thread(stop.wait)  # a multiprocessing Event: wait off the loop
            d.stop()
            await task
        finally:
            await store.close()

    run_worker_loop(run())


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def sluice_idle_latency(store_url: str, samples: int) -> dict[str, Any]:
    """Commit → provider call, one message at a time with the worker idle in between.

    Idle: each message is committed only after the previous one was delivered and a
    quiet gap longer than the NOTIFY coalescing interval, so every one wakes a
    sleeping worker. Back-to-back: the next commit follows the delivery at once (the
    worker is in its hot-poll window); reported as extra keys.
    """
    asyncio.run(_migrate(store_url))
    ctx = mp.get_context("spawn")
    out, ready, stop = ctx.Queue(), ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_latency_worker, args=(store_url, out, ready, stop))
    proc.start()
    try:
        if not ready.wait(30):
            raise RuntimeError("latency worker did not start")
        gap = Settings().notify_interval + 0.01
        idle = _measure(store_url, samples, out, gap)
        t = time.perf_counter()
        back_to_back = _measure(store_url, samples, out, 0.0)
        b2b_rate = samples / (time.perf_counter() - t)
        paced, paced_rate = _measure_paced(store_url, out, ctx, PACED_RATE, PACED_SECONDS)
        # The worker goes back to sleep on LISTEN, and every backend flushes the
        # statistics of what came before: an idle backend reports them only up to 10 s
        # later, which would count the paced case's transactions as the idle worker's.
        time.sleep(STATS_SETTLE_SECONDS)
        load = _idle_load(store_url, proc.pid, IDLE_LOAD_SECONDS)
    finally:
        stop.set()
        proc.join(30)
        if proc.is_alive():
            proc.kill()
    return {
        "p50_ms": statistics.median(idle),
        "p99_ms": _percentile(idle, 0.99),
        "back_to_back_p50_ms": statistics.median(back_to_back),
        "back_to_back_p99_ms": _percentile(back_to_back, 0.99),
        "paced_p50_ms": statistics.median(paced),
        "paced_p99_ms": _percentile(paced, 0.99),
        "paced_per_s": paced_rate,
        "paced_samples": len(paced),
        "back_to_back_per_s": b2b_rate,
        "idle_gap_s": gap,
        **load,
    }


#: Seconds the idle worker's load is measured over (after the latency samples).
IDLE_LOAD_SECONDS = 15.0
#: Seconds waited before that: PostgreSQL's idle backends report their transactions
#: at most 10 s late (PGSTAT_IDLE_INTERVAL).
STATS_SETTLE_SECONDS = 11.0


def _idle_load(url: str, worker_pid: int, seconds: float) -> dict[str, float]:
    """What an idle worker costs, per minute: its own CPU seconds, the CPU seconds of
    the database's backends serving the bench database (the worker's pool and LISTEN
    connections: nothing else uses it meanwhile), and the transactions the database
    counted for it (every autocommit statement is one; the server's statistics are
    flushed about once a second, so this is ±1 s worth)."""
    dbname = url.rsplit("/", 1)[1]

    def cpu(pids: list[int]) -> float:
        total = 0.0
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total

    def backends() -> list[int]:
        return [int(p) for p in os.listdir("/proc") if p.isdigit() and _pg_backend_db(p) == dbname]

    def transactions(conn: psycopg.Connection[Any]) -> int:
        row = conn.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s",
            (dbname,),
        ).fetchone()
        return int(row[0]) if row else 0

    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        pids = backends()
        worker0, db0, xacts0 = cpu([worker_pid]), cpu(pids), transactions(conn)
        time.sleep(seconds)
        worker1, db1, xacts1 = cpu([worker_pid]), cpu(pids), transactions(conn)
    per_minute = 60.0 / seconds
    return {
        "idle_worker_cpu_s_per_min": (worker1 - worker0) * per_minute,
        "idle_db_cpu_s_per_min": (db1 - db0) * per_minute,
        "idle_db_xacts_per_min": (xacts1 - xacts0) * per_minute,
    }


#: The paced case: single enqueues committed on a fixed schedule (open loop) at this
#: many a second in all, for this many seconds, from PACED_PRODUCERS processes.
PACED_RATE = 1000.0
PACED_SECONDS = 5.0
PACED_PRODUCERS = 2


def _paced_producer(
    url: str, rate: float, seconds: float, offset: float, start: float, commits: Any
) -> None:
    """Commit one single enqueue every 1/``rate`` s from ``start`` + ``offset`` (the
    perf_counter instant, shared by every producer: Linux's monotonic clock is one for
    all processes), whatever the earlier commits took; report (id, committed) pairs."""
    done: list[tuple[str, float]] = []
    with psycopg.connect(url) as conn:
        sluice.enqueue(conn, _message(0))  # imports and first statements, before the clock
        conn.rollback()
        count = int(rate * seconds)
        for k in range(count):
            due = start + offset + k / rate
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            mid = sluice.enqueue(conn, _message(k))
            conn.commit()
            done.append((mid, time.perf_counter()))
    commits.put(done)


def _measure_paced(
    url: str, out: Any, ctx: Any, rate: float, seconds: float
) -> tuple[list[float], float]:
    """Commit → provider call while single enqueues arrive at ``rate`` a second (open
    loop, ``PACED_PRODUCERS`` producers interleaved): each message's latency, and the
    rate the producers achieved (below ``rate`` when committing cannot keep up)."""
    commits = ctx.Queue()
    per = rate / PACED_PRODUCERS
    start = time.perf_counter() + 1.5  # every producer connected and warmed by then
    procs = [
        ctx.Process(target=_paced_producer, args=(url, per, seconds, i / rate, start, commits))
        for i in range(PACED_PRODUCERS)
    ]
    for p in procs:
        p.start()
    committed: dict[str, float] = {}
    for _ in procs:
        committed.update(commits.get(timeout=seconds + 60))
    for p in procs:
        p.join(30)
    called: dict[str, float] = {}
    while len(called) < len(committed):
        mid, at = out.get(timeout=30)
        called[mid] = at
    if set(called) != set(committed):
        raise RuntimeError("paced latency: the calls do not match the commits")
    span = max(committed.values()) - start
    latencies = [(called[m] - committed[m]) * 1000.0 for m in committed]
    return latencies, len(committed) / span


def _measure(url: str, samples: int, out: Any, gap: float) -> list[float]:
    latencies = []
    with psycopg.connect(url) as conn:
        for i in range(samples):
            if gap:
                time.sleep(gap)
            mid = sluice.enqueue(conn, _message(i))
            conn.commit()
            committed = time.perf_counter()
            got, called = out.get(timeout=10)
            if got != mid:
                raise RuntimeError(f"expected delivery of {mid}, got {got}")
            latencies.append((called - committed) * 1000.0)
    return latencies


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: Webhooks in flight, for Sluice's worker and for the bare client loop alike.
HTTP_CONCURRENCY = 200
_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def sluice_http(n: int) -> dict[str, Any]:
    """``n`` signed webhooks to the simulator (its own process), worker in this process;
    then the reference: a bare client loop posting ``n`` more to the same simulator with
    the same HTTP client, concurrency and signing. The simulator's CPU share (1.0 = one
    core busy) is measured during each, to show whether it was the limit."""
    secret = "whsec_" + __import__("base64").b64encode(os.urandom(24)).decode()
    port = _free_port()
    sim = subprocess.Popen(
        [sys.executable, "-m", "sluice.cli", "simulator", "--port", str(port)],
        env={**os.environ, "SLUICE_WEBHOOK_SECRET": secret},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"{base}/_sim/health", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise RuntimeError("simulator did not start") from None
                time.sleep(0.05)
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{tmp}/http.db"
            sim_cpu = _cpu_seconds(sim.pid)
            seconds = asyncio.run(_http_drain(url, secret, base, n))
            sim_share = (_cpu_seconds(sim.pid) - sim_cpu) / seconds
            counts = asyncio.run(_counts(url))
        got = httpx.get(f"{base}/_sim/effects", timeout=30).json()
        if counts != {"sent": n} or got["unique"] != n:
            raise RuntimeError(f"http incomplete: store {counts}, simulator {got}")
        sim_cpu = _cpu_seconds(sim.pid)
        bare_seconds = asyncio.run(_bare_http(secret, base, n))
        bare_share = (_cpu_seconds(sim.pid) - sim_cpu) / bare_seconds
        got = httpx.get(f"{base}/_sim/effects", timeout=30).json()
        if got["unique"] != 2 * n:
            raise RuntimeError(f"bare http loop incomplete: simulator {got}")
        return {
            "per_s": n / seconds,
            "bare_per_s": n / bare_seconds,
            "sim_cpu_share": sim_share,
            "bare_sim_cpu_share": bare_share,
            "store": "sqlite",
            "duplicates": got["duplicates"],
        }
    finally:
        sim.terminate()
        sim.wait(10)


async def _bare_http(secret: str, base: str, n: int) -> float:
    """The reference: ``HTTP_CONCURRENCY`` tasks posting ``n`` Standard Webhooks, each
    signed when it is sent (as the adapter signs), through the client Sluice's worker
    uses (httpx over the aiohttp transport); every answer must be 2xx."""
    from standardwebhooks.webhooks import Webhook

    from sluice.model import new_message_id
    from sluice.providers import http_client
    from sluice.providers.webhook import decode_secret

    signer = Webhook(decode_secret(secret))
    settings = Settings(worker_concurrency=HTTP_CONCURRENCY, log_level="warning")
    left = iter(range(n))

    async def poster(client: httpx.AsyncClient) -> None:
        for i in left:
            mid, now = new_message_id(), datetime.now(UTC)
            body = json.dumps(
                {"type": "bench.noop", "id": mid, "tenant": f"tenant-{i % 10}",
                 "channel": "webhook", "timestamp": now.isoformat(), "data": {"i": i}},
                separators=(",", ":"),
            )  # fmt: skip
            headers = {
                "content-type": "application/json",
                "webhook-id": mid,
                "webhook-timestamp": str(int(now.timestamp())),
                "webhook-signature": signer.sign(mid, now, body),
            }
            response = await client.post(
                f"{base}/webhook/bench/{i % 10}", content=body.encode(), headers=headers
            )
            if not 200 <= response.status_code < 300:
                raise RuntimeError(f"simulator answered {response.status_code}: {response.text}")

    async with http_client(settings) as client:
        t = time.perf_counter()
        await asyncio.gather(*(poster(client) for _ in range(HTTP_CONCURRENCY)))
        return time.perf_counter() - t


async def _http_drain(url: str, secret: str, base: str, n: int) -> float:
    from sluice.providers import http_client

    settings = Settings(
        database_url=url,
        webhook_secret=secret,
        worker_concurrency=HTTP_CONCURRENCY,
        log_level="warning",
        allow_loopback_targets=True,  # the simulator is on 127.0.0.1
    )
    store = create_store(url, settings)  # its enqueue admits loopback targets too
    await store.open()  # type: ignore[attr-defined]
    try:
        await store.migrate()
        await store.enqueue_many(
            [_message(i, "webhook", f"{base}/webhook/bench/{i % 10}", "webhook") for i in range(n)]
        )
        async with http_client(settings) as client:
            d = await assemble_dispatcher(store, settings, client, logger=_Quiet())
            heap.settle()  # as `sluice worker` does once started
            t = time.perf_counter()
            await d.run(until_idle=True)
            return time.perf_counter() - t
    finally:
        await store.close()
