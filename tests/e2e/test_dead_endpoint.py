"""One dead webhook endpoint does not freeze healthy ones (issue 10, item 15).

One ``sluice worker`` on an SQLite file delivers to three receivers of the provider
simulator: tenant ``a`` to ``/a-down`` (always 503) and ``/a-up`` (healthy), tenant
``b`` to ``/b``. ``/a-down`` carries two thirds of the traffic, enough to have opened
both the tenant's and the provider's breaker when breakers were per provider and per
(tenant, provider). Now health is per endpoint: only ``/a-down``'s breaker opens, its
messages wait without spending attempts, and the other two receive everything, each
message once, with no added delay worth the name.

Counts per endpoint and the healthy endpoints' latency are printed (``pytest -s``).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from pathlib import Path

import pytest

from conftest import SimulatorProcess, Workers
from sluice.model import NewMessage
from sluice.store import Store, create_store

SECONDS = 8.0
TICK = 0.2
#: Messages a second per endpoint: the dead one carries two thirds of all traffic.
RATES = {("a", "a-down"): 20, ("a", "a-up"): 5, ("b", "b"): 5}


async def produce(store: Store, base: str) -> dict[str, list[str]]:
    ids: dict[str, list[str]] = {path: [] for _, path in RATES}
    loop = asyncio.get_running_loop()
    start = loop.time()
    for tick in range(round(SECONDS / TICK)):
        batch = [
            NewMessage(tenant=tenant, channel="webhook", provider="webhook",
                       recipient=f"{base}/webhook/{path}", payload={"tick": tick, "n": n})
            for (tenant, path), rate in RATES.items() for n in range(round(rate * TICK))
        ]  # fmt: skip
        for msg, mid in zip(batch, await store.enqueue_many(batch), strict=True):
            ids[msg.recipient.rsplit("/", 1)[1]].append(mid)
        await asyncio.sleep(max(0.0, start + (tick + 1) * TICK - loop.time()))
    return ids


async def run(db: Path, base: str) -> dict[str, list[str]]:
    store = create_store(f"sqlite:///{db}")
    await store.open()  # type: ignore[attr-defined]
    try:
        return await produce(store, base)
    finally:
        await store.close()


def rows(db: Path, ids: list[str]) -> list[tuple[str, int, float | None]]:
    """(status, attempts, seconds from enqueue to the sending attempt) per message."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        out = []
        for mid in ids:
            status, attempts, created = conn.execute(
                "SELECT status, attempts, created_at FROM sluice_messages WHERE id = ?", (mid,)
            ).fetchone()
            started = conn.execute(
                "SELECT max(started_at) FROM sluice_attempts WHERE message_id = ? "
                "AND outcome = 'sent'",
                (mid,),
            ).fetchone()[0]
            out.append((status, attempts, None if started is None else started - created))
    return out


@pytest.mark.slow
def test_dead_endpoint__defers_only_itself(
    tmp_path: Path, simulator: SimulatorProcess, workers: Workers
) -> None:
    db = tmp_path / "sluice.db"
    url = f"sqlite:///{db}"
    asyncio.run(_migrate(url))
    simulator.faults(path_prefix="/webhook/a-down", status=503)
    workers.start(url, simulator.secret, SLUICE_BREAKER_WINDOW="60")
    ids = asyncio.run(run(db, simulator.url))
    time.sleep(2.0)  # what was enqueued last gets its turn

    effects = simulator.ids()
    report: dict[str, object] = {}
    for path, mids in ids.items():
        got = rows(db, mids)
        delivered = sum(1 for mid in mids if effects.get(mid) == 1)
        waits = sorted(w for _, _, w in got if w is not None)
        report[path] = {
            "enqueued": len(mids),
            "delivered": delivered,
            "twice": sum(1 for mid in mids if effects.get(mid, 0) > 1),
            "queued": sum(1 for s, _, _ in got if s == "queued"),
            "attempts_spent": sum(a for _, a, _ in got),
            "p50_ms": round(waits[len(waits) // 2] * 1000) if waits else None,
            "max_ms": round(waits[-1] * 1000) if waits else None,
        }
    print(f"\ndead endpoint, per endpoint: {report}")
    for path in ("a-up", "b"):
        figures = report[path]
        assert isinstance(figures, dict)
        assert figures["delivered"] == figures["enqueued"], (path, report)
        assert figures["twice"] == 0, (path, report)
    down = report["a-down"]
    assert isinstance(down, dict)
    assert down["delivered"] == 0 and down["queued"] == down["enqueued"], report
    assert down["attempts_spent"] == 0, report  # deferred, never counted against it
    with contextlib.closing(sqlite3.connect(db)) as conn:
        opened = {
            k for (k,) in conn.execute("SELECT key FROM sluice_breakers WHERE state <> 'closed'")
        }
    assert opened == {f"e:a:{simulator.url}/webhook/a-down"}, opened


async def _migrate(url: str) -> None:
    store = create_store(url)
    await store.open()  # type: ignore[attr-defined]
    try:
        await store.migrate()
    finally:
        await store.close()
