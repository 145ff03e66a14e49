"""What happens after an attempt: sent, retried with backoff, deferred, or dead-lettered."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sluice.model import ErrorClass, ErrorCode, Message, Outcome, Status
from sluice.worker.retry import MIN_THROTTLE_DELAY, Decision, RetryPolicy

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def message(attempts: int = 1, max_attempts: int = 5, claim_seq: int | None = None) -> Message:
    """A message as the dispatcher sees it after claim number ``claim_seq``."""
    return Message(
        id="0190a0b0-0000-7000-8000-000000000001",
        tenant="acme",
        channel="webhook",
        provider="null",
        action="send",
        recipient="https://example.test/hook",
        payload={"n": 1},
        priority=0,
        status=Status.SENDING,
        run_at=NOW,
        attempts=attempts,
        max_attempts=max_attempts,
        claim_seq=attempts if claim_seq is None else claim_seq,
    )


def policy(seed: int = 1, base: float = 2.0, cap: float = 600.0) -> RetryPolicy:
    return RetryPolicy(base=base, cap=cap, rng=random.Random(seed))


def delay_of(decision: Decision) -> float:
    assert decision.run_at is not None
    return (decision.run_at - NOW).total_seconds()


def codes_of(klass: ErrorClass) -> list[ErrorCode]:
    return [code for code in ErrorCode if code.error_class is klass]


# -- classes of error ----------------------------------------------------------------


def test_decide__success_is_sent() -> None:
    decision = policy().decide(message(), Outcome.success("prov-1"), NOW)
    assert decision == Decision(Status.SENT)


@pytest.mark.parametrize(
    ("code", "klass"),
    [
        (ErrorCode.INVALID_RECIPIENT, ErrorClass.PERMANENT),
        (ErrorCode.BAD_REQUEST, ErrorClass.PERMANENT),
        (ErrorCode.ENDPOINT_GONE, ErrorClass.PERMANENT),
        (ErrorCode.RATE_LIMITED, ErrorClass.THROTTLE),
        (ErrorCode.QUOTA_EXCEEDED, ErrorClass.THROTTLE),
        (ErrorCode.PROVIDER_UNAVAILABLE, ErrorClass.THROTTLE),
        (ErrorCode.AUTH_REVOKED, ErrorClass.AUTH),
        (ErrorCode.SCOPE_MISSING, ErrorClass.AUTH),
        (ErrorCode.TIMEOUT, ErrorClass.TRANSIENT),
        (ErrorCode.CONNECTION_FAILED, ErrorClass.TRANSIENT),
        (ErrorCode.PROVIDER_ERROR, ErrorClass.TRANSIENT),
    ],
)
def test_error_code__belongs_to_the_documented_class(code: ErrorCode, klass: ErrorClass) -> None:
    assert code.error_class is klass


def test_error_code__every_code_has_a_class() -> None:
    assert {code.error_class for code in ErrorCode} == set(ErrorClass)


@pytest.mark.parametrize("code", codes_of(ErrorClass.PERMANENT))
def test_decide__permanent_error_dead_letters_on_the_first_attempt(code: ErrorCode) -> None:
    decision = policy().decide(message(attempts=1, max_attempts=100), Outcome.failure(code), NOW)
    assert decision == Decision(Status.DEAD, error_class=ErrorClass.PERMANENT)


@pytest.mark.parametrize("code", codes_of(ErrorClass.AUTH))
def test_decide__auth_error_dead_letters_with_its_class(code: ErrorCode) -> None:
    decision = policy().decide(message(attempts=1), Outcome.failure(code), NOW)
    assert decision == Decision(Status.DEAD, error_class=ErrorClass.AUTH)


@pytest.mark.parametrize("code", codes_of(ErrorClass.THROTTLE))
@pytest.mark.parametrize("attempts", [1, 5, 100])
def test_decide__throttle_defers_without_spending_an_attempt(
    code: ErrorCode, attempts: int
) -> None:
    # Even a message on its last attempt is deferred: throttling is not its fault.
    msg = message(attempts=attempts, max_attempts=attempts)
    decision = policy().decide(msg, Outcome.failure(code, retry_after=30), NOW)
    assert decision.status is Status.QUEUED
    assert decision.refund_attempt is True
    assert decision.error_class is ErrorClass.THROTTLE


@pytest.mark.parametrize("retry_after", [1.0, 30.0, 3600.0])
@pytest.mark.parametrize("seed", range(5))
def test_decide__throttle_honours_retry_after(retry_after: float, seed: int) -> None:
    outcome = Outcome.failure(ErrorCode.RATE_LIMITED, retry_after=retry_after)
    delay = delay_of(policy(seed).decide(message(), outcome, NOW))
    assert retry_after <= delay <= retry_after * 1.1 + 0.05


@pytest.mark.parametrize("retry_after", [0.0, 0.01, 0.5, None])
@pytest.mark.parametrize("seed", range(20))
def test_decide__a_throttle_never_waits_less_than_a_second(
    retry_after: float | None, seed: int
) -> None:
    """``Retry-After: 0`` (or a date already past, which parses to 0) must not put the
    message straight back: that looped 164 calls in 5 s for one message."""
    outcome = Outcome.failure(ErrorCode.RATE_LIMITED, retry_after=retry_after)
    assert delay_of(policy(seed).decide(message(), outcome, NOW)) >= MIN_THROTTLE_DELAY


def test_decide__throttle_caps_an_absurd_retry_after_at_a_day() -> None:
    outcome = Outcome.failure(ErrorCode.RATE_LIMITED, retry_after=10 * 365 * 86400.0)
    delay = delay_of(policy().decide(message(), outcome, NOW))
    assert 86400 <= delay <= 86400 * 1.1


@pytest.mark.parametrize("seed", range(20))
def test_decide__throttle_without_retry_after_backs_off_by_deferrals(seed: int) -> None:
    # Claimed 4 times, 1 attempt counted: this is the 4th deferral in a row.
    msg = message(attempts=1, claim_seq=4)
    decision = policy(seed, base=2.0).decide(msg, Outcome.failure(ErrorCode.RATE_LIMITED), NOW)
    assert decision.status is Status.QUEUED
    assert decision.refund_attempt is True
    assert MIN_THROTTLE_DELAY <= delay_of(decision) <= 2.0 * 2**3


@pytest.mark.parametrize("code", codes_of(ErrorClass.TRANSIENT))
def test_decide__transient_error_retries_with_backoff(code: ErrorCode) -> None:
    decision = policy().decide(message(attempts=3, max_attempts=5), Outcome.failure(code), NOW)
    assert decision.status is Status.QUEUED
    assert decision.refund_attempt is False
    assert decision.error_class is ErrorClass.TRANSIENT
    assert 0 <= delay_of(decision) <= 2.0 * 2**2


def test_decide__transient_error_dead_letters_when_attempts_are_spent() -> None:
    rp = policy()
    outcome = Outcome.failure(ErrorCode.TIMEOUT)
    statuses = [rp.decide(message(n, max_attempts=3), outcome, NOW).status for n in (1, 2, 3)]
    assert statuses == [Status.QUEUED, Status.QUEUED, Status.DEAD]
    last = rp.decide(message(3, max_attempts=3), outcome, NOW)
    assert last == Decision(Status.DEAD, error_class=ErrorClass.TRANSIENT)


def test_decide__transient_error_waits_at_least_retry_after() -> None:
    outcome = Outcome.failure(ErrorCode.PROVIDER_ERROR, retry_after=120)
    delay = delay_of(policy().decide(message(attempts=1), outcome, NOW))
    assert delay >= 120


def test_decide__failure_without_code_is_treated_as_transient() -> None:
    decision = policy().decide(message(attempts=1), Outcome(ok=False), NOW)
    assert decision.status is Status.QUEUED
    assert decision.error_class is ErrorClass.TRANSIENT


# -- backoff ------------------------------------------------------------------------


@given(
    n=st.integers(min_value=1, max_value=1000),
    base=st.floats(min_value=0.001, max_value=100),
    extra=st.floats(min_value=0, max_value=10_000),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_backoff__stays_within_full_jitter_window(
    n: int, base: float, extra: float, seed: int
) -> None:
    cap = base + extra
    delay = policy(seed, base=base, cap=cap).backoff(n)
    assert 0 <= delay <= min(cap, base * 2.0 ** (n - 1))


@given(n=st.integers(max_value=0), seed=st.integers(min_value=0, max_value=2**32))
def test_backoff__counts_retry_zero_or_below_as_the_first(n: int, seed: int) -> None:
    assert 0 <= policy(seed, base=3.0).backoff(n) <= 3.0


def test_backoff__full_jitter_spreads_over_the_whole_window() -> None:
    rp = policy(seed=42, base=1.0, cap=600.0)
    ceiling = 16.0  # retry 5: 1 * 2**4
    delays = [rp.backoff(5) for _ in range(2000)]
    assert min(delays) < 0.05 * ceiling
    assert max(delays) > 0.95 * ceiling
    assert 0.45 * ceiling < sum(delays) / len(delays) < 0.55 * ceiling
    # Every fifth of the window gets its share: a burst does not re-synchronise.
    fifths = [
        sum(1 for d in delays if i * ceiling / 5 <= d < (i + 1) * ceiling / 5) for i in range(5)
    ]
    assert all(300 < count < 500 for count in fifths), fifths


def test_backoff__reaches_the_cap_and_stays_there() -> None:
    rp = policy(seed=7, base=2.0, cap=60.0)
    delays = [rp.backoff(50) for _ in range(500)]
    assert max(delays) <= 60.0
    assert max(delays) > 50.0


@pytest.mark.parametrize(("base", "cap"), [(0, 600), (-1, 600), (10, 5)])
def test_retry_policy__rejects_unusable_base_or_cap(base: float, cap: float) -> None:
    with pytest.raises(ValueError, match="base"):
        RetryPolicy(base=base, cap=cap)
