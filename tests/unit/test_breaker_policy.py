"""The breaker rules without I/O: ``next_state``, the policy, the keys."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sluice.config import Settings
from sluice.errors import ValidationError
from sluice.flow.breakers import (
    BreakerPolicy,
    BreakerState,
    Transition,
    breaker_status,
    next_state,
    parse_key,
)
from sluice.store.base import BreakerInfo

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
POLICY = BreakerPolicy()


def row(
    state: str = "closed",
    *,
    forced: bool = False,
    retry_at: datetime | None = None,
    probes_ok: int = 0,
) -> BreakerInfo:
    return BreakerInfo(
        key="p:twilio",
        provider="twilio",
        tenant="",
        state=state,
        since=NOW - timedelta(minutes=1),
        retry_at=retry_at,
        forced=forced,
        reason=None,
        probes_ok=probes_ok,
        updated_at=NOW - timedelta(minutes=1),
    )


def step(
    r: BreakerInfo | None,
    ok: int = 0,
    failed: int = 0,
    *,
    probe_failed: bool = False,
    policy: BreakerPolicy = POLICY,
    now: datetime = NOW,
) -> Transition | None:
    return next_state(r, (ok, failed), probe_failed=probe_failed, policy=policy, now=now)


policies = st.builds(
    BreakerPolicy,
    window_seconds=st.floats(1, 3600),
    min_volume=st.integers(1, 200),
    failure_rate=st.floats(0.01, 1.0),
    cooldown_seconds=st.floats(0.5, 600),
    probes=st.integers(1, 20),
)
counts = st.integers(0, 1000)
states = st.sampled_from(["closed", "open", "half_open"])
ALLOWED_MOVES = {
    ("closed", "open"),
    ("open", "half_open"),
    ("half_open", "open"),
    ("half_open", "closed"),
}


# -- closed -------------------------------------------------------------------------


def test_closed__opens_at_the_threshold_naming_the_figures() -> None:
    t = step(row(), ok=10, failed=10)

    assert t == Transition(
        BreakerState.OPEN, NOW + timedelta(seconds=30), "10/20 failed (50%) in 600 s"
    )


def test_closed__a_missing_row_is_closed() -> None:
    assert step(None, ok=8, failed=12) == step(row(), ok=8, failed=12)
    assert step(None, ok=8, failed=12) is not None


@pytest.mark.parametrize(
    ("ok", "failed"),
    [(11, 9), (0, 19), (0, 0), (1000, 999)],
    ids=["below-rate", "below-volume", "nothing", "just-below-half"],
)
def test_closed__stays_closed(ok: int, failed: int) -> None:
    assert step(row(), ok=ok, failed=failed) is None


@given(policy=policies, ok=counts, failed=counts)
def test_closed__opens_iff_volume_and_failure_rate_reach_the_policy(
    policy: BreakerPolicy, ok: int, failed: int
) -> None:
    t = step(None, ok, failed, policy=policy)

    volume = ok + failed
    due = volume >= policy.min_volume and failed / volume >= policy.failure_rate
    assert (t is not None) == due
    if t is not None:
        assert t.state is BreakerState.OPEN
        assert t.retry_at == NOW + timedelta(seconds=policy.cooldown_seconds)
        assert f"{failed}/{volume} failed" in t.reason


# -- open ---------------------------------------------------------------------------


@given(policy=policies, wait=st.floats(-600, 600), ok=counts, failed=counts)
def test_open__turns_half_open_once_retry_at_is_reached_whatever_the_window(
    policy: BreakerPolicy, wait: float, ok: int, failed: int
) -> None:
    retry_at = NOW + timedelta(seconds=wait)

    t = step(row("open", retry_at=retry_at), ok, failed, policy=policy)

    if retry_at <= NOW:
        assert t is not None
        assert (t.state, t.retry_at) == (BreakerState.HALF_OPEN, None)
    else:
        assert t is None


# -- half-open ----------------------------------------------------------------------


def test_half_open__a_failed_probe_opens_it_again_for_a_new_cooldown() -> None:
    t = step(row("half_open", probes_ok=4), probe_failed=True)

    assert t == Transition(
        BreakerState.OPEN, NOW + timedelta(seconds=30), "a probe failed while half-open"
    )


def test_half_open__closes_after_enough_successful_probes() -> None:
    assert step(row("half_open", probes_ok=4)) is None
    t = step(row("half_open", probes_ok=5))

    assert t == Transition(BreakerState.CLOSED, None, "5 probes succeeded while half-open")


@given(policy=policies, probes_ok=st.integers(0, 40), probe_failed=st.booleans())
def test_half_open__a_failure_wins_over_successes_and_the_window_is_ignored(
    policy: BreakerPolicy, probes_ok: int, probe_failed: bool
) -> None:
    r = row("half_open", probes_ok=probes_ok)

    t = step(r, 0, 1000, probe_failed=probe_failed, policy=policy)

    if probe_failed:
        assert t is not None and t.state is BreakerState.OPEN
    elif probes_ok >= policy.probes:
        assert t is not None and t.state is BreakerState.CLOSED
    else:
        assert t is None


# -- every state --------------------------------------------------------------------


@given(state=states, ok=counts, failed=counts, probes_ok=st.integers(0, 40), flag=st.booleans())
def test_forced__never_moves_on_its_own(
    state: str, ok: int, failed: int, probes_ok: int, flag: bool
) -> None:
    r = row(state, forced=True, probes_ok=probes_ok, retry_at=NOW - timedelta(hours=1))

    assert step(r, ok, failed, probe_failed=flag) is None


@given(
    policy=policies,
    state=states,
    ok=counts,
    failed=counts,
    probes_ok=st.integers(0, 40),
    flag=st.booleans(),
    wait=st.floats(-600, 600),
)
def test_any_transition__changes_the_state_and_opens_only_into_the_future(
    policy: BreakerPolicy,
    state: str,
    ok: int,
    failed: int,
    probes_ok: int,
    flag: bool,
    wait: float,
) -> None:
    r = row(state, probes_ok=probes_ok, retry_at=NOW + timedelta(seconds=wait))

    t = step(r, ok, failed, probe_failed=flag, policy=policy)

    if t is not None:
        assert t.state != state
        assert (state, t.state) in ALLOWED_MOVES
        assert (t.retry_at is not None) == (t.state is BreakerState.OPEN)
        assert t.retry_at is None or t.retry_at > NOW
        assert t.reason


# -- policy and keys ----------------------------------------------------------------


def test_policy__from_settings() -> None:
    settings = Settings(
        breaker_window=120,
        breaker_min_volume=7,
        breaker_failure_rate=0.25,
        breaker_cooldown=5,
        breaker_probes=2,
    )

    assert BreakerPolicy.from_settings(settings) == BreakerPolicy(
        window_seconds=120, min_volume=7, failure_rate=0.25, cooldown_seconds=5, probes=2
    )
    assert BreakerPolicy.from_settings(Settings()) == BreakerPolicy()
    assert BreakerPolicy.from_settings(Settings(breaker_window=4)).bucket_seconds == 4


def test_policy__window_covers_its_length_in_buckets() -> None:
    policy = BreakerPolicy(window_seconds=600, bucket_seconds=10)
    now = datetime.fromtimestamp(1_000_005, UTC)

    assert policy.bucket(now) == 100_000
    assert policy.window_start(now) == 100_000 - 59


@pytest.mark.parametrize(
    "kw", [{"failure_rate": 0.0}, {"failure_rate": 1.5}, {"min_volume": 0}, {"probes": 0}]
)
def test_policy__refuses_settings_that_cannot_work(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        BreakerPolicy(**kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("p:twilio", ("p:twilio", "twilio", "")),
        ("twilio", ("p:twilio", "twilio", "")),
        (" sendgrid ", ("p:sendgrid", "sendgrid", "")),
        ("c:acme:twilio", ("c:acme:twilio", "twilio", "acme")),
        ("c:org:eu:crm", ("c:org:eu:crm", "crm", "org:eu")),
        ("e:acme:https://h.example/x", ("e:acme:https://h.example/x", "", "acme")),
        ("e:org:eu:http://h.example:8080/", ("e:org:eu:http://h.example:8080/", "", "org:eu")),
    ],
)
def test_parse_key__accepts_both_kinds_and_a_bare_provider(
    text: str, parsed: tuple[str, str, str]
) -> None:
    assert parse_key(text) == parsed


@pytest.mark.parametrize(
    "text",
    ["", "p:", "c:acme", "c::twilio", "c:acme:", "x:y", "p:a:b", "e:acme", "e::https://h/",
     "e:acme:ftp://h/", "e:acme:https://"],
)  # fmt: skip
def test_parse_key__refuses_anything_else_naming_the_forms(text: str) -> None:
    with pytest.raises(ValidationError, match="p:<provider>, c:<tenant>:<provider>") as info:
        parse_key(text)
    assert info.value.field == "key"


def test_status__of_a_breaker_without_a_row_is_closed_with_its_figures() -> None:
    s = breaker_status("c:acme:twilio", None, (3, 1), "twilio", "acme")

    assert (s.state, s.forced, s.since, s.ok, s.failed, s.failure_rate) == (
        BreakerState.CLOSED,
        False,
        None,
        3,
        1,
        0.25,
    )
    assert breaker_status("p:x", None, (0, 0), "x", "").failure_rate is None
