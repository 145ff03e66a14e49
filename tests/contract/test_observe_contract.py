"""The Store contract for ``observe``, the read behind the state metrics: every test runs
against PostgreSQL and SQLite alike."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dying import dying
from sluice.flow.controls import Mode, Scope
from sluice.model import Attempt, AttemptOutcome, Completion, NewMessage, Status
from sluice.store import AuditEntry, Store

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def msg(**kw: object) -> NewMessage:
    fields: dict[str, object] = {
        "tenant": "acme",
        "channel": "sms",
        "provider": "null",
        "recipient": "+15550001111",
        "payload": {"n": 1},
    }
    fields.update(kw)
    return NewMessage(**fields)  # type: ignore[arg-type]


def failed(m, status: Status, code: str = "INVALID_RECIPIENT", **kw) -> Completion:  # type: ignore[no-untyped-def]
    attempt = Attempt(m.id, m.claim_seq, "w1", m.provider, NOW, NOW, AttemptOutcome.FAILED,
                      error_code=code)  # fmt: skip
    return Completion(m.id, m.claim_seq, "w1", status, attempt, **kw)


async def test_observe__an_empty_store(store: Store) -> None:
    seen = await store.observe(NOW)
    assert seen.messages == [] and seen.dead == [] and seen.held == {}
    assert (seen.oldest_ready_created, seen.oldest_ready_due) == (None, None)
    assert seen.retrying == {1: 0, 3: 0}
    assert (seen.inbox, seen.inbox_oldest_pending, seen.tenancy_violations) == ({}, None, 0)


async def test_observe__counts_work_by_status_channel_provider(store: Store) -> None:
    await store.enqueue_many([msg(), msg(), msg(channel="email", recipient="ann@example.com")], NOW)
    await store.enqueue_many([msg(payload={"n": 2})], NOW)
    [m] = await store.message_claim("w1", 1, 30, NOW)
    seen = await store.observe(NOW)
    counts = {(s, c, p): n for s, c, p, n in seen.messages}
    assert sum(counts.values()) == 4
    assert counts[("sending", m.channel, "null")] == 1
    assert sum(n for (s, _, _), n in counts.items() if s == "queued") == 3


async def test_observe__oldest_ready_by_creation_not_by_due_time(store: Store) -> None:
    """A message deferred for hours is not fresh: its age counts from its creation."""
    old = NOW - timedelta(hours=3)
    await store.enqueue_many([msg(run_at=NOW - timedelta(seconds=5))], old)
    await store.enqueue_many([msg(payload={"later": 1}, run_at=NOW + timedelta(hours=1))], NOW)
    seen = await store.observe(NOW)
    assert seen.oldest_ready_created == old
    assert seen.oldest_ready_due == NOW - timedelta(seconds=5)


async def test_observe__dead_letters_by_channel_and_code(store: Store) -> None:
    await store.enqueue_many([msg(payload={"i": i}) for i in range(3)], NOW)
    claimed = await store.message_claim("w1", 3, 30, NOW)
    await store.message_complete_many(
        "w1",
        [failed(claimed[0], Status.DEAD), failed(claimed[1], Status.DEAD),
         failed(claimed[2], Status.DEAD, "ENDPOINT_GONE")],
        NOW,
    )  # fmt: skip
    seen = await store.observe(NOW)
    assert sorted(seen.dead) == [("sms", "ENDPOINT_GONE", 1), ("sms", "INVALID_RECIPIENT", 2)]


async def test_observe__retries_waiting(store: Store) -> None:
    await store.enqueue_many([msg()], NOW)
    [m] = await store.message_claim("w1", 1, 30, NOW)
    await store.message_complete_many(
        "w1", [failed(m, Status.QUEUED, "TIMEOUT", run_at=NOW + timedelta(seconds=30))], NOW
    )
    assert (await store.observe(NOW)).retrying == {1: 1, 3: 0}


async def test_observe__held_by_reason_and_since_when(store: Store) -> None:
    await store.enqueue_many([msg(tenant="k"), msg(tenant="k", payload={"n": 2})], NOW)
    await store.control_set(
        Scope.of(tenant="k"), Mode.KILLED, actor="ops", reason="x", expires_at=None, now=NOW
    )
    await store.control_hold_queued(NOW + timedelta(seconds=1))
    seen = await store.observe(NOW + timedelta(minutes=5))
    assert seen.held == {"control": (2, NOW + timedelta(seconds=1))}


async def test_observe__tenancy_violations_from_the_audit_log(store: Store) -> None:
    for _ in range(2):
        await store.audit_append(
            AuditEntry(at=NOW, actor="ingress", action="tenancy.violation", target="twilio")
        )
    await store.audit_append(AuditEntry(at=NOW, actor="ops", action="control.set"))
    assert (await store.observe(NOW)).tenancy_violations == 2


async def test_observe__one_moment_while_messages_move(store: Store, store_url: str) -> None:
    """Every figure of one observation is read at one moment: while another process
    claims messages and writes them back dead, each message is counted once (never in
    two states, never in none), and the dead letters agree with the dead count."""
    total = 120
    seen_while_moving = 0
    async with dying(store, store_url, total, NOW) as moving:
        while not moving.done():
            seen = await store.observe(NOW)
            by_status: dict[str, int] = {}
            for status, _channel, _provider, n in seen.messages:
                by_status[status] = by_status.get(status, 0) + n
            assert sum(by_status.values()) == total, by_status
            assert by_status.get("dead", 0) == sum(n for *_, n in seen.dead), (by_status, seen.dead)
            seen_while_moving += 0 < by_status.get("dead", 0) < total
    assert seen_while_moving >= 3  # the observations did overlap the moves
