"""Controls applied by a real dispatcher on both stores, counting the HTTP requests that
actually leave (the webhook adapter over ``httpx.MockTransport``)."""

from __future__ import annotations

import asyncio
import base64
import os
from collections import Counter
from datetime import timedelta

import httpx

from sluice.clock import FrozenClock
from sluice.config import Settings
from sluice.flow.controls import Mode, Scope
from sluice.model import AttemptOutcome, NewMessage, Status
from sluice.netguard import static_resolver
from sluice.ops import controls as ops
from sluice.providers.webhook import WebhookProvider
from sluice.store import MessageFilter, Store
from sluice.worker import Dispatcher

SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()
#: The receivers are made-up host names; the SSRF guard gets a public address for them.
PUBLIC = static_resolver("93.184.216.34")


class Counting:
    """Answers 200 and counts requests per tenant (the URL path)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.seen: Counter[str] = Counter()
        self.delay = delay

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.delay:
            await asyncio.sleep(self.delay)
        self.seen[request.url.path.rsplit("/", 1)[-1]] += 1
        return httpx.Response(200)


def settings(**kw: object) -> Settings:
    base: dict[str, object] = {
        "database_url": "sqlite:///unused.db",
        "poll_interval": 0.05,
        "flush_interval": 0,
        "reaper_interval": 3600,
        "worker_concurrency": 20,
        "control_poll": 0.02,
    }
    base.update(kw)
    return Settings(**base)  # type: ignore[arg-type]


def hook(tenant: str, **kw: object) -> NewMessage:
    fields: dict[str, object] = {
        "tenant": tenant,
        "channel": "webhook",
        "provider": "webhook",
        "recipient": f"https://receiver.example/hook/{tenant}",
        "payload": {"t": tenant},
    }
    fields.update(kw)
    return NewMessage(**fields)  # type: ignore[arg-type]


async def drain(store: Store, receiver: Counting, clock: FrozenClock, **kw: object) -> Dispatcher:
    async with httpx.AsyncClient(transport=httpx.MockTransport(receiver)) as client:
        d = Dispatcher(
            store,
            {"webhook": WebhookProvider(client, SECRET, clock=clock, resolve=PUBLIC)},
            settings(**kw),
            clock=clock,
            worker_id="w-test",
        )
        await d.run(until_idle=True)
        return d


async def by_status(store: Store, ids: list[str]) -> Counter[str]:
    return Counter([(await store.message_get(i)).status.value for i in ids])


async def test_kill__scope_is_held_others_flow_resume_delivers_once(store: Store) -> None:
    clock = FrozenClock()
    killed = await store.enqueue_many([hook("victim") for _ in range(10)], clock.now())
    other = await store.enqueue_many([hook("bystander") for _ in range(10)], clock.now())
    await ops.control_set(
        store, Scope.of(tenant="victim"), Mode.KILLED, actor="ops", reason="RB-10", wait=False
    )
    receiver = Counting()
    await drain(store, receiver, clock)
    assert receiver.seen == {"bystander": 10}
    # The claim skipped them; a sweep holds them, visibly.
    await store.control_hold_queued(clock.now())
    assert await by_status(store, killed) == {"held": 10}
    assert await by_status(store, other) == {"sent": 10}
    held = await ops.held_list(store, MessageFilter(tenant="victim"))
    assert len(held) == 10 and all(m.hold_reason.startswith("control:killed") for m in held)  # type: ignore[union-attr]

    change = await ops.control_clear(
        store, Scope.of(tenant="victim"), actor="ops", reason="fixed", wait=False, clock=clock
    )
    assert sorted(change.released) == sorted(killed)
    await drain(store, receiver, clock)
    assert receiver.seen == {"bystander": 10, "victim": 10}
    assert await by_status(store, killed) == {"sent": 10}


async def test_kill__most_restrictive_wins_over_a_narrower_live_control(store: Store) -> None:
    clock = FrozenClock()
    ids = await store.enqueue_many([hook("acme")], clock.now())
    await store.control_set(
        Scope(), Mode.KILLED, actor="ops", reason="global", expires_at=None, now=clock.now()
    )
    await store.control_set(
        Scope.of(tenant="acme"), Mode.LIVE, actor="ops", reason="x", expires_at=None,
        now=clock.now(),
    )  # fmt: skip
    receiver = Counting()
    await drain(store, receiver, clock)
    assert receiver.seen == {}
    assert await by_status(store, ids) == {"held": 1}


async def test_shadow__sends_nothing_and_records_everything(store: Store) -> None:
    clock = FrozenClock()
    ids = await store.enqueue_many([hook("trial") for _ in range(5)], clock.now())
    live = await store.enqueue_many([hook("paying")], clock.now())
    await store.control_set(
        Scope.of(tenant="trial"), Mode.SHADOW, actor="ops", reason="dry run", expires_at=None,
        now=clock.now(),
    )  # fmt: skip
    receiver = Counting()
    d = await drain(store, receiver, clock)
    assert receiver.seen == {"paying": 1}
    assert d.stats.shadowed == 5
    assert await by_status(store, ids) == {"shadowed": 5}
    assert await by_status(store, live) == {"sent": 1}
    [attempt] = await store.attempt_list(ids[0])
    assert attempt.outcome is AttemptOutcome.SHADOWED
    assert attempt.detail is not None and "would have sent" in attempt.detail
    assert "receiver.example/hook/trial" in attempt.detail


async def test_approval__holds_until_approved_then_sends_once(store: Store) -> None:
    clock = FrozenClock()
    ids = await store.enqueue_many([hook("acme") for _ in range(4)], clock.now())
    await store.control_set(
        Scope.of(channel="webhook"), Mode.APPROVAL, actor="ops", reason="review",
        expires_at=None, now=clock.now(),
    )  # fmt: skip
    receiver = Counting()
    await drain(store, receiver, clock)
    assert receiver.seen == {}
    assert await by_status(store, ids) == {"held": 4}

    result = await ops.held_approve(store, MessageFilter(), ids[:3], actor="ops:ana", clock=clock)
    assert result.changed == 3
    await drain(store, receiver, clock)
    assert receiver.seen == {"acme": 3}
    assert await by_status(store, ids) == {"sent": 3, "held": 1}
    assert (await store.message_get(ids[0])).approved_by == "ops:ana"
    # Release without approval: the control holds it again; nothing leaves.
    await ops.held_release(store, MessageFilter(), ids[3:], actor="ops", clock=clock)
    await drain(store, receiver, clock)
    assert receiver.seen == {"acme": 3}
    cancelled = await ops.held_cancel(store, MessageFilter(tenant="acme"), actor="ops")
    assert cancelled.ids == ids[3:]
    assert await by_status(store, ids) == {"sent": 3, "cancelled": 1}


async def test_fail_closed__default_mode_approval_unless_a_control_says_live(
    store: Store,
) -> None:
    clock = FrozenClock()
    ids = await store.enqueue_many([hook("new"), hook("trusted")], clock.now())
    await store.control_set(
        Scope.of(tenant="trusted"), Mode.LIVE, actor="ops", reason="vetted", expires_at=None,
        now=clock.now(),
    )  # fmt: skip
    receiver = Counting()
    await drain(store, receiver, clock, default_mode="approval")
    assert receiver.seen == {"trusted": 1}
    m = await store.message_get(ids[0])
    assert m.status is Status.HELD and m.hold_reason is not None
    assert "SLUICE_DEFAULT_MODE" in m.hold_reason


async def test_pause__claimed_messages_go_back_to_the_queue(store: Store) -> None:
    """A pause that lands after the claim and before the send puts the message back."""
    clock = FrozenClock()
    ids = await store.enqueue_many([hook("acme") for _ in range(3)], clock.now())
    async with httpx.AsyncClient(transport=httpx.MockTransport(Counting())) as client:
        d = Dispatcher(
            store,
            {"webhook": WebhookProvider(client, SECRET, clock=clock, resolve=PUBLIC)},
            settings(),
            clock=clock,
            worker_id="w-test",
        )
        await d.controls.start()
        batch = await store.message_claim("w-test", 10, 30, clock.now())
        await store.control_set(
            Scope(), Mode.PAUSED, actor="ops", reason="x", expires_at=None, now=clock.now()
        )
        await d.controls.poll()
        d._start(batch)
        await d._drain()
        await d._flush()
    assert d.stats.paused == 3
    m = await store.message_get(ids[0])
    assert (m.status, m.attempts) == (Status.QUEUED, 0)
    assert await store.attempt_list(ids[0]) == []


async def test_ack__waits_for_sends_admitted_under_the_old_state(store: Store) -> None:
    """The acknowledgement is a fence: a kill is acknowledged only once the sends that
    passed the old check in that scope are over, so none lands after ``kill`` returns."""
    clock = FrozenClock()
    await store.enqueue_many([hook("victim") for _ in range(5)], clock.now())
    receiver = Counting(delay=0.3)
    async with httpx.AsyncClient(transport=httpx.MockTransport(receiver)) as client:
        d = Dispatcher(
            store,
            {"webhook": WebhookProvider(client, SECRET, clock=clock, resolve=PUBLIC)},
            settings(),
            clock=clock,
            worker_id="w-fence",
        )
        runner = asyncio.create_task(d.run())
        while d._in_flight < 5:  # noqa: ASYNC110  # polling the dispatcher from outside
            await asyncio.sleep(0.01)
        change = await ops.control_set(
            store, Scope.of(tenant="victim"), Mode.KILLED, actor="ops", reason="now", timeout=5
        )
        # Every request that started before the kill has finished when kill returns.
        assert change.ack is not None and change.ack.complete
        assert change.ack.acked == ["w-fence"]
        assert receiver.seen == {"victim": 5}
        assert change.ack.elapsed_seconds > 0.1
        d.stop()
        await runner


async def test_ack__names_a_worker_that_does_not_acknowledge(store: Store) -> None:
    clock = FrozenClock()
    await store.worker_heartbeat("silent:1", "hostA", 1, 0, 0, clock.now())
    change = await ops.control_set(
        store, Scope(), Mode.KILLED, actor="ops", reason="x", timeout=0.2, clock=clock
    )
    assert change.ack is not None
    assert change.ack.missing == ["silent:1"] and not change.ack.complete
    assert "silent:1" in change.ack.summary()


async def test_expiry__reverts_by_itself_and_is_audited(store: Store) -> None:
    clock = FrozenClock()
    ids = await store.enqueue_many([hook("acme")], clock.now())
    await store.control_set(
        Scope(), Mode.KILLED, actor="ops", reason="10 min", now=clock.now(),
        expires_at=clock.now() + timedelta(minutes=10),
    )  # fmt: skip
    receiver = Counting()
    await drain(store, receiver, clock)
    assert receiver.seen == {}
    clock.advance(11 * 60)
    await drain(store, receiver, clock)
    assert receiver.seen == {"acme": 1}
    assert await by_status(store, ids) == {"sent": 1}
    assert await store.control_list() == []
    assert any(e.action == "control.expired" for e in await store.audit_list())


async def test_fence__a_later_change_does_not_drop_an_unfinished_fence(store: Store) -> None:
    """A kill whose fence timed out (a send still in flight) is not acknowledged by way of
    a newer, unrelated change: the fence carries over until that send ends."""
    from sluice.worker.controls import ControlWatch

    clock = FrozenClock()
    watch = ControlWatch(
        store, settings(http_timeout=0.05), worker_id="w1", clock=clock, logger=_Quiet()
    )
    await store.worker_heartbeat("w1", "h", 1, 0, 0, clock.now())
    await watch.start()
    token = watch.admit(("victim", "webhook", "webhook", "send"))  # passed the old check
    kill = await store.control_set(
        Scope.of(tenant="victim"), Mode.KILLED, actor="ops", reason="x", expires_at=None,
        now=clock.now(),
    )  # fmt: skip
    await watch.poll()  # the fence times out: the send is still out
    assert watch.acked < kill.version
    other = await store.control_set(
        Scope.of(tenant="other"), Mode.PAUSED, actor="ops", reason="y", expires_at=None,
        now=clock.now(),
    )  # fmt: skip
    await watch.poll()
    assert watch.acked < other.version, "the victim's fence was dropped"
    watch.done(token)
    await watch.poll()
    assert watch.acked == other.version


async def test_failover__never_to_a_provider_the_controls_stop(store: Store) -> None:
    from sluice.ops.breakers import breaker_force

    clock = FrozenClock()
    ids = await store.enqueue_many([hook("acme") for _ in range(3)], clock.now())
    await breaker_force(store, "webhook", "open", actor="ops", reason="outage")
    await store.control_set(
        Scope.of(provider="webhook-b"), Mode.SHADOW, actor="ops", reason="trial",
        expires_at=None, now=clock.now(),
    )  # fmt: skip
    receiver = Counting()
    async with httpx.AsyncClient(transport=httpx.MockTransport(receiver)) as client:
        provider = WebhookProvider(client, SECRET, clock=clock, resolve=PUBLIC)
        d = Dispatcher(
            store,
            {"webhook": provider, "webhook-b": provider},
            settings(),
            clock=clock,
            worker_id="w-route",
            routes={"webhook": ["webhook", "webhook-b"]},
        )
        await d.run(until_idle=True)
    # Not shadowed through the alternative, not sent: deferred, nothing spent.
    assert receiver.seen == {}
    for i in ids:
        m = await store.message_get(i)
        assert (m.status, m.attempts) == (Status.QUEUED, 0)
    assert d.stats.failover == 0


class _Quiet:
    def __getattr__(self, level: str):  # type: ignore[no-untyped-def]
        return lambda *a, **kw: None
