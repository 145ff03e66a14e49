"""The Store contract: every test runs against PostgreSQL and SQLite alike."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from sluice.config import Settings
from sluice.errors import IdempotencyConflict, MigrationError, NotFound, ValidationError
from sluice.model import (
    Attempt,
    AttemptOutcome,
    Completion,
    Message,
    NewMessage,
    Status,
    new_message_id,
)
from sluice.store import AuditEntry, MessageFilter, Store, create_store
from sluice.store._audit import verify_chain

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def msg(**kw: object) -> NewMessage:
    fields: dict[str, object] = {
        "tenant": "acme",
        "channel": "webhook",
        "provider": "null",
        "recipient": "https://example.test/hook",
        "payload": {"n": 1},
    }
    fields.update(kw)
    return NewMessage(**fields)  # type: ignore[arg-type]


def done(m, status: Status = Status.SENT, *, worker: str = "w1", **kw) -> Completion:  # type: ignore[no-untyped-def]
    outcome = AttemptOutcome.SENT if status is Status.SENT else AttemptOutcome.FAILED
    return Completion(
        message_id=m.id,
        claim_seq=m.claim_seq,
        worker_id=worker,
        status=status,
        attempt=Attempt(m.id, m.claim_seq, worker, m.provider, NOW, NOW, outcome, **kw),
    )


# -- schema -------------------------------------------------------------------------


async def test_migrate__is_idempotent(store: Store) -> None:
    assert await store.migrate() == []
    assert await store.schema_pending() == []


# -- enqueue ------------------------------------------------------------------------


async def test_enqueue__stores_every_field(store: Store) -> None:
    run_at = NOW + timedelta(hours=1)
    [mid] = await store.enqueue_many(
        [
            msg(
                action="order.created",
                payload={"order": 7, "items": ["a", "b"]},
                priority=5,
                run_at=run_at,
                max_attempts=3,
                idempotency_key="k-1",
                correlation_id="corr-1",
                scopes=["calendar.events.write"],
            )
        ],
        NOW,
    )
    m = await store.message_get(mid)
    assert (m.tenant, m.channel, m.provider, m.action) == (
        "acme",
        "webhook",
        "null",
        "order.created",
    )
    assert m.payload == {"order": 7, "items": ["a", "b"]}
    assert (m.priority, m.run_at, m.max_attempts, m.attempts) == (5, run_at, 3, 0)
    assert (m.idempotency_key, m.correlation_id, m.scopes) == (
        "k-1",
        "corr-1",
        ["calendar.events.write"],
    )
    assert m.status is Status.QUEUED


async def test_enqueue__returns_ids_in_order(store: Store) -> None:
    batch = [msg(payload={"i": i}) for i in range(50)]
    ids = await store.enqueue_many(batch, NOW)
    assert ids == [m.id for m in batch]
    for i in (0, 49):
        assert (await store.message_get(ids[i])).payload == {"i": i}


async def test_enqueue__same_key_same_content_returns_first(store: Store) -> None:
    [first] = await store.enqueue_many([msg(idempotency_key="k")], NOW)
    [again] = await store.enqueue_many([msg(idempotency_key="k")], NOW)
    assert again == first
    assert (await store.status_report(NOW)).counts == {"queued": 1}


async def test_enqueue__same_key_different_content_conflicts(store: Store) -> None:
    [first] = await store.enqueue_many([msg(idempotency_key="k")], NOW)
    with pytest.raises(IdempotencyConflict) as info:
        await store.enqueue_many([msg(idempotency_key="k", payload={"n": 2})], NOW)
    assert info.value.existing_id == first
    assert (await store.message_get(first)).payload == {"n": 1}  # never overwritten


async def test_enqueue__conflict_rolls_back_the_whole_batch(store: Store) -> None:
    await store.enqueue_many([msg(idempotency_key="k")], NOW)
    with pytest.raises(IdempotencyConflict):
        await store.enqueue_many(
            [msg(payload={"new": 1}), msg(idempotency_key="k", payload={"x": 1})], NOW
        )
    assert (await store.status_report(NOW)).counts == {"queued": 1}


async def test_enqueue__key_is_per_tenant(store: Store) -> None:
    a = await store.enqueue_many([msg(tenant="a", idempotency_key="k")], NOW)
    b = await store.enqueue_many([msg(tenant="b", idempotency_key="k", payload={"other": 1})], NOW)
    assert a != b


async def test_enqueue__repeated_key_inside_one_batch_resolves_to_one_message(store: Store) -> None:
    ids = await store.enqueue_many([msg(idempotency_key="k"), msg(idempotency_key="k")], NOW)
    assert ids[0] == ids[1]
    assert (await store.status_report(NOW)).counts == {"queued": 1}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("tenant", ""),
        ("channel", " "),
        ("recipient", None),
        ("payload", [1, 2]),
        ("payload", {"x": float("nan")}),
        ("priority", 5000),
        ("priority", "high"),
        ("max_attempts", 0),
        ("run_at", datetime(2026, 1, 1)),
        ("idempotency_key", ""),
        ("scopes", "calendar.write"),
        ("tenant", "acme "),
        ("provider", "twillio"),
        ("recipient", "http://169.254.169.254/latest/meta-data/"),
    ],
)
async def test_enqueue__bad_field_is_named_and_nothing_is_stored(
    store: Store, field: str, value: object
) -> None:
    with pytest.raises(ValidationError) as info:
        await store.enqueue_many([msg(), msg(**{field: value})], NOW)
    assert info.value.field == f"messages[1].{field}"
    assert (await store.status_report(NOW)).counts == {}


async def test_enqueue__loopback_targets_follow_the_stores_settings(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SLUICE_ALLOW_LOOPBACK_TARGETS", raising=False)
    local = msg(recipient="http://127.0.0.1:8025/webhook/x")
    for allow in (False, True):
        store = create_store(store_url, Settings(allow_loopback_targets=allow))
        await store.open()  # type: ignore[attr-defined]
        try:
            if allow:
                await store.enqueue_many([local], NOW)
            else:
                with pytest.raises(ValidationError, match="SLUICE_ALLOW_LOOPBACK_TARGETS"):
                    await store.enqueue_many([local], NOW)
            assert (await store.status_report(NOW)).counts == ({"queued": 1} if allow else {})
        finally:
            await store.close()


async def test_enqueue__private_targets_follow_the_stores_settings(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLUICE_ALLOW_PRIVATE_TARGETS", "0.0.0.0/0")  # the settings win
    inside = msg(recipient="http://10.20.0.7/hook")
    listed = Settings(allow_private_targets=("10.20.0.0/16",))
    for settings in (Settings(), listed):
        store = create_store(store_url, settings)
        await store.open()  # type: ignore[attr-defined]
        try:
            if settings is listed:
                await store.enqueue_many([inside], NOW)
            else:
                with pytest.raises(ValidationError, match="SLUICE_ALLOW_PRIVATE_TARGETS"):
                    await store.enqueue_many([inside], NOW)
            with pytest.raises(ValidationError, match="cloud metadata service"):
                await store.enqueue_many([msg(recipient="http://[::ffff:169.254.169.254]/")])
            counts = (await store.status_report(NOW)).counts
            assert counts == ({"queued": 1} if settings is listed else {})
        finally:
            await store.close()


async def test_enqueue__empty_batch_is_refused(store: Store) -> None:
    with pytest.raises(ValidationError, match="messages"):
        await store.enqueue_many([], NOW)


def _varied(i: int, **kw: object) -> NewMessage:
    """Messages that exercise every column a batch writes, odd characters included."""
    return msg(
        tenant=f"t{i % 3}",
        action="order.created" if i % 2 else "send",
        payload={"i": i, "text": "tab\there, new\nline, back\\slash, \u00e9\u00e8 \u2603"},
        priority=i % 7 - 3,
        run_at=NOW + timedelta(seconds=i) if i % 4 == 0 else None,
        correlation_id=f"c\t{i}" if i % 5 == 0 else None,
        scopes=["a.write", "b\\c"] if i % 3 == 0 else [],
        ttl=60.5 + i if i % 6 == 3 else None,
        expires_at=datetime.now(UTC) + timedelta(hours=1, seconds=i) if i % 6 == 1 else None,
        verify_within=30.0 if i % 4 == 1 else None,
        **kw,
    )


def _stored_fields(m: Message) -> dict[str, object]:
    fields = dataclasses.asdict(m)
    for name in ("id", "idempotency_key"):
        del fields[name]
    return fields


@pytest.mark.parametrize("size", [1, 64, 300])
async def test_enqueue__every_way_in_stores_the_same_rows(store: Store, size: int) -> None:
    # On PostgreSQL a batch without idempotency keys goes in by COPY, one message by a
    # single-row INSERT, a keyed batch through unnest: each must store the same columns.
    with_keys = [_varied(i, idempotency_key=f"k-{i}") for i in range(size)]
    without = [dataclasses.replace(m, id=new_message_id(), idempotency_key=None) for m in with_keys]
    keyed_ids = await store.enqueue_many(with_keys, NOW)
    plain_ids = await store.enqueue_many(without, NOW)
    assert plain_ids == [m.id for m in without]
    for keyed_id, plain_id in zip(keyed_ids, plain_ids, strict=True):
        keyed, plain = await store.message_get(keyed_id), await store.message_get(plain_id)
        assert _stored_fields(plain) == _stored_fields(keyed)
        assert plain.created_at == NOW


async def test_enqueue__a_batch_on_server_time_is_stamped_once(store: Store) -> None:
    batch = [_varied(i) for i in range(100)]
    ids = await store.enqueue_many(batch)
    stored = [await store.message_get(mid) for mid in ids]
    created = {m.created_at for m in stored}
    assert len(created) == 1
    [at] = created
    assert at is not None and abs(at - datetime.now(UTC)) < timedelta(minutes=1)
    for m, sent in zip(stored, batch, strict=True):
        assert m.run_at == (sent.run_at or at)
        assert m.expires_at == (
            sent.expires_at or (at + timedelta(seconds=sent.ttl) if sent.ttl else None)
        )


# -- claim --------------------------------------------------------------------------


async def test_claim__highest_priority_then_oldest_first(store: Store) -> None:
    low = await store.enqueue_many([msg(priority=0, run_at=NOW - timedelta(minutes=5))], NOW)
    high_new = await store.enqueue_many([msg(priority=9, run_at=NOW - timedelta(minutes=1))], NOW)
    high_old = await store.enqueue_many([msg(priority=9, run_at=NOW - timedelta(minutes=2))], NOW)
    order = []
    for _ in range(3):
        [m] = await store.message_claim("w1", 1, 30, NOW)
        order.append(m.id)
    assert order == [high_old[0], high_new[0], low[0]]


async def test_claim__shares_slots_between_tenants(store: Store) -> None:
    big = await store.enqueue_many([msg(tenant="big", payload={"i": i}) for i in range(50)], NOW)
    small = await store.enqueue_many([msg(tenant="small", payload={"i": i}) for i in range(3)], NOW)
    claimed = await store.message_claim("w1", 10, 30, NOW)
    assert {m.id for m in claimed if m.tenant == "small"} == set(small)
    assert len(claimed) == 10 and {m.id for m in claimed} - set(small) <= set(big)


async def test_claim__priority_orders_a_tenants_own_messages_not_the_others(store: Store) -> None:
    """A tenant cannot jump the queue of others by marking everything urgent."""
    await store.enqueue_many(
        [msg(tenant="loud", priority=9, payload={"i": i}) for i in range(9)], NOW
    )
    [quiet] = await store.enqueue_many([msg(tenant="quiet", priority=0)], NOW)
    assert quiet in {m.id for m in await store.message_claim("w1", 2, 30, NOW)}


async def test_claim__more_tenants_than_slots_take_turns(store: Store) -> None:
    tenants = [f"t{i}" for i in range(7)]
    await store.enqueue_many(
        [msg(tenant=t, payload={"i": i}) for t in tenants for i in range(3)], NOW
    )
    served: list[str] = []
    for _ in range(4):
        served += [m.tenant for m in await store.message_claim("w1", 2, 30, NOW)]
    assert set(served) == set(tenants)  # every tenant within 4 claims of 2


async def test_claim__leaves_future_messages(store: Store) -> None:
    await store.enqueue_many([msg(run_at=NOW + timedelta(seconds=10))], NOW)
    assert await store.message_claim("w1", 10, 30, NOW) == []
    assert len(await store.message_claim("w1", 10, 30, NOW + timedelta(seconds=10))) == 1


async def test_claim__leases_and_counts_the_attempt(store: Store) -> None:
    [mid] = await store.enqueue_many([msg()], NOW)
    [m] = await store.message_claim("w1", 10, 30, NOW)
    assert (m.id, m.attempts, m.claim_seq, m.status) == (mid, 1, 1, Status.SENDING)
    stored = await store.message_get(mid)
    assert stored.status is Status.SENDING
    assert stored.worker_id == "w1"
    assert stored.lease_until == NOW + timedelta(seconds=30)
    assert await store.message_claim("w2", 10, 30, NOW) == []  # never claimed twice


async def test_claim__respects_limit(store: Store) -> None:
    await store.enqueue_many([msg(payload={"i": i}) for i in range(10)], NOW)
    assert len(await store.message_claim("w1", 4, 30, NOW)) == 4
    assert len(await store.message_claim("w2", 100, 30, NOW)) == 6


# -- complete -----------------------------------------------------------------------


async def test_complete__writes_outcome_and_attempt(store: Store) -> None:
    [mid] = await store.enqueue_many([msg()], NOW)
    [m] = await store.message_claim("w1", 1, 30, NOW)
    c = done(m, latency_ms=12.5, provider_status="HTTP 200")
    c.provider_message_id = "prov-1"
    assert await store.message_complete_many("w1", [c], NOW) == {mid}
    stored = await store.message_get(mid)
    assert (stored.status, stored.provider_message_id, stored.lease_until) == (
        Status.SENT,
        "prov-1",
        None,
    )
    [a] = await store.attempt_list(mid)
    assert (a.attempt_no, a.outcome, a.worker_id, a.latency_ms, a.applied) == (
        1,
        AttemptOutcome.SENT,
        "w1",
        12.5,
        True,
    )


async def test_complete__stale_claim_cannot_overwrite_newer_outcome(store: Store) -> None:
    [mid] = await store.enqueue_many([msg()], NOW)
    [stale] = await store.message_claim("w1", 1, 30, NOW)
    later = NOW + timedelta(seconds=31)
    await store.message_rescue_expired(later)
    [fresh] = await store.message_claim("w2", 1, 30, later)
    assert await store.message_complete_many("w2", [done(fresh, worker="w2")], later) == {mid}
    # The frozen first worker wakes up and reports a failure: it must not land.
    assert await store.message_complete_many("w1", [done(stale, Status.DEAD)], later) == set()
    assert (await store.message_get(mid)).status is Status.SENT
    outcomes = [(a.attempt_no, a.outcome, a.applied) for a in await store.attempt_list(mid)]
    assert (1, AttemptOutcome.LEASE_EXPIRED, True) in outcomes
    assert (1, AttemptOutcome.FAILED, False) in outcomes  # recorded, not applied
    assert (2, AttemptOutcome.SENT, True) in outcomes


async def test_complete__retry_requeues_at_run_at(store: Store) -> None:
    [mid] = await store.enqueue_many([msg()], NOW)
    [m] = await store.message_claim("w1", 1, 30, NOW)
    c = done(m, Status.QUEUED, error_code="TIMEOUT")
    c.run_at = NOW + timedelta(seconds=8)
    await store.message_complete_many("w1", [c], NOW)
    stored = await store.message_get(mid)
    assert (stored.status, stored.attempts, stored.last_error_code) == (Status.QUEUED, 1, "TIMEOUT")
    assert await store.message_claim("w1", 1, 30, NOW + timedelta(seconds=7)) == []
    [again] = await store.message_claim("w1", 1, 30, NOW + timedelta(seconds=8))
    assert (again.attempts, again.claim_seq) == (2, 2)


async def test_complete__refunded_attempt_does_not_count(store: Store) -> None:
    [mid] = await store.enqueue_many([msg()], NOW)
    [m] = await store.message_claim("w1", 1, 30, NOW)
    c = done(m, Status.QUEUED, error_code="RATE_LIMITED")
    c.refund_attempt = True
    await store.message_complete_many("w1", [c], NOW)
    stored = await store.message_get(mid)
    assert (stored.attempts, stored.claim_seq) == (0, 1)


async def test_complete__batch_of_mixed_outcomes(store: Store) -> None:
    ids = await store.enqueue_many([msg(payload={"i": i}) for i in range(6)], NOW)
    claimed = await store.message_claim("w1", 6, 30, NOW)
    comps = [
        done(m, Status.SENT) if i % 2 else done(m, Status.DEAD, error_code="BAD_REQUEST")
        for i, m in enumerate(claimed)
    ]
    assert await store.message_complete_many("w1", comps, NOW) == set(ids)
    assert (await store.status_report(NOW)).counts == {"sent": 3, "dead": 3}


# -- leases -------------------------------------------------------------------------


async def test_rescue__returns_expired_leases_and_records_lease_expired(store: Store) -> None:
    [mid] = await store.enqueue_many([msg()], NOW)
    await store.message_claim("w1", 1, 30, NOW)
    assert (await store.message_rescue_expired(NOW + timedelta(seconds=29))).requeued == []
    result = await store.message_rescue_expired(NOW + timedelta(seconds=31))
    assert result.requeued == [mid]
    stored = await store.message_get(mid)
    assert (stored.status, stored.attempts, stored.last_error_code) == (
        Status.QUEUED,
        1,
        "LEASE_EXPIRED",
    )
    [a] = await store.attempt_list(mid)
    assert (a.outcome, a.error_code, a.worker_id) == (
        AttemptOutcome.LEASE_EXPIRED,
        "LEASE_EXPIRED",
        "w1",
    )


async def test_renew__a_live_workers_claims_keep_their_leases(store: Store) -> None:
    a, b = await store.enqueue_many([msg(payload={"i": 1}), msg(payload={"i": 2})], NOW)
    claimed = {m.id: m for m in await store.message_claim("w1", 2, 30, NOW)}
    claims = [(a, claimed[a].claim_seq), (b, claimed[b].claim_seq)]
    later = NOW + timedelta(seconds=25)
    assert sorted(await store.message_renew("w1", claims, 30, later)) == sorted([a, b])
    # Past the first lease, inside the renewed one: nothing to rescue.
    assert (await store.message_rescue_expired(NOW + timedelta(seconds=40))).requeued == []
    # Another worker's renewal, a stale claim number, or a shorter lease change nothing.
    assert await store.message_renew("w2", claims, 300, later) == []
    assert await store.message_renew("w1", [(a, claimed[a].claim_seq + 1)], 300, later) == []
    assert sorted(await store.message_renew("w1", claims, 1, NOW)) == sorted([a, b])
    assert (await store.message_rescue_expired(NOW + timedelta(seconds=54))).requeued == []
    result = await store.message_rescue_expired(NOW + timedelta(seconds=56))
    assert sorted(result.requeued) == sorted([a, b])
    # Taken back: no longer this worker's to renew.
    assert await store.message_renew("w1", claims, 30, NOW + timedelta(seconds=57)) == []
    assert await store.message_renew("w1", [], 30, NOW) == []


async def test_rescue__dead_letters_when_attempts_are_exhausted(store: Store) -> None:
    [mid] = await store.enqueue_many([msg(max_attempts=1)], NOW)
    await store.message_claim("w1", 1, 30, NOW)
    result = await store.message_rescue_expired(NOW + timedelta(minutes=1))
    assert result.dead == [mid]
    assert (await store.message_get(mid)).status is Status.DEAD


async def test_release__returns_unstarted_claims_with_attempt_refunded(store: Store) -> None:
    [mid] = await store.enqueue_many([msg()], NOW)
    [m] = await store.message_claim("w1", 1, 30, NOW)
    assert await store.message_release("w2", [(mid, m.claim_seq)], NOW) == []  # not yours
    assert await store.message_release("w1", [(mid, m.claim_seq)], NOW) == [mid]
    stored = await store.message_get(mid)
    assert (stored.status, stored.attempts) == (Status.QUEUED, 0)
    assert await store.attempt_list(mid) == []


# -- reading ------------------------------------------------------------------------


async def test_message_get__unknown_id_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.message_get("01a20894-f698-7944-b912-c60a04f276af")
    with pytest.raises(NotFound):
        await store.message_get("not-a-uuid")


async def test_status_report__counts_oldest_and_dead(store: Store) -> None:
    await store.enqueue_many([msg(run_at=NOW - timedelta(seconds=90))], NOW)
    await store.enqueue_many([msg(run_at=NOW + timedelta(hours=1))], NOW)  # not waiting yet
    [d] = await store.enqueue_many([msg(channel="sms", recipient="+14155550100")], NOW)
    [m] = [c for c in await store.message_claim("w1", 5, 30, NOW) if c.id == d] or [None]
    report = await store.status_report(NOW)
    assert report.counts["queued"] + report.counts.get("sending", 0) == 3
    assert m is not None
    await store.message_complete_many(
        "w1", [done(m, Status.DEAD, error_code="INVALID_RECIPIENT")], NOW
    )
    report = await store.status_report(NOW)
    assert report.oldest_ready_age_seconds is None or report.oldest_ready_age_seconds >= 0
    assert [(g.channel, g.error_code, g.count) for g in report.dead] == [
        ("sms", "INVALID_RECIPIENT", 1)
    ]


# -- dead letters -------------------------------------------------------------------


async def _dead(store: Store, n: int, **kw: object) -> list[str]:
    ids = await store.enqueue_many([msg(payload={"i": i}, **kw) for i in range(n)], NOW)
    claimed = await store.message_claim("w1", n, 30, NOW)
    code = str(kw.pop("code", "PROVIDER_ERROR"))  # type: ignore[arg-type]
    await store.message_complete_many(
        "w1", [done(m, Status.DEAD, error_code=code) for m in claimed], NOW
    )
    return ids


async def test_dlq__groups_filters_and_replays_with_audit(store: Store) -> None:
    await _dead(store, 3, channel="sms", tenant="a", recipient="+14155550100")
    await _dead(store, 2, channel="email", tenant="b", recipient="ann@example.com")
    groups = await store.dlq_groups(MessageFilter())
    assert [(g.channel, g.count) for g in groups] == [("sms", 3), ("email", 2)]
    assert [g.channel for g in await store.dlq_groups(MessageFilter(tenant="b"))] == ["email"]
    ids = await store.message_select("dead", MessageFilter(channel="sms", limit=2))
    assert len(ids) == 2
    audit = AuditEntry(at=NOW, actor="oncall", action="dlq.retry", reason="scopes fixed")
    moved = await store.message_requeue(ids, "dead", NOW, audit)
    assert sorted(moved) == sorted(ids)
    for mid in ids:
        m = await store.message_get(mid)
        assert (m.status, m.attempts) == (Status.QUEUED, 0)
    [entry] = await store.audit_list()
    assert (entry.actor, entry.action, entry.reason, entry.detail["count"]) == (
        "oncall",
        "dlq.retry",
        "scopes fixed",
        2,
    )
    # Replaying again changes nothing: they are no longer dead.
    assert await store.message_requeue(ids, "dead", NOW, audit) == []


async def test_dlq__cancel(store: Store) -> None:
    ids = await _dead(store, 2)
    audit = AuditEntry(at=NOW, actor="oncall", action="dlq.cancel")
    assert sorted(await store.message_cancel(ids, "dead", NOW, audit)) == sorted(ids)
    assert (await store.status_report(NOW)).counts == {"cancelled": 2}


async def test_dlq__since_filter(store: Store) -> None:
    await _dead(store, 2)
    assert await store.message_select("dead", MessageFilter(since=NOW + timedelta(seconds=1))) == []
    assert (
        len(await store.message_select("dead", MessageFilter(since=NOW - timedelta(seconds=1))))
        == 2
    )


# -- audit --------------------------------------------------------------------------


async def test_audit__is_hash_chained(store: Store) -> None:
    for i in range(3):
        await store.audit_append(
            AuditEntry(at=NOW + timedelta(seconds=i), actor="a", action=f"act{i}", detail={"i": i})
        )
    entries = list(reversed(await store.audit_list()))
    assert [e.action for e in entries] == ["act0", "act1", "act2"]
    assert verify_chain(entries) is None
    tampered = list(entries)
    tampered[1] = dataclasses.replace(entries[1], actor="mallory")
    assert verify_chain(tampered) == tampered[1].id


def state(allow: list[str], actor: str = "worker:a", target: str | None = "LIST") -> AuditEntry:
    return AuditEntry(
        at=NOW, actor=actor, action="list.seen", target=target, detail={"allow": allow}
    )


async def test_audit_append_changed__writes_a_state_only_when_it_changes(store: Store) -> None:
    empty = {"allow": []}
    assert await store.audit_append_changed(state([]), initial=empty) is None  # as it was
    first = await store.audit_append_changed(state(["10.0.0.0/8"]), initial=empty)
    again = await store.audit_append_changed(state(["10.0.0.0/8"], "worker:b"), initial=empty)
    await store.audit_append(AuditEntry(at=NOW, actor="ops", action="other"))
    changed = await store.audit_append_changed(state(["10.0.0.0/8", "x.example"]))
    cleared = await store.audit_append_changed(state([]), initial=empty)

    assert first is not None and first.actor == "worker:a" and first.hash is not None
    assert again is None
    assert changed is not None and cleared is not None
    entries = list(reversed(await store.audit_list()))
    assert [(e.action, e.detail) for e in entries] == [
        ("list.seen", {"allow": ["10.0.0.0/8"]}),
        ("other", {}),
        ("list.seen", {"allow": ["10.0.0.0/8", "x.example"]}),
        ("list.seen", {"allow": []}),
    ]
    assert verify_chain(entries) is None


async def test_audit_append_changed__compares_within_its_action_and_target(store: Store) -> None:
    assert await store.audit_append_changed(state(["a"], target=None)) is not None  # no initial
    assert await store.audit_append_changed(state(["a"], target="OTHER")) is not None
    assert await store.audit_append_changed(state(["a"], target=None)) is None
    assert await store.audit_append_changed(state(["a"], target="OTHER")) is None
    assert len(await store.audit_list()) == 2


async def test_audit_append_changed__processes_starting_together_write_it_once(
    store: Store,
) -> None:
    import asyncio

    written = await asyncio.gather(
        *(store.audit_append_changed(state(["10.0.0.0/8"], f"worker:{i}")) for i in range(6))
    )

    assert sum(e is not None for e in written) == 1
    assert len(await store.audit_list()) == 1


# -- workers ------------------------------------------------------------------------


async def test_workers__heartbeat_and_stop(store: Store) -> None:
    await store.worker_heartbeat("w1", "host-a", 123, 4, 10, NOW)
    await store.worker_heartbeat("w1", "host-a", 123, 2, 15, NOW + timedelta(seconds=5))
    [w] = await store.worker_list(NOW - timedelta(minutes=1))
    assert (w.id, w.in_flight, w.sent_total, w.stopped_at) == ("w1", 2, 15, None)
    await store.worker_stop("w1", NOW + timedelta(seconds=6))
    [w] = await store.worker_list(NOW - timedelta(minutes=1))
    assert w.stopped_at is not None
    assert await store.worker_list(NOW + timedelta(minutes=1)) == []


async def test_missing_schema_says_run_migrate(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from sluice.store import create_store

    s = create_store(f"sqlite:///{tmp_path / 'empty.db'}")
    await s.open()  # type: ignore[attr-defined]
    try:
        with pytest.raises(MigrationError, match="sluice migrate"):
            await s.status_report(NOW)
    finally:
        await s.close()


async def test_dlq__dead_letters_without_a_code_are_the_unknown_group_everywhere(
    store: Store,
) -> None:
    """The group listed as UNKNOWN is the one its filter selects, lists and retries."""
    ids = await store.enqueue_many([msg(payload={"i": i}) for i in range(2)], NOW)
    claimed = await store.message_claim("w1", 2, 30, NOW)
    rows = [done(claimed[0], Status.DEAD), done(claimed[1], Status.DEAD, error_code="TIMEOUT")]
    await store.message_complete_many("w1", rows, NOW)
    groups = await store.dlq_groups(MessageFilter(error_code="UNKNOWN"))
    assert [(g.error_code, g.count) for g in groups] == [("UNKNOWN", 1)]
    uncoded = [m.id for m in claimed[:1]]
    assert await store.message_select("dead", MessageFilter(error_code="UNKNOWN")) == uncoded
    assert set(ids) >= set(uncoded)


async def test_dlq_groups__every_filter_applies(store: Store) -> None:
    """Each filter of a DLQ listing narrows it (they were accepted and ignored before)."""
    rows = [
        msg(tenant="a", provider="null", action="x", payload={"i": 1}),
        msg(tenant="a", provider="webhook", action="x", payload={"i": 2}),
        msg(tenant="b", provider="null", action="y", payload={"i": 3}),
    ]
    ids = await store.enqueue_many(rows, NOW)
    claimed = {m.id: m for m in await store.message_claim("w1", 10, 30, NOW)}
    codes = {ids[0]: "TIMEOUT", ids[1]: "ENDPOINT_GONE", ids[2]: "TIMEOUT"}
    for mid in ids:
        await store.message_complete_many(
            "w1", [done(claimed[mid], Status.DEAD, error_code=codes[mid])],
            NOW + timedelta(minutes=ids.index(mid)),
        )  # fmt: skip

    async def count(**kw: object) -> int:
        return sum(g.count for g in await store.dlq_groups(MessageFilter(**kw)))  # type: ignore[arg-type]

    assert await count() == 3
    assert await count(tenant="a") == 2
    assert await count(provider="webhook") == 1
    assert await count(action="y") == 1
    assert await count(error_code="TIMEOUT") == 2
    assert await count(since=NOW + timedelta(minutes=1)) == 2
    assert await count(tenant="a", error_code="TIMEOUT", provider="null") == 1
