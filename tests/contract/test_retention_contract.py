"""The Store contract for retention (``message_purge``, ``message_purge_count``): every
test runs against PostgreSQL and SQLite."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from sluice.errors import ValidationError
from sluice.model import Attempt, AttemptOutcome, Completion, NewMessage, Status
from sluice.store import AuditEntry, MessageFilter, Store
from sluice.store.base import InboxItem, Purged, PurgeRule, Receipt

OLD = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
LATER = OLD + timedelta(days=20)
EVERY_FINAL = ("sent", "delivered", "read", "bounced", "shadowed", "dead", "cancelled")


def msg(tenant: str = "acme", **kw: object) -> NewMessage:
    fields: dict[str, object] = {
        "tenant": tenant,
        "channel": "sms",
        "provider": "twilio",
        "recipient": "+15550001111",
        "payload": {"body": "hi"},
        "run_at": OLD - timedelta(days=400),
    }
    fields.update(kw)
    return NewMessage(**fields)  # type: ignore[arg-type]


async def finished(
    store: Store, status: Status, at: datetime, n: int = 1, tenant: str = "acme"
) -> list[str]:
    """``n`` messages that became ``status`` at ``at`` (each with one attempt)."""
    ids = await store.enqueue_many([msg(tenant) for _ in range(n)])
    claimed = await store.message_claim("w1", n, 30, at)
    assert {m.id for m in claimed} == set(ids)
    if status is Status.SENDING:
        return ids
    outcome = AttemptOutcome.SENT if status is Status.SENT else AttemptOutcome.FAILED
    done = [
        Completion(
            m.id, m.claim_seq, "w1", status,
            Attempt(m.id, 1, "w1", m.provider, at, at, outcome, error_code="X"),
            hold_reason="control: killed" if status is Status.HELD else None,
            run_at=at if status is Status.QUEUED else None,
        )
        for m in claimed
    ]  # fmt: skip
    assert await store.message_complete_many("w1", done, at) == set(ids)
    return ids


def rule(before: datetime, statuses: Sequence[str] = EVERY_FINAL, **kw: object) -> PurgeRule:
    return PurgeRule(before={s: before for s in statuses}, **kw)  # type: ignore[arg-type]


async def exists(store: Store, mid: str) -> bool:
    return any(m.id == mid for m in await store.message_list(MessageFilter(), None, None, 1000))


async def test_purge__removes_old_final_messages_with_their_attempts(store: Store) -> None:
    sent = await finished(store, Status.SENT, OLD, 3)
    dead = await finished(store, Status.DEAD, OLD, 2)
    assert await store.message_purge_count(rule(LATER)) == {"sent": 3, "dead": 2}
    assert await store.message_purge(rule(LATER), 100) == {"sent": 3, "dead": 2}
    for mid in sent + dead:
        assert not await exists(store, mid)
        assert await store.attempt_list(mid) == []
    assert await store.message_purge_count(rule(LATER)) == {}
    assert await store.message_purge(rule(LATER), 100) == {}


async def test_purge__never_a_message_that_is_not_final(store: Store) -> None:
    # Old and untouched for a year, but still at work or waiting for a person.
    queued = await finished(store, Status.QUEUED, OLD)
    held = await finished(store, Status.HELD, OLD)
    sending = await finished(store, Status.SENDING, OLD)
    far = rule(OLD + timedelta(days=3650))
    assert await store.message_purge(far, 1000) == {}
    for mid in queued + held + sending:
        assert (await store.message_get(mid)).status in (Status.QUEUED, Status.HELD, Status.SENDING)
        assert await store.attempt_list(mid) or mid in sending
    for status in ("queued", "sending", "held"):
        with pytest.raises(ValidationError) as err:
            await store.message_purge(rule(far.before["sent"], [status]), 10)
        assert err.value.field == "status"
        with pytest.raises(ValidationError):
            await store.message_purge_count(rule(far.before["sent"], [status]))
    assert len(await store.message_list(MessageFilter(), None, None, 100)) == 3


async def test_purge__never_a_message_younger_than_its_cutoff(store: Store) -> None:
    old = await finished(store, Status.SENT, OLD)
    young = await finished(store, Status.SENT, LATER)
    mixed = PurgeRule(before={"sent": LATER, "dead": OLD})
    assert await store.message_purge(mixed, 100) == {"sent": 1}
    assert not await exists(store, old[0]) and await exists(store, young[0])
    # The cutoff is strict: last changed exactly at it stays.
    assert await store.message_purge(rule(LATER), 100) == {}
    assert await exists(store, young[0])


async def test_purge__per_status_cutoffs_and_only_the_statuses_named(store: Store) -> None:
    sent = await finished(store, Status.SENT, OLD)
    dead = await finished(store, Status.DEAD, OLD)
    # sent kept 7 days, dead 30: twenty days on, only the sent one is past its retention.
    policy = PurgeRule(
        before={"sent": LATER - timedelta(days=7), "dead": LATER - timedelta(days=30)}
    )
    assert await store.message_purge_count(policy) == {"sent": 1}
    assert await store.message_purge(policy, 100) == {"sent": 1}
    assert await exists(store, dead[0]) and not await exists(store, sent[0])
    assert await store.message_purge(rule(LATER, ["sent"]), 100) == {}


async def test_purge__one_tenant_only(store: Store) -> None:
    await finished(store, Status.SENT, OLD, 2, tenant="acme")
    other = await finished(store, Status.SENT, OLD, 1, tenant="globex")
    assert await store.message_purge_count(rule(LATER, tenant="acme")) == {"sent": 2}
    assert await store.message_purge(rule(LATER, tenant="acme"), 100) == {"sent": 2}
    assert await exists(store, other[0])
    with pytest.raises(ValidationError) as err:
        await store.message_purge(rule(LATER, tenant=" "), 100)
    assert err.value.field == "tenant"


async def test_purge__at_most_limit_per_call(store: Store) -> None:
    await finished(store, Status.SENT, OLD, 3)
    await finished(store, Status.DEAD, OLD, 3)
    assert sum((await store.message_purge(rule(LATER), 4)).values()) == 4
    assert sum((await store.message_purge(rule(LATER), 4)).values()) == 2
    for bad in (0, -1, True, 2.5):
        with pytest.raises(ValidationError) as err:
            await store.message_purge(rule(LATER), bad)  # type: ignore[arg-type]
        assert err.value.field == "batch"


async def test_purge__exports_exactly_what_it_removes(store: Store) -> None:
    (mid,) = await finished(store, Status.SENT, OLD)
    await store.inbox_put([_event(mid)], OLD)
    (item,) = await store.inbox_claim("w1", 1, 30, OLD)
    receipt = Receipt(mid, "twilio", "delivered", OLD, OLD)
    assert await store.inbox_finish(item.id, item.attempts, "", OLD, receipt) == "applied"
    dead = await finished(store, Status.DEAD, OLD, 2)
    before = {m: (await store.message_get(m), await store.attempt_list(m)) for m in [mid, *dead]}
    got: list[Purged] = []
    removed = await store.message_purge(rule(LATER), 100, got.extend)
    assert removed == {"delivered": 1, "dead": 2}
    assert {p.message.id for p in got} == set(before)
    for p in got:
        message, attempts = before[p.message.id]
        assert (p.message, p.attempts) == (message, attempts)
    (delivered,) = [p for p in got if p.message.id == mid]
    assert [r.status for r in delivered.receipts] == ["delivered"]
    assert await store.receipt_list(mid) == []


async def test_purge__an_export_that_fails_removes_nothing(store: Store) -> None:
    ids = await finished(store, Status.SENT, OLD, 3)

    def broken(batch: Sequence[Purged]) -> None:
        raise OSError("disk full")

    with pytest.raises(OSError):
        await store.message_purge(rule(LATER), 100, broken)
    for mid in ids:
        assert await exists(store, mid) and await store.attempt_list(mid)


async def test_purge__leaves_the_audit_log_alone(store: Store) -> None:
    await store.audit_append(AuditEntry(at=OLD, actor="ops", action="test", target="x"))
    await finished(store, Status.DEAD, OLD)
    await store.message_purge(rule(LATER), 100)
    assert [e.action for e in await store.audit_list()] == ["test"]


def _event(mid: str) -> InboxItem:
    return InboxItem(
        id=0, provider="twilio", event_id=f"e-{mid}", kind="receipt", status="delivered",
        message_id=mid, provider_message_id=None, occurred_at=OLD, error_code=None,
        detail=None, address=None, data={}, received_at=OLD,
    )  # fmt: skip
