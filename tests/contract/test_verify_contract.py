"""The Store contract for post-send verification (issue 15, seed 003 RB-03), with the
operator acts over it (``sluice.ops.verify``), on both stores alike.

A message sent with ``verify_within`` gets a deadline when it is sent; past it with no
delivered or read receipt, the sweep moves it to ``needs_confirm``; a failed receipt
moves it there at once; a person confirms (→ delivered) or fails (→ dead,
``NOT_CONFIRMED``) it, audited, and only within their tenant with a tenant key."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sluice.clock import FrozenClock
from sluice.errors import Conflict, NotFound, ValidationError
from sluice.model import Attempt, AttemptOutcome, Completion, NewMessage, Status
from sluice.ops import actions
from sluice.ops.verify import messages_confirm, messages_fail
from sluice.outcome import ErrorCode
from sluice.store import AuditFilter, MessageFilter, Store
from sluice.store.base import InboxItem, Receipt

NOW = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=1)


def msg(**kw: object) -> NewMessage:
    fields: dict[str, object] = {
        "tenant": "acme", "channel": "sms", "provider": "null", "recipient": "+15550001111",
    }  # fmt: skip
    fields.update(kw)
    return NewMessage(**fields)  # type: ignore[arg-type]


async def send_all(store: Store, at: datetime) -> list[str]:
    """Claim everything due and complete it as sent at ``at``; the ids."""
    claimed = await store.message_claim("w1", 1000, 30, at)
    done = [
        Completion(
            m.id, m.claim_seq, "w1", Status.SENT,
            Attempt(m.id, m.claim_seq, "w1", "null", at, at, AttemptOutcome.SENT),
            provider_message_id=f"SM-{m.id}",
        )
        for m in claimed
    ]  # fmt: skip
    await store.message_complete_many("w1", done, at)
    return [m.id for m in claimed]


async def receipt(store: Store, mid: str, status: str, at: datetime) -> str:
    """Put a receipt in the inbox and apply it, as the projector does; the outcome."""
    item = InboxItem(
        id=0, provider="twilio", event_id=f"e-{mid}-{status}", kind="receipt", status=status,
        message_id=mid, provider_message_id=f"SM-{mid}", occurred_at=at, error_code=None,
        detail=None, address=None, data={}, received_at=at,
    )  # fmt: skip
    await store.inbox_put([item], at)
    (claimed,) = await store.inbox_claim("w1", 1, 30, at)
    r = Receipt(mid, "twilio", status, at, at, "30003" if status == "failed" else None, None)
    return await store.inbox_finish(claimed.id, claimed.attempts, "", at, r)


# -- the store ---------------------------------------------------------------------------


async def test_enqueue__keeps_verify_within_and_sending_sets_the_deadline(store: Store) -> None:
    a, b = await store.enqueue_many([msg(verify_within=600.0), msg()], NOW)
    assert (await store.message_get(a)).verify_within == 600.0
    assert (await store.message_get(a)).verify_by is None  # not sent yet
    await send_all(store, NOW)
    sent = await store.message_get(a)
    assert (sent.status, sent.verify_by) == (Status.SENT, NOW + timedelta(seconds=600))
    plain = await store.message_get(b)
    assert (plain.verify_within, plain.verify_by) == (None, None)
    [listed] = [m for m in await store.message_list(MessageFilter(), None, None, 10) if m.id == a]
    assert listed.verify_by == NOW + timedelta(seconds=600)


async def test_verify_due__no_receipt_in_time_needs_confirm(store: Store) -> None:
    late, plain = await store.enqueue_many([msg(verify_within=60), msg()], NOW)
    assert await store.message_verify_due(NOW + timedelta(hours=1)) == []  # not sent yet
    await send_all(store, NOW)
    assert await store.message_verify_due(NOW + timedelta(seconds=59)) == []
    due = await store.message_verify_due(NOW + timedelta(seconds=60))
    assert due == [(late, "acme", "sms", "null")]
    m = await store.message_get(late)
    assert (m.status, m.last_error_code) == (Status.NEEDS_CONFIRM, "NOT_CONFIRMED")
    assert m.last_error is not None and "within 60" in m.last_error
    assert (await store.message_get(plain)).status is Status.SENT  # asked for nothing
    assert await store.message_verify_due(NOW + timedelta(hours=1)) == []  # once
    report = await store.status_report(NOW)
    assert report.counts["needs_confirm"] == 1
    assert [x.id for x in await store.message_list(MessageFilter(), "needs_confirm", None, 10)] == [
        late
    ]


async def test_verify_due__a_delivered_receipt_in_time_keeps_it_out(store: Store) -> None:
    (mid,) = await store.enqueue_many([msg(verify_within=60)], NOW)
    await send_all(store, NOW)
    assert await receipt(store, mid, "delivered", NOW + timedelta(seconds=30)) == "applied"
    assert await store.message_verify_due(NOW + timedelta(hours=1)) == []
    assert (await store.message_get(mid)).status is Status.DELIVERED


async def test_receipt__a_failed_one_moves_it_to_needs_confirm_a_late_good_one_settles_it(
    store: Store,
) -> None:
    verified, plain = await store.enqueue_many([msg(verify_within=600), msg()], NOW)
    await send_all(store, NOW)
    assert await receipt(store, verified, "failed", NOW) == "applied"
    assert await receipt(store, plain, "failed", NOW) == "applied"
    m = await store.message_get(verified)
    assert (m.status, m.last_error_code) == (Status.NEEDS_CONFIRM, "30003")
    assert (await store.message_get(plain)).status is Status.BOUNCED  # as before
    # A "sent" receipt does not settle the doubt; a delivered one does.
    assert await receipt(store, verified, "sent", NOW) == "stale"
    assert (await store.message_get(verified)).status is Status.NEEDS_CONFIRM
    assert await receipt(store, verified, "delivered", NOW) == "applied"
    assert (await store.message_get(verified)).status is Status.DELIVERED


async def test_receipt__failed_after_delivered_changes_nothing(store: Store) -> None:
    (mid,) = await store.enqueue_many([msg(verify_within=600)], NOW)
    await send_all(store, NOW)
    await receipt(store, mid, "delivered", NOW)
    assert await receipt(store, mid, "failed", NOW) == "stale"
    assert (await store.message_get(mid)).status is Status.DELIVERED


async def test_retention__needs_confirm_is_never_purged(store: Store) -> None:
    from sluice.retention import NON_FINAL

    assert "needs_confirm" in NON_FINAL


# -- the operator acts -------------------------------------------------------------------


async def needs_confirm(store: Store, n: int, tenant: str = "acme") -> list[str]:
    ids = await store.enqueue_many([msg(tenant=tenant, verify_within=60) for _ in range(n)], NOW)
    await send_all(store, NOW)
    await store.message_verify_due(NOW + timedelta(seconds=61))
    return ids


async def test_confirm__delivered_and_audited(store: Store) -> None:
    clock = FrozenClock(NOW + timedelta(minutes=5))
    a, b = await needs_confirm(store, 2)
    done = await messages_confirm(
        store, [a, b], actor="ana", reason="seen on the phone", clock=clock
    )
    assert (done.changed, sorted(done.ids), done.status) == (2, sorted([a, b]), "delivered")
    for mid in (a, b):
        m = await store.message_get(mid)
        assert (m.status, m.last_error_code, m.verify_by) == (Status.DELIVERED, None, None)
    [entry] = await store.audit_list(10, AuditFilter(action="message.confirm"))
    assert (entry.actor, entry.reason, entry.target) == ("ana", "seen on the phone", "messages")
    assert sorted(entry.detail["ids"]) == sorted([a, b])
    assert entry.detail["tenant"] == "acme"
    again = await messages_confirm(store, [a], actor="ana", reason="again", clock=clock)
    assert (again.changed, again.already) == (0, [a])  # nothing more, no second entry
    assert len(await store.audit_list(10, AuditFilter(action="message.confirm"))) == 1


async def test_fail__dead_not_confirmed_then_dlq_retry_sends_it_again(store: Store) -> None:
    clock = FrozenClock(NOW + timedelta(minutes=5))
    (mid,) = await needs_confirm(store, 1)
    done = await messages_fail(store, [mid], actor="ana", reason="customer never got it",
                               clock=clock)  # fmt: skip
    assert (done.changed, done.status) == (1, "dead")
    m = await store.message_get(mid)
    assert (m.status, m.last_error_code) == (Status.DEAD, ErrorCode.NOT_CONFIRMED)
    assert m.last_error is not None and "ana" in m.last_error
    [entry] = await store.audit_list(10, AuditFilter(action="message.fail"))
    assert entry.detail["ids"] == [mid]
    retried = await actions.dlq_retry(
        store, MessageFilter(error_code="NOT_CONFIRMED"), actor="ana", reason="resend",
        clock=clock,
    )  # fmt: skip
    assert retried.changed == 1
    assert (await store.message_get(mid)).status is Status.QUEUED
    # Sent again, it is verified again from the new send.
    later = NOW + timedelta(minutes=10)
    assert await send_all(store, later) == [mid]
    assert (await store.message_get(mid)).verify_by == later + timedelta(seconds=60)


async def test_confirm__another_tenants_message_is_not_found_and_nothing_moves(
    store: Store,
) -> None:
    (mine,) = await needs_confirm(store, 1, tenant="acme")
    (theirs,) = await needs_confirm(store, 1, tenant="globex")
    for act in (messages_confirm, messages_fail):
        with pytest.raises(NotFound):
            await act(store, [mine, theirs], actor="api:acme", reason="r", tenant="acme")
    assert (await store.message_get(mine)).status is Status.NEEDS_CONFIRM
    assert (await store.message_get(theirs)).status is Status.NEEDS_CONFIRM
    assert await store.audit_list(10, AuditFilter(action="message.confirm")) == []
    done = await messages_confirm(store, [mine], actor="api:acme", reason="r", tenant="acme")
    assert done.ids == [mine]


async def test_confirm__a_message_not_in_needs_confirm_is_a_conflict(store: Store) -> None:
    (waiting,) = await needs_confirm(store, 1)
    (queued,) = await store.enqueue_many([msg()], NOW)
    with pytest.raises(Conflict, match="queued"):
        await messages_confirm(store, [waiting, queued], actor="ana", reason="r")
    assert (await store.message_get(waiting)).status is Status.NEEDS_CONFIRM


@pytest.mark.parametrize(
    ("ids", "reason", "actor", "field"),
    [
        ([], "r", "ana", "ids"),
        (["not-an-id"], "r", "ana", "ids[0]"),
        ("0190b3b4-0000-7000-8000-000000000000", "r", "ana", "ids"),
        (["0190b3b4-0000-7000-8000-000000000000"], "", "ana", "reason"),
        (["0190b3b4-0000-7000-8000-000000000000"], "x" * 1001, "ana", "reason"),
        (["0190b3b4-0000-7000-8000-000000000000"], "bad \ud800", "ana", "reason"),
        (["0190b3b4-0000-7000-8000-000000000000"], "nul \x00", "ana", "reason"),
        (["0190b3b4-0000-7000-8000-000000000000"], "r", " ", "actor"),
        (["0190b3b4-0000-7000-8000-000000000000"] * 1001, "r", "ana", "ids"),
    ],
)
async def test_confirm__bad_input_refused_by_name(
    store: Store, ids: list[str], reason: str, actor: str, field: str
) -> None:
    (mid,) = await needs_confirm(store, 1)
    for act in (messages_confirm, messages_fail):
        with pytest.raises(ValidationError) as err:
            await act(store, ids, actor=actor, reason=reason)
        assert err.value.field == field
    assert (await store.message_get(mid)).status is Status.NEEDS_CONFIRM


async def test_counts__n_sent_k_receipts_n_minus_k_need_confirm_nothing_lost(
    store: Store,
) -> None:
    n, k = 40, 13
    ids = await store.enqueue_many([msg(verify_within=300) for _ in range(n)], NOW)
    assert sorted(await send_all(store, NOW)) == sorted(ids)
    for mid in ids[:k]:
        assert await receipt(store, mid, "delivered", NOW + timedelta(seconds=10)) == "applied"
    moved = []
    for _ in range(5):  # chunks until nothing is left
        moved += await store.message_verify_due(NOW + timedelta(seconds=300))
    assert sorted(m[0] for m in moved) == sorted(ids[k:])
    counts = (await store.status_report(NOW)).counts
    assert counts.get("needs_confirm") == n - k
    assert counts.get("delivered") == k
    assert sum(counts.values()) == n  # nothing lost, nothing doubled
