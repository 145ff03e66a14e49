"""A worker host whose wall clock is 5 s ahead, beside a correct one, on one PostgreSQL
(issue 11, item 1). Leases are written by one worker and judged expired by another: when
each read its own clock, the host ahead took back the other's live leases and every
message went out twice. Now every worker keeps time by the database server
(``sluice.clock.StoreClock``), so a skewed host changes nothing.

The skew is real: the second worker runs under ``faketime`` (Debian's package), which
moves its process's wall clock and leaves the monotonic clock alone.
"""

from __future__ import annotations

import asyncio
import glob
import time

import psycopg
import pytest

from conftest import SimulatorProcess, Workers
from sluice.model import NewMessage
from sluice.store import create_store

N = 20
LEASE = "8"
HTTP_TIMEOUT = "5"
CALL_MS = 4000  # each provider call takes 4 s: inside the lease, past the skew


def libfaketime() -> str:
    """Debian's faketime library, preloaded into the worker (no wrapper process)."""
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
    if not found:
        pytest.fail(
            "faketime is not installed; it moves a test worker's wall clock. "
            "Install it with: apt-get install -y faketime (.ci/run does)"
        )
    return found[0]


async def enqueue(url: str, target: str) -> list[str]:
    store = create_store(url)
    await store.open()  # type: ignore[attr-defined]
    try:
        return await store.enqueue_many(
            [NewMessage(tenant="acme", channel="webhook", provider="webhook", recipient=target,
                        payload={"n": n}) for n in range(N)]
        )  # fmt: skip
    finally:
        await store.close()


def sent(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM sluice_messages WHERE status = 'sent'").fetchone()
    return int(row[0]) if row else 0


@pytest.mark.slow
def test_clock_skew__a_host_5s_ahead_takes_back_no_live_lease(
    clean_pg_url: str, simulator: SimulatorProcess, workers: Workers
) -> None:
    skewed = {"LD_PRELOAD": libfaketime(), "FAKETIME": "+5s", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    env = {"SLUICE_LEASE_SECONDS": LEASE, "SLUICE_HTTP_TIMEOUT": HTTP_TIMEOUT,
           "SLUICE_REAPER_INTERVAL": "1"}  # fmt: skip
    simulator.faults(path_prefix="/webhook/skew", latency_ms=CALL_MS)
    workers.start(clean_pg_url, simulator.secret, **env)
    deadline = time.monotonic() + 30
    while True:  # the correct host is up before there is anything to claim
        with psycopg.connect(clean_pg_url) as conn:
            row = conn.execute("SELECT count(*) FROM sluice_workers").fetchone()
        if row and row[0] == 1:
            break
        assert time.monotonic() < deadline, workers.log(0)
        time.sleep(0.1)
    ids = asyncio.run(enqueue(clean_pg_url, f"{simulator.url}/webhook/skew/hook"))
    time.sleep(0.5)  # the correct host has claimed them all; its calls take 4 s
    workers.start(clean_pg_url, simulator.secret, **skewed, **env)
    deadline = time.monotonic() + 60
    while sent(clean_pg_url) < N:
        assert time.monotonic() < deadline, (sent(clean_pg_url), workers.log(1)[-2000:])
        time.sleep(0.25)
    time.sleep(CALL_MS / 1000 + 1)  # anything sent twice has arrived by now
    effects = simulator.ids()
    twice = sum(1 for i in ids if effects.get(i, 0) > 1)
    print(f"\nclock skew +5 s: {N} messages, {sum(effects.get(i, 0) for i in ids)} effects, "
          f"{twice} sent twice")  # fmt: skip
    assert sorted(effects) == sorted(ids)
    assert twice == 0
