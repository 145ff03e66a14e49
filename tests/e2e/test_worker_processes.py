"""``sluice worker --processes N``: N worker processes from one command, each message
sent exactly once, all of them stopped by one SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import psycopg

from sluice.model import NewMessage
from sluice.store import create_store

N = 2_000


async def _enqueue(url: str, base: str) -> list[str]:
    store = create_store(url)
    await store.open()  # type: ignore[attr-defined]
    try:
        return await store.enqueue_many(
            [
                NewMessage(
                    tenant=f"t{i % 5}",
                    channel="webhook",
                    provider="webhook",
                    recipient=f"{base}/webhook/procs/{i % 5}",
                    payload={"i": i},
                )
                for i in range(N)
            ]
        )
    finally:
        await store.close()


async def _report(url: str):  # type: ignore[no-untyped-def]
    store = create_store(url)
    await store.open()  # type: ignore[attr-defined]
    try:
        now = datetime.now(UTC)
        return (await store.status_report(now)).counts, await store.worker_list(
            now - timedelta(hours=1)
        )
    finally:
        await store.close()


def test_worker_processes_2__each_message_sent_once_and_sigterm_stops_all(
    clean_pg_url, simulator, workers
) -> None:  # type: ignore[no-untyped-def]
    ids = asyncio.run(_enqueue(clean_pg_url, simulator.url))
    parent = workers.start(
        clean_pg_url, simulator.secret, SLUICE_WORKER_PROCESSES="2", SLUICE_LOG_LEVEL="info"
    )
    deadline = time.monotonic() + 120
    while asyncio.run(_report(clean_pg_url))[0] != {"sent": N}:
        assert parent.poll() is None, workers.log(0)
        assert time.monotonic() < deadline, "timed out waiting for every message to be sent"
        time.sleep(0.2)

    parent.send_signal(signal.SIGTERM)
    assert parent.wait(30) == 0, workers.log(0)
    log = workers.log(0)
    assert log.count("worker done: sent") == 2, log

    delivered = simulator.ids()
    assert set(delivered) == set(ids)
    assert max(delivered.values()) == 1, "a message reached the provider twice"
    with psycopg.connect(clean_pg_url) as conn:
        attempts = conn.execute("SELECT outcome, count(*) FROM sluice_attempts GROUP BY 1")
        assert dict(attempts.fetchall()) == {"sent": N}
    _, seen = asyncio.run(_report(clean_pg_url))
    pids = {w.pid for w in seen}
    assert len(seen) == 2 and parent.pid not in pids, seen
    assert sum(w.sent_total for w in seen) == N
    for pid in pids:  # the parent waited for both: neither outlives it
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        raise AssertionError(f"worker process {pid} still running after the parent exited")


def test_worker_processes_0__refused_naming_the_option() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sluice.cli", "worker", "--processes", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SLUICE_DATABASE_URL": "postgresql://nowhere.invalid/x"},
    )
    assert done.returncode == 2
    assert "--processes" in done.stderr
