"""One limiter, three places for its state: PostgreSQL, SQLite and Redis (Lua). Every
test runs against each, so the Python algorithm and the Lua script cannot drift apart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from sluice.clock import FrozenClock
from sluice.config import Settings
from sluice.flow.limits import parse_limits
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

    def build(limits: list[dict[str, object]], **settings: object) -> Limiter:
        base: dict[str, object] = {"database_url": "sqlite:///unused.db"}
        if request.param == "redis":
            base.update(redis_url=redis_url, redis_prefix=redis_prefix)
        base.update(settings)
        limiter = Limiter(
            store,
            Settings(**base),  # type: ignore[arg-type]
            parse_limits(limits),
            clock=FrozenClock(datetime.now(UTC)),
            logger=_Log(),
            worker_id="w1",
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
    await first.admit([message(7, action="reply", recipient="+15550000002")] * 3)
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
