"""Messages dying while a test reads the store: another store (another process, as far
as the database can tell) claims them two at a time and writes each back dead."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import datetime

from sluice.model import Attempt, AttemptOutcome, Completion, NewMessage, Status
from sluice.store import Store, create_store


@contextlib.asynccontextmanager
async def dying(
    store: Store, store_url: str, total: int, now: datetime, *, pause: float = 0.0
) -> AsyncIterator[asyncio.Task[None]]:
    """Enqueue ``total`` messages on ``store``, then kill them from a second store, two at
    a time, ``pause`` seconds apart; the task doing it is yielded (done once every message
    is dead) and awaited on exit."""
    await store.enqueue_many(
        [NewMessage(tenant="acme", channel="sms", provider="null", recipient="+15550001111",
                    payload={"i": i}) for i in range(total)],
        now,
    )  # fmt: skip
    mover = create_store(store_url)
    await mover.open()  # type: ignore[attr-defined]

    async def move() -> None:
        while batch := await mover.message_claim("w1", 2, 30, now):
            dead = [
                Completion(m.id, m.claim_seq, "w1", Status.DEAD,
                           Attempt(m.id, m.claim_seq, "w1", m.provider, now, now,
                                   AttemptOutcome.FAILED, error_code="INVALID_RECIPIENT"))
                for m in batch
            ]  # fmt: skip
            await mover.message_complete_many("w1", dead, now)
            await asyncio.sleep(pause)

    moving = asyncio.create_task(move())
    try:
        yield moving
        await moving
    finally:
        moving.cancel()
        await asyncio.gather(moving, return_exceptions=True)
        await mover.close()  # type: ignore[attr-defined]
