"""The Store contract for ``activity``, the per-minute counts behind the console's rates
and charts: every test runs against PostgreSQL and SQLite alike.

Message ids are minted from the wall clock, so these tests' ``NOW`` is the wall clock
too (rounded to the second): the window is found through the ids' time order.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sluice.errors import ValidationError
from sluice.model import Attempt, AttemptOutcome, Completion, Message, NewMessage, Status
from sluice.store import Store
from sluice.store._params import ID_SLACK, first_id_at

NOW = datetime.now(UTC).replace(microsecond=0)


def msg(n: int, **kw: object) -> NewMessage:
    fields: dict[str, object] = {
        "tenant": "acme", "channel": "sms", "provider": "null",
        "recipient": "+15550001111", "payload": {"n": n},
    }  # fmt: skip
    fields.update(kw)
    return NewMessage(**fields)  # type: ignore[arg-type]


def ended(m: Message, outcome: AttemptOutcome, at: datetime) -> Completion:
    attempt = Attempt(m.id, m.claim_seq, "w1", m.provider, at, at, outcome)
    if outcome is AttemptOutcome.SENT:
        return Completion(m.id, m.claim_seq, "w1", Status.SENT, attempt)
    return Completion(m.id, m.claim_seq, "w1", Status.QUEUED, attempt, run_at=at)


async def test_activity__an_empty_store_has_a_zero_for_every_minute(store: Store) -> None:
    seen = await store.activity(NOW, 15)
    assert seen.minutes == 15
    for series in (seen.enqueued, seen.sent, seen.failed, seen.deferred):
        assert series == [0] * 15


async def test_activity__counts_messages_by_the_minute_they_were_created(store: Store) -> None:
    at = {
        "now": NOW, "10s ago": NOW - timedelta(seconds=10), "90s ago": NOW - timedelta(seconds=90),
        "59m ago": NOW - timedelta(minutes=59, seconds=30), "61m ago": NOW - timedelta(minutes=61),
        "later": NOW + timedelta(seconds=5),
    }  # fmt: skip
    for i, when in enumerate(at.values()):
        await store.enqueue_many([msg(i)], when)

    seen = await store.activity(NOW, 60)

    assert seen.enqueued[-1] == 2  # now and 10 s ago: the minute that ends now
    assert seen.enqueued[-2] == 1  # 90 s ago
    assert seen.enqueued[0] == 1  # 59.5 min ago: the first minute of the hour
    assert sum(seen.enqueued) == 4  # an hour and a minute ago, and later: outside
    assert seen.sent == seen.failed == seen.deferred == [0] * 60


async def test_activity__a_message_whose_id_is_older_than_the_window_is_not_read(
    store: Store,
) -> None:
    """The id bounds the scan: an id minted long before the window starts is not in it."""
    since = NOW - timedelta(minutes=10)
    old_id = first_id_at(since - ID_SLACK - timedelta(minutes=1))
    await store.enqueue_many([msg(1, id=old_id), msg(2)], NOW)
    assert (await store.activity(NOW, 10)).enqueued[-1] == 1


async def test_activity__counts_attempts_by_outcome_and_minute(store: Store) -> None:
    outcomes = [
        (AttemptOutcome.SENT, 0), (AttemptOutcome.SENT, 0), (AttemptOutcome.SENT, 3),
        (AttemptOutcome.FAILED, 0), (AttemptOutcome.FAILED, 3),
        (AttemptOutcome.THROTTLED, 1), (AttemptOutcome.DEFERRED, 1),
        (AttemptOutcome.SHADOWED, 0),  # nothing was sent: in no series
        (AttemptOutcome.SENT, 11),  # before the window
    ]  # fmt: skip
    await store.enqueue_many([msg(i) for i in range(len(outcomes))], NOW - timedelta(minutes=20))
    claimed = await store.message_claim("w1", len(outcomes), 30, NOW - timedelta(minutes=20))
    assert len(claimed) == len(outcomes)
    done = [
        ended(m, outcome, NOW - timedelta(minutes=ago, seconds=20))
        for m, (outcome, ago) in zip(claimed, outcomes, strict=True)
    ]
    await store.message_complete_many("w1", done, NOW)

    seen = await store.activity(NOW, 10)

    assert seen.sent == [0] * 6 + [1, 0, 0, 2]
    assert seen.failed == [0] * 6 + [1, 0, 0, 1]
    assert seen.deferred == [0] * 8 + [2, 0]
    assert seen.enqueued == [0] * 10  # created 20 minutes ago


@pytest.mark.parametrize("bad", [0, -1, 1441, True, 1.5, "60", None])
async def test_activity__refuses_a_window_that_is_not_1_to_1440_minutes(
    store: Store, bad: object
) -> None:
    with pytest.raises(ValidationError, match="minutes"):
        await store.activity(NOW, bad)  # type: ignore[arg-type]
