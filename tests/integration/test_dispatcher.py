"""The dispatcher against real stores and the real webhook adapter (HTTP faked at the wire).

Time is a ``FrozenClock``: a run drains what is ready, the test moves the clock past
the backoff, and the next run takes the retries.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections import Counter
from datetime import timedelta

import httpx
import pytest
import structlog
from structlog.testing import capture_logs

from sluice.clock import FrozenClock
from sluice.config import Settings
from sluice.model import AttemptOutcome, ErrorCode, NewMessage, Outcome, Status
from sluice.netguard import static_resolver
from sluice.providers.webhook import WebhookProvider
from sluice.store import Store
from sluice.worker import Dispatcher, RetryPolicy
from sluice.worker.dispatcher import WORKER_PROBLEM_DELAY

SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()
#: The receivers are made-up host names; the SSRF guard gets a public address for them.
PUBLIC = static_resolver("93.184.216.34")


class Receiver:
    """Answers per URL path from a script: a list of responses, the last one repeating."""

    def __init__(self, script: dict[str, list[httpx.Response]]) -> None:
        self.script = script
        self.seen: Counter[str] = Counter()

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        answers = self.script.get(path, [httpx.Response(200)])
        n = self.seen[path]
        self.seen[path] += 1
        return answers[min(n, len(answers) - 1)]


def settings(**kw: object) -> Settings:
    base: dict[str, object] = {
        "database_url": "sqlite:///unused.db",
        "poll_interval": 0.05,
        "flush_interval": 0,
        "reaper_interval": 3600,
        "worker_concurrency": 20,
    }
    base.update(kw)
    return Settings(**base)  # type: ignore[arg-type]


async def drain(store: Store, receiver: Receiver, clock: FrozenClock, **kw: object) -> Dispatcher:
    async with httpx.AsyncClient(transport=httpx.MockTransport(receiver)) as client:
        provider = WebhookProvider(client, SECRET, clock=clock, resolve=PUBLIC)
        d = Dispatcher(
            store,
            {"webhook": provider},
            settings(**kw),
            clock=clock,
            retry=RetryPolicy(base=1, cap=8),
            worker_id="w-test",
        )
        await d.run(until_idle=True)
        return d


def hook(path: str, **kw: object) -> NewMessage:
    fields: dict[str, object] = {
        "tenant": "acme",
        "channel": "webhook",
        "provider": "webhook",
        "recipient": f"https://receiver.example{path}",
        "payload": {"path": path},
    }
    fields.update(kw)
    return NewMessage(**fields)  # type: ignore[arg-type]


async def test_success__sent_with_one_attempt(store: Store) -> None:
    clock = FrozenClock()
    [mid] = await store.enqueue_many([hook("/ok")], clock.now())
    await drain(store, Receiver({}), clock)
    m = await store.message_get(mid)
    assert (m.status, m.attempts, m.provider_message_id) == (Status.SENT, 1, mid)
    [a] = await store.attempt_list(mid)
    assert (a.outcome, a.provider_status, a.worker_id) == (
        AttemptOutcome.SENT,
        "HTTP 200",
        "w-test",
    )


async def test_transient_errors__retry_with_backoff_until_success(store: Store) -> None:
    clock = FrozenClock()
    [mid] = await store.enqueue_many([hook("/flaky")], clock.now())
    rx = Receiver({"/flaky": [httpx.Response(500), httpx.Response(500), httpx.Response(200)]})
    await drain(store, rx, clock)
    m = await store.message_get(mid)
    assert (m.status, m.attempts, m.last_error_code) == (Status.QUEUED, 1, "PROVIDER_ERROR")
    assert m.run_at <= clock.now() + timedelta(seconds=1)  # full jitter within base
    for _ in range(2):
        clock.advance(10)
        await drain(store, rx, clock)
    m = await store.message_get(mid)
    assert (m.status, m.attempts) == (Status.SENT, 3)
    outcomes = [a.outcome for a in await store.attempt_list(mid)]
    assert outcomes == [AttemptOutcome.FAILED, AttemptOutcome.FAILED, AttemptOutcome.SENT]


async def test_transient_errors__dead_letter_after_max_attempts(store: Store) -> None:
    clock = FrozenClock()
    [mid] = await store.enqueue_many([hook("/down", max_attempts=3)], clock.now())
    rx = Receiver({"/down": [httpx.Response(500)]})
    for _ in range(5):
        await drain(store, rx, clock)
        clock.advance(60)
    m = await store.message_get(mid)
    assert (m.status, m.attempts, m.last_error_code) == (Status.DEAD, 3, "PROVIDER_ERROR")
    assert rx.seen["/down"] == 3


async def test_permanent_error__dead_letters_at_once(store: Store) -> None:
    clock = FrozenClock()
    [gone, bad] = await store.enqueue_many([hook("/gone"), hook("/bad")], clock.now())
    rx = Receiver({"/gone": [httpx.Response(410)], "/bad": [httpx.Response(422)]})
    await drain(store, rx, clock)
    assert (await store.message_get(gone)).last_error_code == "ENDPOINT_GONE"
    assert (await store.message_get(bad)).last_error_code == "BAD_REQUEST"
    for mid in (gone, bad):
        m = await store.message_get(mid)
        assert (m.status, m.attempts) == (Status.DEAD, 1)


async def test_throttle__defers_to_retry_after_without_burning_attempts(store: Store) -> None:
    clock = FrozenClock()
    [mid] = await store.enqueue_many([hook("/busy", max_attempts=2)], clock.now())
    busy = httpx.Response(429, headers={"Retry-After": "30"})
    rx = Receiver({"/busy": [busy, busy, busy, busy, httpx.Response(200)]})
    for _ in range(4):
        await drain(store, rx, clock)
        m = await store.message_get(mid)
        assert (m.status, m.attempts, m.last_error_code) == (Status.QUEUED, 0, "RATE_LIMITED")
        assert m.run_at >= clock.now() + timedelta(seconds=30)  # Retry-After honoured
        await drain(store, rx, clock)  # nothing is ready before then: no hot loop
        clock.advance(34)
    await drain(store, rx, clock)
    m = await store.message_get(mid)
    # Four throttles and a success, with max_attempts=2: throttling never counted.
    assert (m.status, m.attempts) == (Status.SENT, 1)
    assert rx.seen["/busy"] == 5


async def test_unknown_provider__dead_letters_naming_it(store: Store) -> None:
    clock = FrozenClock()
    # Enqueue knows the null provider; this worker has only the webhook adapter.
    [mid] = await store.enqueue_many([hook("/x", provider="null")], clock.now())
    await drain(store, Receiver({}), clock)
    m = await store.message_get(mid)
    assert (m.status, m.last_error_code) == (Status.DEAD, "UNKNOWN_PROVIDER")
    assert "no provider named 'null'" in (m.last_error or "")


async def test_webhook_without_a_secret__deferred_for_a_worker_that_has_one(
    store: Store,
) -> None:
    clock = FrozenClock()
    [mid] = await store.enqueue_many([hook("/unsigned")], clock.now())
    rx = Receiver({})
    async with httpx.AsyncClient(transport=httpx.MockTransport(rx)) as client:
        unsigned = WebhookProvider(client, None, clock=clock, resolve=PUBLIC)
        d = Dispatcher(store, {"webhook": unsigned}, settings(), clock=clock)
        with capture_logs() as logs:
            await d.run(until_idle=True)

    m = await store.message_get(mid)
    # Not dead, no attempt spent, nothing sent: back in the queue for a while.
    assert (m.status, m.attempts, m.last_error_code) == (Status.QUEUED, 0, None)
    assert m.run_at >= clock.now() + timedelta(seconds=WORKER_PROBLEM_DELAY)
    assert await store.attempt_list(mid) == []
    assert rx.seen == {}
    assert d.stats.deferred == 1 and d.stats.dead == 0
    [said] = [e for e in logs if e["log_level"] == "error"]
    assert "SLUICE_WEBHOOK_SECRET" in said["reason"] and said["provider"] == "webhook"

    clock.advance(WORKER_PROBLEM_DELAY + 1)
    await drain(store, rx, clock)  # a worker that has the secret
    assert (await store.message_get(mid)).status is Status.SENT
    assert rx.seen["/unsigned"] == 1


class Exploding:
    """An adapter with a bug: ``send`` raises (in the webhook adapter's place)."""

    name = "webhook"

    async def send(self, message, credentials=None) -> Outcome:  # type: ignore[no-untyped-def]
        raise RuntimeError("adapter bug")


async def test_adapter_exception__is_recorded_as_internal_and_retried(store: Store) -> None:
    clock = FrozenClock()
    [mid] = await store.enqueue_many([hook("/x")], clock.now())
    d = Dispatcher(store, {"webhook": Exploding()}, settings(), clock=clock)
    await d.run(until_idle=True)
    m = await store.message_get(mid)
    assert (m.status, m.attempts, m.last_error_code) == (Status.QUEUED, 1, "INTERNAL")
    assert "adapter bug" in (m.last_error or "")


class Gate:
    """A provider whose sends wait until the test opens the gate (in the webhook
    adapter's place)."""

    name = "webhook"

    def __init__(self) -> None:
        self.started = 0
        self.opened = asyncio.Event()

    async def send(self, message, credentials=None) -> Outcome:  # type: ignore[no-untyped-def]
        self.started += 1
        await self.opened.wait()
        return Outcome.success(message.id)


async def test_stop__finishes_in_flight_sends_and_writes_their_outcomes(store: Store) -> None:
    clock = FrozenClock()
    ids = await store.enqueue_many([hook(f"/{i}") for i in range(30)], clock.now())
    gate = Gate()
    d = Dispatcher(store, {"webhook": gate}, settings(worker_concurrency=10), clock=clock)
    run = asyncio.create_task(d.run())
    for _ in range(500):
        if gate.started == 10:
            break
        await asyncio.sleep(0.01)
    d.stop()
    await asyncio.sleep(0.05)
    gate.opened.set()
    stats = await asyncio.wait_for(run, 10)
    assert stats.sent == 10
    counts = Counter([(await store.message_get(mid)).status for mid in ids])
    assert counts == {Status.SENT: 10, Status.QUEUED: 20}  # nothing left claimed


async def test_stop__releases_claimed_messages_that_never_started(store: Store) -> None:
    clock = FrozenClock()
    ids = await store.enqueue_many([hook(f"/{i}") for i in range(5)], clock.now())
    gate = Gate()
    gate.opened.set()
    d = Dispatcher(store, {"webhook": gate}, settings(), clock=clock)
    d.stop()  # stop lands between the claim and the first send
    claimed = await store.message_claim(d.worker_id, 5, 30, clock.now())
    d._start(claimed)  # the claim loop's hand-off, exercised directly
    stats = await d.run()
    assert stats.released == 5
    assert gate.started == 0
    for mid in ids:
        m = await store.message_get(mid)
        assert (m.status, m.attempts) == (Status.QUEUED, 0)


async def test_reaper__returns_a_dead_workers_claims(store: Store) -> None:
    clock = FrozenClock()
    [mid] = await store.enqueue_many([hook("/ok")], clock.now())
    await store.message_claim("crashed-worker", 1, 30, clock.now())
    clock.advance(31)
    async with httpx.AsyncClient(transport=httpx.MockTransport(Receiver({}))) as client:
        d = Dispatcher(
            store,
            {"webhook": WebhookProvider(client, SECRET, clock=clock, resolve=PUBLIC)},
            settings(reaper_interval=0.02),
            clock=clock,
        )
        run = asyncio.create_task(d.run())
        for _ in range(250):
            if (await store.message_get(mid)).status is Status.SENT:
                break
            await asyncio.sleep(0.02)
        d.stop()
        stats = await asyncio.wait_for(run, 10)
    m = await store.message_get(mid)
    assert (m.status, m.attempts, stats.rescued) == (Status.SENT, 2, 1)
    outcomes = [(a.outcome, a.worker_id) for a in await store.attempt_list(mid)]
    assert outcomes == [
        (AttemptOutcome.LEASE_EXPIRED, "crashed-worker"),
        (AttemptOutcome.SENT, d.worker_id),
    ]


@pytest.mark.parametrize("status", [401, 403])
async def test_auth_refusal_of_a_webhook_receiver__is_permanent(store: Store, status: int) -> None:
    clock = FrozenClock()
    [mid] = await store.enqueue_many([hook("/auth")], clock.now())
    await drain(store, Receiver({"/auth": [httpx.Response(status)]}), clock)
    m = await store.message_get(mid)
    assert (m.status, m.last_error_code) == (Status.DEAD, ErrorCode.BAD_REQUEST)


async def test_an_outcome_survives_a_store_stall_longer_than_the_lease(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Issue 11 item 15: while the store cannot be written (here another connection holds
    the SQLite file's write lock for twice the lease), the worker keeps the outcome and
    keeps trying. It used to give up after one lease ("could not write outcomes before the
    lease ran out"), leaving a real delivery recorded only as lease_expired, and sent it
    again. Now the write lands when the store does, and the message went out once."""
    import sqlite3

    from sluice.clock import SystemClock
    from sluice.store.sqlite import SqliteStore

    path = tmp_path / "stall.db"
    store = SqliteStore(f"sqlite:///{path}", timeout=0.2)
    await store.open()
    await store.migrate()
    (mid,) = await store.enqueue_many(
        [NewMessage(tenant="acme", channel="webhook", provider="webhook",
                    recipient="https://receiver.example/once", payload={})]
    )  # fmt: skip
    holder = sqlite3.connect(path, isolation_level=None)
    sent = asyncio.Event()

    async def answer(request: httpx.Request) -> httpx.Response:
        holder.execute("BEGIN IMMEDIATE")  # the store stalls from the moment of the send
        sent.set()
        return httpx.Response(200)

    try:
        async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
            d = Dispatcher(
                store,
                {"webhook": WebhookProvider(client, SECRET, resolve=PUBLIC)},
                settings(lease_seconds=1.5, http_timeout=0.5, reaper_interval=3600),
                clock=SystemClock(),
                worker_id="w-stall",
            )
            running = asyncio.create_task(d.run())
            await sent.wait()
            await asyncio.sleep(3.0)  # twice the lease, the write lock held throughout
            holder.execute("COMMIT")
            deadline = asyncio.get_running_loop().time() + 10
            while (await store.message_get(mid)).status is not Status.SENT:
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.05)
            d.stop()
            await running
        [attempt] = await store.attempt_list(mid)
        assert (attempt.outcome, attempt.applied) == (AttemptOutcome.SENT, True)
        assert d.stats.sent == 1
    finally:
        holder.close()
        await store.close()


async def _round(
    store: Store, answer: httpx.Response, clock: FrozenClock, retry: RetryPolicy
) -> Dispatcher:
    async with httpx.AsyncClient(transport=httpx.MockTransport(lambda r: answer)) as client:
        d = Dispatcher(
            store,
            {"webhook": WebhookProvider(client, SECRET, clock=clock, resolve=PUBLIC)},
            settings(),
            clock=clock,
            retry=retry,
            worker_id="w-defer",
        )
        await d.run(until_idle=True)
        return d


@pytest.mark.parametrize(
    ("answer", "code"),
    [(httpx.Response(503), "PROVIDER_UNAVAILABLE"),
     (httpx.Response(429, headers={"Retry-After": "30"}), "RATE_LIMITED")],
    ids=["503-forever", "429-forever"],
)  # fmt: skip
async def test_throttled_forever__dead_lettered_after_the_deferral_bound(
    store: Store, answer: httpx.Response, code: str
) -> None:
    """Issue 11 item 5: a receiver answering 503 (or 429) forever used to keep its message
    forever, attempts 0 (2,000 calls over 6 days). Throttles still spend no attempt, but
    each is counted, and past the bound the message is dead-lettered saying why."""
    clock = FrozenClock()
    (mid,) = await store.enqueue_many([hook("/busy")], clock.now())
    retry = RetryPolicy(base=1, cap=8, max_deferrals=3, max_defer_age=3600)
    calls = 0
    for _ in range(6):
        d = await _round(store, answer, clock, retry)
        calls += d.stats.claimed
        clock.advance(60)
    m = await store.message_get(mid)
    assert (m.status, m.attempts, m.deferrals, m.last_error_code) == (Status.DEAD, 0, 4, code)
    assert "given up after 3 deferrals" in (m.last_error or "")
    assert "SLUICE_MAX_DEFERRALS=3" in (m.last_error or "")
    assert calls == 4  # three deferrals, then the call that found the bound spent
    assert [a.outcome for a in await store.attempt_list(mid)] == [AttemptOutcome.THROTTLED] * 4


async def test_throttled_for_too_long__dead_lettered_by_age(store: Store) -> None:
    clock = FrozenClock()
    (mid,) = await store.enqueue_many([hook("/slow-to-recover")], clock.now())
    retry = RetryPolicy(base=1, cap=8, max_deferrals=100, max_defer_age=600)
    for _ in range(3):
        await _round(store, httpx.Response(503), clock, retry)
        clock.advance(400)
    m = await store.message_get(mid)
    assert (m.status, m.deferrals) == (Status.DEAD, 3)
    assert "deferred for 13 min" in (m.last_error or "")


async def test_dlq_retry__starts_the_deferral_count_afresh(store: Store) -> None:
    from sluice.ops.actions import dlq_retry
    from sluice.store import MessageFilter

    clock = FrozenClock()
    (mid,) = await store.enqueue_many([hook("/busy-then-fine")], clock.now())
    retry = RetryPolicy(base=1, cap=8, max_deferrals=1, max_defer_age=3600)
    for _ in range(2):
        await _round(store, httpx.Response(503), clock, retry)
        clock.advance(60)
    assert (await store.message_get(mid)).status is Status.DEAD
    await dlq_retry(store, MessageFilter(), actor="ops:ana", reason="receiver fixed")
    m = await store.message_get(mid)
    assert (m.status, m.deferrals, m.deferred_since) == (Status.QUEUED, 0, None)


async def test_a_slow_limiter_delays_a_send_but_never_duplicates_it(clean_pg_url: str) -> None:
    """Issue 11 item 2: the limiter waits 4 s on a lock (a slow Redis, a lock wait), with a
    3 s lease. The worker's own reaper used to take back the live message and it went
    out again on every claim. Now the heartbeat renews what the worker holds and the
    send's deadline counts from the claim: it is late, and it goes out once."""
    import psycopg

    from sluice.clock import SystemClock
    from sluice.flow.limits import parse_limits
    from sluice.store import create_store
    from sluice.worker.limits import Limiter

    store = create_store(clean_pg_url)
    await store.open()  # type: ignore[attr-defined]
    calls: Counter[str] = Counter()

    async def answer(request: httpx.Request) -> httpx.Response:
        calls[request.url.path] += 1
        return httpx.Response(200)

    s = settings(lease_seconds=3.0, http_timeout=1.0, reaper_interval=0.3)
    try:
        blocker = await psycopg.AsyncConnection.connect(clean_pg_url, autocommit=True)
        async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
            rate = parse_limits([{"kind": "rate", "tenant": "acme", "rate": 10, "burst": 5}])
            limiter = Limiter(
                store, s, rate, clock=SystemClock(), logger=structlog.get_logger("test"),
                worker_id="w-slow",
            )  # fmt: skip
            d = Dispatcher(
                store,
                {"webhook": WebhookProvider(client, SECRET, resolve=PUBLIC)},
                s,
                clock=SystemClock(),
                worker_id="w-slow",
                limiter=limiter,
            )
            running = asyncio.create_task(d.run())
            await asyncio.sleep(1.0)  # up, and idle: its start-up sweep is done
            await blocker.execute("BEGIN")
            await blocker.execute("LOCK TABLE sluice_flow_state IN EXCLUSIVE MODE")
            (mid,) = await store.enqueue_many([hook("/once")])
            await asyncio.sleep(4.0)  # claimed; the limiter waits on the lock all this time
            await blocker.execute("COMMIT")
            deadline = asyncio.get_running_loop().time() + 10
            while (await store.message_get(mid)).status is not Status.SENT:
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.0)  # a second send, if one were coming, would be now
            d.stop()
            await running
        await blocker.close()
        assert calls == {"/once": 1}
        assert d.stats.rescued == 0
        assert [a.outcome for a in await store.attempt_list(mid)] == [AttemptOutcome.SENT]
    finally:
        await store.close()


class OrderedReceiver(Receiver):
    """Answers 200 and keeps the first path segment of every request, in arrival order."""

    def __init__(self) -> None:
        super().__init__({})
        self.order: list[str] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.order.append(request.url.path.split("/")[1])
        return await super().__call__(request)


async def test_a_small_tenant_is_served_beside_a_hundredfold_backlog(store: Store) -> None:
    """Fair claims: tenant ``big`` has 1,000 queued, ``small`` 10 enqueued after them,
    claims of 20. Counted at the receiver: ``small``'s last message arrives within the
    first claims' worth of sends, not after the whole backlog (before: at 1,010 of 1,010).
    """
    clock = FrozenClock()
    await store.enqueue_many([hook(f"/big/{i}", tenant="big") for i in range(1000)], clock.now())
    await store.enqueue_many([hook(f"/small/{i}", tenant="small") for i in range(10)], clock.now())
    receiver = OrderedReceiver()
    await drain(store, receiver, clock, worker_batch_size=20, worker_concurrency=20)
    assert len(receiver.order) == 1010  # everything sent once
    last_small = max(i for i, who in enumerate(receiver.order) if who == "small")
    assert last_small < 60, f"small's last send was number {last_small + 1} of 1010"


async def test_retries_take_at_most_every_other_slot(store: Store) -> None:
    """Retries cannot crowd out first attempts: 20 messages that failed once (older, so
    first in age order) and 20 fresh ones of one tenant; a claim of 10 takes 5 of each
    (before: 10 retries)."""
    clock = FrozenClock()
    await store.enqueue_many([hook(f"/retry/{i}") for i in range(20)], clock.now())
    await drain(store, Receiver({"/retry/" + str(i): [httpx.Response(500)] for i in range(20)}),
                clock, worker_batch_size=20)  # fmt: skip
    await store.enqueue_many([hook(f"/fresh/{i}") for i in range(20)], clock.now())
    clock.advance(60)  # every retry's backoff has passed
    claimed = await store.message_claim("w-probe", 10, 30, clock.now())
    kinds = Counter("retry" if m.attempts > 1 else "fresh" for m in claimed)
    assert kinds == {"retry": 5, "fresh": 5}
