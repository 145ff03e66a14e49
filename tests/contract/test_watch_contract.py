"""The figures ``sluice status --watch`` shows (``sluice.ops.watch.snapshot``), read from
state built on PostgreSQL and SQLite alike."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sluice.config import Settings
from sluice.flow.controls import Mode, Scope
from sluice.model import Attempt, AttemptOutcome, Completion, NewMessage, Status
from sluice.ops.breakers import breaker_force
from sluice.ops.watch import TOP_DEAD, snapshot
from sluice.store import Store
from sluice.store.base import Firing

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
SETTINGS = Settings(database_url="postgresql://ops:s3cret@db.example:5432/sluice")


def msg(n: int, **kw: object) -> NewMessage:
    fields: dict[str, object] = {
        "tenant": "acme",
        "channel": "sms",
        "provider": "null",
        "recipient": "+15550001111",
        "payload": {"n": n},
    }
    fields.update(kw)
    return NewMessage(**fields)  # type: ignore[arg-type]


def done(m, status: Status, outcome: AttemptOutcome, at: datetime, code: str | None = None):  # type: ignore[no-untyped-def]
    attempt = Attempt(m.id, m.claim_seq, "w1", m.provider, at, at, outcome, error_code=code)
    return Completion(m.id, m.claim_seq, "w1", status, attempt)


async def test_snapshot__an_empty_store_shows_zeros_and_nothing_listed(store: Store) -> None:
    snap = await snapshot(store, SETTINGS, NOW)

    assert snap.depth == {"queued": 0, "sending": 0, "held": 0, "dead": 0}
    assert [(r.window_seconds, r.sent, r.failed, r.deferred) for r in snap.rates] == [
        (60, 0, 0, 0),
        (300, 0, 0, 0),
    ]
    assert snap.rates[0].success is None
    assert snap.oldest_ready_age_seconds is None
    assert (snap.dead_total, snap.dead, snap.held, snap.breakers) == (0, [], [], [])
    assert (snap.throttles, snap.workers, snap.incidents, snap.live_workers) == ([], [], [], 0)


async def test_snapshot__rates_depth_dead_letters_and_oldest_age(store: Store) -> None:
    created = NOW - timedelta(minutes=10)
    await store.enqueue_many([msg(n) for n in range(8)], created)
    claimed = await store.message_claim("w1", 6, 600, NOW - timedelta(minutes=4))
    recent, earlier = NOW - timedelta(seconds=20), NOW - timedelta(minutes=3)
    await store.message_complete_many(
        "w1",
        [
            done(claimed[0], Status.SENT, AttemptOutcome.SENT, recent),
            done(claimed[1], Status.SENT, AttemptOutcome.SENT, earlier),
            done(claimed[2], Status.DEAD, AttemptOutcome.FAILED, recent, "INVALID_RECIPIENT"),
            done(claimed[3], Status.DEAD, AttemptOutcome.FAILED, earlier, "INVALID_RECIPIENT"),
            done(claimed[4], Status.DEAD, AttemptOutcome.FAILED, earlier, "ENDPOINT_GONE"),
        ],
        NOW - timedelta(seconds=20),
    )
    # claimed[5] stays sending; two were never claimed and are due.

    snap = await snapshot(store, SETTINGS, NOW)

    assert snap.depth == {"queued": 2, "sending": 1, "held": 0, "dead": 3}
    last_1m, last_5m = snap.rates
    assert (last_1m.sent, last_1m.failed, last_1m.deferred) == (1, 1, 0)
    assert (last_5m.sent, last_5m.failed) == (2, 3)
    assert last_5m.per_minute(last_5m.failed) == 0.6
    assert last_5m.success == 0.4
    # By creation (ten minutes), not by when it fell due.
    assert snap.oldest_ready_age_seconds == 600.0
    assert snap.dead_total == 3
    assert [(g.channel, g.error_code, g.count) for g in snap.dead] == [
        ("sms", "INVALID_RECIPIENT", 2),
        ("sms", "ENDPOINT_GONE", 1),
    ]
    assert snap.store == "postgresql://ops:***@db.example:5432/sluice"


async def test_snapshot__deferrals_count_apart_from_failures(store: Store) -> None:
    await store.enqueue_many([msg(1), msg(2)], NOW - timedelta(minutes=1))
    a, b = await store.message_claim("w1", 2, 600, NOW - timedelta(seconds=30))
    await store.message_complete_many(
        "w1",
        [
            done(a, Status.QUEUED, AttemptOutcome.THROTTLED, NOW, "RATE_LIMITED"),
            done(b, Status.QUEUED, AttemptOutcome.DEFERRED, NOW),
        ],
        NOW,
    )

    last_1m = (await snapshot(store, SETTINGS, NOW)).rates[0]

    assert (last_1m.sent, last_1m.failed, last_1m.deferred) == (0, 0, 2)
    assert last_1m.success is None


async def test_snapshot__only_the_largest_dead_letter_groups_but_every_one_counted(
    store: Store,
) -> None:
    n = TOP_DEAD + 2
    await store.enqueue_many([msg(i) for i in range(n + 1)], NOW)
    claimed = await store.message_claim("w1", n + 1, 600, NOW)
    codes = [f"CODE_{i:02}" for i in range(n)] + ["CODE_00"]
    dead = [done(m, Status.DEAD, AttemptOutcome.FAILED, NOW, c) for m, c in zip(claimed, codes)]
    await store.message_complete_many("w1", dead, NOW)

    snap = await snapshot(store, SETTINGS, NOW)

    assert snap.dead_total == n + 1 and snap.dead_groups == n
    assert len(snap.dead) == TOP_DEAD
    assert (snap.dead[0].error_code, snap.dead[0].count) == ("CODE_00", 2)


async def test_snapshot__held_breakers_throttles_workers_and_open_incidents(store: Store) -> None:
    await store.enqueue_many([msg(1, tenant="k"), msg(2, tenant="k")], NOW)
    await store.control_set(
        Scope.of(tenant="k"), Mode.KILLED, actor="ops", reason="x", expires_at=None, now=NOW
    )
    await store.control_hold_queued(NOW)
    await breaker_force(store, "twilio", "open", actor="ops", reason="vendor down", now=NOW)
    await store.throttle_set("acme", "twilio", NOW + timedelta(minutes=2), "RATE_LIMITED", NOW)
    await store.worker_heartbeat("w-live", "host-a", 1, 3, 10, NOW - timedelta(seconds=5))
    await store.worker_heartbeat("w-stale", "host-b", 2, 0, 0, NOW - timedelta(minutes=2))
    await store.worker_heartbeat("w-gone", "host-c", 3, 0, 0, NOW - timedelta(minutes=1))
    await store.worker_stop("w-gone", NOW - timedelta(minutes=1))
    firing = Firing(
        rule="SluiceDeadLetters", scope={"channel": "sms"}, severity="P2", types=("QUEUE",),
        runbook="002#2", summary="dead letters", value=3,
    )  # fmt: skip
    await store.incident_fire(firing, NOW - timedelta(minutes=7))

    snap = await snapshot(store, SETTINGS, NOW + timedelta(minutes=5))

    assert snap.depth["held"] == 2
    assert [(h.reason, h.count, h.oldest_age_seconds) for h in snap.held] == [("control", 2, 300.0)]
    assert [(b.key, b.state.value, b.forced) for b in snap.breakers] == [("p:twilio", "open", True)]
    assert [(t.tenant, t.provider) for t in snap.throttles] == []  # it ran out at +2 min
    assert [(w.id, w.heartbeat_age_seconds, w.live) for w in snap.workers] == [
        ("w-live", 305.0, False),
        ("w-stale", 420.0, False),
    ]
    assert [(i.rule, i.scope_key, i.severity) for i in snap.incidents] == [
        ("SluiceDeadLetters", "channel=sms", "P2")
    ]

    now = await snapshot(store, SETTINGS, NOW)
    assert [(t.tenant, t.provider, t.reason) for t in now.throttles] == [
        ("acme", "twilio", "RATE_LIMITED")
    ]
    assert [(w.id, w.live) for w in now.workers] == [("w-live", True), ("w-stale", False)]
    assert now.live_workers == 1
