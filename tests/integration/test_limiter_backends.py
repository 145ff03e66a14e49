"""One limiter, three places for its state: PostgreSQL, SQLite and Redis (Lua). Every
test runs against each, so the Python algorithm and the Lua script cannot drift apart."""

from __future__ import annotations

import asyncio
import bisect
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest

from sluice.clock import FrozenClock
from sluice.config import Settings
from sluice.flow.limits import Use, parse_limits
from sluice.model import Message, Status
from sluice.store import Store
from sluice.worker.limits import Limiter

Backend = tuple[Limiter, Store]


def message(n: int, **kw: object) -> Message:
    fields: dict[str, object] = {
        "id": f"m{n:05d}",
        "tenant": "acme",
        "channel": "sms",
        "provider": "twilio",
        "action": "notify",
        "recipient": f"+1555000{n:04d}",
        "payload": {},
        "priority": 0,
        "status": Status.SENDING,
        "run_at": datetime.now(UTC),
        "attempts": 1,
        "max_attempts": 5,
    }
    fields.update(kw)
    return Message(**fields)  # type: ignore[arg-type]


@pytest.fixture(params=["store", "redis"])
async def make(
    request: pytest.FixtureRequest, store: Store, redis_url: str, redis_prefix: str
) -> AsyncIterator[object]:
    made: list[Limiter] = []

    def build(
        limits: list[dict[str, object]], clock: FrozenClock | None = None, **settings: object
    ) -> Limiter:
        """A limiter judging by the shared state's own clock, or by ``clock`` if given."""
        base: dict[str, object] = {"database_url": "sqlite:///unused.db"}
        if request.param == "redis":
            base.update(redis_url=redis_url, redis_prefix=redis_prefix)
        base.update(settings)
        limiter = Limiter(
            store,
            Settings(**base),  # type: ignore[arg-type]
            parse_limits(limits),
            clock=clock or FrozenClock(datetime.now(UTC)),
            logger=_Log(),
            worker_id="w1",
            shared_clock=clock,
        )
        made.append(limiter)
        return limiter

    yield build
    for limiter in made:
        await limiter.close()


class _Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, object]]] = []

    def __getattr__(self, level: str):  # type: ignore[no-untyped-def]
        return lambda event, **kw: self.lines.append((event, kw))


async def test_bucket__burst_then_deferred_to_when_tokens_return(make) -> None:  # type: ignore[no-untyped-def]
    limiter = make([{"kind": "rate", "tenant": "acme", "rate": 10, "burst": 5}])
    batch = [message(i) for i in range(20)]
    go, defer, hold = await limiter.admit(batch)
    assert [m.id for m in go] == [m.id for m in batch[:5]]
    assert hold == []
    waits = [(at - datetime.now(UTC)).total_seconds() for _, at, _ in defer]
    assert len(waits) == 15
    # Spread over the refill: the k-th refused waits about k/rate, not all at once.
    assert 0.0 < waits[0] < 0.5 and 1.0 < waits[-1] < 2.0
    assert all(why == "rate(tenant=acme)" for _, _, why in defer)


async def test_bucket__other_tenants_are_not_limited(make) -> None:  # type: ignore[no-untyped-def]
    limiter = make([{"kind": "rate", "tenant": "acme", "rate": 1, "burst": 1}])
    go, defer, _ = await limiter.admit([message(1), message(2), message(3, tenant="beta")])
    assert [m.id for m in go] == ["m00003", "m00001"] or {m.id for m in go} == {
        "m00001",
        "m00003",
    }
    assert [m.id for m, _, _ in defer] == ["m00002"]


async def test_bucket__shared_by_two_workers(make) -> None:  # type: ignore[no-untyped-def]
    spec = [{"kind": "rate", "provider": "twilio", "rate": 1, "burst": 10}]
    a, b = make(spec), make(spec)
    results = await asyncio.gather(
        a.admit([message(i) for i in range(8)]), b.admit([message(100 + i) for i in range(8)])
    )
    assert sum(len(go) for go, _, _ in results) == 10


async def test_quota__low_priority_deferred_at_the_reserve_urgent_still_go(make) -> None:  # type: ignore[no-untyped-def]
    limiter = make(
        [
            {
                "kind": "quota",
                "tenant": "acme",
                "provider": "twilio",
                "limit": 20,
                "window": "1d",
                "urgent_priority": 5,
                "reserve": 0.05,
            },
        ]
    )
    go, defer, _ = await limiter.admit([message(i) for i in range(19)])
    assert len(go) == 19 and defer == []  # 19 = 95 % of 20: the reserve starts here
    low, urgent = message(50), message(51, priority=9)
    go, defer, _ = await limiter.admit([low, urgent])
    assert [m.id for m in go] == [urgent.id]
    [(deferred, until, why)] = defer
    assert deferred.id == low.id and "quota" in why
    assert (until - datetime.now(UTC)).total_seconds() > 0  # to the next window
    go, defer, _ = await limiter.admit([message(52, priority=9)])
    assert go == [] and len(defer) == 1  # the quota itself is spent
    events = [kw for event, kw in limiter.log.lines if event == "quota threshold crossed"]
    assert [e["used_pct"] for e in events] == [70, 85, 95]


async def test_quota__threshold_events_are_audited(make, store: Store) -> None:  # type: ignore[no-untyped-def]
    limiter = make([{"kind": "quota", "provider": "twilio", "limit": 10, "window": "1h"}])
    await limiter.admit([message(i) for i in range(10)])
    audit = [e for e in await store.audit_list() if e.action == "quota.threshold"]
    assert sorted(e.detail["threshold"] for e in audit) == [0.7, 0.85, 0.95]


async def test_recipient__cap_holds_the_runaway_loop(make) -> None:  # type: ignore[no-untyped-def]
    limiter = make([{"kind": "recipient", "action": "reply", "max": 3, "window": "1h"}])
    loop = [message(i, action="reply", recipient="+15550000001") for i in range(6)]
    go, defer, hold = await limiter.admit(loop)
    assert len(go) == 3 and defer == []
    assert len(hold) == 3 and all("recipient(action=reply)" in why for _, why in hold)
    other = await limiter.admit([message(9, action="reply", recipient="+15550000002")])
    assert len(other[0]) == 1


async def test_recipient__the_first_trip_per_window_is_audited_and_warned_once(  # type: ignore[no-untyped-def]
    make, store: Store
) -> None:
    """Issue 10 item 14: a runaway loop caught by a recipient cap is said once per
    recipient and window — across batches and workers — naming the cap and recipient."""
    caps = [{"kind": "recipient", "action": "reply", "max": 2, "window": "1h"}]
    first, second = make(caps), make(caps)  # two workers
    loop = [message(i, action="reply", recipient="+15550000001") for i in range(5)]
    await first.admit(loop[:3])
    await second.admit(loop[3:])
    await first.admit([message(7 + i, action="reply", recipient="+15550000002") for i in range(3)])
    tripped = [e for e in await store.audit_list() if e.action == "limit.tripped"]
    assert sorted(e.detail["recipient"] for e in tripped) == ["+15550000001", "+15550000002"]
    assert all(e.target == "recipient(action=reply)" for e in tripped)
    assert (
        next(e for e in tripped if e.detail["recipient"] == "+15550000001").detail["first_held"]
        == "m00002"
    )
    warnings = [kw for limiter in (first, second) for event, kw in limiter.log.lines
                if event == "recipient cap reached; messages held"]  # fmt: skip
    assert sorted(w["recipient"] for w in warnings) == ["+15550000001", "+15550000002"]


async def test_recipient__cooldown_defers_the_second_message(make) -> None:  # type: ignore[no-untyped-def]
    limiter = make([{"kind": "recipient", "cooldown": "10m"}])
    go, defer, _ = await limiter.admit(
        [message(1, recipient="+1"), message(2, recipient="+1"), message(3, recipient="+2")]
    )
    assert [m.id for m in go] == ["m00001", "m00003"]
    [(m, until, _)] = defer
    assert m.id == "m00002" and 590 < (until - datetime.now(UTC)).total_seconds() <= 601


async def test_action_cap__defers_to_the_next_window(make) -> None:  # type: ignore[no-untyped-def]
    limiter = make([{"kind": "action", "action": "reminder", "max": 2, "window": "1d"}])
    go, defer, _ = await limiter.admit([message(i, action="reminder") for i in range(3)])
    assert len(go) == 2 and len(defer) == 1


async def test_runtime_limit__overrides_the_file_and_is_audited(make, store: Store) -> None:  # type: ignore[no-untyped-def]
    from sluice.ops.limits import limit_set

    limiter = make([{"kind": "rate", "tenant": "acme", "rate": 100, "burst": 100}])
    await limit_set(
        store,
        {"kind": "rate", "tenant": "acme", "rate": 1, "burst": 2},
        actor="ops:ana",
        reason="RB-05 spam flag",
    )
    await limiter.reload(await store.flow_version())
    go, _, _ = await limiter.admit([message(i) for i in range(5)])
    assert len(go) == 2
    [entry] = [e for e in await store.audit_list() if e.action == "limit.set"]
    assert entry.actor == "ops:ana" and entry.detail["spec"]["rate"] == 1


async def test_throttle__a_retry_after_defers_that_pair_on_every_worker(make) -> None:  # type: ignore[no-untyped-def]
    from sluice.model import ErrorCode, Outcome

    a, b = make([]), make([])
    slow_down = Outcome.failure(ErrorCode.RATE_LIMITED, "429", retry_after=30.0)
    await a.throttled(message(1), slow_down)
    await b.refresh_throttles()
    go, defer, _ = await b.admit([message(2), message(3, provider="sendgrid")])
    assert [m.id for m in go] == ["m00003"]
    [(m, until, why)] = defer
    assert m.id == "m00002" and "throttled by twilio" in why
    assert 29 < (until - datetime.now(UTC)).total_seconds() < 31


# -- windows (issue 11 item 10) -----------------------------------------------------------

HOUR, DAY = 3600.0, 86400.0


def boundary() -> datetime:
    """A UTC midnight, where windows of a day or an hour aligned to the epoch end; two
    days ahead, because Redis expires keys at the absolute times the limiter gives it,
    so the limiter's time must not be in Redis's past."""
    now = datetime.now(UTC).timestamp()
    return datetime.fromtimestamp((now // DAY + 2) * DAY, UTC)


def most_in_any_window(times: list[float], window: float) -> int:
    """The most sends in any interval ``[a, a + window)``."""
    times = sorted(times)
    return max((bisect.bisect_left(times, t + window) - i for i, t in enumerate(times)), default=0)


class Sender:
    """Offers batches of new messages at moments the test picks; keeps the send times."""

    def __init__(self, limiter: Limiter, clock: FrozenClock, **fields: object) -> None:
        self.limiter, self.clock, self.fields = limiter, clock, fields
        self.sent: list[float] = []
        self.n = 0

    async def offer(self, count: int) -> tuple[int, list[tuple[Message, datetime, str]], int]:
        batch = [message(self.n + i, **self.fields) for i in range(count)]
        self.n += count
        go, defer, hold = await self.limiter.admit(batch)
        self.sent += [self.clock.now().timestamp()] * len(go)
        return len(go), defer, len(hold)


WINDOWED = [
    pytest.param({"kind": "quota", "provider": "twilio", "limit": 100, "window": "1d"},
                 100, DAY, {}, id="quota-rolling-100/1d"),
    pytest.param({"kind": "action", "action": "reply", "max": 100, "window": "1d"},
                 100, DAY, {}, id="action-100/1d"),
    pytest.param({"kind": "recipient", "action": "reply", "max": 3, "window": "1h"},
                 3, HOUR, {"recipient": "+15550000001"}, id="recipient-3/1h"),
]  # fmt: skip


@pytest.mark.parametrize(("spec", "limit", "window", "fields"), WINDOWED)
async def test_window__sends_either_side_of_the_boundary_never_exceed_the_limit(  # type: ignore[no-untyped-def]
    make, spec, limit, window, fields
) -> None:
    """Issue 11 item 10: a window aligned to the epoch let 200 through against 100/day
    within 2 s of midnight (6 against a recipient cap of 3/h). Now every window of the
    limit's length holds at most the limit, wherever it starts."""
    clock = FrozenClock(boundary() - timedelta(seconds=5))
    sender = Sender(make([spec], clock), clock, action="reply", **fields)
    for _ in range(20):  # a full batch every half second, from 5 s before to 5 s after
        await sender.offer(limit)
        clock.advance(0.5)
    assert len(sender.sent) == limit
    assert most_in_any_window(sender.sent, window) == limit


@pytest.mark.parametrize(("spec", "limit", "window", "fields"), WINDOWED)
async def test_window__slides_over_irregular_traffic_and_gives_capacity_back(  # type: ignore[no-untyped-def]
    make, spec, limit, window, fields
) -> None:
    """Over two and a half windows of bursts at irregular moments, no window of the
    limit's length holds more than the limit, and what leaves the window is given out
    again (a large limit counts in slices of 1/24 of its window: never more than the
    limit, at worst a slice late)."""
    rng = random.Random(11)
    clock = FrozenClock(boundary() - timedelta(seconds=window / 3))
    sender = Sender(make([spec], clock), clock, action="reply", **fields)
    end = clock.now() + timedelta(seconds=2.5 * window)
    while clock.now() < end:
        await sender.offer(rng.randint(1, limit))
        clock.advance(rng.uniform(0, window / 10))
    assert most_in_any_window(sender.sent, window) <= limit
    # Capacity comes back as sends leave the window: two full windows' worth at least.
    assert len(sender.sent) >= 2 * limit


async def test_window__deferred_to_when_the_oldest_send_leaves_the_window(make) -> None:  # type: ignore[no-untyped-def]
    clock = FrozenClock(boundary() - timedelta(minutes=100))  # 22:20, off the hour
    spec = {"kind": "action", "action": "reply", "max": 3, "window": "1h"}
    sender = Sender(make([spec], clock), clock, action="reply")
    await sender.offer(1)
    clock.advance(600)
    await sender.offer(2)
    _, [(_, until, why)], _ = await sender.offer(1)
    assert why == "action(action=reply)"
    first = sender.sent[0]
    assert first + HOUR <= until.timestamp() <= first + HOUR + 1  # not 50 min later
    clock.advance(HOUR - 600)  # the first send just left the window
    sent, _, _ = await sender.offer(2)
    assert sent == 1


async def test_quota__fixed_window_resets_at_the_providers_time(make) -> None:  # type: ignore[no-untyped-def]
    """A quota may follow its provider's fixed reset (``reset = "HH:MM"``, UTC): all of
    the limit again from that moment, and only then."""
    midnight = boundary()
    clock = FrozenClock(midnight - timedelta(seconds=2))
    spec = {"kind": "quota", "provider": "twilio", "limit": 100, "window": "1d",
            "reset": "07:00"}  # fmt: skip
    sender = Sender(make([spec], clock), clock)
    assert (await sender.offer(100))[0] == 100
    clock.advance(4)  # midnight is not this provider's reset
    sent, [(_, until, _), *_], _ = await sender.offer(100)
    assert sent == 0
    assert until.timestamp() == pytest.approx((midnight + timedelta(hours=7)).timestamp(), abs=1)
    clock.advance(7 * HOUR - 3)  # 06:59:59
    assert (await sender.offer(100))[0] == 0
    clock.advance(2)  # 07:00:01: the provider's new day
    assert (await sender.offer(100))[0] == 100


async def test_quota__a_threshold_is_said_once_per_window_not_each_time_use_climbs_back(  # type: ignore[no-untyped-def]
    make,
) -> None:
    clock = FrozenClock(boundary())
    spec = {"kind": "quota", "provider": "twilio", "limit": 10, "window": "1h"}
    limiter = make([spec], clock)
    sender = Sender(limiter, clock)
    await sender.offer(6)
    clock.advance(50 * 60)
    await sender.offer(1)  # 7 of 10: 70 % crossed
    clock.advance(11 * 60)  # the first 6 left the window: 1 of 10 used
    await sender.offer(6)  # 70 % crossed again, 11 minutes after it was said
    said = [kw["used_pct"] for event, kw in limiter.log.lines if event == "quota threshold crossed"]
    assert said == [70]
    clock.advance(HOUR)  # a window after it was said, a new crossing is news again
    await sender.offer(7)
    said = [kw["used_pct"] for event, kw in limiter.log.lines if event == "quota threshold crossed"]
    assert said == [70, 70]


@pytest.mark.parametrize("reset", ["rolling", "07:00"])
async def test_quota__limits_list_shows_use_and_when_room_comes_back(
    make, store: Store, reset
) -> None:  # type: ignore[no-untyped-def]
    from sluice.ops.limits import limit_list

    clock = FrozenClock(boundary() + timedelta(hours=3))
    spec = {"kind": "quota", "provider": "twilio", "limit": 40, "window": "1d", "reset": reset}
    limiter = make([spec], clock)
    sender = Sender(limiter, clock)
    await sender.offer(5)
    clock.advance(HOUR)
    await sender.offer(25)
    [view] = await limit_list(store, limiter.configured, limiter.settings, clock)
    assert (view.used, view.remaining) == (30, 10)
    if reset == "rolling":  # the first 5 leave the window a day after they were sent
        assert view.window_ends == sender.sent[0] + DAY
    else:
        assert view.window_ends == (boundary() + timedelta(hours=7)).timestamp()


async def test_redis_and_store__decide_alike_on_irregular_traffic(  # type: ignore[no-untyped-def]
    store: Store, redis_url: str, redis_prefix: str
) -> None:
    """The Lua script and the Python algorithm, fed the same irregular traffic (new
    messages and retries) at the same moments, send the same messages and defer or
    hold the same ones, to the same moments."""
    limits = parse_limits(
        [
            {"kind": "rate", "tenant": "acme", "rate": 0.01, "burst": 30},
            {"kind": "quota", "provider": "twilio", "limit": 40, "window": "1h",
             "urgent_priority": 5},
            {"kind": "quota", "provider": "sendgrid", "limit": 12, "window": "1h",
             "reset": "00:30"},
            {"kind": "action", "action": "remind", "max": 5, "window": "20m"},
            {"kind": "recipient", "action": "reply", "max": 2, "window": "30m",
             "cooldown": "1m"},
        ]
    )  # fmt: skip
    start = boundary() - timedelta(minutes=40)
    runs = []
    for settings in (
        Settings(database_url="sqlite:///unused.db"),
        Settings(database_url="sqlite:///unused.db", redis_url=redis_url,
                 redis_prefix=redis_prefix),
    ):  # fmt: skip
        clock = FrozenClock(start)
        limiter = Limiter(store, settings, limits, clock=clock, logger=_Log(), worker_id="w",
                          shared_clock=clock)  # fmt: skip
        limiter.rng = random.Random(1)  # the spread added to each deferral, alike
        rng = random.Random(7)
        seen = []
        tried: list[Message] = []
        for step in range(120):
            # Some messages come back for another try (after a 5xx, say).
            retries = rng.sample(tried, min(len(tried), rng.randint(0, 2)))
            batch = retries + [
                message(
                    step * 10 + i,
                    provider=rng.choice(["twilio", "sendgrid"]),
                    action=rng.choice(["remind", "reply", "other"]),
                    recipient=rng.choice(["+15550000001", "+15550000002"]),
                    priority=rng.choice([0, 9]),
                )
                for i in range(rng.randint(1, 6))
            ]
            tried += batch[len(retries) :]
            go, defer, hold = await limiter.admit(batch)
            seen.append(
                (
                    sorted(m.id for m in go),
                    sorted((m.id, round(at.timestamp(), 3), why) for m, at, why in defer),
                    sorted((m.id, why) for m, why in hold),
                )
            )
            clock.advance(rng.uniform(0, 90))
        await limiter.close()
        runs.append(seen)
    store_run, redis_run = runs
    assert store_run == redis_run
    assert sum(len(go) for go, _, _ in store_run) > 50  # a run that sent, not one that jammed


# -- a message counts once (issue 11 item 8) ------------------------------------------------


async def test_recipient__a_retry_of_a_counted_message_passes_without_counting_again(  # type: ignore[no-untyped-def]
    make,
) -> None:
    """A message that failed after the cap counted it comes back for another try: it was
    counted once and passes as itself, however often it is tried; new messages to the
    recipient still meet the cap."""
    clock = FrozenClock(boundary())
    limiter = make([{"kind": "recipient", "action": "reply", "max": 2, "window": "1h"}], clock)
    first = message(1, action="reply", recipient="+15550000001")
    for _ in range(3):  # the send and two retries, each after a 5xx
        go, _, hold = await limiter.admit([first])
        assert [m.id for m in go] == [first.id] and hold == []
        clock.advance(30)
    go, _, hold = await limiter.admit(
        [message(n, action="reply", recipient="+15550000001") for n in (2, 3)]
    )
    assert [m.id for m in go] == ["m00002"]  # the second of 2: the first counted once
    assert [m.id for m, _ in hold] == ["m00003"]
    clock.advance(HOUR)  # counted messages leave the window; a retry then counts anew
    go, _, _ = await limiter.admit([first])
    assert [m.id for m in go] == [first.id]


async def test_recipient__a_retry_is_not_deferred_by_its_own_cooldown(make) -> None:  # type: ignore[no-untyped-def]
    clock = FrozenClock(boundary())
    limiter = make([{"kind": "recipient", "action": "reply", "cooldown": "10m"}], clock)
    first = message(1, action="reply", recipient="+15550000001")
    assert len((await limiter.admit([first]))[0]) == 1
    clock.advance(5)  # a 5xx, and the retry's backoff
    go, defer, _ = await limiter.admit(
        [first, message(2, action="reply", recipient="+15550000001")]
    )
    assert [m.id for m in go] == [first.id]
    [(other, until, _)] = defer
    assert other.id == "m00002"
    assert until.timestamp() >= boundary().timestamp() + 600


# -- giving back what a try did not use (issue 11 item 9) -----------------------------------

RATE_QUOTA_ACTION = [
    {"kind": "rate", "tenant": "acme", "rate": 0.0001, "burst": 3},
    {"kind": "quota", "tenant": "acme", "limit": 3, "window": "1d"},
    {"kind": "action", "action": "notify", "max": 3, "window": "1d"},
]


async def admitted(limiter: Limiter, *ids: int) -> list[str]:
    go, _, _ = await limiter.admit([message(n) for n in ids])
    return [m.id for m in go]


async def test_refund__a_try_that_sent_nothing_gives_back_tokens_quota_and_caps(make) -> None:  # type: ignore[no-untyped-def]
    clock = FrozenClock(boundary())
    limiter = make(RATE_QUOTA_ACTION, clock)
    sent = [message(n) for n in (1, 2, 3)]
    assert len((await limiter.admit(sent))[0]) == 3
    assert await admitted(limiter, 4) == []  # everything spent
    limiter.settle(sent, Use.NOTHING)  # paused, held, put back: no request left
    await limiter.flush_refunds()
    assert await admitted(limiter, 5, 6, 7, 8) == ["m00005", "m00006", "m00007"]


async def test_refund__a_5xx_gives_back_quota_and_caps_but_keeps_the_rate_token(make) -> None:  # type: ignore[no-untyped-def]
    """The provider saw the request (its rate counts it) but did not take the message
    (its quota does not)."""
    clock = FrozenClock(boundary())
    limiter = make(RATE_QUOTA_ACTION[1:], clock)
    sent = [message(n) for n in (1, 2, 3)]
    await limiter.admit(sent)
    limiter.settle(sent, Use.REQUEST)
    await limiter.flush_refunds()
    assert await admitted(limiter, 4, 5, 6) == ["m00004", "m00005", "m00006"]

    bucket = make(RATE_QUOTA_ACTION[:1], clock)
    sent = [message(n) for n in (11, 12, 13)]
    await bucket.admit(sent)
    bucket.settle(sent, Use.REQUEST)
    await bucket.flush_refunds()
    assert await admitted(bucket, 14) == []


async def test_refund__sends_the_provider_took_keep_their_use(make) -> None:  # type: ignore[no-untyped-def]
    clock = FrozenClock(boundary())
    limiter = make(RATE_QUOTA_ACTION, clock)
    sent = [message(n) for n in (1, 2, 3)]
    await limiter.admit(sent)
    limiter.settle(sent, Use.MESSAGE)
    await limiter.flush_refunds()
    assert await admitted(limiter, 4) == []


async def test_refund__never_more_than_was_taken(make) -> None:  # type: ignore[no-untyped-def]
    clock = FrozenClock(boundary())
    limiter = make(RATE_QUOTA_ACTION[1:], clock)
    a, b, c, d = (message(n) for n in (1, 2, 3, 4))
    await limiter.admit([a, b, c, d])  # d is deferred: it took nothing
    limiter.settle([a], Use.NOTHING)
    limiter.settle([a, d], Use.NOTHING)  # a settled twice, d never admitted
    await limiter.flush_refunds()
    assert await admitted(limiter, 5, 6) == ["m00005"]  # a's one use, no more

    bucket = make([{"kind": "rate", "tenant": "acme", "rate": 1, "burst": 2}], clock)
    sent = [message(n) for n in (11, 12)]
    await bucket.admit(sent)
    clock.advance(10)  # the bucket is full again by itself
    bucket.settle(sent, Use.NOTHING)
    await bucket.flush_refunds()
    assert len(await admitted(bucket, 13, 14, 15, 16)) == 2  # its burst, not 4


@pytest.mark.parametrize(
    ("spec", "after"),
    [
        pytest.param({"kind": "quota", "limit": 2, "window": "1d", "reset": "00:00"}, 2,
                     id="fixed-window-replaced"),
        pytest.param({"kind": "quota", "limit": 2, "window": "1h"}, HOUR + 1,
                     id="rolling-log-use-left"),
        pytest.param({"kind": "quota", "limit": 20, "window": "1h"}, HOUR + 1,
                     id="rolling-slices-slot-taken-over"),
    ],
)  # fmt: skip
async def test_refund__never_into_a_window_that_has_ended(make, spec, after) -> None:  # type: ignore[no-untyped-def]
    """A use given back after its window ended would be room the window now in force
    never lent: the refund is dropped, whatever the cells now hold (a new fixed window's
    count, a slice's cell taken over by a slice a window later)."""
    clock = FrozenClock(boundary() - timedelta(seconds=1))
    limiter = make([{**spec, "tenant": "acme"}], clock)
    limit = spec["limit"]
    old = [message(n) for n in range(limit)]
    assert len((await limiter.admit(old))[0]) == limit
    clock.advance(after)
    assert len(await admitted(limiter, *range(100, 100 + limit))) == limit
    limiter.settle(old, Use.NOTHING)
    await limiter.flush_refunds()
    assert await admitted(limiter, 200) == []


async def test_refund__a_retry_counts_again_only_after_its_use_came_back(make) -> None:  # type: ignore[no-untyped-def]
    """The quota a failed try gave back is taken again by its retry: a message the
    provider finally takes counts once."""
    clock = FrozenClock(boundary())
    limiter = make([{"kind": "quota", "tenant": "acme", "limit": 2, "window": "1d"}], clock)
    flaky = message(1)
    for _ in range(3):  # three 5xx
        flaky.claim_seq += 1
        assert await admitted_one(limiter, flaky)
        limiter.settle([flaky], Use.REQUEST)
        await limiter.flush_refunds()
    flaky.claim_seq += 1
    assert await admitted_one(limiter, flaky)
    limiter.settle([flaky], Use.MESSAGE)
    assert await admitted(limiter, 2, 3) == ["m00002"]


async def admitted_one(limiter: Limiter, msg: Message) -> bool:
    go, _, _ = await limiter.admit([msg])
    return go == [msg]


class _CountingStore:
    """The real store, counting the limiter's round trips to it."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.applies = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)

    async def flow_state_apply(self, keys: object, fn: object) -> object:
        self.applies += 1
        return await self._store.flow_state_apply(keys, fn)  # type: ignore[arg-type]


async def test_refund__a_flush_is_one_round_trip_however_many_messages(
    store: Store, redis_url: str, redis_prefix: str
) -> None:
    """The dispatcher settles thousands of messages a second: their refunds go back in
    one call per flush, to the store or to Redis."""
    counting = _CountingStore(store)
    clock = FrozenClock(boundary())
    specs = parse_limits(
        [
            {"kind": "rate", "tenant": "acme", "rate": 1, "burst": 1000},
            {"kind": "quota", "tenant": "acme", "limit": 1000, "window": "1d"},
        ]
    )
    for redis in (False, True):
        settings = Settings(
            database_url="sqlite:///unused.db",
            **({"redis_url": redis_url, "redis_prefix": redis_prefix} if redis else {}),
        )
        limiter = Limiter(counting, settings, specs, clock=clock, logger=_Log(),  # type: ignore[arg-type]
                          worker_id="w", shared_clock=clock)  # fmt: skip
        batch = [message(n) for n in range(300)]
        assert len((await limiter.admit(batch))[0]) == 300
        before = counting.applies
        evals = await _evals_while(
            redis_url, redis_prefix, lambda: _settle_and_flush(limiter, batch)
        )
        await limiter.close()
        assert (counting.applies - before, evals) == ((0, 1) if redis else (1, 0))


async def _settle_and_flush(limiter: Limiter, batch: list[Message]) -> None:
    limiter.settle(batch, Use.NOTHING)
    await limiter.flush_refunds()


async def _evals_while(redis_url: str, prefix: str, work: Callable[[], Awaitable[None]]) -> int:
    """Script calls that name ``prefix``, seen by Redis's MONITOR while ``work`` runs."""
    import redis.asyncio as aioredis

    client = aioredis.from_url(redis_url)
    seen = 0
    end = prefix + "done"
    async with client.monitor() as monitor:
        await work()
        await client.echo(end)
        while True:
            command = (await monitor.next_command())["command"]
            if end in command:
                break
            if command.upper().startswith(("EVALSHA", "EVAL ")) and prefix in command:
                seen += 1
    await client.aclose()
    return seen
