"""Limits shared through Redis by two worker processes on PostgreSQL, and what the
workers do when Redis cannot be reached. The limits come from a ``sluice.toml``; effects
are counted at the provider simulator.

- Shared bucket: 250 messages enqueued at once for a tenant limited to 25/s (burst 5).
  Both workers send some, their sends together never exceed ``rate * window + burst``
  (+1 for the boundary) in any window, the bucket lives in Redis under
  ``SLUICE_REDIS_PREFIX`` (not in the store), and every message is delivered once.
- Redis unreachable, default fallback (``closed``): messages without a limit are
  delivered; limited ones are not sent, stay ``queued`` with no attempt row and an
  attempts counter of 0, and the log says Redis is unreachable and the worker fails
  closed.
- Redis unreachable, ``SLUICE_REDIS_FALLBACK=store``: limited messages are delivered
  through the store's limiter (its bucket is in ``sluice_flow_state``, and the rate still
  holds), and the log says so.
"""

from __future__ import annotations

import asyncio
import math
import socket
import time
from pathlib import Path
from typing import Any

import psycopg
import redis

from sluice.model import NewMessage
from sluice.store import create_store

WORKERS = 2
#: One send on a window's boundary, plus the admission-to-start jitter of a batch (see
#: test_noisy_tenant.py): at most 0.15 s of sends at the limited rate.
JITTER = 0.15


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(tmp_path: Path, tenant: str, rate: float, burst: float) -> Path:
    path = tmp_path / "sluice.toml"
    path.write_text(
        f'[[limits]]\nkind = "rate"\ntenant = "{tenant}"\nrate = {rate}\nburst = {burst}\n'
    )
    return path


def hook(base: str, tenant: str, i: int) -> NewMessage:
    return NewMessage(
        tenant=tenant,
        channel="webhook",
        provider="webhook",
        recipient=f"{base}/webhook/redis-limits/{tenant}",
        payload={"i": i},
    )


def enqueue(url: str, messages: list[NewMessage]) -> list[str]:
    async def go() -> list[str]:
        store = create_store(url)
        await store.open()
        try:
            return await store.enqueue_many(messages)
        finally:
            await store.close()

    return asyncio.run(go())


def statuses(url: str, ids: list[str]) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT status, count(*) FROM sluice_messages WHERE id = ANY(%s::uuid[]) "
            "GROUP BY status",
            (ids,),
        ).fetchall()
    return {str(s): int(n) for s, n in rows}


def wait_sent(url: str, ids: list[str], timeout: float) -> float:
    """Seconds until every message of ``ids`` is ``sent`` (asserts within ``timeout``)."""
    t0 = time.monotonic()
    while True:
        counts = statuses(url, ids)
        if counts.get("sent", 0) == len(ids):
            return time.monotonic() - t0
        assert time.monotonic() - t0 < timeout, f"not all sent after {timeout:.0f} s: {counts}"
        time.sleep(0.1)


def attempts(url: str, tenant: str) -> list[tuple[str, float, str, str]]:
    """(message id, started_at, outcome, worker) of every attempt of ``tenant``, by start."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            """
            SELECT a.message_id::text, extract(epoch FROM a.started_at)::float8, a.outcome,
                   a.worker_id
            FROM sluice_attempts a JOIN sluice_messages m ON m.id = a.message_id
            WHERE m.tenant = %s
            ORDER BY a.started_at
            """,
            (tenant,),
        ).fetchall()
    return [(str(i), float(s), str(o), str(w)) for i, s, o, w in rows]


def flow_state_keys(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT key FROM sluice_flow_state WHERE stamp >= 0").fetchall()
    return [str(k) for (k,) in rows]


def bucket_excess(times: list[float], rate: float) -> float:
    """The most sends in any window [t_i, t_j] beyond ``rate * (t_j - t_i)``: a token
    bucket of depth ``burst`` keeps this at most ``burst``. ``times`` sorted."""
    best = -math.inf
    worst = -math.inf
    for j, t in enumerate(times):
        best = max(best, rate * t - j)
        worst = max(worst, (j + 1) + best - rate * t)
    return worst


def test_two_workers_share_one_redis_bucket__rate_holds_across_both(
    clean_pg_url: str,
    simulator: Any,
    workers: Any,
    redis_url: str,
    redis_prefix: str,
    tmp_path: Path,
) -> None:
    rate, burst, n = 25.0, 5.0, 250
    config = write_config(tmp_path, "t", rate, burst)
    for _ in range(WORKERS):
        workers.start(
            clean_pg_url,
            simulator.secret,
            SLUICE_CONFIG=str(config),
            SLUICE_REDIS_URL=redis_url,
            SLUICE_REDIS_PREFIX=redis_prefix,
            # A worker whose first claims came up empty (the other took the batch)
            # finds the deferred messages by its poll: often enough to take part.
            SLUICE_POLL_INTERVAL="0.2",
        )
    time.sleep(1.5)  # both workers polling, so both claim from the first batch on
    ids = enqueue(clean_pg_url, [hook(simulator.url, "t", i) for i in range(n)])
    took = wait_sent(clean_pg_url, ids, 60)
    # The bucket is in Redis, under this test's prefix, and not in the store.
    client = redis.Redis.from_url(redis_url)
    try:
        redis_keys = sorted(k.decode() for k in client.scan_iter(match=redis_prefix + "*"))
    finally:
        client.close()
    workers.stop_all()

    # The bucket, and its next free retry slot (refused messages queue behind it).
    bucket = f"{redis_prefix}limit:b:t||"
    assert redis_keys in ([bucket], [bucket, bucket + "#next"]), redis_keys
    assert flow_state_keys(clean_pg_url) == []
    rows = attempts(clean_pg_url, "t")
    assert {o for _, _, o, _ in rows} == {"sent"}
    assert len(rows) == n, "a deferral left an attempt row"
    by_worker: dict[str, int] = {}
    for _, _, _, w in rows:
        by_worker[w] = by_worker.get(w, 0) + 1
    assert len(by_worker) == WORKERS and min(by_worker.values()) > 0, by_worker

    times = [s for _, s, _, _ in rows]
    span = times[-1] - times[0]
    assert n <= rate * span + burst + 1 + rate * JITTER, f"{n} sends in {span:.2f} s"
    excess = bucket_excess(times, rate)
    bound = burst + 1 + rate * JITTER
    assert excess <= bound, f"{excess:.1f} sends over rate x window (burst {burst:g})"

    final = simulator.ids()
    assert [i for i in ids if i not in final] == []
    assert [i for i in ids if final[i] > 1] == []
    report = (
        f"redis bucket rate {rate:g}/s burst {burst:g}: {n} msgs sent in {span:.2f} s = "
        f"{(n - 1) / span:.1f}/s (all sent {took:.1f} s after enqueue), per worker "
        f"{sorted(by_worker.values())}, most over the bucket {excess:.1f} "
        f"(bound {bound:g}); lost 0; duplicates 0"
    )
    print(report)
    (tmp_path / "redis-limits-report.txt").write_text(report)


def snapshot(url: str, ids: list[str]) -> dict[str, int]:
    """The limited messages: queued, claimed at least once, spent or recorded attempts."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            """
            SELECT count(*) FILTER (WHERE m.status = 'queued'),
                   count(*) FILTER (WHERE m.status = 'sending'),
                   count(*) FILTER (WHERE m.claim_seq > 0),
                   count(*) FILTER (WHERE m.attempts <> 0 AND m.status = 'queued'),
                   (SELECT count(*) FROM sluice_attempts a
                    WHERE a.message_id = ANY(%(ids)s::uuid[]))
            FROM sluice_messages m WHERE m.id = ANY(%(ids)s::uuid[])
            """,
            {"ids": ids},
        ).fetchone()
    assert row is not None
    names = ("queued", "sending", "claimed", "counted", "attempt_rows")
    return dict(zip(names, (int(v) for v in row), strict=True))


def start_without_redis(workers: Any, url: str, secret: str, config: Path, **env: str) -> None:
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    for _ in range(WORKERS):
        workers.start(
            url,
            secret,
            SLUICE_CONFIG=str(config),
            SLUICE_REDIS_URL=dead_redis,
            **env,
        )
    time.sleep(1.5)


def test_redis_unreachable__fails_closed_by_default(
    clean_pg_url: str, simulator: Any, workers: Any, tmp_path: Path
) -> None:
    config = write_config(tmp_path, "limited", 25.0, 5.0)
    start_without_redis(workers, clean_pg_url, simulator.secret, config)
    t0 = time.monotonic()
    limited = enqueue(clean_pg_url, [hook(simulator.url, "limited", i) for i in range(5)])
    free = enqueue(clean_pg_url, [hook(simulator.url, "free", i) for i in range(5)])
    free_took = wait_sent(clean_pg_url, free, 20)
    time.sleep(max(0.0, 3.0 - (time.monotonic() - t0)))
    # Deferred for a few seconds by each claim; a claim may just be under way, so look
    # again (bounded) until none is mid-claim.
    for _ in range(20):
        snap = snapshot(clean_pg_url, limited)
        if snap["sending"] == 0:
            break
        time.sleep(0.05)
    seen = simulator.ids()
    waited = time.monotonic() - t0
    workers.stop_all()
    logs = workers.log(0) + workers.log(1)

    assert [i for i in free if seen.get(i) != 1] == [], "unlimited messages must flow"
    assert [i for i in limited if i in seen] == [], "a limited message went out unlimited"
    assert snap["queued"] == len(limited), snap
    assert snap["claimed"] == len(limited), "each limited message was claimed and deferred"
    assert snap["counted"] == 0 and snap["attempt_rows"] == 0, snap
    assert "Redis unreachable" in logs, logs[-2000:]
    assert "fail closed" in logs and '"fallback": "closed"' in logs, logs[-2000:]
    report = (
        f"redis unreachable, fallback closed: unlimited {len(free)}/{len(free)} delivered in "
        f"{free_took:.2f} s; limited 0/{len(limited)} delivered after {waited:.1f} s, "
        f"{snap['queued']} queued, attempts 0, attempt rows 0"
    )
    print(report)


def test_redis_unreachable__store_fallback_keeps_the_limit(
    clean_pg_url: str, simulator: Any, workers: Any, tmp_path: Path
) -> None:
    rate, burst, n = 10.0, 5.0, 40
    config = write_config(tmp_path, "limited", rate, burst)
    start_without_redis(
        workers, clean_pg_url, simulator.secret, config, SLUICE_REDIS_FALLBACK="store"
    )
    limited = enqueue(clean_pg_url, [hook(simulator.url, "limited", i) for i in range(n)])
    free = enqueue(clean_pg_url, [hook(simulator.url, "free", i) for i in range(5)])
    took = wait_sent(clean_pg_url, limited + free, 30)
    workers.stop_all()
    logs = workers.log(0) + workers.log(1)

    final = simulator.ids()
    everything = limited + free
    assert [i for i in everything if final.get(i) != 1] == []
    rows = attempts(clean_pg_url, "limited")
    assert {o for _, _, o, _ in rows} == {"sent"}
    assert len(rows) == n
    times = [s for _, s, _, _ in rows]
    excess = bucket_excess(times, rate)
    bound = burst + 1 + rate * JITTER
    assert excess <= bound, f"{excess:.1f} sends over rate x window (burst {burst:g})"
    keys = set(flow_state_keys(clean_pg_url))
    assert keys in ({"b:limited||"}, {"b:limited||", "b:limited||#next"}), keys
    assert "Redis unreachable" in logs, logs[-2000:]
    assert '"fallback": "store"' in logs and "kept in the database" in logs, logs[-2000:]
    span = times[-1] - times[0]
    report = (
        f"redis unreachable, fallback store: {n} limited msgs at rate {rate:g}/s burst "
        f"{burst:g} sent in {span:.2f} s = {(n - 1) / span:.1f}/s, most over the bucket "
        f"{excess:.1f} (bound {bound:g}), all {len(everything)} delivered once in "
        f"{took:.1f} s"
    )
    print(report)
