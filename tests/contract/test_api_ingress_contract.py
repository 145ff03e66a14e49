"""The Store contract for the HTTP API and ingress: message listing, API keys,
Idempotency-Key records, the inbox (dedupe ledger and projector queue) and receipts.
Every test runs against PostgreSQL and SQLite alike."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest

from sluice.errors import IdempotencyConflict, NotFound, ValidationError
from sluice.model import Attempt, AttemptOutcome, Completion, Message, NewMessage, Status
from sluice.store import AuditEntry, MessageFilter, Store
from sluice.store.base import ApiKey, InboxItem, Receipt

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


def audit(action: str = "test") -> AuditEntry:
    return AuditEntry(at=NOW, actor="ops:ana", action=action, target="t", reason="test")


def event(event_id: str, **kw: object) -> InboxItem:
    fields: dict[str, object] = {
        "id": 0,
        "provider": "twilio",
        "event_id": event_id,
        "kind": "receipt",
        "status": "delivered",
        "message_id": None,
        "provider_message_id": "SM1",
        "occurred_at": NOW,
        "error_code": None,
        "detail": None,
        "address": None,
        "data": {"MessageStatus": "delivered"},
        "received_at": NOW,
    }
    fields.update(kw)
    return InboxItem(**fields)  # type: ignore[arg-type]


async def sent_message(store: Store, **kw: object) -> str:
    """A message that went out (status sent)."""
    (mid,) = await store.enqueue_many([msg(**kw)])
    (claimed,) = await store.message_claim("w1", 1, 30, NOW)
    attempt = Attempt(mid, 1, "w1", "null", NOW, NOW, AttemptOutcome.SENT)
    done = Completion(mid, claimed.claim_seq, "w1", Status.SENT, attempt, provider_message_id="SM1")
    await store.message_complete_many("w1", [done], NOW)
    return mid


# -- message_list -------------------------------------------------------------------


async def test_message_list__newest_first_by_tenant_with_cursor(store: Store) -> None:
    ids = await store.enqueue_many([msg(payload={"n": i}) for i in range(5)])
    await store.enqueue_many([msg(tenant="other")])
    newest_first = sorted(ids, reverse=True)  # same-millisecond ids order by their random bits
    page1 = await store.message_list(MessageFilter(tenant="acme"), None, None, 3)
    assert [m.id for m in page1] == newest_first[:3]
    page2 = await store.message_list(MessageFilter(tenant="acme"), None, page1[-1].id, 3)
    assert [m.id for m in page2] == newest_first[3:]
    assert all(m.tenant == "acme" for m in page1 + page2)


async def test_message_list__filters_by_status_and_fields(store: Store) -> None:
    sent = await sent_message(store)
    await store.enqueue_many([msg(channel="email", recipient="a@example.com")])
    assert [m.id for m in await store.message_list(MessageFilter(), "sent", None, 10)] == [sent]
    email = await store.message_list(MessageFilter(channel="email"), None, None, 10)
    assert [m.channel for m in email] == ["email"]
    assert await store.message_list(MessageFilter(tenant="nobody"), None, None, 10) == []


async def test_message_list__bad_cursor_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.message_list(MessageFilter(), None, "not-a-uuid", 10)


# -- API keys -----------------------------------------------------------------------


def key(key_id: str = "k1", **kw: object) -> ApiKey:
    fields: dict[str, object] = {
        "id": key_id,
        "name": f"name-{key_id}",
        "role": "tenant",
        "tenant": "acme",
        "secret_hash": "ab" * 32,
        "created_by": "ops:ana",
        "created_at": NOW,
    }
    fields.update(kw)
    return ApiKey(**fields)  # type: ignore[arg-type]


async def test_api_key__insert_get_list_revoke(store: Store) -> None:
    await store.api_key_insert(key("k1"), audit("api_key.create"))
    await store.api_key_insert(key("k2", role="operator", tenant=None), audit("api_key.create"))
    got = await store.api_key_get("k1")
    assert got == key("k1")
    assert [k.id for k in await store.api_key_list()] == ["k1", "k2"]
    revoked = await store.api_key_revoke("k1", NOW + timedelta(seconds=1), audit("api_key.revoke"))
    assert revoked.revoked_at == NOW + timedelta(seconds=1)
    again = await store.api_key_revoke("k1", NOW + timedelta(seconds=9), audit("api_key.revoke"))
    assert again.revoked_at == NOW + timedelta(seconds=1)
    actions = [e.action for e in await store.audit_list()]
    assert actions.count("api_key.revoke") == 1 and actions.count("api_key.create") == 2


async def test_api_key__duplicate_name_is_a_validation_error(store: Store) -> None:
    await store.api_key_insert(key("k1", name="ci"), audit())
    with pytest.raises(ValidationError) as caught:
        await store.api_key_insert(key("k2", name="ci"), audit())
    assert caught.value.field == "name"
    assert [k.id for k in await store.api_key_list()] == ["k1"]


async def test_api_key__unknown_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.api_key_get("nope")
    with pytest.raises(NotFound):
        await store.api_key_revoke("nope", NOW, audit())


# -- Idempotency-Key records --------------------------------------------------------


async def test_idem__new_then_busy_then_replay(store: Store) -> None:
    first = await store.idem_begin("t:acme", "k", "fp1", NOW, 60, 86400)
    assert first.state == "new"
    assert (await store.idem_begin("t:acme", "k", "fp1", NOW, 60, 86400)).state == "busy"
    await store.idem_finish("t:acme", "k", 201, '{"id":"x"}', NOW)
    replay = await store.idem_begin("t:acme", "k", "fp1", NOW, 60, 86400)
    assert (replay.state, replay.status_code, replay.response) == ("replay", 201, '{"id":"x"}')


async def test_idem__different_fingerprint_is_a_mismatch_running_or_done(store: Store) -> None:
    await store.idem_begin("t:acme", "k", "fp1", NOW, 60, 86400)
    assert (await store.idem_begin("t:acme", "k", "fp2", NOW, 60, 86400)).state == "mismatch"
    await store.idem_finish("t:acme", "k", 201, "{}", NOW)
    assert (await store.idem_begin("t:acme", "k", "fp2", NOW, 60, 86400)).state == "mismatch"


async def test_idem__scopes_are_separate(store: Store) -> None:
    assert (await store.idem_begin("t:acme", "k", "fp1", NOW, 60, 86400)).state == "new"
    assert (await store.idem_begin("t:other", "k", "fp2", NOW, 60, 86400)).state == "new"


async def test_idem__an_abandoned_claim_is_taken_over_after_its_lock(store: Store) -> None:
    await store.idem_begin("t:acme", "k", "fp1", NOW, 60, 86400)
    later = NOW + timedelta(seconds=61)
    assert (await store.idem_begin("t:acme", "k", "fp1", later, 60, 86400)).state == "new"


async def test_idem__forgotten_after_the_window(store: Store) -> None:
    await store.idem_begin("t:acme", "k", "fp1", NOW, 60, 3600)
    await store.idem_finish("t:acme", "k", 201, "{}", NOW)
    later = NOW + timedelta(seconds=3601)
    assert (await store.idem_begin("t:acme", "k", "fp2", later, 60, 3600)).state == "new"


async def test_idem__release_and_purge(store: Store) -> None:
    await store.idem_begin("t:acme", "k", "fp1", NOW, 60, 86400)
    await store.idem_release("t:acme", "k")
    assert (await store.idem_begin("t:acme", "k", "fp2", NOW, 60, 86400)).state == "new"
    await store.idem_finish("t:acme", "k", 201, "{}", NOW)
    assert await store.idem_purge(NOW + timedelta(hours=1), 7200) == 0
    assert await store.idem_purge(NOW + timedelta(hours=3), 7200) == 1


async def test_idem__concurrent_begins_give_exactly_one_owner(store: Store) -> None:
    claims = await asyncio.gather(
        *(store.idem_begin("t:acme", "k", "fp1", NOW, 60, 86400) for _ in range(8))
    )
    assert sorted(c.state for c in claims) == ["busy"] * 7 + ["new"]


def ids_of(stored: list[Message]) -> tuple[int, str]:
    """An ``idem_enqueue`` responder: 201 and the stored ids, statuses and keys."""
    return 201, json.dumps([[m.id, str(m.status), m.idempotency_key] for m in stored])


async def count(store: Store) -> int:
    return len(await store.message_list(MessageFilter(tenant="acme"), None, None, 1000))


async def test_idem_enqueue__stores_and_records_the_response_made_of_what_was_stored(
    store: Store,
) -> None:
    await store.idem_begin("t:acme", "k", "fp1", NOW, 60, 86400)
    first, second = msg(recipient="+15550000001"), msg(recipient="+15550000002")

    recorded = await store.idem_enqueue("t:acme", "k", [first, second], ids_of)

    assert recorded is not None
    status, text = recorded
    assert (status, json.loads(text)) == (
        201,
        [[first.id, "queued", None], [second.id, "queued", None]],
    )
    assert (await store.message_get(second.id)).recipient == "+15550000002"
    replay = await store.idem_begin("t:acme", "k", "fp1", NOW, 60, 86400)
    assert (replay.state, replay.status_code, replay.response) == ("replay", 201, text)


async def test_idem_enqueue__a_repeated_message_key_answers_with_the_first_message(
    store: Store,
) -> None:
    earlier = msg(idempotency_key="order-1")
    await store.enqueue_many([earlier])
    await store.idem_begin("t:acme", "k", "fp1", NOW, 60, 86400)

    recorded = await store.idem_enqueue("t:acme", "k", [msg(idempotency_key="order-1")], ids_of)

    assert recorded is not None
    assert json.loads(recorded[1]) == [[earlier.id, "queued", "order-1"]]
    assert await count(store) == 1


async def test_idem_enqueue__a_failure_before_the_record_stores_neither(store: Store) -> None:
    # The messages are written first; whatever fails after them takes them back.
    await store.idem_begin("t:acme", "k", "fp1", NOW, 60, 86400)

    def broken(stored: list[Message]) -> tuple[int, str]:
        raise RuntimeError("failed after the messages were written")

    with pytest.raises(RuntimeError):
        await store.idem_enqueue("t:acme", "k", [msg()], broken)

    assert await count(store) == 0
    assert (await store.idem_begin("t:acme", "k", "fp1", NOW, 60, 86400)).state == "busy"


async def test_idem_enqueue__refused_messages_store_nothing_and_keep_the_claim(
    store: Store,
) -> None:
    await store.enqueue_many([msg(idempotency_key="order-1")])
    await store.idem_begin("t:acme", "k", "fp1", NOW, 60, 86400)

    with pytest.raises(IdempotencyConflict):
        await store.idem_enqueue(
            "t:acme", "k", [msg(), msg(idempotency_key="order-1", payload={"n": 2})], ids_of
        )
    with pytest.raises(ValidationError):
        await store.idem_enqueue("t:acme", "k", [msg(recipient="nobody")], ids_of)

    assert await count(store) == 1
    assert (await store.idem_begin("t:acme", "k", "fp1", NOW, 60, 86400)).state == "busy"


@pytest.mark.parametrize("gone", ["released", "finished", "never-claimed"])
async def test_idem_enqueue__without_a_running_claim_stores_nothing(
    store: Store, gone: str
) -> None:
    if gone != "never-claimed":
        await store.idem_begin("t:acme", "k", "fp1", NOW, 60, 86400)
    if gone == "released":
        await store.idem_release("t:acme", "k")
    if gone == "finished":
        await store.idem_finish("t:acme", "k", 201, "{}", NOW)

    assert await store.idem_enqueue("t:acme", "k", [msg()], ids_of) is None

    assert await count(store) == 0


async def test_idem_enqueue__a_claim_taken_over_is_recorded_once(store: Store) -> None:
    # The first request outlived its lock; a retry took the key over and finished. The
    # first one's late write must not add its messages beside the retry's.
    await store.idem_begin("t:acme", "k", "fp1", NOW, 60, 86400)
    later = NOW + timedelta(seconds=61)
    assert (await store.idem_begin("t:acme", "k", "fp1", later, 60, 86400)).state == "new"
    retry = msg(recipient="+15550000002")
    assert await store.idem_enqueue("t:acme", "k", [retry], ids_of) is not None

    assert await store.idem_enqueue("t:acme", "k", [msg()], ids_of) is None

    assert [m.id for m in await store.message_list(MessageFilter(), None, None, 10)] == [retry.id]


# -- inbox ----------------------------------------------------------------------------


async def test_inbox_put__dedupes_on_provider_and_event_id(store: Store) -> None:
    assert await store.inbox_put([event("e1"), event("e2")], NOW) == [True, True]
    assert await store.inbox_put([event("e1"), event("e3")], NOW) == [False, True]
    assert await store.inbox_put([event("e1", provider="sendgrid")], NOW) == [True]
    assert await store.inbox_put([event("e9"), event("e9")], NOW) == [True, False]
    both = [event("e7", provider="sendgrid"), event("e7", provider="whatsapp"), event("e1")]
    assert await store.inbox_put(both, NOW) == [True, True, False]
    assert await store.inbox_counts() == {"pending": 7}


async def test_inbox_put__the_source_tenant_is_part_of_the_dedupe_key(store: Store) -> None:
    """One tenant's account posting an event id first must not make another tenant's
    real event with that id a duplicate."""
    assert await store.inbox_put([event("SM1:delivered", source_tenant="acme")], NOW) == [True]
    assert await store.inbox_put([event("SM1:delivered", source_tenant="globex")], NOW) == [True]
    assert await store.inbox_put([event("SM1:delivered")], NOW) == [True]
    again = [event("SM1:delivered", source_tenant="globex"), event("SM1:delivered")]
    assert await store.inbox_put(again, NOW) == [False, False]
    tenants = sorted(str(i.source_tenant) for i in await store.inbox_list(None, None, 10))
    assert tenants == ["None", "acme", "globex"]


async def test_inbox_put__refuses_a_non_finite_number_and_stores_nothing(store: Store) -> None:
    with pytest.raises(ValidationError) as excinfo:
        await store.inbox_put([event("e1"), event("e2", data={"n": float("inf")})], NOW)
    assert excinfo.value.field == "data"
    assert await store.inbox_counts() == {}


async def test_inbox_reject__keeps_the_event_as_evidence_and_audits(store: Store) -> None:
    await store.inbox_put([event("e1", source_tenant="acme")], NOW)
    (item,) = await store.inbox_claim("w1", 10, 30, NOW)
    violation = audit("tenancy.violation")
    why = "names a globex message"
    assert await store.inbox_reject(item.id, item.attempts, why, NOW, violation)
    (rejected,) = await store.inbox_list("rejected", None, 10)
    assert (rejected.state, rejected.last_error, rejected.source_tenant) == (
        "rejected", "names a globex message", "acme",
    )  # fmt: skip
    assert await store.inbox_counts() == {"rejected": 1}
    assert await store.inbox_claim("w1", 10, 30, NOW + timedelta(hours=1)) == []
    assert [e.action for e in await store.audit_list()] == ["tenancy.violation"]
    # a lost claim writes nothing, the audit row included
    assert not await store.inbox_reject(item.id, item.attempts, "again", NOW, violation)
    assert len(await store.audit_list()) == 1
    # never retried by an operator's "retry the dead ones", never purged as done
    assert await store.inbox_requeue(None, NOW, audit("inbox.retry")) == []
    assert await store.inbox_purge(NOW + timedelta(days=30)) == 0


async def test_inbox_put__concurrent_replays_store_once(store: Store) -> None:
    results = await asyncio.gather(*(store.inbox_put([event("e1")], NOW) for _ in range(5)))
    assert sorted(r[0] for r in results) == [False] * 4 + [True]
    assert len(await store.inbox_list(None, None, 10)) == 1


async def test_inbox_claim__leases_due_events_in_order(store: Store) -> None:
    await store.inbox_put([event("e1"), event("e2"), event("e3")], NOW)
    first = await store.inbox_claim("w1", 2, 30, NOW)
    assert [i.event_id for i in first] == ["e1", "e2"]
    assert all(i.attempts == 1 for i in first)
    assert first[0].data == {"MessageStatus": "delivered"} and first[0].occurred_at == NOW
    second = await store.inbox_claim("w2", 10, 30, NOW)
    assert [i.event_id for i in second] == ["e3"]
    # the lease runs out: the events come back
    again = await store.inbox_claim("w3", 10, 30, NOW + timedelta(seconds=31))
    assert [i.event_id for i in again] == ["e1", "e2", "e3"]
    assert [i.attempts for i in again] == [2, 2, 2]


async def test_inbox_retry_and_dead_and_requeue(store: Store) -> None:
    await store.inbox_put([event("e1"), event("e2")], NOW)
    e1, e2 = await store.inbox_claim("w1", 10, 30, NOW)
    assert await store.inbox_retry(e1.id, 1, NOW + timedelta(seconds=10), "boom", NOW)
    assert await store.inbox_dead(e2.id, 1, "gave up", NOW)
    assert await store.inbox_claim("w1", 10, 30, NOW + timedelta(seconds=5)) == []
    (back,) = await store.inbox_claim("w1", 10, 30, NOW + timedelta(seconds=10))
    assert (back.event_id, back.last_error) == ("e1", "boom")
    (dead,) = await store.inbox_list("dead", None, 10)
    assert (dead.event_id, dead.last_error, dead.state) == ("e2", "gave up", "dead")
    assert await store.inbox_requeue(None, NOW, audit("inbox.retry")) == [e2.id]
    assert await store.inbox_counts() == {"pending": 2}
    assert "inbox.retry" in [e.action for e in await store.audit_list()]


async def test_inbox_finish__plain_result_and_purge(store: Store) -> None:
    await store.inbox_put([event("e1", kind="inbound", status=None)], NOW)
    (item,) = await store.inbox_claim("w1", 10, 30, NOW)
    assert await store.inbox_finish(item.id, 1, "forwarded", NOW) == "forwarded"
    (done,) = await store.inbox_list("done", "twilio", 10)
    assert (done.state, done.result) == ("done", "forwarded")
    assert await store.inbox_claim("w1", 10, 30, NOW + timedelta(hours=1)) == []
    assert await store.inbox_purge(NOW) == 0
    assert await store.inbox_purge(NOW + timedelta(seconds=1)) == 1
    assert await store.inbox_counts() == {}


# -- receipts ---------------------------------------------------------------------------


def receipt(mid: str, status: str, **kw: object) -> Receipt:
    fields: dict[str, object] = {
        "message_id": mid,
        "provider": "twilio",
        "status": status,
        "occurred_at": NOW,
        "received_at": NOW,
    }
    fields.update(kw)
    return Receipt(**fields)  # type: ignore[arg-type]


async def finish(store: Store, r: Receipt) -> str:
    (item,) = await store.inbox_claim("w1", 1, 30, NOW)
    return await store.inbox_finish(item.id, item.attempts, "", NOW, r)


async def test_receipts__move_a_sent_message_forward_only(store: Store) -> None:
    mid = await sent_message(store)
    await store.inbox_put([event("e1"), event("e2"), event("e3")], NOW)
    assert await finish(store, receipt(mid, "read")) == "applied"
    assert await finish(store, receipt(mid, "delivered")) == "stale"
    assert await finish(store, receipt(mid, "sent")) == "stale"
    assert (await store.message_get(mid)).status is Status.READ
    assert [r.status for r in await store.receipt_list(mid)] == ["read", "delivered", "sent"]
    assert await store.inbox_counts() == {"done": 3}


async def test_receipts__a_bounce_records_the_providers_error(store: Store) -> None:
    mid = await sent_message(store)
    await store.inbox_put([event("e1")], NOW)
    r = receipt(mid, "undelivered", error_code="30003", detail="Unreachable handset")
    assert await finish(store, r) == "applied"
    got = await store.message_get(mid)
    assert (got.status, got.last_error_code, got.last_error) == (
        Status.BOUNCED,
        "30003",
        "Unreachable handset",
    )
    (kept,) = await store.receipt_list(mid)
    assert (kept.error_code, kept.detail) == ("30003", "Unreachable handset")


async def test_receipts__not_ready_while_the_message_is_still_out(store: Store) -> None:
    (mid,) = await store.enqueue_many([msg()])
    await store.inbox_put([event("e1")], NOW)
    assert await finish(store, receipt(mid, "delivered")) == "not_ready"
    assert await store.receipt_list(mid) == []
    assert (await store.message_get(mid)).status is Status.QUEUED
    assert await store.inbox_counts() == {"pending": 1}


async def test_receipts__unknown_or_malformed_message_is_unmatched(store: Store) -> None:
    await store.inbox_put([event("e1"), event("e2")], NOW)
    unknown = "01900000-0000-7000-8000-000000000000"
    assert await finish(store, receipt(unknown, "delivered")) == "unmatched"
    assert await finish(store, receipt("garbage", "delivered")) == "unmatched"
    assert await store.inbox_counts() == {"done": 2}


async def test_receipts__a_final_message_keeps_its_status(store: Store) -> None:
    (mid,) = await store.enqueue_many([msg()])
    await store.message_cancel([mid], "queued", NOW, audit())
    await store.inbox_put([event("e1")], NOW)
    assert await finish(store, receipt(mid, "delivered")) == "stale"
    assert (await store.message_get(mid)).status is Status.CANCELLED
    assert len(await store.receipt_list(mid)) == 1


async def test_inbox__a_claim_whose_lease_ran_out_cannot_write_back(store: Store) -> None:
    mid = await sent_message(store)
    await store.inbox_put([event("e1"), event("e2"), event("e3")], NOW)
    first = await store.inbox_claim("slow", 10, 30, NOW)
    later = NOW + timedelta(seconds=31)
    second = {i.event_id: i for i in await store.inbox_claim("fast", 10, 30, later)}
    old = {i.event_id: i for i in first}
    # the slow projector comes back after its lease: every write-back is refused
    assert await store.inbox_finish(old["e1"].id, 1, "", later, receipt(mid, "delivered")) == "lost"
    assert await store.inbox_retry(old["e2"].id, 1, later, "late", later) is False
    assert await store.inbox_dead(old["e3"].id, 1, "late", later) is False
    assert await store.receipt_list(mid) == []
    # the current claim applies it, once
    done = await store.inbox_finish(second["e1"].id, 2, "", later, receipt(mid, "delivered"))
    assert done == "applied"
    assert len(await store.receipt_list(mid)) == 1
    assert await store.inbox_counts() == {"pending": 2, "done": 1}
