"""Circuit breakers shared by workers through real stores (both kinds).

Each ``Breakers`` is one worker's view; two of them on two store connections to one
database are two workers. They record outcomes locally, and ``sync`` (once a second in
a worker) is where they meet: counts add up in the store, the shared state is read
back, and a transition that is due is made once, by whichever worker gets there
first, with one audit row. Time is a ``FrozenClock``; the policy is the default one
(open at >= 50 % failed of >= 20 outcomes in 10 minutes, 30 s cooldown, 5 probes).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from sluice.clock import FrozenClock
from sluice.config import Settings
from sluice.errors import ValidationError
from sluice.flow.breakers import BreakerPolicy, Breakers, BreakerState, Verdict
from sluice.ops.breakers import breaker_force, breaker_reset, breakers_list
from sluice.store import AuditEntry, Store, create_store

NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
COOLDOWN = timedelta(seconds=30)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(NOW)


@pytest.fixture
async def other(store_url: str) -> AsyncIterator[Store]:
    """A second connection to the same database: the second worker's."""
    s = create_store(store_url)
    await s.open()
    yield s
    await s.close()


@pytest.fixture
def w1(store: Store, clock: FrozenClock) -> Breakers:
    return Breakers(store, BreakerPolicy(), worker_id="w1", clock=clock)


@pytest.fixture
def w2(other: Store, clock: FrozenClock) -> Breakers:
    return Breakers(other, BreakerPolicy(), worker_id="w2", clock=clock)


def outcomes(b: Breakers, ok: int = 0, failed: int = 0, tenant: str = "acme") -> None:
    for _ in range(ok):
        b.record("twilio", tenant, True)
    for _ in range(failed):
        b.record("twilio", tenant, False)


async def breaker_audit(store: Store) -> list[AuditEntry]:
    """The breakers' audit rows, oldest first."""
    return [e for e in reversed(await store.audit_list()) if e.action.startswith("breaker.")]


async def state_of(store: Store, key: str) -> str:
    return next((r.state for r in await store.breaker_list() if r.key == key), "closed")


async def open_twilio(w: Breakers, clock: FrozenClock) -> None:
    """Open p:twilio and c:acme:twilio with 20 failures."""
    outcomes(w, failed=20)
    await w.sync()
    assert not w.allow("twilio", "acme").allowed


async def half_open_twilio(w: Breakers, clock: FrozenClock) -> None:
    await open_twilio(w, clock)
    clock.advance(COOLDOWN.total_seconds())
    await w.sync()
    assert await state_of(w.store, "p:twilio") == "half_open"


# -- opening ------------------------------------------------------------------------


async def test_closed__lets_everything_through(w1: Breakers) -> None:
    await w1.sync()

    assert w1.allow("twilio", "acme") == Verdict(True)


async def test_opens_at_the_threshold_only_with_the_minimum_volume(
    w1: Breakers, store: Store, clock: FrozenClock
) -> None:
    outcomes(w1, failed=19)  # 100 % failed, but fewer than 20 outcomes
    await w1.sync()
    assert w1.allow("twilio", "acme").allowed

    outcomes(w1, ok=11)  # 19/30 failed: 63 %
    await w1.sync()
    assert not w1.allow("twilio", "acme").allowed

    verdict = w1.allow("twilio", "acme")
    assert (verdict.allowed, verdict.probe, verdict.key, verdict.retry_at) == (
        False,
        False,
        "p:twilio",
        NOW + COOLDOWN,
    )
    assert verdict.reason == "circuit breaker p:twilio is open: 19/30 failed (63%) in 600 s"
    assert [(e.action, e.target, e.actor) for e in await breaker_audit(store)] == [
        ("breaker.open", "c:acme:twilio", "worker:w1"),
        ("breaker.open", "p:twilio", "worker:w1"),
    ]
    entry = (await breaker_audit(store))[1]
    assert entry.detail["ok"] == 11
    assert entry.detail["failed"] == 19
    assert entry.detail["rate"] == pytest.approx(19 / 30, abs=1e-4)


async def test_below_the_failure_rate_it_stays_closed(w1: Breakers, store: Store) -> None:
    outcomes(w1, ok=51, failed=49)
    await w1.sync()

    assert w1.allow("twilio", "acme").allowed
    assert await store.breaker_list() == []


async def test_one_tenants_failures_open_its_connection_breaker_not_the_providers(
    w1: Breakers,
) -> None:
    outcomes(w1, failed=20, tenant="acme")
    outcomes(w1, ok=40, tenant="globex")
    await w1.sync()

    refused = w1.allow("twilio", "acme")
    assert (refused.allowed, refused.key) == (False, "c:acme:twilio")
    assert w1.allow("twilio", "globex").allowed
    assert w1.allow("sendgrid", "acme").allowed


async def test_two_workers_share_one_window_and_one_state(
    w1: Breakers, w2: Breakers, store: Store
) -> None:
    outcomes(w1, failed=10)
    outcomes(w2, failed=10)  # neither alone has the minimum volume
    await w1.sync()
    assert w1.allow("twilio", "acme").allowed

    await w2.sync()  # the shared window now holds 20 failures
    assert not w2.allow("twilio", "acme").allowed
    assert w1.allow("twilio", "acme").allowed  # until its next sync
    await w1.sync()
    assert not w1.allow("twilio", "acme").allowed

    assert [e.actor for e in await breaker_audit(store)] == ["worker:w2", "worker:w2"]


async def test_two_workers_racing_make_one_transition_and_one_audit_row_each(
    w1: Breakers, w2: Breakers, store: Store, clock: FrozenClock
) -> None:
    outcomes(w1, failed=15)
    outcomes(w2, failed=15)
    await w1.sync()
    await w2.sync()  # both have flushed; the next syncs race to open
    outcomes(w1, failed=1)
    outcomes(w2, failed=1)

    await asyncio.gather(w1.sync(), w2.sync())
    await asyncio.gather(w1.sync(), w2.sync())
    clock.advance(30)
    await asyncio.gather(w1.sync(), w2.sync())

    actions = [(e.action, e.target) for e in await breaker_audit(store)]
    assert sorted(actions) == [
        ("breaker.half_open", "c:acme:twilio"),
        ("breaker.half_open", "p:twilio"),
        ("breaker.open", "c:acme:twilio"),
        ("breaker.open", "p:twilio"),
    ]
    assert await state_of(store, "p:twilio") == "half_open"


async def test_a_breaker_opened_by_another_worker_refuses_here_too(
    w1: Breakers, w2: Breakers
) -> None:
    outcomes(w1, failed=20, tenant="acme")
    await w1.sync()
    await w2.sync()  # w2 never sent to twilio: it learns of the breaker from the store

    assert w2.allow("twilio", "globex").key == "p:twilio"
    assert not w2.allow("twilio", "globex").allowed


async def test_the_opening_worker_stops_at_once_and_another_hears_it_without_a_sync(
    w1: Breakers, w2: Breakers, store: Store, other: Store
) -> None:
    """Issue 10 item 12: a send admitted before the breaker opened may not start after it
    (``check``, the last look), and another worker applies the move it is told of
    (``apply``, from the store's flow signal) before its own next sync."""
    await w2.sync()
    admitted = w2.allow("twilio", "acme")
    assert admitted.allowed
    heard: list[object] = []
    other.flow_listen(lambda signal: (heard.append(signal), w2.apply(signal.breaker)))  # type: ignore[arg-type, func-returns-value]
    await asyncio.sleep(0.2)
    outcomes(w1, failed=20)
    await w1.sync()
    assert not w1.check("twilio", "acme").allowed  # the opener, at once
    deadline = asyncio.get_running_loop().time() + 5
    while len(heard) < 2:  # p:twilio and c:acme:twilio
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.005)
    late = w2.check("twilio", "acme")
    assert not late.allowed and late.key in ("p:twilio", "c:acme:twilio")
    assert not w2.allow("twilio", "globex").allowed  # the provider's breaker, for everyone


async def test_an_older_state_does_not_overwrite_a_newer_one(
    w1: Breakers, clock: FrozenClock
) -> None:
    await open_twilio(w1, clock)
    (row,) = [r for r in await w1.store.breaker_list() if r.key == "p:twilio"]
    stale = type(row)(
        **{
            **{f: getattr(row, f) for f in row.__slots__},  # type: ignore[attr-defined]
            "state": "closed",
            "updated_at": row.updated_at - timedelta(seconds=5),
        }
    )
    w1.apply(stale)
    assert not w1.allow("twilio", "acme").allowed


# -- endpoints (webhooks, http actions) ------------------------------------------------

A_DOWN = "https://a.example/down"
A_UP = "https://a.example/up"


async def test_endpoint__a_dead_endpoint_opens_only_its_own_breaker(w1: Breakers) -> None:
    """Issue 10 item 15: webhook receivers are servers of their own. One failing does not
    open a breaker for the provider, the tenant, or another endpoint."""
    for _ in range(20):
        w1.record("webhook", "a", False, endpoint=A_DOWN)
    for _ in range(40):
        w1.record("webhook", "a", True, endpoint=A_UP)
        w1.record("webhook", "b", True, endpoint="https://b.example/")
    await w1.sync()
    refused = w1.allow("webhook", "a", A_DOWN)
    assert (refused.allowed, refused.key) == (False, f"e:a:{A_DOWN}")
    assert w1.allow("webhook", "a", A_UP).allowed
    assert w1.allow("webhook", "b", "https://b.example/").allowed
    # The same URL for another tenant is that tenant's own breaker.
    assert w1.allow("webhook", "b", A_DOWN).allowed
    keys = {r.key for r in await w1.store.breaker_list()}
    assert keys == {f"e:a:{A_DOWN}"}


async def test_endpoint__operators_can_force_and_list_endpoint_breakers(store: Store) -> None:
    key = f"e:acme:{A_DOWN}"
    await breaker_force(store, key, "open", actor="ops:ana", reason="receiver down")
    (status,) = [
        b
        for b in await breakers_list(store, Settings(database_url="sqlite:///unused.db"))
        if b.key == key
    ]
    assert (status.state, status.forced, status.tenant) == (BreakerState.OPEN, True, "acme")


# -- half-open ----------------------------------------------------------------------


async def test_open__turns_half_open_after_the_cooldown_once(
    w1: Breakers, w2: Breakers, store: Store, clock: FrozenClock
) -> None:
    await open_twilio(w1, clock)
    clock.advance(29)
    await asyncio.gather(w1.sync(), w2.sync())
    assert await state_of(store, "p:twilio") == "open"

    clock.advance(1)
    await asyncio.gather(w1.sync(), w2.sync())

    assert await state_of(store, "p:twilio") == "half_open"
    half = [e for e in await breaker_audit(store) if e.action == "breaker.half_open"]
    assert sorted(str(e.target) for e in half) == ["c:acme:twilio", "p:twilio"]


async def test_open_past_its_retry_at_defers_a_little_never_into_the_past(
    w1: Breakers, clock: FrozenClock
) -> None:
    await open_twilio(w1, clock)
    clock.advance(45)  # no sync yet: still open in the snapshot

    verdict = w1.allow("twilio", "acme")

    assert not verdict.allowed
    assert verdict.retry_at == clock.now() + timedelta(seconds=1)


async def test_half_open__one_probe_at_a_time_per_worker(
    w1: Breakers, w2: Breakers, clock: FrozenClock
) -> None:
    await half_open_twilio(w1, clock)
    await w2.sync()

    first = w1.allow("twilio", "acme")
    busy = w1.allow("twilio", "acme")
    elsewhere = w2.allow("twilio", "acme")

    assert (first.allowed, first.probe, first.key) == (True, True, "p:twilio")
    assert (busy.allowed, busy.probe, busy.key) == (False, False, "p:twilio")
    assert busy.retry_at == clock.now() + timedelta(seconds=1)
    assert "probe is in flight" in busy.reason
    assert (elsewhere.allowed, elsewhere.probe) == (True, True)  # one per worker

    w1.record("twilio", "acme", True, probe=True)  # the probe is back: the slot is free
    assert w1.allow("twilio", "acme").probe


async def test_half_open__closes_after_enough_successful_probes_across_workers(
    w1: Breakers, w2: Breakers, store: Store, clock: FrozenClock
) -> None:
    await half_open_twilio(w1, clock)
    await w2.sync()
    for w in (w1, w2, w1, w2):
        assert w.allow("twilio", "acme").probe
        w.record("twilio", "acme", True, probe=True)
    await asyncio.gather(w1.sync(), w2.sync())
    assert await state_of(store, "p:twilio") == "half_open"  # 4 of 5

    assert w1.allow("twilio", "acme").probe
    w1.record("twilio", "acme", True, probe=True)
    await w1.sync()
    await w2.sync()

    assert await state_of(store, "p:twilio") == "closed"
    assert w1.allow("twilio", "acme") == Verdict(True)
    assert w2.allow("twilio", "acme") == Verdict(True)
    closed = [e for e in await breaker_audit(store) if e.action == "breaker.closed"]
    assert sorted(str(e.target) for e in closed) == ["c:acme:twilio", "p:twilio"]
    assert closed[0].reason == "5 probes succeeded while half-open"


async def test_closing_starts_a_fresh_window_so_old_failures_do_not_reopen_it(
    w1: Breakers, store: Store, clock: FrozenClock
) -> None:
    await half_open_twilio(w1, clock)
    for _ in range(5):
        assert w1.allow("twilio", "acme").probe
        w1.record("twilio", "acme", True, probe=True)
    await w1.sync()
    assert await state_of(store, "p:twilio") == "closed"

    outcomes(w1, failed=19)  # the 20 failures that opened it are gone
    await w1.sync()
    assert w1.allow("twilio", "acme").allowed

    outcomes(w1, failed=1)
    await w1.sync()
    assert not w1.allow("twilio", "acme").allowed


async def test_half_open__a_failed_probe_opens_it_again(
    w1: Breakers, store: Store, clock: FrozenClock
) -> None:
    await half_open_twilio(w1, clock)
    verdict = w1.allow("twilio", "acme")
    assert verdict.probe

    w1.record("twilio", "acme", False, probe=True)
    await w1.sync()

    refused = w1.allow("twilio", "acme")
    assert (refused.allowed, refused.retry_at) == (False, clock.now() + COOLDOWN)
    [*_, reopened] = [e for e in await breaker_audit(store) if e.target == "p:twilio"]
    assert (reopened.action, reopened.reason) == ("breaker.open", "a probe failed while half-open")


async def test_half_open__a_probe_never_recorded_frees_its_slot_on_release_or_timeout(
    w1: Breakers, clock: FrozenClock
) -> None:
    await half_open_twilio(w1, clock)
    assert w1.allow("twilio", "acme").probe
    w1.release("twilio", "acme")  # e.g. the provider refused the credentials
    assert w1.allow("twilio", "acme").probe

    clock.advance(59)
    assert not w1.allow("twilio", "acme").allowed
    clock.advance(1)
    assert w1.allow("twilio", "acme").probe


# -- forced -------------------------------------------------------------------------


async def test_forced_open__refuses_and_no_worker_probes_it(
    w1: Breakers, store: Store, clock: FrozenClock
) -> None:
    await breaker_force(store, "twilio", "open", actor="alice", reason="provider incident")
    await w1.sync()

    verdict = w1.allow("twilio", "acme")
    assert (verdict.allowed, verdict.key, verdict.retry_at) == (False, "p:twilio", NOW + COOLDOWN)
    assert verdict.reason == "circuit breaker p:twilio is forced open: provider incident"
    clock.advance(3600)
    await w1.sync()
    assert not w1.allow("twilio", "acme").allowed
    assert await state_of(store, "p:twilio") == "open"


async def test_forced_closed__lets_everything_through_whatever_fails(
    w1: Breakers, store: Store
) -> None:
    await breaker_force(store, "p:twilio", "closed", actor="alice", reason="false alarm")
    await breaker_force(store, "c:acme:twilio", "closed", actor="alice", reason="false alarm")

    outcomes(w1, failed=100)
    await w1.sync()

    assert w1.allow("twilio", "acme") == Verdict(True)
    assert [e.action for e in await breaker_audit(store)] == ["breaker.force_closed"] * 2


async def test_reset__hands_it_back_to_the_workers_with_an_empty_window(
    w1: Breakers, store: Store, clock: FrozenClock
) -> None:
    await open_twilio(w1, clock)
    await breaker_force(store, "p:twilio", "open", actor="alice", reason="hold it")

    row = await breaker_reset(store, "p:twilio", actor="alice", reason="provider fixed")
    await breaker_reset(store, "c:acme:twilio", actor="alice", reason="provider fixed")
    await w1.sync()

    assert (row.state, row.forced, row.reason) == ("closed", False, "provider fixed")
    assert w1.allow("twilio", "acme").allowed
    assert [e.action for e in await breaker_audit(store)][-3:] == [
        "breaker.force_open",
        "breaker.reset",
        "breaker.reset",
    ]
    outcomes(w1, failed=20)  # automatic again
    await w1.sync()
    assert not w1.allow("twilio", "acme").allowed


# -- operator actions ---------------------------------------------------------------


async def test_breakers_list__shows_state_and_window_figures(
    w1: Breakers, store: Store, clock: FrozenClock
) -> None:
    outcomes(w1, ok=3, failed=1, tenant="globex")
    await open_twilio(w1, clock)

    found = {b.key: b for b in await breakers_list(store, Settings(), clock.now())}

    assert set(found) == {"p:twilio", "c:acme:twilio", "c:globex:twilio"}
    p = found["p:twilio"]
    assert (p.state, p.forced, p.ok, p.failed, p.since, p.retry_at) == (
        BreakerState.OPEN,
        False,
        3,
        21,
        NOW,
        NOW + COOLDOWN,
    )
    assert p.failure_rate == pytest.approx(21 / 24)
    g = found["c:globex:twilio"]
    assert (g.provider, g.tenant, g.state, g.ok, g.failed, g.since) == (
        "twilio",
        "globex",
        BreakerState.CLOSED,
        3,
        1,
        None,
    )
    assert w1.snapshot()[0].key == "c:acme:twilio"
    assert {s.key: s.state for s in w1.snapshot()} == {k: b.state for k, b in found.items()}


@pytest.mark.parametrize(
    ("key", "state", "actor", "reason", "field"),
    [
        ("twilio", "half_open", "alice", "why", "state"),
        ("twilio", "shut", "alice", "why", "state"),
        ("twilio", "open", "alice", "  ", "reason"),
        ("twilio", "open", "", "why", "actor"),
        ("c:acme", "open", "alice", "why", "key"),
    ],
)
async def test_breaker_force__bad_input_is_named_and_nothing_changes(
    store: Store, key: str, state: str, actor: str, reason: str, field: str
) -> None:
    with pytest.raises(ValidationError) as info:
        await breaker_force(store, key, state, actor=actor, reason=reason)

    assert info.value.field == field
    assert await store.breaker_list() == []
    assert await breaker_audit(store) == []


async def test_breaker_reset__needs_a_reason(store: Store) -> None:
    with pytest.raises(ValidationError, match="reason"):
        await breaker_reset(store, "twilio", actor="alice", reason="")
    assert await store.breaker_list() == []


# -- store trouble ------------------------------------------------------------------


async def test_sync__store_errors_are_logged_and_the_counts_kept(
    tmp_path: Path, clock: FrozenClock
) -> None:
    store = create_store(f"sqlite:///{tmp_path / 'later.db'}")  # no schema yet
    await store.open()
    try:
        with capture_logs() as logs:
            w = Breakers(store, worker_id="w1", clock=clock)
            outcomes(w, failed=20)
            await w.sync()  # does not raise
        assert [e["log_level"] for e in logs] == ["warning"]
        assert "sluice migrate" in logs[0]["error"]
        assert w.allow("twilio", "acme").allowed  # the last snapshot: nothing known

        await store.migrate()
        await w.sync()  # the 20 failures were kept and go now

        assert not w.allow("twilio", "acme").allowed
    finally:
        await store.close()


async def test_transitions_log_a_warning(store: Store, clock: FrozenClock) -> None:
    with capture_logs() as logs:
        w = Breakers(store, worker_id="w1", clock=clock)
        outcomes(w, failed=20)
        await w.sync()

    opened = [e for e in logs if e["event"] == "circuit breaker open"]
    assert {e["key"] for e in opened} == {"p:twilio", "c:acme:twilio"}
    assert all(e["log_level"] == "warning" for e in opened)
    assert opened[0]["reason"] == "20/20 failed (100%) in 600 s"
