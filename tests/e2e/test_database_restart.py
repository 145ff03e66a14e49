"""PostgreSQL restarts while a worker is delivering: nothing is lost.

The worker's pooled connections and its LISTEN connection all break at once. Claims
and write-backs fail and are retried with backoff; the pool replaces the dead
connections; every message ends delivered, and a second delivery happens only where
a lease expired while the database was away.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import pytest
from test_crash_recovery import _attempt_outcomes, _counts, _enqueue, wait_until

from sluice.model import AttemptOutcome

# It restarts the PostgreSQL every other test uses: `make test` runs it alone, after them.
pytestmark = pytest.mark.serial

N = 1_500


def restart_postgres() -> None:
    version = sorted(p.name for p in Path("/etc/postgresql").iterdir())[-1]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart", "-m", "fast"],
        check=True,
        timeout=60,
    )
    deadline = time.monotonic() + 30
    while subprocess.run(["pg_isready", "-h", "127.0.0.1", "-q"], check=False).returncode != 0:
        assert time.monotonic() < deadline, "PostgreSQL did not come back"
        time.sleep(0.2)


def test_postgres_restart_mid_run__every_message_delivered(  # type: ignore[no-untyped-def]
    clean_pg_url, simulator, workers
) -> None:
    ids = asyncio.run(_enqueue(clean_pg_url, simulator.url, N))
    simulator.faults(latency_ms=5)
    workers.start(
        clean_pg_url,
        simulator.secret,
        SLUICE_LEASE_SECONDS="5",
        SLUICE_HTTP_TIMEOUT="2",
        SLUICE_REAPER_INTERVAL="1",
        SLUICE_WORKER_CONCURRENCY="50",
    )
    wait_until(lambda: simulator.summary()["unique"] >= 200, 60, "deliveries to begin")
    before = simulator.summary()["unique"]
    restart_postgres()
    assert before < N, "the restart must land mid-run"

    wait_until(lambda: asyncio.run(_counts(clean_pg_url)) == {"sent": N}, 120, "every message sent")
    assert workers.procs[0].poll() is None, "the worker must survive the restart"
    log = workers.log(0)
    assert "LISTEN connection lost" in log, "the restart must have reached the worker"

    delivered = simulator.ids()
    assert [mid for mid in ids if mid not in delivered] == []  # lost = 0
    duplicated = {mid for mid, n in delivered.items() if n > 1}
    outcomes = asyncio.run(_attempt_outcomes(clean_pg_url, ids))
    expired = {mid for mid, o in outcomes.items() if AttemptOutcome.LEASE_EXPIRED in o}
    assert duplicated <= expired
    print(
        f"\nrestart: {N} in, {len(delivered)} delivered before+after ({before} before), "
        f"lost 0, {len(expired)} leases expired, {len(duplicated)} delivered twice"
    )
