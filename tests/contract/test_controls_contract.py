"""The Store contract for controls, the flow epoch, acknowledgements and held messages:
every test runs against PostgreSQL and SQLite alike."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sluice.flow.controls import Mode, Scope
from sluice.model import Attempt, AttemptOutcome, Completion, NewMessage, Status
from sluice.store import AuditEntry, MessageFilter, Store

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


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


async def set_mode(store: Store, scope: Scope, mode: Mode, **kw: object) -> int:
    control = await store.control_set(
        scope,
        mode,
        actor="ops:ana",
        reason="test",
        expires_at=kw.get("expires_at"),  # type: ignore[arg-type]
        now=NOW,
    )
    return control.version


async def claimed_ids(store: Store, limit: int = 100) -> set[str]:
    return {m.id for m in await store.message_claim("w1", limit, 30, NOW)}


async def test_flow_version__starts_at_zero_and_every_change_bumps_it(store: Store) -> None:
    assert await store.flow_version() == 0
    v1 = await set_mode(store, Scope.of(tenant="acme"), Mode.KILLED)
    v2 = await set_mode(store, Scope.of(tenant="acme"), Mode.PAUSED)
    assert (v1, v2) == (1, 2)
    assert await store.flow_version() == 2
    await store.control_clear(
        Scope.of(tenant="acme"), actor="ops", reason="done", release=False, now=NOW
    )
    assert await store.flow_version() == 3


async def test_control_set__one_row_per_scope_and_audited(store: Store) -> None:
    scope = Scope.of(tenant="acme", provider="twilio")
    await set_mode(store, scope, Mode.KILLED)
    await set_mode(store, scope, Mode.SHADOW)
    await set_mode(store, Scope.of(channel="sms"), Mode.PAUSED)
    controls = await store.control_list()
    assert [(c.scope, c.mode) for c in controls] == [
        (Scope.of(channel="sms"), Mode.PAUSED),
        (scope, Mode.SHADOW),
    ]
    audit = [e for e in await store.audit_list() if e.action == "control.set"]
    assert len(audit) == 3
    assert audit[0].actor == "ops:ana" and audit[0].detail["mode"] == "paused"


async def test_claim__skips_killed_and_paused_scopes_only(store: Store) -> None:
    killed, paused, other, shadowed = await store.enqueue_many(
        [
            msg(tenant="acme"),
            msg(tenant="beta", action="reminder"),
            msg(tenant="beta", action="receipt"),
            msg(tenant="gamma"),
        ]
    )
    await set_mode(store, Scope.of(tenant="acme"), Mode.KILLED)
    await set_mode(store, Scope.of(tenant="beta", action="reminder"), Mode.PAUSED)
    await set_mode(store, Scope.of(tenant="gamma"), Mode.SHADOW)
    # Shadow and approval are decided by the worker, not the claim.
    assert await claimed_ids(store) == {other, shadowed}
    assert (await store.message_get(killed)).status is Status.QUEUED
    assert (await store.message_get(paused)).status is Status.QUEUED


async def test_claim__an_expired_control_no_longer_applies(store: Store) -> None:
    [mid] = await store.enqueue_many([msg()])
    await set_mode(store, Scope(), Mode.KILLED, expires_at=NOW - timedelta(seconds=1))
    assert await claimed_ids(store) == {mid}


async def test_claim__returns_who_approved(store: Store) -> None:
    [mid] = await store.enqueue_many([msg()])
    [claimed] = await store.message_claim("w1", 10, 30, NOW)
    hold = Completion(
        mid, claimed.claim_seq, "w1", Status.HELD, None, refund_attempt=True, hold_reason="x"
    )
    await store.message_complete_many("w1", [hold], NOW)
    audit = AuditEntry(at=NOW, actor="ops:ana", action="held.approve")
    assert await store.message_approve([mid], Status.HELD, NOW, audit) == [mid]
    [again] = await store.message_claim("w1", 10, 30, NOW)
    assert again.approved_by == "ops:ana"
    shown = await store.message_get(mid)
    assert shown.approved_by == "ops:ana" and shown.approved_at is not None
    assert shown.hold_reason is None


async def test_control_hold_queued__moves_killed_scope_to_held(store: Store) -> None:
    ids = await store.enqueue_many([msg(tenant="acme") for _ in range(5)] + [msg(tenant="b")])
    await set_mode(store, Scope.of(tenant="acme"), Mode.KILLED)
    held = await store.control_hold_queued(NOW, limit=3)
    assert len(held) == 3
    held += await store.control_hold_queued(NOW)
    assert sorted(held) == sorted(ids[:5])
    shown = await store.message_get(ids[0])
    assert shown.status is Status.HELD and shown.hold_reason is not None
    assert shown.hold_reason.startswith("control:killed (tenant=acme) by ops:ana")
    assert (await store.message_get(ids[5])).status is Status.QUEUED


async def test_control_clear__releases_what_controls_held_in_the_scope(store: Store) -> None:
    ids = await store.enqueue_many([msg(tenant="acme"), msg(tenant="b")])
    await set_mode(store, Scope(), Mode.KILLED)
    assert len(await store.control_hold_queued(NOW)) == 2
    control, released = await store.control_clear(
        Scope(), actor="ops:ana", reason="all clear", release=True, now=NOW
    )
    assert control is not None and control.mode is Mode.KILLED
    assert sorted(released) == sorted(ids)
    assert await store.control_list() == []
    assert await claimed_ids(store) == set(ids)
    entry = (await store.audit_list(1))[0]
    assert entry.action == "control.clear" and entry.detail["released"] == 2


async def test_control_clear__does_not_release_holds_of_connections(store: Store) -> None:
    [mid] = await store.enqueue_many([msg()])
    [claimed] = await store.message_claim("w1", 10, 30, NOW)
    reason = "connection: revoked"
    hold = Completion(
        mid, claimed.claim_seq, "w1", Status.HELD, None, refund_attempt=True, hold_reason=reason
    )
    await store.message_complete_many("w1", [hold], NOW)
    control, released = await store.control_clear(
        Scope(), actor="ops", reason="x", release=True, now=NOW
    )
    assert (control, released) == (None, [])
    assert (await store.message_get(mid)).status is Status.HELD


async def test_control_expire__removes_releases_audits_and_bumps(store: Store) -> None:
    [mid] = await store.enqueue_many([msg()])
    await set_mode(store, Scope.of(tenant="acme"), Mode.KILLED, expires_at=NOW)
    await set_mode(store, Scope.of(tenant="other"), Mode.PAUSED)
    await store.control_hold_queued(NOW - timedelta(seconds=5))
    version = await store.flow_version()
    expired = await store.control_expire(NOW, "worker:w1")
    assert [c.scope for c in expired] == [Scope.of(tenant="acme")]
    assert [c.scope for c in await store.control_list()] == [Scope.of(tenant="other")]
    assert await store.flow_version() == version + 1
    assert (await store.message_get(mid)).status is Status.QUEUED
    entry = (await store.audit_list(1))[0]
    assert entry.action == "control.expired" and entry.detail["released"] == 1
    assert await store.control_expire(NOW, "worker:w1") == []


async def test_worker_ack__records_the_highest_version(store: Store) -> None:
    await store.worker_heartbeat("w1", "host", 1, 0, 0, NOW)
    await store.worker_ack("w1", 7, NOW)
    await store.worker_ack("w1", 5, NOW)  # a late, older ack never goes back
    [w] = await store.worker_list(NOW - timedelta(minutes=1))
    assert w.flow_version == 7 and w.flow_acked_at is not None
    await store.worker_heartbeat("w1", "host", 1, 3, 9, NOW)
    [w] = await store.worker_list(NOW - timedelta(minutes=1))
    assert w.flow_version == 7  # a heartbeat does not touch the acknowledgement


async def test_message_select__held_filters_by_provider_action_and_reason(store: Store) -> None:
    ids = await store.enqueue_many(
        [msg(provider="twilio"), msg(provider="null", action="a"), msg(provider="null")]
    )
    claimed = await store.message_claim("w1", 10, 30, NOW)
    reasons = {ids[0]: "control:killed x", ids[1]: "control:approval y", ids[2]: "connection: z"}
    await store.message_complete_many(
        "w1",
        [
            Completion(
                m.id,
                m.claim_seq,
                "w1",
                Status.HELD,
                None,
                refund_attempt=True,
                hold_reason=reasons[m.id],
            )
            for m in claimed
        ],
        NOW,
    )
    assert await store.message_select("held", MessageFilter(provider="twilio")) == [ids[0]]
    assert await store.message_select("held", MessageFilter(action="a")) == [ids[1]]
    assert await store.message_select("held", MessageFilter(reason="approval")) == [ids[1]]
    assert sorted(await store.message_select("held", MessageFilter(reason="control:"))) == sorted(
        ids[:2]
    )


async def test_complete__shadowed_attempt_is_recorded(store: Store) -> None:
    [mid] = await store.enqueue_many([msg()])
    [m] = await store.message_claim("w1", 10, 30, NOW)
    attempt = Attempt(mid, m.claim_seq, "w1", "null", NOW, NOW, AttemptOutcome.SHADOWED)
    done = Completion(mid, m.claim_seq, "w1", Status.SHADOWED, attempt, refund_attempt=True)
    assert await store.message_complete_many("w1", [done], NOW) == {mid}
    assert (await store.message_get(mid)).status is Status.SHADOWED
    [recorded] = await store.attempt_list(mid)
    assert recorded.outcome is AttemptOutcome.SHADOWED


# -- parking: a pause's backlog kept out of the ready set ----------------------------


async def test_control_park_queued__parks_a_pause_in_chunks_and_only_once(store: Store) -> None:
    ids = await store.enqueue_many([msg(tenant="acme") for _ in range(5)] + [msg(tenant="b")])
    await set_mode(store, Scope.of(tenant="acme"), Mode.PAUSED)
    assert await store.control_park_queued(NOW, limit=3) == 3
    assert await store.control_park_queued(NOW, limit=3) == 2
    assert await store.control_park_queued(NOW) == 0  # nothing left to park
    assert await claimed_ids(store) == {ids[5]}
    for mid in ids[:5]:
        assert (await store.message_get(mid)).status is Status.QUEUED  # parked, not held


async def test_control_park_queued__leaves_kills_and_other_modes_alone(store: Store) -> None:
    await store.enqueue_many([msg(tenant="a"), msg(tenant="b"), msg(tenant="c")])
    await set_mode(store, Scope.of(tenant="a"), Mode.KILLED)
    await set_mode(store, Scope.of(tenant="b"), Mode.APPROVAL)
    await set_mode(store, Scope.of(tenant="c"), Mode.PAUSED, expires_at=NOW)  # expired
    assert await store.control_park_queued(NOW) == 0


async def test_resume__puts_parked_messages_back_at_once(store: Store) -> None:
    ids = await store.enqueue_many([msg() for _ in range(3)])
    await set_mode(store, Scope.of(tenant="acme"), Mode.PAUSED)
    assert await store.control_park_queued(NOW) == 3
    await store.control_clear(
        Scope.of(tenant="acme"), actor="ops:ana", reason="resume", release=True, now=NOW
    )
    assert await claimed_ids(store) == set(ids)


async def test_a_pause_turned_into_another_mode__unparks(store: Store) -> None:
    ids = await store.enqueue_many([msg() for _ in range(2)])
    await set_mode(store, Scope.of(tenant="acme"), Mode.PAUSED)
    assert await store.control_park_queued(NOW) == 2
    await set_mode(store, Scope.of(tenant="acme"), Mode.LIVE)
    assert await claimed_ids(store) == set(ids)


async def test_a_pause_turned_into_a_kill__holds_what_it_parked(store: Store) -> None:
    ids = await store.enqueue_many([msg() for _ in range(2)])
    await set_mode(store, Scope.of(tenant="acme"), Mode.PAUSED)
    assert await store.control_park_queued(NOW) == 2
    await set_mode(store, Scope.of(tenant="acme"), Mode.KILLED)
    assert sorted(await store.control_hold_queued(NOW)) == sorted(ids)
    _, released = await store.control_clear(
        Scope.of(tenant="acme"), actor="ops:ana", reason="all clear", release=True, now=NOW
    )
    assert sorted(released) == sorted(ids)
    assert await claimed_ids(store) == set(ids)  # held, released, and not left parked


async def test_an_expired_pause__unparks(store: Store) -> None:
    ids = await store.enqueue_many([msg() for _ in range(2)])
    await set_mode(store, Scope.of(tenant="acme"), Mode.PAUSED, expires_at=NOW)
    assert await store.control_park_queued(NOW - timedelta(seconds=1)) == 2
    await store.control_expire(NOW, "worker:w1")
    assert await claimed_ids(store) == set(ids)


async def test_a_message_under_two_pauses__stays_out_until_both_end(store: Store) -> None:
    [mid] = await store.enqueue_many([msg(tenant="acme", channel="sms")])
    await set_mode(store, Scope.of(tenant="acme"), Mode.PAUSED)
    await set_mode(store, Scope.of(channel="sms"), Mode.PAUSED)
    assert await store.control_park_queued(NOW) == 1
    await store.control_clear(
        Scope.of(tenant="acme"), actor="ops:ana", reason="x", release=True, now=NOW
    )
    assert await claimed_ids(store) == set()  # the other pause still covers it
    await store.control_park_queued(NOW)  # parked under that one (if it was not already)
    await store.control_clear(
        Scope.of(channel="sms"), actor="ops:ana", reason="x", release=True, now=NOW
    )
    assert await claimed_ids(store) == {mid}
