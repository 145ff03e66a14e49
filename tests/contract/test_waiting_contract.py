"""The Store contract for acting on what waits (issue 14): which messages retry-now may
move, and throttles cleared for every listener. Every test runs on PostgreSQL and SQLite."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from sluice import ops
from sluice.clock import FrozenClock
from sluice.errors import ValidationError
from sluice.flow.controls import Mode, Scope
from sluice.model import Attempt, AttemptOutcome, Completion, NewMessage, Status
from sluice.store import AuditEntry, MessageFilter, Store, create_store
from sluice.store.base import FlowSignal

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(minutes=10)


def msg(**kw: object) -> NewMessage:
    fields: dict[str, object] = {
        "tenant": "acme",
        "channel": "sms",
        "provider": "null",
        "recipient": "+15550001111",
        "payload": {"n": 1},
        "run_at": NOW - timedelta(seconds=1),
    }
    fields.update(kw)
    return NewMessage(**fields)  # type: ignore[arg-type]


async def waiting_one(
    store: Store, *, deferred: bool = False, code: str = "TIMEOUT", **kw: object
) -> str:
    """Enqueue, claim and answer one message so it waits until LATER: a retry after a
    failure (an attempt spent) or a deferral (none spent, one deferral counted)."""
    [mid] = await store.enqueue_many([msg(**kw)], NOW)
    [m] = [x for x in await store.message_claim("w1", 100, 30, NOW) if x.id == mid]
    outcome = AttemptOutcome.THROTTLED if deferred else AttemptOutcome.FAILED
    attempt = Attempt(mid, m.claim_seq, "w1", m.provider, NOW, NOW, outcome, error_code=code)
    c = Completion(mid, m.claim_seq, "w1", Status.QUEUED, attempt, run_at=LATER)
    c.refund_attempt = c.deferred = deferred
    await store.message_complete_many("w1", [c], NOW)
    return mid


def audit(action: str = "message.retry_now") -> AuditEntry:
    return AuditEntry(at=NOW, actor="ops:ana", action=action, target="messages", reason="up")


async def test_message_waiting__only_backoffs_and_deferrals_never_scheduled_or_busy(
    store: Store,
) -> None:
    retry = await waiting_one(store)
    deferred = await waiting_one(store, deferred=True, code="RATE_LIMITED")
    assert (await store.message_get(deferred)).attempts == 0
    # Scheduled by its sender for later: never pulled in.
    [scheduled] = await store.enqueue_many([msg(run_at=LATER)], NOW)
    # Due already: nothing to pull in.
    [due] = await store.enqueue_many([msg()], NOW)
    # Being sent.
    sending = await waiting_one(store)
    await store.message_retry_now([sending], NOW, audit())
    [m] = [x for x in await store.message_claim("w1", 100, 30, NOW) if x.id == sending]
    # Held, and final.
    held = await waiting_one(store, tenant="held")
    await store.control_set(
        Scope.of(tenant="held"), Mode.KILLED, actor="a", reason="r", expires_at=None, now=NOW
    )
    await store.control_hold_queued(NOW)
    # Parked by a pause.
    parked = await waiting_one(store, tenant="paused")
    await store.control_set(
        Scope.of(tenant="paused"), Mode.PAUSED, actor="a", reason="r", expires_at=None, now=NOW
    )
    assert await store.control_park_queued(NOW) == 1
    assert (await store.message_get(held)).status is Status.HELD

    found = await store.message_waiting(MessageFilter(), NOW)
    assert found == [retry, deferred]
    for other in (scheduled, due, m.id, held, parked):
        assert other not in found
    # Asked for by id, the same guard applies: only the waiting ones come back.
    everything = [retry, scheduled, due, m.id, held, parked, str(uuid.uuid4()), "not-a-uuid"]
    assert await store.message_waiting(MessageFilter(), NOW, everything) == [retry]
    # And the move is guarded the same way, whatever ids it is given.
    moved = await store.message_retry_now([*everything, deferred], NOW, audit())
    assert sorted(moved) == sorted([retry, deferred])
    assert (await store.message_get(scheduled)).run_at == LATER
    assert (await store.message_get(m.id)).status is Status.SENDING
    for mid in moved:
        after = await store.message_get(mid)
        assert (after.status, after.run_at) == (Status.QUEUED, NOW)
    assert (await store.message_get(retry)).attempts == 1  # attempts are kept
    assert (await store.message_get(deferred)).deferrals == 1  # and deferrals too
    [entry] = [e for e in await store.audit_list() if e.action == "message.retry_now"][:1]
    assert entry.detail["count"] == 2 and entry.actor == "ops:ana"
    assert {x.id for x in await store.message_claim("w2", 100, 30, NOW)} == set(moved)


async def test_message_waiting__filters_narrow_and_limit_takes_the_soonest(store: Store) -> None:
    a = await waiting_one(store, tenant="a", provider="null", code="TIMEOUT")
    b = await waiting_one(store, tenant="b", provider="null", code="SERVER_ERROR")
    c = await waiting_one(store, tenant="b", provider="null", channel="email", recipient="x@y.z")
    d = await waiting_one(store, tenant="b", action="order.created")
    f = MessageFilter
    assert await store.message_waiting(f(tenant="a"), NOW) == [a]
    assert await store.message_waiting(f(error_code="SERVER_ERROR"), NOW) == [b]
    assert await store.message_waiting(f(channel="email"), NOW) == [c]
    assert await store.message_waiting(f(action="order.created"), NOW) == [d]
    assert await store.message_waiting(f(provider="other"), NOW) == []
    assert len(await store.message_waiting(f(limit=2), NOW)) == 2
    # Past its run_at a message is no longer waiting.
    assert await store.message_waiting(f(), LATER) == []


# -- the operator act ----------------------------------------------------------------


async def test_retry_now__dry_run_counts_and_changes_nothing(store: Store) -> None:
    ids = [await waiting_one(store) for _ in range(3)]
    clock = FrozenClock(NOW)
    result = await ops.retry_now(store, MessageFilter(), dry_run=True, actor="ops", clock=clock)
    assert (result.dry_run, result.matched, result.changed) == (True, 3, 0)
    assert sorted(result.ids) == sorted(ids)
    for mid in ids:
        assert (await store.message_get(mid)).run_at == LATER
    assert not [e for e in await store.audit_list() if e.action == "message.retry_now"]
    done = await ops.retry_now(
        store, MessageFilter(limit=2), actor="ops", reason="provider back", clock=clock
    )
    assert (done.matched, done.changed) == (2, 2)
    [entry] = [e for e in await store.audit_list() if e.action == "message.retry_now"]
    assert (entry.reason, entry.detail["filter"]["limit"]) == ("provider back", 2)


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"flt": MessageFilter(limit=0)}, "limit"),
        ({"flt": MessageFilter(limit=10**9)}, "limit"),
        ({"ids": []}, "ids"),
        ({"ids": "0190c0de-0000-7000-8000-000000000000"}, "ids"),
        ({"ids": ["0190c0de-0000-7000-8000-000000000000", "\ud800"]}, "ids[1]"),
        ({"ids": ["x" * 10_000]}, "ids[0]"),
        ({"actor": " "}, "actor"),
    ],
)
async def test_retry_now__bad_input_is_named_and_changes_nothing(
    store: Store, kw: dict[str, object], field: str
) -> None:
    mid = await waiting_one(store)
    args: dict[str, object] = {"flt": MessageFilter(), "ids": None, "actor": "ops"}
    args.update(kw)
    with pytest.raises(ValidationError) as err:
        await ops.retry_now(
            store, args["flt"], args["ids"], actor=args["actor"],  # type: ignore[arg-type]
            clock=FrozenClock(NOW),
        )  # fmt: skip
    assert err.value.field == field
    assert (await store.message_get(mid)).run_at == LATER


# -- throttles -----------------------------------------------------------------------


@pytest.fixture
async def other(store_url: str) -> AsyncIterator[Store]:
    """A second store on the same database: another worker process's view of it."""
    s = create_store(store_url)
    await s.open()  # type: ignore[attr-defined]
    yield s
    await s.close()


async def heard(signals: list[FlowSignal], count: int, seconds: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while len(signals) < count:
        assert asyncio.get_running_loop().time() < deadline, f"heard {len(signals)} of {count}"
        await asyncio.sleep(0.005)


async def test_throttle_clear__removes_bumps_the_epoch_audits_and_signals_everyone(
    store: Store, other: Store
) -> None:
    now = datetime.now(UTC)
    until = now + timedelta(minutes=5)
    hook = "webhook@https://x.example/h"
    await store.throttle_set("acme", "twilio", until, "429", now)
    await store.throttle_set("acme", hook, until, "429", now)
    await store.throttle_set("b", "twilio", until, "429", now)
    here: list[FlowSignal] = []
    there: list[FlowSignal] = []
    store.flow_listen(here.append)
    other.flow_listen(there.append)
    await asyncio.sleep(0.2)  # the other store is listening (LISTEN / its first look)
    before = await store.flow_version()
    cleared = await store.throttle_clear(
        [("acme", "twilio"), ("acme", hook), ("acme", "nothing")], now, audit("throttle.clear")
    )
    assert sorted((t.tenant, t.provider) for t in cleared) == [("acme", "twilio"), ("acme", hook)]
    assert [(t.tenant, t.provider) for t in await store.throttle_list(now)] == [("b", "twilio")]
    assert await store.flow_version() == before + 1
    [entry] = [e for e in await store.audit_list() if e.action == "throttle.clear"]
    assert entry.detail["count"] == 2
    assert {c["target"] for c in entry.detail["cleared"]} == {"twilio", hook}
    for signals in (here, there):
        await heard(signals, 2)
        gone = {(s.throttle_cleared.tenant, s.throttle_cleared.provider)
                for s in signals if s.throttle_cleared is not None}  # fmt: skip
        assert gone == {("acme", "twilio"), ("acme", hook)}


async def test_throttles_ops__list_select_and_clear_by_provider_with_dry_run(store: Store) -> None:
    now = datetime.now(UTC)
    until = now + timedelta(minutes=5)
    hook = "webhook@https://x.example/h"
    for tenant, target in (("acme", "twilio"), ("acme", hook), ("b", "webhook"), ("b", "twilio")):
        await store.throttle_set(tenant, target, until, "429", now)
    listed = await ops.throttles_list(store, provider="webhook")
    assert sorted((t.tenant, t.provider) for t in listed) == [("acme", hook), ("b", "webhook")]
    assert [t.provider for t in await ops.throttles_list(store, provider=hook)] == [hook]
    assert len(await ops.throttles_list(store, tenant="b")) == 2
    dry = await ops.throttle_clear(
        store, provider="webhook", dry_run=True, actor="ops", reason="receiver is back"
    )
    assert (dry.dry_run, len(dry.throttles)) == (True, 2)
    assert len(await ops.throttles_list(store)) == 4
    done = await ops.throttle_clear(
        store, tenant="acme", provider="webhook", actor="ops", reason="receiver is back"
    )
    assert [t.provider for t in done.throttles] == [hook]
    assert done.ack is not None and done.ack.complete  # no live workers to wait for
    assert len(await ops.throttles_list(store)) == 3
    every = await ops.throttle_clear(store, everything=True, actor="ops", reason="all back")
    assert len(every.throttles) == 3 and await ops.throttles_list(store) == []


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({}, "provider"),  # no selection and not --all
        ({"provider": "twilio", "reason": " "}, "reason"),
        ({"provider": "twilio", "actor": ""}, "actor"),
        ({"tenant": " ", "provider": "twilio"}, "tenant"),
        ({"provider": "a\x00b"}, "provider"),
    ],
)
async def test_throttle_clear__bad_input_is_named_and_clears_nothing(
    store: Store, kw: dict[str, object], field: str
) -> None:
    now = datetime.now(UTC)
    await store.throttle_set("acme", "twilio", now + timedelta(minutes=5), "429", now)
    args: dict[str, object] = {"actor": "ops", "reason": "why"}
    args.update(kw)
    with pytest.raises(ValidationError) as err:
        await ops.throttle_clear(store, **args)  # type: ignore[arg-type]
    assert err.value.field == field
    assert len(await store.throttle_list(now)) == 1
