"""Limits applied by a real dispatcher on both stores, counting requests that leave
(the webhook adapter over ``httpx.MockTransport``); time is a ``FrozenClock``."""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
from collections import Counter
from datetime import UTC, datetime

import httpx
import structlog

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
#: The receivers are made-up host names; the SSRF guard gets a public address for them.
PUBLIC = static_resolver("93.184.216.34")
DAY = 86400.0


class Receiver:
    def __init__(self, answer: httpx.Response | None = None) -> None:
        self.seen: Counter[str] = Counter()
        self.answer = answer

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen[request.url.path.rsplit("/", 1)[-1]] += 1
        return self.answer or httpx.Response(200)


def hook(name: str, **kw: object) -> NewMessage:
    fields: dict[str, object] = {
        "tenant": "acme",
        "channel": "webhook",
        "provider": "webhook",
        "recipient": f"https://receiver.example/hook/{name}",
        "payload": {},
    }
    fields.update(kw)
    return NewMessage(**fields)  # type: ignore[arg-type]


async def drain(
    store: Store,
    receiver: Receiver,
    clock: FrozenClock,
    limits: list[dict[str, object]],
    secret: str | None = SECRET,
) -> Dispatcher:
    settings = Settings(
        database_url="sqlite:///unused.db",
        poll_interval=0.05,
        flush_interval=0,
        reaper_interval=3600,
        worker_concurrency=20,
    )
    async with httpx.AsyncClient(transport=httpx.MockTransport(receiver)) as client:
        log = structlog.get_logger("test")
        # Limits judged by the test's clock too (not the database's), so that moving it
        # moves their windows.
        limiter = Limiter(
            store, settings, parse_limits(limits), clock=clock, logger=log, worker_id="w",
            shared_clock=clock,
        )  # fmt: skip
        d = Dispatcher(
            store,
            {"webhook": WebhookProvider(client, secret, clock=clock, resolve=PUBLIC)},
            settings,
            clock=clock,
            worker_id="w",
            limiter=limiter,
        )
        await d.run(until_idle=True)
        return d


async def test_quota_at_95_percent__urgent_sent_low_priority_deferred_none_lost(
    store: Store,
) -> None:
    clock = FrozenClock(datetime.now(UTC))
    quota = [
        {"kind": "quota", "tenant": "acme", "limit": 20, "window": "1d",
         "urgent_priority": 5, "reserve": 0.05},
    ]  # fmt: skip
    first = await store.enqueue_many([hook(f"low{i}") for i in range(19)], clock.now())
    receiver = Receiver()
    await drain(store, receiver, clock, quota)
    assert sum(receiver.seen.values()) == 19  # 95 % used

    late = await store.enqueue_many(
        [hook("low-late"), hook("urgent-1", priority=9), hook("urgent-2", priority=9)],
        clock.now(),
    )
    d = await drain(store, receiver, clock, quota)
    assert receiver.seen["urgent-1"] == 1 and receiver.seen["low-late"] == 0
    assert receiver.seen["urgent-2"] == 0  # the quota itself is spent now
    waiting = [await store.message_get(i) for i in (late[0], late[2])]
    assert all(m.status is Status.QUEUED and m.attempts == 0 for m in waiting)
    for m in waiting:
        assert await store.attempt_list(m.id) == []
    assert d.stats.deferred >= 2

    clock.advance(DAY + 5)  # the next window
    await drain(store, receiver, clock, quota)
    assert receiver.seen["low-late"] == 1 and receiver.seen["urgent-2"] == 1
    everything = first + late
    assert [(await store.message_get(i)).status for i in everything] == [Status.SENT] * 22
    assert sum(receiver.seen.values()) == 22  # none lost, none twice
    thresholds = [
        e.detail["threshold"] for e in await store.audit_list() if e.action == "quota.threshold"
    ]
    assert sorted(thresholds) == [0.7, 0.85, 0.95]


async def test_recipient_cap__a_runaway_loop_is_held_not_sent(store: Store) -> None:
    clock = FrozenClock()
    caps = [{"kind": "recipient", "action": "auto_reply", "max": 3, "window": "1h"}]
    loop = await store.enqueue_many(
        [hook("same-user", action="auto_reply") for _ in range(10)], clock.now()
    )
    receiver = Receiver()
    await drain(store, receiver, clock, caps)
    assert receiver.seen == {"same-user": 3}
    held = [await store.message_get(i) for i in loop]
    assert Counter(m.status.value for m in held) == {"sent": 3, "held": 7}
    assert all("recipient(action=auto_reply)" in (m.hold_reason or "") for m in held[3:])


class Scripted:
    """Answers each endpoint from its script in turn (then 200), counting every call."""

    def __init__(self, **scripts: list[int]) -> None:
        self.scripts = {name: list(codes) for name, codes in scripts.items()}
        self.seen: Counter[str] = Counter()

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        name = request.url.path.rsplit("/", 1)[-1]
        self.seen[name] += 1
        script = self.scripts.get(name) or [200]
        return httpx.Response(script.pop(0) if len(script) > 1 else script[0])


async def drain_until_settled(
    store: Store,
    receiver: Scripted,
    clock: FrozenClock,
    limits: list[dict[str, object]],
    ids: list[str],
) -> None:
    """Run the worker, then move time past the retries' backoff, until none of ``ids`` is
    queued (a few tries: the backoff of the n-th is at most 2**n seconds)."""
    for _ in range(8):
        await drain(store, receiver, clock, limits)  # type: ignore[arg-type]
        states = [(await store.message_get(i)).status for i in ids]
        if Status.QUEUED not in states:
            return
        clock.advance(60)
    raise AssertionError("messages still queued after eight rounds")


async def test_recipient_cap__a_message_retried_after_5xx_counts_once_and_is_not_held(
    store: Store,
) -> None:
    """Issue 11 item 8: with a cap of 2 an hour, one message that got two 5xx answers was
    held as a runaway loop on its third try: each try had counted as a new message."""
    clock = FrozenClock()
    caps = [{"kind": "recipient", "action": "auto_reply", "max": 2, "window": "1h"}]
    (flaky,) = await store.enqueue_many([hook("user", action="auto_reply")], clock.now())
    receiver = Scripted(user=[500, 500, 200])
    await drain_until_settled(store, receiver, clock, caps, [flaky])
    m = await store.message_get(flaky)
    assert m.status is Status.SENT and m.hold_reason is None
    assert receiver.seen["user"] == 3
    assert [a.error_code for a in await store.attempt_list(flaky)] == [
        "PROVIDER_ERROR", "PROVIDER_ERROR", None,
    ]  # fmt: skip


async def quota_used(store: Store, limits: list[dict[str, object]], clock: FrozenClock) -> int:
    from sluice.ops.limits import limit_list

    [view] = await limit_list(store, parse_limits(limits), clock=clock)
    assert view.used is not None
    return view.used


async def test_quota__three_500s_do_not_push_a_healthy_message_to_the_next_window(
    store: Store,
) -> None:
    """Issue 11 item 9: a quota's use was taken at admission and never given back, so
    three 500s on a 3/day quota deferred a healthy message to the next window. A try
    the provider did not accept gives its use back; only accepted sends count."""
    clock = FrozenClock(datetime.now(UTC))
    quota = [{"kind": "quota", "tenant": "acme", "limit": 3, "window": "1d"}]
    (flaky,) = await store.enqueue_many([hook("flaky")], clock.now())
    receiver = Scripted(flaky=[500, 500, 500, 200])
    for _ in range(3):
        await drain(store, receiver, clock, quota)  # type: ignore[arg-type]
        clock.advance(60)  # past the retry's backoff
    assert receiver.seen["flaky"] == 3

    (healthy,) = await store.enqueue_many([hook("healthy")], clock.now())
    await drain(store, receiver, clock, quota)  # type: ignore[arg-type]
    assert (await store.message_get(healthy)).status is Status.SENT  # not tomorrow
    assert (await store.message_get(flaky)).status is Status.SENT  # its fourth try
    assert receiver.seen == {"flaky": 4, "healthy": 1}
    assert await quota_used(store, quota, clock) == 2


async def test_quota__messages_that_never_reached_the_provider_give_their_use_back(
    store: Store,
) -> None:
    """Admitted, then not sent (here: a worker without the signing secret defers them):
    the quota they took comes back at once, not at the next window."""
    clock = FrozenClock(datetime.now(UTC))
    quota = [{"kind": "quota", "tenant": "acme", "limit": 3, "window": "1d"}]
    ids = await store.enqueue_many([hook(f"m{i}") for i in range(3)], clock.now())
    receiver = Scripted()
    d = await drain(store, receiver, clock, quota, secret=None)  # type: ignore[arg-type]
    assert d.stats.deferred == 3 and sum(receiver.seen.values()) == 0
    clock.advance(31)  # the worker-problem delay
    await drain(store, receiver, clock, quota)  # type: ignore[arg-type]
    assert [(await store.message_get(i)).status for i in ids] == [Status.SENT] * 3
    assert await quota_used(store, quota, clock) == 3


async def test_action_cap__sends_either_side_of_midnight_stay_under_the_cap(
    store: Store,
) -> None:
    """Issue 11 item 10 through a real worker: a daily cap of 5, messages waiting
    from two seconds before midnight to two after. Epoch-aligned windows sent 5 on each
    side (10 within 4 s); the window now slides, so the other 5 wait a day."""
    midnight = (datetime.now(UTC).timestamp() // DAY + 2) * DAY
    clock = FrozenClock(datetime.fromtimestamp(midnight - 2, UTC))
    cap = [{"kind": "action", "action": "reminder", "max": 5, "window": "1d"}]
    ids = await store.enqueue_many(
        [hook(f"r{i}", action="reminder") for i in range(10)], clock.now()
    )
    receiver = Receiver()
    await drain(store, receiver, clock, cap)
    clock.advance(4)  # past midnight
    await drain(store, receiver, clock, cap)
    assert sum(receiver.seen.values()) == 5
    waiting = [m for m in [await store.message_get(i) for i in ids] if m.status is Status.QUEUED]
    assert len(waiting) == 5
    assert all(m.run_at.timestamp() >= midnight - 2 + DAY for m in waiting)


async def test_429_retry_after__throttles_that_endpoint_without_spending_attempts(
    store: Store,
) -> None:
    clock = FrozenClock()
    ids = await store.enqueue_many([hook("busy") for _ in range(3)], clock.now())
    (calm,) = await store.enqueue_many([hook("calm")], clock.now())

    async def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/busy"):
            return httpx.Response(429, headers={"Retry-After": "30"})
        return httpx.Response(200)

    await drain(store, answer, clock, [])  # type: ignore[arg-type]
    [throttle] = await store.throttle_list(clock.now())
    # One receiver's 429 pauses that receiver: another endpoint of the tenant still gets
    # its message (issue 11 item 7: it used to pause every endpoint of the tenant).
    assert (throttle.tenant, throttle.provider) == (
        "acme",
        "webhook@https://receiver.example/hook/busy",
    )
    assert 29 <= (throttle.until - clock.now()).total_seconds() <= 31
    assert (await store.message_get(calm)).status is Status.SENT
    for i in ids:
        m = await store.message_get(i)
        assert m.status is Status.QUEUED and m.attempts == 0


async def test_retry_after_zero_or_past__no_hot_loop(store: Store) -> None:
    """Issue 11 item 4: ``Retry-After: 0``, a negative value or an HTTP-date already past
    floor at a second; before, one message drew 164 calls in 5 s and never counted one."""
    from email.utils import format_datetime

    from sluice.clock import SystemClock

    past = format_datetime(datetime(2001, 1, 1, tzinfo=UTC), usegmt=True)
    calls: Counter[str] = Counter()

    async def answer(request: httpx.Request) -> httpx.Response:
        name = request.url.path.rsplit("/", 1)[-1]
        calls[name] += 1
        return httpx.Response(
            429, headers={"Retry-After": {"zero": "0", "minus": "-5"}.get(name, past)}
        )

    await store.enqueue_many([hook(n) for n in ("zero", "minus", "past")])
    settings = Settings(database_url="sqlite:///unused.db", poll_interval=0.02,
                        flush_interval=0, reaper_interval=3600)  # fmt: skip
    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        d = Dispatcher(
            store,
            {"webhook": WebhookProvider(client, SECRET, resolve=PUBLIC)},
            settings,
            clock=SystemClock(),
            worker_id="w",
        )
        running = asyncio.create_task(d.run())
        await asyncio.sleep(2.0)
        d.stop()
        await running
    # Each was called once, then paused at least a second: at most two calls in 2 s.
    assert set(calls) == {"zero", "minus", "past"}
    assert max(calls.values()) <= 2, calls


async def test_rate_limited__a_lone_worker_sends_each_deferral_when_it_comes_due(
    store: Store,
) -> None:
    """Messages deferred by a rate limit go out when they come due, not at the next poll:
    nothing notifies a worker then, and one gone cold (here its poll is 30 s) used to
    leave them waiting, a limited tenant held far below its rate. Real clocks."""
    from sluice.clock import SystemClock

    rate, n = 2.0, 5  # burst 1: one now, then one every half second
    ids = await store.enqueue_many([hook(f"m{i}") for i in range(n)])
    sent_at: list[float] = []

    async def answer(request: httpx.Request) -> httpx.Response:
        sent_at.append(asyncio.get_running_loop().time())
        return httpx.Response(200)

    settings = Settings(database_url="sqlite:///unused.db", poll_interval=30.0,
                        flush_interval=0, reaper_interval=3600)  # fmt: skip
    limits = parse_limits([{"kind": "rate", "tenant": "acme", "rate": rate, "burst": 1}])
    clock = SystemClock()
    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        limiter = Limiter(store, settings, limits, clock=clock,
                          logger=structlog.get_logger("test"), worker_id="w")  # fmt: skip
        d = Dispatcher(
            store,
            {"webhook": WebhookProvider(client, SECRET, resolve=PUBLIC)},
            settings,
            clock=clock,
            worker_id="w",
            limiter=limiter,
        )
        running = asyncio.create_task(d.run())
        try:
            for _ in range(200):  # 10 s at most; the poll alone would take 30
                done = [(await store.message_get(i)).status for i in ids]
                if done == [Status.SENT] * n:
                    break
                await asyncio.sleep(0.05)
        finally:
            d.stop()
            await running
    assert done == [Status.SENT] * n, done
    assert len(sent_at) == n  # each once
    gaps = [b - a for a, b in itertools.pairwise(sent_at)]
    # The rate holds (a little slack for the store's and the loop's clocks).
    assert min(gaps) >= 1 / rate - 0.05, gaps
    assert d.stats.deferred >= n - 1
