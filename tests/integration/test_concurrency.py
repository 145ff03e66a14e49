"""Per-provider concurrency: a configured cap holds under a real dispatcher, and the
adaptive limit cuts on congestion and grows back slowly."""

from __future__ import annotations

import asyncio
import base64
import os

import httpx
import structlog

from sluice.clock import FrozenClock, SystemClock
from sluice.config import Settings
from sluice.flow.limits import parse_limits
from sluice.model import ErrorCode, NewMessage, Outcome, Status
from sluice.netguard import static_resolver
from sluice.providers.webhook import WebhookProvider
from sluice.store import Store
from sluice.worker import Dispatcher
from sluice.worker.limits import AdaptiveConcurrency, Limiter

SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()
#: The receivers are made-up host names; the SSRF guard gets a public address for them.
PUBLIC = static_resolver("93.184.216.34")


class Slow:
    """Answers after a pause and records the most requests it had in flight at once."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0
        self.count = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.now += 1
        self.peak = max(self.peak, self.now)
        await asyncio.sleep(0.02)
        self.now -= 1
        self.count += 1
        return httpx.Response(200)


async def test_concurrency_cap__never_more_in_flight_than_the_cap(store: Store) -> None:
    clock = FrozenClock()
    ids = await store.enqueue_many(
        [
            NewMessage(
                tenant="acme",
                channel="webhook",
                provider="webhook",
                recipient="https://receiver.example/h",
                payload={"i": i},
            )
            for i in range(30)
        ],
        clock.now(),
    )
    settings = Settings(
        database_url="sqlite:///unused.db", flush_interval=0, reaper_interval=3600,
        worker_concurrency=50, poll_interval=0.05,
    )  # fmt: skip
    receiver = Slow()
    async with httpx.AsyncClient(transport=httpx.MockTransport(receiver)) as client:
        limiter = Limiter(
            store,
            settings,
            parse_limits([{"kind": "concurrency", "provider": "webhook", "max": 3}]),
            clock=clock,
            logger=structlog.get_logger("test"),
            worker_id="w",
        )
        d = Dispatcher(
            store,
            {"webhook": WebhookProvider(client, SECRET, clock=clock, resolve=PUBLIC)},
            settings,
            clock=clock,
            worker_id="w",
            limiter=limiter,
        )
        await d.run(until_idle=True)
    assert receiver.count == 30 and receiver.peak == 3
    assert {(await store.message_get(i)).status for i in ids} == {Status.SENT}


async def test_adaptive__cuts_on_congestion_at_most_once_a_second_and_grows_back() -> None:
    gate = AdaptiveConcurrency(ceiling=20, latency_target=1.0)
    busy = Outcome.failure(ErrorCode.RATE_LIMITED, "429")
    for _ in range(5):  # a burst of 429s within one second: one cut
        await gate.acquire()
        await gate.release(busy, 0.01)
    assert gate.limit == 14.0
    gate._last_cut -= 2  # a second later
    await gate.acquire()
    await gate.release(Outcome.failure(ErrorCode.PROVIDER_UNAVAILABLE, "503"), 0.01)
    assert round(gate.limit, 1) == 9.8
    gate._last_cut -= 2
    await gate.acquire()
    await gate.release(Outcome.success(), 5.0)  # too slow counts as congestion too
    low = gate.limit
    for _ in range(50):
        await gate.acquire()
        await gate.release(Outcome.success(), 0.01)
    assert low < gate.limit <= 20.0
    assert gate.limit < low + 10  # additive: about one slot per limit's worth of successes


async def test_a_send_waiting_for_a_slot_keeps_its_lease_and_goes_once(store: Store) -> None:
    """Eight messages wait for one provider slot, half a second each: four seconds, twice
    the lease. The heartbeat renews the leases of what the worker holds, so none runs
    out, none goes round again (issue 11 item 2: each used to be handed back when its
    deadline passed, and could cycle like that forever), and each is sent once."""

    class Slower(Slow):
        async def __call__(self, request: httpx.Request) -> httpx.Response:
            await asyncio.sleep(0.5)
            return await super().__call__(request)

    ids = await store.enqueue_many(
        [
            NewMessage(tenant="acme", channel="webhook", provider="webhook",
                       recipient="https://receiver.example/h", payload={"i": i})
            for i in range(8)
        ]
    )  # fmt: skip
    settings = Settings(
        database_url="sqlite:///unused.db", flush_interval=0, reaper_interval=0.2,
        lease_seconds=2.0, http_timeout=1.0, poll_interval=0.05,
    )  # fmt: skip
    receiver = Slower()
    async with httpx.AsyncClient(transport=httpx.MockTransport(receiver)) as client:
        limiter = Limiter(
            store,
            settings,
            parse_limits([{"kind": "concurrency", "provider": "webhook", "max": 1}]),
            clock=SystemClock(),
            logger=structlog.get_logger("test"),
            worker_id="w",
        )
        d = Dispatcher(
            store,
            {"webhook": WebhookProvider(client, SECRET, resolve=PUBLIC)},
            settings,
            clock=SystemClock(),
            worker_id="w",
            limiter=limiter,
        )
        await d.run(until_idle=True)
    assert (d.stats.deferred, d.stats.rescued, d.stats.stale) == (0, 0, 0)
    assert receiver.count == 8 and receiver.peak == 1
    for i in ids:
        assert [a.outcome.value for a in await store.attempt_list(i)] == ["sent"]
    for i in ids:
        m = await store.message_get(i)
        assert (m.status, m.attempts) == (Status.SENT, 1)
