"""What one send can come to: an ``Outcome``, its canonical ``ErrorCode`` and the
``ErrorClass`` that decides what happens next. Re-exported by ``sluice.model``."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["ErrorClass", "ErrorCode", "Outcome"]


class ErrorClass(enum.StrEnum):
    """What the dispatcher does about a failed attempt.

    - ``transient``: retry with backoff; the attempt counts toward ``max_attempts``.
    - ``throttle``: defer (``Retry-After`` or backoff); the attempt does not count.
    - ``auth``: the credentials are at fault, not the message; it must not burn attempts.
    - ``permanent``: retrying cannot help; dead-letter at once.
    """

    TRANSIENT = "transient"
    THROTTLE = "throttle"
    AUTH = "auth"
    PERMANENT = "permanent"


class ErrorCode(enum.StrEnum):
    """Canonical error codes; each adapter maps its provider's errors onto these."""

    INVALID_RECIPIENT = "INVALID_RECIPIENT"
    QUOTA_EXCEEDED = "QUOTA_EXCEEDED"
    ACCOUNT_SUSPENDED = "ACCOUNT_SUSPENDED"
    TEMPLATE_NOT_APPROVED = "TEMPLATE_NOT_APPROVED"
    RATE_LIMITED = "RATE_LIMITED"
    AUTH_REVOKED = "AUTH_REVOKED"
    SCOPE_MISSING = "SCOPE_MISSING"
    PROVIDER_UNAVAILABLE = "PROVIDER_UNAVAILABLE"
    PROVIDER_ERROR = "PROVIDER_ERROR"
    TIMEOUT = "TIMEOUT"
    CONNECTION_FAILED = "CONNECTION_FAILED"
    BAD_REQUEST = "BAD_REQUEST"
    ENDPOINT_GONE = "ENDPOINT_GONE"
    UNKNOWN_PROVIDER = "UNKNOWN_PROVIDER"
    LEASE_EXPIRED = "LEASE_EXPIRED"
    INTERNAL = "INTERNAL"
    # -- recipient hygiene (issue 14) --
    #: The recipient opted out with the provider (replied STOP, blocked the business):
    #: the dispatcher suppresses them for the tenant and ends the message ``suppressed``.
    RECIPIENT_UNSUBSCRIBED = "RECIPIENT_UNSUBSCRIBED"
    #: The recipient is on the tenant's suppression list: nothing was sent.
    RECIPIENT_SUPPRESSED = "RECIPIENT_SUPPRESSED"
    #: Free-form WhatsApp text outside the 24-hour customer-service window (only an
    #: approved template may open a conversation).
    WINDOW_CLOSED = "WINDOW_CLOSED"
    # -- post-send verification (issue 15) --
    #: Sent, but no positive receipt came within its ``verify_within`` and a person said
    #: it did not arrive (``sluice messages fail``); ``sluice dlq retry`` sends it again.
    NOT_CONFIRMED = "NOT_CONFIRMED"

    @property
    def error_class(self) -> ErrorClass:
        """The class that decides what happens next."""
        return _CLASS_OF[self]


_CLASS_OF: dict[ErrorCode, ErrorClass] = {
    ErrorCode.INVALID_RECIPIENT: ErrorClass.PERMANENT,
    # A spent quota comes back when the window resets: wait, don't burn attempts.
    ErrorCode.QUOTA_EXCEEDED: ErrorClass.THROTTLE,
    ErrorCode.ACCOUNT_SUSPENDED: ErrorClass.PERMANENT,
    ErrorCode.TEMPLATE_NOT_APPROVED: ErrorClass.PERMANENT,
    ErrorCode.RATE_LIMITED: ErrorClass.THROTTLE,
    ErrorCode.AUTH_REVOKED: ErrorClass.AUTH,
    ErrorCode.SCOPE_MISSING: ErrorClass.AUTH,
    # 502/503/504: the provider says "not now"; deferring keeps an outage out of the DLQ.
    ErrorCode.PROVIDER_UNAVAILABLE: ErrorClass.THROTTLE,
    ErrorCode.PROVIDER_ERROR: ErrorClass.TRANSIENT,
    ErrorCode.TIMEOUT: ErrorClass.TRANSIENT,
    ErrorCode.CONNECTION_FAILED: ErrorClass.TRANSIENT,
    ErrorCode.BAD_REQUEST: ErrorClass.PERMANENT,
    ErrorCode.ENDPOINT_GONE: ErrorClass.PERMANENT,
    ErrorCode.UNKNOWN_PROVIDER: ErrorClass.PERMANENT,
    ErrorCode.LEASE_EXPIRED: ErrorClass.TRANSIENT,
    ErrorCode.INTERNAL: ErrorClass.TRANSIENT,
    ErrorCode.RECIPIENT_UNSUBSCRIBED: ErrorClass.PERMANENT,
    ErrorCode.RECIPIENT_SUPPRESSED: ErrorClass.PERMANENT,
    ErrorCode.WINDOW_CLOSED: ErrorClass.PERMANENT,
    ErrorCode.NOT_CONFIRMED: ErrorClass.PERMANENT,
}


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a provider adapter reports for one send."""

    ok: bool
    code: ErrorCode | None = None
    detail: str = ""
    provider_status: str | None = None
    provider_code: str | None = None
    provider_message_id: str | None = None
    retry_after: float | None = None

    @classmethod
    def success(
        cls, provider_message_id: str | None = None, provider_status: str | None = None
    ) -> Outcome:
        """The provider accepted the message."""
        return cls(True, provider_message_id=provider_message_id, provider_status=provider_status)

    @classmethod
    def failure(
        cls,
        code: ErrorCode,
        detail: str = "",
        *,
        provider_status: str | None = None,
        provider_code: str | None = None,
        retry_after: float | None = None,
    ) -> Outcome:
        """The provider refused or could not be reached."""
        return cls(
            False,
            code,
            detail[:2000],
            provider_status=provider_status,
            provider_code=provider_code,
            retry_after=retry_after,
        )
