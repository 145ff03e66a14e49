"""The kill switch under load: 1,000 messages/s into two worker processes on PostgreSQL,
effects counted at the provider simulator.

After ``sluice kill --tenant victim`` returns, the simulator must record no new effect
for the victim while the bystander keeps flowing; ``sluice resume`` then delivers every
held message exactly once, and nothing is lost.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from datetime import UTC, datetime

import httpx

from sluice.model import NewMessage
from sluice.store import create_store

RATE = 1_000  # messages per second, split over two tenants
TICK = 0.05
WORKERS = 2


def hook(base: str, tenant: str, i: int) -> NewMessage:
    return NewMessage(
        tenant=tenant,
        channel="webhook",
        provider="webhook",
        recipient=f"{base}/webhook/kill/{tenant}",
        payload={"i": i},
    )


async def cli(url: str, *args: str) -> tuple[int, str, str, float]:
    t0 = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sluice.cli",
        *args,
        env={**os.environ, "SLUICE_DATABASE_URL": url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode(), time.monotonic() - t0


async def delivered(client: httpx.AsyncClient, base: str) -> dict[str, int]:
    answer = await client.get(f"{base}/_sim/effects/ids", timeout=30)
    return dict(answer.json()["ids"])


async def scenario(url: str, base: str) -> dict[str, object]:
    store = create_store(url)
    await store.open()  # type: ignore[attr-defined]
    ids: dict[str, list[str]] = {"victim": [], "bystander": []}
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def produce() -> None:
        i = 0
        per_tick = int(RATE * TICK) // 2
        while not stop.is_set():
            t0 = loop.time()
            for tenant in ids:
                got = await store.enqueue_many([hook(base, tenant, i + n) for n in range(per_tick)])
                ids[tenant] += got
            i += per_tick
            await asyncio.sleep(max(0.0, TICK - (loop.time() - t0)))

    async with httpx.AsyncClient() as client:
        producer = asyncio.create_task(produce())
        try:
            await asyncio.sleep(3.0)
            rc, out, err, wall = await cli(
                url, "kill", "--tenant", "victim", "--reason", "RB-10 runaway loop", "--json"
            )
            assert rc == 0, f"kill failed ({rc}): {out} {err}"
            seen = await delivered(client, base)
            victim_ids = set(ids["victim"])
            victim_at_kill = {k for k in seen if k in victim_ids}
            bystander_at_kill = sum(1 for k in seen if k not in victim_ids)
            await asyncio.sleep(3.0)  # keep producing into both tenants
        finally:
            stop.set()
            await producer
        await asyncio.sleep(1.0)
        seen = await delivered(client, base)
        victim_ids = set(ids["victim"])
        victim_after = {k for k in seen if k in victim_ids}
        bystander_after = sum(1 for k in seen if k not in victim_ids)

        rc, rout, rerr, _ = await cli(
            url, "resume", "--tenant", "victim", "--reason", "loop fixed", "--json"
        )
        assert rc == 0, f"resume failed ({rc}): {rout} {rerr}"
        total = len(ids["victim"]) + len(ids["bystander"])
        deadline = time.monotonic() + 120
        while True:
            counts = (await store.status_report(datetime.now(UTC))).counts
            if counts.get("sent", 0) == total:
                break
            assert time.monotonic() < deadline, f"not drained after resume: {counts}"
            await asyncio.sleep(0.2)
        final = await delivered(client, base)
    await store.close()  # type: ignore[attr-defined]
    return {
        "kill": json.loads(out),
        "kill_wall_seconds": wall,
        "victim_at_kill": victim_at_kill,
        "victim_after": victim_after,
        "bystander_at_kill": bystander_at_kill,
        "bystander_after": bystander_after,
        "released": json.loads(rout)["released"],
        "ids": ids,
        "final": final,
    }


def test_kill_at_1000_per_second__no_new_effect_in_scope_after_return(
    clean_pg_url, simulator, workers, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    for _ in range(WORKERS):
        workers.start(clean_pg_url, simulator.secret, SLUICE_WORKER_CONCURRENCY="100")
    time.sleep(1.5)  # both workers registered before the kill, so both must acknowledge
    r = asyncio.run(scenario(clean_pg_url, simulator.url))
    workers.stop_all()

    ack = r["kill"]["ack"]  # type: ignore[index]
    assert ack["complete"] and len(ack["acked"]) == WORKERS, ack
    # The fence: nothing of the victim reached the provider after kill returned.
    assert r["victim_after"] == r["victim_at_kill"]
    assert r["bystander_after"] > r["bystander_at_kill"], "other scopes must keep flowing"

    ids: dict[str, list[str]] = r["ids"]  # type: ignore[assignment]
    final: dict[str, int] = r["final"]  # type: ignore[assignment]
    everything = ids["victim"] + ids["bystander"]
    lost = [i for i in everything if i not in final]
    assert lost == []
    assert max(final.values()) == 1, "a message reached the provider twice"
    assert r["released"] > 0
    report = (
        f"kill acknowledged by {len(ack['acked'])} workers in {ack['elapsed_ms']} ms "
        f"(CLI wall {r['kill_wall_seconds']:.2f} s); messages {len(everything)}; "
        f"victim delivered before kill {len(r['victim_at_kill'])}, held and released "
        f"{r['released']}; lost 0; duplicates 0"
    )
    print(report)
    (tmp_path / "kill-report.txt").write_text(report)
