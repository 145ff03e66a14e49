"""What a refresh of the state metrics costs at a million message rows.

``python -m bench.state_metrics`` (``--rows``, default 1,000,000; ``--repeat``, 20).

A fresh PostgreSQL database gets ``--rows`` messages written by SQL in one statement, in
the proportions of a system that has run for a while: 96 % sent, 2 % dead (four error
codes), 1 % queued (a tenth of them retries, some scheduled later), 0.5 % held (three
reasons), 0.5 % sending, over 50 tenants, 3 channels and 4 providers; plus 10,000 audit
rows and a few connections. After ``ANALYZE``, it times ``Store.observe`` (the store's
part) and a whole refresh of ``StateMetrics`` (observe, workers, breakers, throttles,
quotas, and building the families), and prints the median and the worst.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import psycopg

from bench.pg import fresh_db
from sluice.config import Settings
from sluice.ops.state_metrics import StateMetrics
from sluice.store import create_store

FILL = """
INSERT INTO sluice_messages (
    id, tenant, channel, provider, action, recipient, payload, priority, status, run_at,
    attempts, max_attempts, claim_seq, content_hash, created_at, updated_at,
    last_error_code, hold_reason, lease_until, worker_id)
SELECT gen_random_uuid(), 'tenant-' || (i %% 50), (ARRAY['sms','email','webhook'])[1 + i %% 3],
       (ARRAY['twilio','sendgrid','webhook','null'])[1 + i %% 4], 'bench', 'r' || i, '{}', 0,
       s.status,
       now() - interval '1 hour' + (CASE WHEN i %% 7 = 0 THEN interval '2 hours' ELSE '0' END),
       CASE WHEN s.status = 'queued' AND i %% 10 = 0 THEN 2 ELSE 1 END, 5, 1, 'h',
       now() - (i %% 86400) * interval '1 second', now(),
       CASE WHEN s.status = 'dead'
            THEN (ARRAY['INVALID_RECIPIENT','ENDPOINT_GONE','AUTH_REVOKED','TIMEOUT'])[1 + i %% 4]
       END,
       CASE WHEN s.status = 'held'
            THEN (ARRAY['control:killed (tenant=x) by ops: y','connection: revoked',
                        'limit: recipient_cap(tenant=t) reached'])[1 + i %% 3]
       END,
       CASE WHEN s.status = 'sending' THEN now() + interval '30 seconds' END,
       CASE WHEN s.status = 'sending' THEN 'w1' END
FROM generate_series(1, %(rows)s) AS i
CROSS JOIN LATERAL (SELECT CASE
    WHEN i %% 1000 < 960 THEN 'sent'
    WHEN i %% 1000 < 980 THEN 'dead'
    WHEN i %% 1000 < 990 THEN 'queued'
    WHEN i %% 1000 < 995 THEN 'held'
    ELSE 'sending' END AS status) s
"""


async def measure(url: str, repeat: int) -> dict[str, float]:
    store = create_store(url)
    await store.open()  # type: ignore[attr-defined]
    try:
        settings = Settings(database_url=url, metrics_refresh=0.001)
        state = StateMetrics(store, settings)
        observe, refresh = [], []
        for _ in range(repeat):
            t = time.perf_counter()
            await store.observe(state.clock.now())
            observe.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            await state.refresh(force=True)
            refresh.append((time.perf_counter() - t) * 1000)
        return {
            "observe_p50": statistics.median(observe),
            "observe_max": max(observe),
            "refresh_p50": statistics.median(refresh),
            "refresh_max": max(refresh),
        }
    finally:
        await store.close()


async def migrate(url: str) -> None:
    store = create_store(url)
    await store.open()  # type: ignore[attr-defined]
    try:
        await store.migrate()
    finally:
        await store.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.state_metrics", description=__doc__)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--repeat", type=int, default=20)
    args = p.parse_args(argv)
    with fresh_db("sluice_bench_state") as url:
        asyncio.run(migrate(url))
        t = time.perf_counter()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(FILL, {"rows": args.rows})
            conn.execute("ANALYZE sluice_messages")
        filled = time.perf_counter() - t
        got = asyncio.run(measure(url, args.repeat))
    print(f"{args.rows:,} message rows (filled in {filled:.0f} s), {args.repeat} refreshes:")
    print("| read | median ms | worst ms |")
    print("|---|---:|---:|")
    print(f"| Store.observe | {got['observe_p50']:.1f} | {got['observe_max']:.1f} |")
    print(f"| StateMetrics refresh (all) | {got['refresh_p50']:.1f} | {got['refresh_max']:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
