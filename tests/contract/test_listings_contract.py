"""The Store contract for on-call listings (issue 14): messages by created and updated
windows, attempts by filter a page at a time, messages counted per group, the inbox a
page at a time. Every test runs against PostgreSQL and SQLite alike."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sluice.errors import ValidationError
from sluice.model import Attempt, AttemptOutcome, Completion, NewMessage, Status
from sluice.store import MessageFilter, Store
from sluice.store.base import AttemptFilter, InboxItem

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)


def msg(**kw: object) -> NewMessage:
    fields: dict[str, object] = {
        "tenant": "acme",
        "channel": "sms",
        "provider": "null",
        "recipient": "+15550001111",
        "payload": {},
        "run_at": NOW - timedelta(days=30),
    }
    fields.update(kw)
    return NewMessage(**fields)  # type: ignore[arg-type]


async def enqueue(store: Store, at: datetime, **kw: object) -> str:
    (mid,) = await store.enqueue_many([msg(**kw)], at)  # type: ignore[call-arg]
    return mid


async def attempt(
    store: Store,
    mid: str,
    at: datetime,
    *,
    worker: str = "w1",
    outcome: AttemptOutcome = AttemptOutcome.SENT,
    code: str | None = None,
    status: Status | None = None,
) -> None:
    """Claim ``mid`` (the one ready at ``at``) and write one attempt finished at ``at``."""
    [m] = await store.message_claim(worker, 1, 30, at)
    assert m.id == mid
    final = status or (Status.SENT if outcome is AttemptOutcome.SENT else Status.QUEUED)
    a = Attempt(mid, m.claim_seq, worker, m.provider, at, at, outcome, error_code=code)
    run_at = at + timedelta(days=365) if final is Status.QUEUED else None
    done = Completion(mid, m.claim_seq, worker, final, a, run_at=run_at)
    await store.message_complete_many(worker, [done], at)


# -- message_list: until, updated_since, updated_until -------------------------------


async def test_message_list__created_and_updated_windows(store: Store) -> None:
    old = await enqueue(store, NOW - 3 * HOUR)
    mid = await enqueue(store, NOW - 2 * HOUR, run_at=NOW + HOUR)
    new = await enqueue(store, NOW - HOUR, run_at=NOW + HOUR)
    await attempt(store, old, NOW - 30 * MINUTE)  # updated recently

    async def ids(**kw: object) -> set[str]:
        flt = MessageFilter(**kw)  # type: ignore[arg-type]
        return {m.id for m in await store.message_list(flt, None, None, 100)}

    assert await ids(until=NOW - 2 * HOUR) == {old}  # exclusive
    assert await ids(since=NOW - 2 * HOUR, until=NOW - HOUR) == {mid}
    assert await ids(updated_since=NOW - HOUR) == {old, new}  # inclusive
    assert await ids(updated_until=NOW - HOUR) == {mid}
    assert await ids(since=NOW - 2 * HOUR, updated_since=NOW - HOUR) == {new}
    assert await ids() == {old, mid, new}


# -- attempt_search ------------------------------------------------------------------


async def test_attempt_search__filters_each_field(store: Store) -> None:
    a = await enqueue(store, NOW - 4 * HOUR)
    b = await enqueue(store, NOW - 4 * HOUR, provider="twilio", run_at=NOW - 150 * MINUTE)
    await attempt(store, a, NOW - 3 * HOUR, worker="w1", outcome=AttemptOutcome.FAILED, code="X1")
    await attempt(store, b, NOW - 2 * HOUR, worker="w2", outcome=AttemptOutcome.SENT)

    async def found(**kw: object) -> list[tuple[str, str]]:
        page, _ = await store.attempt_search(AttemptFilter(**kw), 100)  # type: ignore[arg-type]
        return [(x.message_id, x.worker_id) for x in page]

    assert await found() == [(b, "w2"), (a, "w1")]  # newest first
    assert await found(message_id=a) == [(a, "w1")]
    assert await found(message_id=a.upper()) == [(a, "w1")]
    assert await found(worker_id="w2") == [(b, "w2")]
    assert await found(provider="twilio") == [(b, "w2")]
    assert await found(outcome="failed") == [(a, "w1")]
    assert await found(error_code="X1") == [(a, "w1")]
    assert await found(since=NOW - 2 * HOUR) == [(b, "w2")]  # inclusive
    assert await found(until=NOW - 2 * HOUR) == [(a, "w1")]  # exclusive
    assert await found(worker_id="w1", provider="twilio") == []


async def test_attempt_search__pages_with_the_cursor(store: Store) -> None:
    ids = [await enqueue(store, NOW - 9 * HOUR, run_at=NOW - (8 - n) * HOUR - MINUTE)
           for n in range(5)]  # fmt: skip
    for n, mid in enumerate(ids):
        await attempt(store, mid, NOW - (8 - n) * HOUR)
    first, cursor = await store.attempt_search(AttemptFilter(), 2)
    assert [x.message_id for x in first] == ids[::-1][:2] and cursor is not None
    second, cursor = await store.attempt_search(AttemptFilter(before_id=cursor), 2)
    assert [x.message_id for x in second] == ids[::-1][2:4] and cursor is not None
    last, cursor = await store.attempt_search(AttemptFilter(before_id=cursor), 2)
    assert [x.message_id for x in last] == [ids[0]] and cursor is None


async def test_attempt_search__a_message_id_that_is_not_one_is_refused(store: Store) -> None:
    with pytest.raises(ValidationError) as err:
        await store.attempt_search(AttemptFilter(message_id="not-an-id\udcff"), 10)
    assert err.value.field == "message_id"


# -- message_breakdown ---------------------------------------------------------------


async def test_message_breakdown__per_group_and_status(store: Store) -> None:
    a1 = await enqueue(store, NOW - 3 * HOUR, tenant="a")
    await enqueue(store, NOW - 2 * HOUR, tenant="a", run_at=NOW - HOUR)
    await enqueue(store, NOW - HOUR, tenant="b", provider="twilio", run_at=NOW - 30 * MINUTE)
    await attempt(store, a1, NOW - 2 * HOUR, outcome=AttemptOutcome.FAILED, code="X")

    rows = await store.message_breakdown("tenant", MessageFilter(), None, NOW)
    got = {(r.group, r.status): (r.count, r.errored) for r in rows}
    assert got == {("a", "queued"): (2, 1), ("b", "queued"): (1, 0)}
    [a] = [r for r in rows if r.group == "a"]
    assert a.oldest_created_at == NOW - 3 * HOUR
    assert a.oldest_ready_at == NOW - HOUR  # a1 waits until next year: not ready

    by_provider = await store.message_breakdown("provider", MessageFilter(), None, NOW)
    assert {(r.group, r.count) for r in by_provider} == {("null", 2), ("twilio", 1)}
    window = MessageFilter(since=NOW - 2 * HOUR)
    recent = await store.message_breakdown("tenant", window, None, NOW)
    assert {(r.group, r.count) for r in recent} == {("a", 1), ("b", 1)}
    [one] = await store.message_breakdown("", MessageFilter(tenant="b"), "queued", NOW)
    assert (one.group, one.count) == ("", 1)


async def test_message_breakdown__held_by_reason(store: Store) -> None:
    mid = await enqueue(store, NOW - 2 * HOUR)
    [m] = await store.message_claim("w1", 1, 30, NOW - HOUR)
    held = Completion(mid, m.claim_seq, "w1", Status.HELD, None, hold_reason="needs approval")
    await store.message_complete_many("w1", [held], NOW - HOUR)
    [r] = await store.message_breakdown("hold_reason", MessageFilter(), "held", NOW)
    assert (r.group, r.count, r.oldest_updated_at) == ("needs approval", 1, NOW - HOUR)


async def test_message_breakdown__refuses_another_column(store: Store) -> None:
    with pytest.raises(ValidationError) as err:
        await store.message_breakdown("recipient", MessageFilter(), None, NOW)
    assert err.value.field == "by"


# -- inbox_list: a page at a time ----------------------------------------------------


async def test_inbox_list__pages_below_the_cursor(store: Store) -> None:
    items = [
        InboxItem(
            id=0,
            provider="twilio",
            event_id=f"e{n}",
            kind="receipt",
            status="delivered",
            message_id=None,
            provider_message_id="SM1",
            occurred_at=NOW,
            error_code=None,
            detail=None,
            address=None,
            data={},
            received_at=NOW,
        )
        for n in range(5)
    ]
    await store.inbox_put(items, NOW)
    first = await store.inbox_list(None, None, 3)
    rest = await store.inbox_list(None, None, 3, first[-1].id)
    assert [i.event_id for i in first + rest] == ["e4", "e3", "e2", "e1", "e0"]
