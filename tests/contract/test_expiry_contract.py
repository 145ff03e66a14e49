"""The Store contract for message expiry (issue 14): the expiry is stored at enqueue (its
own, or the ttl from the insert's time), and the sweep moves what waits past it to
``expired`` — never what is sending or final. Both stores alike."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sluice.flow.controls import Mode, Scope
from sluice.model import Attempt, AttemptOutcome, Completion, NewMessage, Status
from sluice.store import MessageFilter, Store

# A day ahead of the wall clock: enqueue checks expires_at against the real time, and a
# full suite may reach these tests many minutes after this module was imported.
NOW = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)


def msg(**kw: object) -> NewMessage:
    fields: dict[str, object] = {
        "tenant": "acme", "channel": "sms", "provider": "null", "recipient": "+15550001111",
    }  # fmt: skip
    fields.update(kw)
    return NewMessage(**fields)  # type: ignore[arg-type]


async def test_enqueue__stores_the_expiry_its_own_or_from_the_ttl(store: Store) -> None:
    at = NOW + timedelta(minutes=30)
    a, b, c = await store.enqueue_many([msg(expires_at=at), msg(ttl=90.5), msg()], NOW)
    assert (await store.message_get(a)).expires_at == at
    assert (await store.message_get(b)).expires_at == NOW + timedelta(seconds=90.5)
    assert (await store.message_get(c)).expires_at is None
    [claimed] = [m for m in await store.message_claim("w1", 10, 30, NOW) if m.id == b]
    assert claimed.expires_at == NOW + timedelta(seconds=90.5)  # the worker sees it
    [listed] = [m for m in await store.message_list(MessageFilter(), None, None, 10) if m.id == a]
    assert listed.expires_at == at


async def test_message_expire_past__what_waits_not_what_is_sent_or_sending(store: Store) -> None:
    soon = NOW + timedelta(seconds=10)
    later = NOW + timedelta(seconds=20)
    waiting, held, parked, sending, sent, fresh, forever = await store.enqueue_many(
        [msg(expires_at=soon), msg(tenant="held", expires_at=soon),
         msg(tenant="paused", expires_at=soon), msg(tenant="busy", expires_at=soon),
         msg(tenant="done", expires_at=soon), msg(expires_at=later), msg()],
        NOW,
    )  # fmt: skip
    for tenant, mode in (("held", Mode.KILLED), ("paused", Mode.PAUSED)):
        await store.control_set(
            Scope.of(tenant=tenant), mode, actor="a", reason="r", expires_at=None, now=NOW
        )
    await store.control_hold_queued(NOW)
    assert await store.control_park_queued(NOW) == 1
    claimed = {m.id: m for m in await store.message_claim("w1", 10, 30, NOW)}
    assert {sending, sent} <= set(claimed)
    m = claimed[sent]
    attempt = Attempt(sent, m.claim_seq, "w1", "null", NOW, NOW, AttemptOutcome.SENT)
    await store.message_complete_many(
        "w1", [Completion(sent, m.claim_seq, "w1", Status.SENT, attempt)], NOW
    )
    others = [i for i in claimed if i not in (sending, sent)]
    await store.message_release("w1", [(i, claimed[i].claim_seq) for i in others], NOW)

    assert await store.message_expire_past(soon - timedelta(seconds=1)) == []
    gone = await store.message_expire_past(soon, limit=2)
    gone += await store.message_expire_past(soon)
    assert sorted(g[0] for g in gone) == sorted([waiting, held, parked])
    assert {(g[1], g[2], g[3]) for g in gone} >= {("held", "sms", "null")}
    for mid in (waiting, held, parked):
        after = await store.message_get(mid)
        assert after.status is Status.EXPIRED
        assert after.hold_reason is not None and "expired" in after.hold_reason
    assert (await store.message_get(sending)).status is Status.SENDING
    assert (await store.message_get(sent)).status is Status.SENT
    assert (await store.message_get(fresh)).status is Status.QUEUED
    assert (await store.message_get(forever)).status is Status.QUEUED
    assert await store.message_expire_past(soon) == []  # once
    report = await store.status_report(soon)
    assert report.counts["expired"] == 3
    assert report.dead == []  # never dead letters
    listed = await store.message_list(MessageFilter(), "expired", None, 10)
    assert sorted(m.id for m in listed) == sorted([waiting, held, parked])
    # An expired message is never claimed again.
    assert waiting not in {m.id for m in await store.message_claim("w3", 10, 30, later)}
