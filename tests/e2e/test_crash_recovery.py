"""A worker killed with SIGKILL mid-batch loses nothing.

The worker is a real process sending real signed webhooks to the simulator (another
real process). It is killed while sends are in flight; a second worker takes over
once the leases expire. Every message must end delivered, and a message may reach
the simulator twice only if its lease expired (the uncertain outcome is recorded as
``lease_expired``, never hidden).
"""

from __future__ import annotations

import asyncio
import signal
import time
from datetime import UTC, datetime

from sluice.model import AttemptOutcome, NewMessage
from sluice.store import create_store

N = 400
FAST_LEASES = {
    "SLUICE_LEASE_SECONDS": "3",
    "SLUICE_HTTP_TIMEOUT": "2",
    "SLUICE_REAPER_INTERVAL": "0.5",
    "SLUICE_WORKER_CONCURRENCY": "40",
    "SLUICE_WORKER_BATCH_SIZE": "40",
}


async def _enqueue(url: str, base: str, n: int) -> list[str]:
    store = create_store(url)
    await store.open()  # type: ignore[attr-defined]
    try:
        return await store.enqueue_many(
            [
                NewMessage(
                    tenant="acme",
                    channel="webhook",
                    provider="webhook",
                    recipient=f"{base}/webhook/crash/{i}",
                    payload={"i": i},
                    max_attempts=5,
                )
                for i in range(n)
            ]
        )
    finally:
        await store.close()


async def _counts(url: str) -> dict[str, int]:
    store = create_store(url)
    await store.open()  # type: ignore[attr-defined]
    try:
        return (await store.status_report(datetime.now(UTC))).counts
    finally:
        await store.close()


async def _attempt_outcomes(url: str, ids: list[str]) -> dict[str, list[AttemptOutcome]]:
    store = create_store(url)
    await store.open()  # type: ignore[attr-defined]
    try:
        return {mid: [a.outcome for a in await store.attempt_list(mid)] for mid in ids}
    finally:
        await store.close()


def wait_until(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def test_sigkill_mid_batch__every_message_delivered_duplicates_only_after_lease_expiry(
    store_url, simulator, workers
) -> None:  # type: ignore[no-untyped-def]
    ids = asyncio.run(_enqueue(store_url, simulator.url, N))
    # Slow sends keep a full batch in flight when the kill lands.
    simulator.faults(latency_ms=40)

    first = workers.start(store_url, simulator.secret, **FAST_LEASES)
    wait_until(lambda: simulator.summary()["unique"] >= 60, 60, "the first worker to deliver some")
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    in_flight = asyncio.run(_counts(store_url)).get("sending", 0)
    assert in_flight > 0, "the kill must land mid-batch, with claims outstanding"

    simulator.clear_faults()
    workers.start(store_url, simulator.secret, **FAST_LEASES)
    wait_until(lambda: asyncio.run(_counts(store_url)) == {"sent": N}, 90, "every message sent")

    delivered = simulator.ids()
    lost = [mid for mid in ids if mid not in delivered]
    assert lost == []
    duplicated = [mid for mid, n in delivered.items() if n > 1]
    outcomes = asyncio.run(_attempt_outcomes(store_url, ids))
    expired = [mid for mid, o in outcomes.items() if AttemptOutcome.LEASE_EXPIRED in o]
    assert expired, "the killed worker's claims must come back through lease expiry"
    # A second delivery is only ever a message whose first outcome was never written.
    assert set(duplicated) <= set(expired)
    for mid in ids:
        assert outcomes[mid].count(AttemptOutcome.SENT) == 1
    print(
        f"\ncrash: {N} in, {len(delivered)} delivered, lost 0, {in_flight} claims outstanding at "
        f"kill, {len(expired)} leases expired, {len(duplicated)} delivered twice"
    )
