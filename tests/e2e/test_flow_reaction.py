"""How fast worker processes stop sending once a receiver says stop: after a 429 with
``Retry-After``, and after a circuit breaker opened (issue 10, items 11 and 12).

Two ``sluice worker`` processes on PostgreSQL deliver webhooks to the provider simulator
at about 200 messages a second. Every provider call is an attempt row, started and
finished by the worker's clock (one host, one clock), so the counts below are exactly
the requests that reached the receiver:

- **429**: the receiver answers ``429 Retry-After: 7`` from a moment on. Counted: the
  requests each worker started after its *own* first 429 arrived (want: none; it must
  stop before its next send starts), and after the *first* 429 any worker received (the
  other worker's share is the propagation; want it within 100 ms);
- **breaker**: the receiver answers 503 for a while. Counted: the requests each worker
  started after the endpoint's breaker opened (the ``breaker.open`` audit row), while it
  stayed open.

Both scenarios then clear the fault and count messages in and effects out: nothing is
lost and nothing is delivered twice. The figures are printed (``pytest -s``); the
assertions leave room for a loaded machine.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from conftest import SimulatorProcess, Workers
from sluice.model import NewMessage
from sluice.store import Store, create_store

RATE = 200  # messages a second, both workers together
TICK = 0.05
RETRY_AFTER = 7.0


async def produce(store: Store, url: str, seconds: float, into: list[str]) -> None:
    loop = asyncio.get_running_loop()
    per_tick = round(RATE * TICK)
    start = loop.time()
    for tick in range(round(seconds / TICK)):
        batch = [
            NewMessage(tenant="acme", channel="webhook", provider="webhook", recipient=url,
                       payload={"n": tick * per_tick + i})
            for i in range(per_tick)
        ]  # fmt: skip
        into += await store.enqueue_many(batch)
        await asyncio.sleep(max(0.0, start + (tick + 1) * TICK - loop.time()))


async def run_load(
    url: str,
    target: str,
    seconds: float,
    at: float,
    fault: dict[str, Any],
    sim: SimulatorProcess,
    backlog: int = 0,
) -> list[str]:
    """Enqueue ``backlog`` messages at once, then produce for ``seconds``; install
    ``fault`` ``at`` seconds in."""
    store = create_store(url)
    await store.open()  # type: ignore[attr-defined]
    ids: list[str] = []
    try:
        if backlog:
            ids += await store.enqueue_many(
                [NewMessage(tenant="acme", channel="webhook", provider="webhook",
                            recipient=target, payload={"backlog": n}) for n in range(backlog)]
            )  # fmt: skip
        producing = asyncio.create_task(produce(store, target, seconds, ids))
        await asyncio.sleep(at)
        await asyncio.to_thread(sim.faults, **fault)
        await producing
    finally:
        await store.close()
    return ids


def attempt_rows(url: str) -> list[tuple[str, float, float, str | None]]:
    """(worker, started_at, finished_at, error code) of every provider call, by start."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT worker_id, extract(epoch FROM started_at)::float8, "
            "extract(epoch FROM finished_at)::float8, error_code "
            "FROM sluice_attempts WHERE outcome <> 'shadowed' ORDER BY started_at"
        ).fetchall()
    return [(str(w), float(s), float(f), c) for w, s, f, c in rows]


def wait_delivered(url: str, ids: list[str], sim: SimulatorProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with psycopg.connect(url) as conn:
            sent = conn.execute(
                "SELECT count(*) FROM sluice_messages WHERE status = 'sent'"
            ).fetchone()
        if sent and sent[0] == len(ids):
            break
        assert time.monotonic() < deadline, f"{sent} of {len(ids)} sent after {timeout} s"
        time.sleep(0.25)
    effects = sim.ids()
    assert sorted(effects) == sorted(ids), "every message arrived"
    assert set(effects.values()) == {1}, "and none twice"


def start_workers(workers: Workers, url: str, sim: SimulatorProcess, n: int, **env: str) -> None:
    for _ in range(n):
        workers.start(url, sim.secret, **env)
    deadline = time.monotonic() + 30
    while True:
        with psycopg.connect(url) as conn:
            live = conn.execute(
                "SELECT count(*) FROM sluice_workers WHERE stopped_at IS NULL"
            ).fetchone()
        if live and live[0] == n:
            return
        assert time.monotonic() < deadline, "workers did not start"
        time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.parametrize("backlog", [False, True], ids=["steady", "backlog"])
def test_429__no_request_starts_after_the_retry_after_arrived(
    clean_pg_url: str, simulator: SimulatorProcess, workers: Workers, tmp_path: Path, backlog: bool
) -> None:
    env: dict[str, str] = {}
    slow = {"latency_ms": 20} if backlog else {}
    if backlog:
        # Claimed messages queue for a few provider slots: what was admitted before the
        # 429 arrived starts after it, unless the last look before the call stops it.
        config = tmp_path / "sluice.toml"
        config.write_text('[[limits]]\nkind = "concurrency"\nprovider = "webhook"\nmax = 4\n')
        env["SLUICE_CONFIG"] = str(config)
    start_workers(workers, clean_pg_url, simulator, 2, **env)
    target = f"{simulator.url}/webhook/reaction/429"
    if slow:
        simulator.faults(path_prefix="/webhook/reaction", **slow)
    fault = {"path_prefix": "/webhook/reaction", "status": 429, "retry_after": RETRY_AFTER, **slow}
    ids = asyncio.run(
        run_load(clean_pg_url, target, 4.0, 1.5, fault, simulator, 1000 if backlog else 0)
    )

    rows = attempt_rows(clean_pg_url)
    throttled = [r for r in rows if r[3] == "RATE_LIMITED"]
    assert throttled, "the receiver's 429 must have reached a worker"
    first = min(r[2] for r in throttled)
    report: dict[str, dict[str, Any]] = {}
    for worker in sorted({r[0] for r in rows}):
        own = [r[2] for r in throttled if r[0] == worker]
        mine = [r for r in rows if r[0] == worker]
        after_first = [r[1] for r in mine if first < r[1] < first + RETRY_AFTER]
        report[worker] = {
            "after_its_own_429": (
                sum(1 for r in mine if min(own) < r[1] < min(own) + RETRY_AFTER) if own else None
            ),
            "after_the_first_429": len(after_first),
            "last_start_after_first_ms": round((max(after_first) - first) * 1000, 1)
            if after_first
            else None,
        }
    total = sum(w["after_the_first_429"] for w in report.values())
    print(f"\n429 Retry-After {RETRY_AFTER:g}: {json.dumps(report, indent=1)}")
    print(f"429: requests started after the first 429, both workers: {total}")

    # The worker that got a 429 starts nothing more to that receiver (its own in-flight
    # requests were already on the wire); the other hears of it within milliseconds.
    for worker, figures in report.items():
        assert figures["after_its_own_429"] in (0, None), (worker, figures)
        lag = figures["last_start_after_first_ms"]
        assert lag is None or lag < 1000, (worker, figures)

    simulator.clear_faults()
    wait_delivered(clean_pg_url, ids, simulator, 60)


def breakers(url: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [sys.executable, "-m", "sluice.cli", "breakers", "list", "--json"],
        env={**os.environ, "SLUICE_DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    document = json.loads(out)
    return list(document["items"])


@pytest.mark.slow
def test_breaker__no_request_starts_after_it_opened(
    clean_pg_url: str, simulator: SimulatorProcess, workers: Workers
) -> None:
    # A cooldown longer than the outage: every request after the opening is a leak, none
    # is a half-open probe.
    start_workers(workers, clean_pg_url, simulator, 2, SLUICE_BREAKER_COOLDOWN="15")
    target = f"{simulator.url}/webhook/reaction/outage"
    fault = {"path_prefix": "/webhook/reaction", "status": 503}
    ids = asyncio.run(run_load(clean_pg_url, target, 5.0, 1.0, fault, simulator))
    outage_end = time.time()

    with psycopg.connect(clean_pg_url) as conn:
        opened = conn.execute(
            "SELECT extract(epoch FROM at)::float8, actor, target FROM sluice_audit "
            "WHERE action = 'breaker.open' ORDER BY at"
        ).fetchall()
    assert opened, "the breaker must have opened"
    opened_at, opener, key = float(opened[0][0]), str(opened[0][1]), str(opened[0][2])
    rows = attempt_rows(clean_pg_url)
    report = {
        worker: sum(1 for r in rows if r[0] == worker and opened_at < r[1] < outage_end)
        for worker in sorted({r[0] for r in rows})
    }
    leaks = [round((r[1] - opened_at) * 1000, 1) for r in rows if opened_at < r[1] < outage_end]
    print(f"\nbreaker: ms after opening of each request that started anyway: {leaks}")
    total = sum(report.values())
    print(f"\nbreaker {key} opened by {opener}: requests started after it opened: {report}")
    print(f"breaker: total after opening: {total}")
    assert total <= 20, report

    simulator.clear_faults()
    for row in breakers(clean_pg_url):
        if row["state"] != "closed":
            subprocess.run(
                [sys.executable, "-m", "sluice.cli", "breakers", "close", str(row["key"]),
                 "--reason", "outage over", "--actor", "test"],
                env={**os.environ, "SLUICE_DATABASE_URL": clean_pg_url},
                check=True, capture_output=True, timeout=30,
            )  # fmt: skip
    wait_delivered(clean_pg_url, ids, simulator, 90)
