"""The circuit-breaker half of the Store contract: every test runs against PostgreSQL and SQLite.

Breakers are shared by every worker through two tables: the window (outcomes per key in
buckets, added to by each worker's sync) and one row per breaker that has ever left
closed. These tests pin what the stores promise: counts add up across reports and
workers, the window reads only the buckets asked for, probes count only while
half-open, and a transition is a compare-and-swap written with its audit row in one
transaction — of two workers racing, exactly one moves the breaker and audits it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from sluice.store import AuditEntry, Store, create_store
from sluice.store._audit import verify_chain

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(seconds=30)


@pytest.fixture
async def other(store_url: str) -> AsyncIterator[Store]:
    """A second store on the same database: another worker process."""
    s = create_store(store_url)
    await s.open()
    yield s
    await s.close()


def audit(action: str, key: str, actor: str = "worker:w1") -> AuditEntry:
    return AuditEntry(at=NOW, actor=actor, action=action, target=key, detail={"ok": 1})


async def move(
    store: Store,
    key: str,
    expected: str | None,
    new: str,
    *,
    forced: bool = False,
    retry_at: datetime | None = None,
    now: datetime = NOW,
    actor: str = "worker:w1",
) -> bool:
    provider = key.rsplit(":", 1)[1]
    tenant = key.split(":")[1] if key.startswith("c:") else ""
    return await store.breaker_transition(
        key,
        provider,
        tenant,
        expected,
        new,
        retry_at=retry_at,
        reason=f"to {new}",
        forced=forced,
        now=now,
        audit=audit(f"breaker.{new}", key, actor),
    )


# -- window -------------------------------------------------------------------------


async def test_report__adds_counts_to_buckets_across_reports_and_workers(
    store: Store, other: Store
) -> None:
    await store.breaker_report({("p:twilio", 100): (3, 1), ("p:twilio", 101): (0, 2)}, {}, NOW)
    await other.breaker_report({("p:twilio", 100): (1, 4), ("c:acme:twilio", 101): (5, 0)}, {}, NOW)
    await store.breaker_report({("p:twilio", 101): (1, 1)}, {}, NOW)

    assert await store.breaker_window(None, 0) == {"p:twilio": (5, 8), "c:acme:twilio": (5, 0)}


async def test_report__nothing_to_report_is_a_no_op(store: Store) -> None:
    await store.breaker_report({}, {}, NOW)
    await store.breaker_report({}, {"p:twilio": 0}, NOW)

    assert await store.breaker_window(None, 0) == {}
    assert await store.breaker_list() == []


async def test_window__sums_only_buckets_from_since_and_only_the_keys_asked(
    store: Store,
) -> None:
    await store.breaker_report(
        {
            ("p:twilio", 99): (100, 100),  # before the window
            ("p:twilio", 100): (2, 1),
            ("p:twilio", 105): (1, 3),
            ("p:sendgrid", 104): (7, 0),
            ("c:acme:twilio", 100): (0, 9),
        },
        {},
        NOW,
    )

    assert await store.breaker_window(None, 100) == {
        "p:twilio": (3, 4),
        "p:sendgrid": (7, 0),
        "c:acme:twilio": (0, 9),
    }
    assert await store.breaker_window(["p:twilio", "p:nobody"], 100) == {"p:twilio": (3, 4)}
    assert await store.breaker_window(["p:twilio"], 106) == {}
    assert await store.breaker_window([], 0) == {}


async def test_purge__drops_buckets_before_the_cut_and_says_how_many(store: Store) -> None:
    await store.breaker_report(
        {("p:a", 1): (1, 0), ("p:b", 2): (1, 0), ("p:a", 3): (0, 1), ("p:b", 4): (1, 1)}, {}, NOW
    )

    assert await store.breaker_purge(3) == 2
    assert await store.breaker_purge(3) == 0
    assert await store.breaker_window(None, 0) == {"p:a": (0, 1), "p:b": (1, 1)}


# -- rows and transitions -----------------------------------------------------------


async def test_transition__creates_the_row_of_a_closed_breaker_with_every_field(
    store: Store,
) -> None:
    retry_at = NOW + timedelta(seconds=30)

    assert await move(store, "c:acme:twilio", "closed", "open", retry_at=retry_at)

    [row] = await store.breaker_list()
    assert (row.key, row.provider, row.tenant, row.state) == (
        "c:acme:twilio",
        "twilio",
        "acme",
        "open",
    )
    assert (row.since, row.retry_at, row.forced, row.reason, row.probes_ok, row.updated_at) == (
        NOW,
        retry_at,
        False,
        "to open",
        0,
        NOW,
    )


async def test_transition__compare_and_swap_on_the_state(store: Store) -> None:
    assert not await move(store, "p:twilio", "open", "half_open")  # no row: it is closed
    assert await store.breaker_list() == []
    assert await move(store, "p:twilio", "closed", "open", retry_at=LATER)

    assert not await move(store, "p:twilio", "closed", "open", now=LATER)  # already open
    assert await move(store, "p:twilio", "open", "half_open", now=LATER)
    assert not await move(store, "p:twilio", "open", "half_open", now=LATER)

    [row] = await store.breaker_list()
    assert (row.state, row.since, row.retry_at) == ("half_open", LATER, None)
    assert [e.action for e in await store.audit_list()] == ["breaker.half_open", "breaker.open"]


async def test_transition__writes_its_audit_row_only_when_it_moves(store: Store) -> None:
    assert await move(store, "p:twilio", "closed", "open")
    assert not await move(store, "p:twilio", "closed", "open")

    [entry] = await store.audit_list()
    assert (entry.actor, entry.action, entry.target, entry.detail) == (
        "worker:w1",
        "breaker.open",
        "p:twilio",
        {"ok": 1},
    )
    assert verify_chain([entry]) is None


async def test_transition__of_two_workers_racing_exactly_one_moves_and_audits(
    store: Store, other: Store
) -> None:
    for round_ in range(5):
        key = f"p:race{round_}"
        results = await asyncio.gather(
            move(store, key, "closed", "open", actor="worker:w1"),
            move(other, key, "closed", "open", actor="worker:w2"),
        )
        assert sorted(results) == [False, True], key

    entries = await store.audit_list()
    assert len(entries) == 5
    assert verify_chain(list(reversed(entries))) is None


async def test_transition__workers_never_move_a_forced_breaker_an_operator_does(
    store: Store,
) -> None:
    assert await move(store, "p:twilio", None, "closed", forced=True, actor="alice")

    assert not await move(store, "p:twilio", "closed", "open")
    [row] = await store.breaker_list()
    assert (row.state, row.forced) == ("closed", True)

    assert await move(store, "p:twilio", None, "open", forced=True, actor="alice")
    assert not await move(store, "p:twilio", "open", "half_open", now=LATER)
    assert await move(store, "p:twilio", None, "closed", forced=False, actor="alice")
    [row] = await store.breaker_list()
    assert (row.state, row.forced) == ("closed", False)
    assert await move(store, "p:twilio", "closed", "open")


async def test_transition__to_closed_empties_the_window_of_that_key_only(store: Store) -> None:
    await store.breaker_report({("p:twilio", 10): (1, 30), ("p:sendgrid", 10): (4, 4)}, {}, NOW)
    assert await move(store, "p:twilio", "closed", "open")
    assert await move(store, "p:twilio", "open", "half_open")
    assert await store.breaker_window(None, 0) == {"p:twilio": (1, 30), "p:sendgrid": (4, 4)}

    assert await move(store, "p:twilio", "half_open", "closed")

    assert await store.breaker_window(None, 0) == {"p:sendgrid": (4, 4)}


async def test_report__probes_count_only_while_half_open_and_a_move_resets_them(
    store: Store, other: Store
) -> None:
    await move(store, "p:twilio", "closed", "open")
    await move(store, "p:sendgrid", "closed", "open")
    await move(store, "p:sendgrid", "open", "half_open")

    await store.breaker_report({}, {"p:twilio": 2, "p:sendgrid": 2, "p:nobody": 1}, LATER)
    await other.breaker_report({("p:sendgrid", 1): (1, 0)}, {"p:sendgrid": 1}, LATER)

    rows = {r.key: r for r in await store.breaker_list()}
    assert set(rows) == {"p:twilio", "p:sendgrid"}  # no row made for a probe
    assert rows["p:twilio"].probes_ok == 0  # open: probes do not count
    assert rows["p:sendgrid"].probes_ok == 3
    assert rows["p:sendgrid"].updated_at == LATER

    assert await move(store, "p:sendgrid", "half_open", "open", now=LATER)
    [row] = [r for r in await store.breaker_list() if r.key == "p:sendgrid"]
    assert row.probes_ok == 0


async def test_list__is_ordered_by_key(store: Store) -> None:
    for key in ("p:b", "c:acme:a", "p:a"):
        await move(store, key, "closed", "open")

    assert [r.key for r in await store.breaker_list()] == ["c:acme:a", "p:a", "p:b"]
