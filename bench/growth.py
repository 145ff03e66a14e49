"""Growth: does the drain stay as fast when the message table is large?

Three cases, each in a fresh PostgreSQL database, each drained the way ``sluice_drain``
drains (one worker process, the ``null`` provider, full bookkeeping, claims of 500):

- ``small``: only the ``n`` messages to drain;
- ``history``: ``rows`` sent messages already in ``sluice_messages``, each with the
  attempt rows production writes (one per try; one message in 30 failed once first),
  created over the last seven days; then the ``n`` messages to drain, enqueued as usual;
- ``backlog``: ``rows`` ready messages waiting; the worker drains the first ``n`` of them
  and stops.

Rows are written by SQL (``INSERT ... SELECT`` over ``generate_series``), copied from one
message enqueued through the store so that every column is what an enqueue writes; ids
keep the time-ordered layout of ``sluice.model.new_message_id``. After loading, the
tables are analysed, as autovacuum would have.

In the worker process, every claim and every write-back is timed around the store call
(the statement plus decoding, as the dispatcher sees it). Before each drain the reads an
operator's screens and the state metrics make are timed too: ``Store.observe``, a whole
``StateMetrics`` refresh, ``sluice status`` (``status_report``) and ``sluice top`` over
the last hour.

``python -m bench.growth --explain`` prints ``EXPLAIN (ANALYZE, BUFFERS)`` of the claim,
the write-back and the state reads at ``rows`` sent plus ``rows`` ready messages (what
``bench/README.md`` quotes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg

from bench.pg import fresh_db
from bench.sluice_bench import DRAIN_BATCH, DRAIN_CONCURRENCY, _enqueue_batches, _message, _Quiet
from sluice import heap
from sluice.config import Settings
from sluice.model import first_message_id
from sluice.ops.listings import top
from sluice.ops.state_metrics import StateMetrics
from sluice.providers.null import NullProvider
from sluice.store import create_store
from sluice.store._driver import ID_SKEW
from sluice.store._queries import load_queries
from sluice.worker.assemble import assemble_dispatcher

DB = "sluice_bench_growth"
ROWS = 1_000_000
CASES = ("small", "history", "backlog")
#: Times each state read is repeated before a drain (the median is reported).
READ_REPEAT = 5
#: Claim statements timed on their own before a drain (each rolled back).
CLAIM_REPEAT = 100
#: As the store's pool sets it (see ``PostgresStore``): plans are shown as they run.
NO_JIT = "-c jit=off"
Q = load_queries("postgres")

#: A time-ordered id (``new_message_id``'s layout) for row ``i`` created at ``t``.
_ID = """(lpad(to_hex((extract(epoch FROM {t}) * 1000)::bigint), 12, '0') || '7'
          || substr(md5(i::text), 1, 3) || '8' || substr(md5(i::text), 4, 15))::uuid"""

#: ``rows`` sent messages created over the last 7 days (up to a minute ago), copied from
#: the template row; one in 30 sent at its second try.
HISTORY = f"""
INSERT INTO sluice_messages (
    id, tenant, channel, provider, action, recipient, payload, priority, status, run_at,
    attempts, max_attempts, claim_seq, content_hash, scopes, worker_id, claimed_at,
    provider_message_id, created_at, updated_at, expires_at, verify_within, deferrals)
SELECT {_ID.format(t="c.at")}, 'tenant-' || (i %% 10), m.channel, m.provider, m.action,
       m.recipient, jsonb_build_object('i', i), m.priority, 'sent', c.at,
       1 + (i %% 30 = 0)::int, m.max_attempts, 1 + (i %% 30 = 0)::int, m.content_hash,
       m.scopes, 'history', c.at, 'null-' || i, c.at, c.at + interval '20 ms',
       c.at + (m.expires_at - m.created_at), m.verify_within, 0
FROM sluice_messages m,
     generate_series(1, %(rows)s) AS i,
     LATERAL (SELECT now() - interval '7 days'
                     + (interval '7 days' - interval '1 minute') * i / %(rows)s AS at) c
WHERE m.id = %(template)s::uuid
"""

#: One attempt row per try of the history: a failed first try where there were two.
HISTORY_ATTEMPTS = """
INSERT INTO sluice_attempts (
    message_id, attempt_no, worker_id, provider, started_at, finished_at, outcome,
    error_code, error_class, provider_status, detail, latency_ms, applied)
SELECT m.id, n, 'history', m.provider, m.created_at, m.updated_at,
       CASE WHEN n < m.attempts THEN 'failed' ELSE 'sent' END,
       CASE WHEN n < m.attempts THEN 'PROVIDER_UNAVAILABLE' END,
       CASE WHEN n < m.attempts THEN 'transient' END,
       CASE WHEN n < m.attempts THEN '503' ELSE '200' END,
       NULL, 12.5, true
FROM sluice_messages m, generate_series(1, m.attempts) AS n
WHERE m.status = 'sent' AND m.worker_id = 'history'
"""

#: ``rows`` ready messages enqueued over the last ten minutes, copied from the template.
BACKLOG = f"""
INSERT INTO sluice_messages (
    id, tenant, channel, provider, action, recipient, payload, priority, status, run_at,
    attempts, max_attempts, claim_seq, content_hash, scopes, created_at, updated_at,
    expires_at, verify_within)
SELECT {_ID.format(t="c.at")}, 'tenant-' || (i %% 10), m.channel, m.provider, m.action,
       m.recipient, jsonb_build_object('i', i), m.priority, 'queued', c.at, 0,
       m.max_attempts, 0, m.content_hash, m.scopes, c.at, c.at,
       c.at + (m.expires_at - m.created_at), m.verify_within
FROM sluice_messages m,
     generate_series(1, %(rows)s) AS i,
     LATERAL (SELECT now() - interval '10 minutes' + interval '9 minutes' * i / %(rows)s
                     AS at) c
WHERE m.id = %(template)s::uuid
"""


# --- loading -------------------------------------------------------------------------


async def _prepare(url: str) -> str:
    """Migrate; enqueue the template message through the store; return its id."""
    store = create_store(url)
    await store.open()  # type: ignore[attr-defined]
    try:
        await store.migrate()
        (template,) = await store.enqueue_many([_message(0)])
        return template
    finally:
        await store.close()


def load(url: str, case: str, rows: int) -> float:
    """Fill the database for ``case``; seconds it took. The template row is removed."""
    template = asyncio.run(_prepare(url))
    t = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        params = {"rows": rows, "template": template}
        if case in ("history", "both"):
            conn.execute(HISTORY, params)
            conn.execute(HISTORY_ATTEMPTS)
        if case in ("backlog", "both"):
            conn.execute(BACKLOG, params)
        conn.execute("DELETE FROM sluice_messages WHERE id = %s::uuid", (template,))
        conn.execute("VACUUM ANALYZE sluice_messages")
        conn.execute("VACUUM ANALYZE sluice_attempts")
        # The load's own dirty pages are written now, not by a checkpoint mid-measurement.
        conn.execute("CHECKPOINT")
    return time.perf_counter() - t


# --- the drain -----------------------------------------------------------------------


def _timed(fn: Callable[..., Awaitable[Any]], into: list[float]) -> Callable[..., Awaitable[Any]]:
    """``fn``, with each call's milliseconds appended to ``into``."""

    async def call(*args: Any) -> Any:
        t = time.perf_counter()
        out = await fn(*args)
        into.append((time.perf_counter() - t) * 1000.0)
        return out

    return call


def _drain_worker(url: str, n: int, result: Any) -> None:
    """One worker process: claim ``n`` messages in all, deliver them, report timings."""

    async def run() -> None:
        store = create_store(url)
        await store.open()  # type: ignore[attr-defined]
        claims: list[float] = []
        writes: list[float] = []
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
            # The worker claims with its batch's connections in the same round trip.
            claim = _timed(store.message_claim_with_connections, claims)
            left = [n]

            async def claim_at_most_n(worker_id: str, limit: int, *rest: Any) -> Any:
                """The claim, asked for no more than what is left of ``n``; nothing after
                (so ``until_idle`` ends the run once those are written back)."""
                if left[0] <= 0:
                    return [], []
                batch, found = await claim(worker_id, min(limit, left[0]), *rest)
                left[0] -= len(batch)
                return batch, found

            # Instance attributes: the dispatcher calls these; nothing else changes.
            setattr(store, "message_claim_with_connections", claim_at_most_n)  # noqa: B010
            write = _timed(store.message_complete_many, writes)
            setattr(store, "message_complete_many", write)  # noqa: B010
            t = time.perf_counter()
            stats = await d.run(until_idle=True)
            result.put((time.perf_counter() - t, stats.sent, claims, writes))
        finally:
            await store.close()

    asyncio.run(run())


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def _drain(url: str, n: int) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    result = ctx.Queue()
    proc = ctx.Process(target=_drain_worker, args=(url, n, result))
    proc.start()
    try:
        seconds, sent, claims, writes = result.get(timeout=600)
    finally:
        proc.join(30)
        if proc.is_alive():
            proc.kill()
    if sent != n:
        raise RuntimeError(f"growth drain incomplete: worker sent {sent} of {n}")
    return {
        "drain_per_s": n / seconds,
        "claim_p50_ms": statistics.median(claims),
        "claim_p99_ms": _percentile(claims, 0.99),
        "claims": len(claims),
        "write_p50_ms": statistics.median(writes),
        "write_p99_ms": _percentile(writes, 0.99),
    }


def _verify(url: str, expect: dict[str, int], attempts: int) -> None:
    with psycopg.connect(url) as conn:
        counts = dict(conn.execute("SELECT status, count(*) FROM sluice_messages GROUP BY 1"))
        (applied,) = conn.execute(  # type: ignore[misc]
            "SELECT count(*) FROM sluice_attempts WHERE applied"
        ).fetchone()
    if counts != expect or applied != attempts:
        raise RuntimeError(
            f"growth counts: messages {counts}, expected {expect}; "
            f"applied attempts {applied}, expected {attempts}"
        )


def _claim_query(url: str, repeat: int = CLAIM_REPEAT) -> dict[str, float]:
    """The claim statement alone (500 rows, one round trip, rows fetched), ``repeat``
    times, each rolled back; then a VACUUM takes away the row versions it left."""
    took = []
    with psycopg.connect(url, options=NO_JIT) as conn:
        for _ in range(repeat):
            t = time.perf_counter()
            conn.execute(Q["message_claim"], _claim_params(datetime.now(UTC))).fetchall()
            took.append((time.perf_counter() - t) * 1000.0)
            conn.rollback()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM sluice_messages")
    return {
        "claim_query_p50_ms": statistics.median(took),
        "claim_query_p99_ms": _percentile(took, 0.99),
    }


def _claim_params(now: datetime) -> dict[str, Any]:
    return {
        "worker_id": "bench",
        "limit": DRAIN_BATCH,
        "now": now,
        "lease_until": now + timedelta(seconds=60),
        "after": "",
    }


# --- the operator's reads ------------------------------------------------------------


async def _reads(url: str, repeat: int = READ_REPEAT) -> dict[str, float]:
    """Median milliseconds of each state read (what metrics, status and top run)."""
    store = create_store(url)
    await store.open()  # type: ignore[attr-defined]
    try:
        state = StateMetrics(store, Settings(database_url=url, metrics_refresh=0.001))
        reads: dict[str, Callable[[], Awaitable[Any]]] = {
            "observe": lambda: store.observe(datetime.now(UTC)),
            "state_refresh": lambda: state.refresh(force=True),
            "status_report": lambda: store.status_report(datetime.now(UTC)),
            "top_1h": lambda: top(store, "tenant", 3600),
        }
        out = {}
        for name, read in reads.items():
            took = []
            for _ in range(repeat):
                t = time.perf_counter()
                await read()
                took.append((time.perf_counter() - t) * 1000.0)
            out[f"{name}_ms"] = statistics.median(took)
        return out
    finally:
        await store.close()


# --- the cases -----------------------------------------------------------------------


def run_case(case: str, n: int, rows: int) -> dict[str, float]:
    """Load, time the reads, drain ``n``, check the counts: the case's figures."""
    with fresh_db(DB) as url:
        loaded = load(url, case if case != "small" else "none", rows)
        extra = 0 if case == "small" else rows
        if case != "backlog":
            asyncio.run(_enqueue_batches(url, 0, n, reference=False))
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("ANALYZE sluice_messages")
        figures = asyncio.run(_reads(url))
        figures.update(_claim_query(url))
        figures.update(_drain(url, n))
        figures["load_s"] = loaded
        history = rows + rows // 30 if case == "history" else 0
        if case == "backlog":
            _verify(url, {"sent": n, "queued": rows - n}, n)
        else:
            _verify(url, {"sent": n + (extra if case == "history" else 0)}, n + history)
        return figures


def run(n: int, rows: int = ROWS) -> dict[str, Any]:
    """Every case, then each large case's figures as a ratio of the small one's."""
    got = {case: run_case(case, n, rows) for case in CASES}
    out: dict[str, Any] = {"growth_rows": rows, "growth_n": n}
    for case, figures in got.items():
        out.update({f"growth_{case}_{k}": v for k, v in figures.items()})
    small = got["small"]
    for case in ("history", "backlog"):
        big = got[case]
        out[f"growth_{case}_drain_ratio"] = big["drain_per_s"] / small["drain_per_s"]
        out[f"growth_{case}_claim_p99_ratio"] = (
            big["claim_query_p99_ms"] / small["claim_query_p99_ms"]
        )
        out[f"growth_{case}_claim_call_p99_ratio"] = big["claim_p99_ms"] / small["claim_p99_ms"]
        out[f"growth_{case}_write_p99_ratio"] = big["write_p99_ms"] / small["write_p99_ms"]
    return out


def table(m: dict[str, Any]) -> str:
    """The part's own table: each case's figures and the ratios to the small table."""

    def f(key: str, fmt: str) -> str:
        v = m.get(key)
        return "—" if v is None else format(v, fmt)

    head = "| case | drain msgs/s | vs small | claim query p50 / p99 ms | vs small (p99) | "
    head += "claim call p50 / p99 ms | write-back p50 / p99 ms | observe ms | "
    head += "state refresh ms | status ms | top 1h ms |"
    lines = [head, "|" + "---|" * 11]
    for case in CASES:
        k = f"growth_{case}_"
        lines.append(
            f"| {case} | {f(k + 'drain_per_s', ',.0f')} | {f(k + 'drain_ratio', '.2f')} "
            f"| {f(k + 'claim_query_p50_ms', '.1f')} / {f(k + 'claim_query_p99_ms', '.1f')} "
            f"| {f(k + 'claim_p99_ratio', '.2f')} "
            f"| {f(k + 'claim_p50_ms', '.1f')} / {f(k + 'claim_p99_ms', '.1f')} "
            f"| {f(k + 'write_p50_ms', '.1f')} / {f(k + 'write_p99_ms', '.1f')} "
            f"| {f(k + 'observe_ms', '.1f')} | {f(k + 'state_refresh_ms', '.1f')} "
            f"| {f(k + 'status_report_ms', '.1f')} | {f(k + 'top_1h_ms', '.1f')} |"
        )
    rows = m.get("growth_rows")
    return f"Growth ({rows:,} rows; target: ratios ≥ 0.80 for drain, ≤ 1.20 for claim p99)\n" + (
        "\n".join(lines)
    )


# --- EXPLAIN -------------------------------------------------------------------------


def explain(url: str, n: int) -> list[tuple[str, str]]:
    """``EXPLAIN (ANALYZE, BUFFERS)`` of the claim, the write-back and the state reads,
    each in a transaction rolled back (the claim's rows are claimed for real once first,
    to have a batch to write back)."""
    now = datetime.now(UTC)
    claim = _claim_params(now)
    out = []
    with psycopg.connect(url, options=NO_JIT) as conn:

        def plan(title: str, sql: str, params: dict[str, Any]) -> None:
            rows = conn.execute(
                "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, SUMMARY ON) " + sql, params
            ).fetchall()
            out.append((title, "\n".join(r[0] for r in rows)))
            conn.rollback()

        plan("claim (500)", Q["message_claim"], claim)
        claimed = conn.execute(Q["message_claim"], claim).fetchall()
        conn.commit()
        t = now.timestamp()
        batch = [
            {"id": r[0], "claim_seq": r[11], "status": "sent", "provider": "null",
             "started_at": t, "finished_at": t, "outcome": "sent", "latency_ms": 0.1}
            for r in claimed
        ]  # fmt: skip
        write = {"worker_id": "bench", "now": now, "batch": json.dumps(batch)}
        plan(f"write-back ({len(batch)})", Q["message_complete_many"], write)
        from sluice.store._observe import QUERIES

        for name in (*QUERIES, "status_counts", "oldest_ready"):
            plan(name, Q[name], {"now": now})
        since = {"by": "tenant", "now": now, "since": now - timedelta(hours=1), "until": None}
        since.update(status=None, tenant=None, channel=None, provider=None, action=None)
        since["since_id"] = first_message_id(now - timedelta(hours=1) - ID_SKEW)
        plan("message_breakdown (sluice top, 1h)", Q["message_breakdown"], since)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.growth", description=__doc__)
    p.add_argument("--n", type=int, default=20_000, help="messages drained per case")
    p.add_argument("--rows", type=int, default=ROWS, help="history / backlog rows")
    p.add_argument("--only", choices=CASES, help="one case (default: all, with ratios)")
    p.add_argument("--explain", action="store_true", help="print the query plans and stop")
    args = p.parse_args(argv)
    if args.explain:
        with fresh_db(DB) as url:
            load(url, "both", args.rows)
            for title, text in explain(url, args.n):
                print(f"### {title}\n\n```\n{text}\n```\n")
        return 0
    if args.only:
        print(json.dumps(run_case(args.only, args.n, args.rows), indent=2))
        return 0
    got = run(args.n, args.rows)
    print(table(got))
    print(json.dumps(got, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
