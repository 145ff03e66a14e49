"""Message expiry with a real dispatcher on both stores (issue 14): a message is never
sent after its expiry — not when it was claimed in time and waited for a slot, not when
the provider was down until after it. Every message is counted: sent + expired = in.
The receiver is faked at the wire (``httpx.MockTransport``); time is a ``FrozenClock``."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
import structlog

from sluice import metrics
from sluice.clock import FrozenClock
from sluice.config import Settings
from sluice.flow.limits import parse_limits
from sluice.model import NewMessage, Status
from sluice.netguard import static_resolver
from sluice.providers.webhook import WebhookProvider
from sluice.store import Store
from sluice.worker import Dispatcher
from sluice.worker.limits import Limiter

SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()
PUBLIC = static_resolver("93.184.216.34")


class Receiver:
    """Records (message id, the test clock's time, answer) of every request."""

    def __init__(self, clock: FrozenClock) -> None:
        self.clock = clock
        self.down = False
        self.seen: list[tuple[str, datetime, int]] = []
        #: Path -> seconds the test clock moves while that request is in flight.
        self.slow: dict[str, float] = {}

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        name = request.url.path.rsplit("/", 1)[-1]
        status = 503 if self.down else 200
        self.seen.append((request.headers["webhook-id"], self.clock.now(), status))
        if name in self.slow:
            await asyncio.sleep(0.2)  # the other claimed message waits for the one slot
            self.clock.advance(self.slow[name])
        return httpx.Response(status)


def hook(name: str, **kw: object) -> NewMessage:
    return NewMessage(
        tenant="acme", channel="webhook", provider="webhook",
        recipient=f"https://receiver.example/hook/{name}", payload={}, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


async def drain(
    store: Store, receiver: Receiver, clock: FrozenClock, limits: Sequence[dict[str, Any]] = ()
) -> Dispatcher:
    settings = Settings(
        database_url="sqlite:///unused.db", poll_interval=0.05, flush_interval=0,
        reaper_interval=3600, worker_concurrency=8, retry_base=1.0, retry_cap=5.0,
        breaker_min_volume=1000,
    )  # fmt: skip
    async with httpx.AsyncClient(transport=httpx.MockTransport(receiver)) as client:
        log = structlog.get_logger("test")
        limiter = Limiter(
            store, settings, parse_limits(list(limits)), clock=clock, logger=log, worker_id="w",
            shared_clock=clock,
        )  # fmt: skip
        d = Dispatcher(
            store, {"webhook": WebhookProvider(client, SECRET, clock=clock, resolve=PUBLIC)},
            settings, clock=clock, worker_id="w", limiter=limiter,
        )  # fmt: skip
        await d.run(until_idle=True)
        return d


def expired_count(where: str) -> float:
    return metrics.of(metrics.EXPIRED, "acme", "webhook", "webhook", where)._value.get()  # type: ignore[no-any-return]


async def test_claimed_in_time_but_past_its_expiry_at_the_call__expired_not_sent(
    store: Store,
) -> None:
    clock = FrozenClock(datetime.now(UTC))
    before = expired_count("before_send")
    slow, otp = await store.enqueue_many([hook("slow"), hook("otp", ttl=60)], clock.now())
    receiver = Receiver(clock)
    receiver.slow["slow"] = 120.0  # while it is sent, the otp's minute runs out
    one_slot = [{"kind": "concurrency", "provider": "webhook", "max": 1}]
    await drain(store, receiver, clock, one_slot)
    assert [mid for mid, _, _ in receiver.seen] == [slow]  # the otp never left
    m = await store.message_get(otp)
    assert (m.status, m.attempts) == (Status.EXPIRED, 0)
    assert m.hold_reason is not None and "never sent late" in m.hold_reason
    assert await store.attempt_list(otp) == []
    assert expired_count("before_send") == before + 1
    assert (await store.status_report(clock.now())).dead == []


async def test_nothing_lost__provider_down_past_some_expiries_sent_plus_expired_is_all(
    store: Store,
) -> None:
    clock = FrozenClock(datetime.now(UTC))
    n = 30
    swept_before = expired_count("sweep") + expired_count("before_send")
    ids = await store.enqueue_many(
        [hook(f"otp{i}", ttl=30) if i % 2 else hook(f"plain{i}") for i in range(n)], clock.now()
    )
    expiry = {m: (await store.message_get(m)).expires_at for m in ids}
    receiver = Receiver(clock)
    receiver.down = True
    await drain(store, receiver, clock)  # every message tried once, every one refused
    assert {mid for mid, _, _ in receiver.seen} == set(ids)
    receiver.down = False
    for _ in range(20):  # the provider is back after the otps' 30 s ran out
        clock.advance(45)
        await drain(store, receiver, clock)
        statuses = [(await store.message_get(m)).status for m in ids]
        if Status.QUEUED not in statuses:
            break
    statuses = [(await store.message_get(m)).status for m in ids]
    sent = [m for m, s in zip(ids, statuses, strict=True) if s is Status.SENT]
    expired = [m for m, s in zip(ids, statuses, strict=True) if s is Status.EXPIRED]
    assert len(sent) + len(expired) == n  # nothing lost
    assert sorted(expired) == sorted(ids[1::2]) and sorted(sent) == sorted(ids[0::2])
    # Nothing reached the receiver at or after its expiry, and no expired one got a 200.
    for mid, at, status in receiver.seen:
        until = expiry[mid]
        assert until is None or at < until, (mid, at, until)
        assert not (mid in expired and status == 200)
    assert sum(1 for _, _, status in receiver.seen if status == 200) == len(sent)  # once each
    counted = expired_count("sweep") + expired_count("before_send") - swept_before
    assert counted == len(expired)
    assert (await store.status_report(clock.now())).dead == []  # never dead letters
