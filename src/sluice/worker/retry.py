"""What happens after an attempt: sent, retry later, defer, or dead-letter.

Backoff is exponential with full jitter (a uniformly random delay between zero and
``min(cap, base * 2**(n-1))``), which spreads a burst of failures over the whole
window instead of re-synchronising them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sluice.model import ErrorClass, ErrorCode, Message, Outcome, Status

__all__ = ["Decision", "RetryPolicy"]

#: Longest Retry-After we accept from a provider; a larger value is a provider bug.
MAX_RETRY_AFTER = 24 * 3600.0
#: Shortest wait after a throttle-class answer. ``Retry-After: 0``, a negative value or
#: an HTTP-date already past would otherwise put the message straight back (one
#: receiver drew 164 calls in 5 s for one message that way).
MIN_THROTTLE_DELAY = 1.0


@dataclass(frozen=True, slots=True)
class Decision:
    """The next state of a message after one attempt."""

    status: Status
    run_at: datetime | None = None
    refund_attempt: bool = False
    error_class: ErrorClass | None = None
    #: The attempt was a deferral (a throttle-class answer): counted on the message.
    deferred: bool = False
    #: Why, when the message is given up on for reasons the provider did not give.
    note: str | None = None


@dataclass(slots=True)
class RetryPolicy:
    """Backoff with full jitter, capped; ``Retry-After`` honoured; classes decide the rest."""

    base: float = 2.0
    cap: float = 600.0
    rng: random.Random = field(default_factory=random.Random)
    #: Deferrals a message may have (throttle-class answers and put-backs; none spends an
    #: attempt), and how long after the first, before it is dead-lettered with the reason.
    max_deferrals: int = 100
    max_defer_age: float = 3 * 86400.0

    def __post_init__(self) -> None:
        if self.base <= 0 or self.cap < self.base:
            raise ValueError("retry policy needs 0 < base <= cap")
        if self.max_deferrals < 1 or self.max_defer_age <= 0:
            raise ValueError("retry policy needs max_deferrals >= 1 and max_defer_age > 0")

    def deferral_spent(self, message: Message, now: datetime) -> str | None:
        """Why one more deferral of ``message`` is one too many, or None: deferrals spend
        no attempt, so without a bound a receiver answering 503 forever (or a worker
        that can never start the send) would keep the message forever."""
        count = message.deferrals + 1
        since = message.deferred_since or now
        age = (now - since).total_seconds()
        if count > self.max_deferrals:
            return (
                f"given up after {message.deferrals} deferrals over {_span(age)} "
                f"(SLUICE_MAX_DEFERRALS={self.max_deferrals})"
            )
        if age > self.max_defer_age:
            return (
                f"given up: deferred for {_span(age)} since the first of {message.deferrals} "
                f"deferrals (SLUICE_MAX_DEFER_AGE={self.max_defer_age:g} s)"
            )
        return None

    def backoff(self, n: int) -> float:
        """Delay in seconds before retry number ``n`` (1-based)."""
        ceiling = min(self.cap, self.base * 2 ** min(max(n, 1) - 1, 32))
        return self.rng.uniform(0, ceiling)

    def decide(self, message: Message, outcome: Outcome, now: datetime) -> Decision:
        """Map an outcome to a decision; ``message.attempts`` includes this attempt."""
        if outcome.ok:
            return Decision(Status.SENT)
        code = outcome.code or ErrorCode.INTERNAL
        klass = code.error_class
        if klass is ErrorClass.PERMANENT:
            return Decision(Status.DEAD, error_class=klass)
        if klass is ErrorClass.AUTH:
            # Until connections can hold their messages (re-auth releases them), an auth
            # failure dead-letters with its code so `sluice dlq retry --error-code` replays it.
            return Decision(Status.DEAD, error_class=klass)
        if klass is ErrorClass.THROTTLE:
            spent = self.deferral_spent(message, now)
            if spent is not None:
                return Decision(
                    Status.DEAD, refund_attempt=True, error_class=klass, deferred=True, note=spent
                )
            if outcome.retry_after is not None and outcome.retry_after > 0:
                wait = min(max(outcome.retry_after, MIN_THROTTLE_DELAY), MAX_RETRY_AFTER)
                # A little spread so every deferred message does not return in one instant.
                delay = wait + self.rng.uniform(0, max(0.05, wait * 0.1))
            else:
                # No usable Retry-After (none, zero, or already past): our own backoff.
                deferrals = message.claim_seq - message.attempts + 1
                delay = max(self.backoff(deferrals), MIN_THROTTLE_DELAY)
            return Decision(
                Status.QUEUED,
                now + timedelta(seconds=delay),
                refund_attempt=True,
                error_class=klass,
                deferred=True,
            )
        if message.attempts >= message.max_attempts:
            return Decision(Status.DEAD, error_class=klass)
        delay = self.backoff(message.attempts)
        if outcome.retry_after is not None and outcome.retry_after >= 0:
            delay = max(delay, min(outcome.retry_after, MAX_RETRY_AFTER))
        return Decision(Status.QUEUED, now + timedelta(seconds=delay), error_class=klass)


def _span(seconds: float) -> str:
    """``3 d 4 h``, ``2 h 5 min``, ``40 s``: a duration for people."""
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    minutes = int(seconds // 60)
    if minutes < 120:
        return f"{minutes} min"
    hours = minutes // 60
    if hours < 48:
        return f"{hours} h {minutes % 60} min"
    return f"{hours // 24} d {hours % 24} h"
