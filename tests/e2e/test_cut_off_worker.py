"""A worker cut off from PostgreSQL (the provider still reachable) while it holds claimed,
unstarted messages; ``sluice kill`` on their tenant, from another host, after the
worker's last heartbeat left the live window (issue 11, item 14).

The kill cannot wait for a worker it cannot reach, so the guarantee rests on the worker:
it fences itself once it has not reached the store for ``FENCE_SECONDS`` — no claim, no
send — and after the link comes back it loads the controls in force before it starts
anything. Counted at the provider simulator: requests that arrived after the kill
returned (want: none). Then the link is healed, the tenant resumed, and every message is
delivered exactly once.

The link is a TCP relay between the worker and PostgreSQL that swallows every byte while
cut, as a partition does (nothing refused, nothing answered).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import httpx
import psycopg
import pytest

from conftest import SimulatorProcess, TcpProxy, Workers
from sluice.model import NewMessage
from sluice.store import create_store

N = 200


def cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    return subprocess.run(
        [sys.executable, "-m", "sluice.cli", *args],
        capture_output=True, text=True, timeout=120, check=False,
        env={**base, "COLUMNS": "250", "SLUICE_DATABASE_URL": url},
    )  # fmt: skip


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


def arrivals(sim: SimulatorProcess) -> dict[str, datetime]:
    """When each effect first arrived at the simulator."""
    out = {}
    with httpx.Client(timeout=10) as client:
        for key in sim.ids():
            doc = client.get(f"{sim.url}/_sim/effects/{key}").json()
            out[key] = datetime.fromisoformat(doc["received_at"])
    return out


def last_seen_age(url: str) -> float:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT extract(epoch FROM now() - max(last_seen_at))::float8 FROM sluice_workers"
        ).fetchone()
    return float(row[0]) if row and row[0] is not None else 0.0


def wait(check: object, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.mark.slow
def test_cut_off_worker__no_send_after_a_kill_it_could_not_hear(
    clean_pg_url: str, simulator: SimulatorProcess, workers: Workers, tmp_path: Path
) -> None:
    proxy = TcpProxy(5432)
    via_proxy = clean_pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    assert via_proxy != clean_pg_url
    # Few provider slots and slow answers: the worker holds most of its claim unstarted.
    # A long lease: before self-fencing, a cut-off worker kept starting those for most of it.
    config = tmp_path / "sluice.toml"
    config.write_text('[[limits]]\nkind = "concurrency"\nprovider = "webhook"\nmax = 2\n')
    simulator.faults(path_prefix="/webhook/cut", latency_ms=600)
    workers.start(via_proxy, simulator.secret, SLUICE_CONFIG=str(config),
                  SLUICE_LEASE_SECONDS="120", SLUICE_DB_TIMEOUT="3")  # fmt: skip
    wait(lambda: last_seen_age(clean_pg_url) < 2, 30, "the worker to start")
    ids = asyncio.run(enqueue(clean_pg_url, f"{simulator.url}/webhook/cut/hook"))
    wait(lambda: len(simulator.ids()) >= 10, 30, "the first deliveries")

    proxy.cut()
    cut_at = time.monotonic()
    wait(lambda: last_seen_age(clean_pg_url) > 15.5, 40, "the worker to leave the live window")
    killed = cli(clean_pg_url, "kill", "--tenant", "acme", "--reason", "RB-10", "--actor", "ops")
    kill_returned = datetime.now().astimezone()
    assert killed.returncode == 0, killed.stdout + killed.stderr
    assert "not live (fenced since" in killed.stdout, killed.stdout
    time.sleep(4.0)  # still cut off: anything the worker starts now arrives meanwhile
    proxy.heal()
    wait(lambda: last_seen_age(clean_pg_url) < 3, 60, "the worker to reconnect")
    time.sleep(2.0)  # it has loaded the kill, and would have sent by now if it were going to

    late = {k: at for k, at in arrivals(simulator).items() if at > kill_returned}
    before = len(arrivals(simulator))
    print(f"\ncut off {time.monotonic() - cut_at:.0f} s; {before} delivered before the kill "
          f"returned, {len(late)} after it")  # fmt: skip
    assert late == {}, f"{len(late)} sends after the kill returned"
    log = workers.log(0)
    assert "cut off from the store: starting no send" in log
    assert "reconnected to the store; controls reloaded" in log
    # What it put back unsent while cut off is on record (issue 11 item 6), once written.
    with psycopg.connect(clean_pg_url) as conn:
        put_back = conn.execute(
            "SELECT count(*) FROM sluice_attempts WHERE outcome = 'deferred' "
            "AND detail LIKE 'put back unsent: cut off from the store%'"
        ).fetchone()
    assert put_back and put_back[0] > 0

    # The rest needs no slow answers: the concurrency limit alone would keep them 50 s.
    simulator.clear_faults()
    resumed = cli(clean_pg_url, "resume", "--tenant", "acme", "--reason", "ok", "--actor", "ops")
    assert resumed.returncode == 0, resumed.stderr

    def all_sent() -> bool:
        with psycopg.connect(clean_pg_url) as conn:
            row = conn.execute(
                "SELECT count(*) FROM sluice_messages WHERE status = 'sent'"
            ).fetchone()
        return bool(row and row[0] == N)

    wait(all_sent, 120, "every message sent after the resume")
    effects = simulator.ids()
    assert sorted(effects) == sorted(ids), "nothing lost"
    assert set(effects.values()) == {1}, "nothing delivered twice"
