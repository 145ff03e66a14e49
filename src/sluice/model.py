"""Plain types shared by every part of Sluice: messages, attempts, outcomes, codes, audit rows."""

from __future__ import annotations

import enum
import hashlib
import json
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

# What a send can come to lives one level down (sluice.netguard needs it, and enqueue's
# checks need sluice.netguard); re-exported here, where callers have always found it.
from sluice.errors import ValidationError
from sluice.expiry import check_ttl
from sluice.outcome import ErrorClass, ErrorCode, Outcome

if TYPE_CHECKING:
    from sluice.addressing import Addressing

__all__ = [
    "Attempt",
    "AttemptOutcome",
    "AuditEntry",
    "Completion",
    "ErrorClass",
    "ErrorCode",
    "Message",
    "NewMessage",
    "Outcome",
    "Status",
    "content_hash",
    "first_message_id",
    "new_message_id",
]


class Status(enum.StrEnum):
    """Where a message is in its life (see DESIGN.md, "Message lifecycle")."""

    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    BOUNCED = "bounced"
    READ = "read"
    HELD = "held"
    DEAD = "dead"
    CANCELLED = "cancelled"
    SHADOWED = "shadowed"
    #: Not sent by its ``expires_at`` (issue 14): final, never sent late, never dead.
    EXPIRED = "expired"
    # -- recipient hygiene (issue 14) --
    #: Final: the recipient is on the tenant's suppression list; nothing was sent.
    SUPPRESSED = "suppressed"
    # -- post-send verification (issue 15) --
    #: Not final: sent, but no positive receipt came within its ``verify_within`` (or a
    #: failed one came); a person decides (``sluice messages confirm|fail``).
    NEEDS_CONFIRM = "needs_confirm"


class AttemptOutcome(enum.StrEnum):
    """How one attempt ended, as recorded in the attempts table."""

    SENT = "sent"
    FAILED = "failed"
    THROTTLED = "throttled"
    LEASE_EXPIRED = "lease_expired"
    #: A shadow control: what would have been sent was recorded; nothing was called.
    SHADOWED = "shadowed"
    #: The worker put the message back unstarted (its lease was not sure to outlast the
    #: call): nothing was called, no attempt spent, one deferral counted.
    DEFERRED = "deferred"


def new_message_id() -> str:
    """A time-ordered UUID (version 7 layout) as text.

    Time order keeps the primary-key index append-mostly, which matters at thousands
    of inserts a second; the 74 random bits keep ids unguessable enough to expose.
    """
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | (rand >> 68 & 0xFFF) << 64
    value |= 0b10 << 62 | (rand & ((1 << 62) - 1))
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def first_message_id(at: datetime) -> str:
    """The smallest id ``new_message_id`` makes at or after ``at``: a lower bound on the
    ids of messages created since, which the primary key's index can seek to (as text
    too: the hex digits are fixed-width and lowercase, so text order is time order)."""
    ms = max(0, int(at.timestamp() * 1000)) & ((1 << 48) - 1)
    h = f"{ms:012x}"
    return f"{h[:8]}-{h[8:12]}-0000-0000-000000000000"


# An escaped NUL in JSON text: "\u0000" preceded by an even number of backslashes
# (an odd number would make it the literal text backslash-u-0-0-0-0).
_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def _mapping_as_dict(value: object) -> dict[str, Any]:
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


#: The payload's canonical JSON (sorted keys, no spaces, no NaN). One encoder for every
#: message: ``json.dumps`` with options builds a new one per call.
_PAYLOAD_JSON = json.JSONEncoder(
    separators=(",", ":"), sort_keys=True, allow_nan=False, default=_mapping_as_dict
)

_LIMITS = {"tenant": 128, "channel": 64, "provider": 64, "action": 128, "recipient": 2048}
#: Fields that name something (a scope of controls and limits): compared exactly.
_NAMES = frozenset({"tenant", "channel", "provider", "action"})
_MAX_PAYLOAD_BYTES = 256 * 1024


@dataclass(slots=True)
class NewMessage:
    """A side effect to deliver, as the caller describes it.

    ``provider`` names the adapter (or, later, a route of adapters) to send with.
    ``priority``: higher goes first. ``run_at``: not before this time (None: now).
    """

    tenant: str
    channel: str
    provider: str
    recipient: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    action: str = "send"
    priority: int = 0
    run_at: datetime | None = None
    max_attempts: int = 5
    idempotency_key: str | None = None
    correlation_id: str | None = None
    scopes: Sequence[str] = ()
    id: str = field(default_factory=new_message_id)
    #: Not sent by then, it ends ``expired`` (``sluice.expiry``): a time, or seconds from
    #: enqueue; neither: the ``[expiry]`` of ``sluice.toml`` decides.
    expires_at: datetime | None = None
    ttl: float | None = None
    #: Post-send verification (issue 15): seconds after sending by which a positive
    #: receipt must come, else the message moves to ``needs_confirm``.
    verify_within: float | None = None

    def validate(self, where: str = "", addressing: Addressing | None = None) -> str:
        """Check every field; return the payload as canonical JSON.

        Raises ``ValidationError`` naming the first bad field (prefixed with ``where``
        for batches, e.g. ``messages[3].recipient``). Where the message may go (its
        provider, channel and recipient) is checked against ``addressing``, by default
        the configuration in effect (``sluice.addressing.addressing_in_effect``).
        """
        for name, limit in _LIMITS.items():
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValidationError(where + name, "is required and must be a non-empty string")
            if len(value) > limit:
                raise ValidationError(where + name, f"is longer than {limit} characters")
            if "\x00" in value:
                raise ValidationError(where + name, "must not contain NUL characters")
            if name in _NAMES and value != value.strip():
                # " acme" would be a tenant of its own, outside acme's controls and limits.
                raise ValidationError(
                    where + name, f"{value!r} must not start or end with whitespace"
                )
        if not isinstance(self.payload, Mapping):
            raise ValidationError(where + "payload", "must be a JSON object")
        try:
            payload_json = _PAYLOAD_JSON.encode(self.payload)
        except (TypeError, ValueError) as exc:
            raise ValidationError(where + "payload", f"is not JSON-serialisable: {exc}") from None
        if "\\u0000" in payload_json and _JSON_NUL.search(payload_json):
            # PostgreSQL's jsonb cannot hold U+0000; refuse it on every store alike.
            raise ValidationError(where + "payload", "must not contain NUL characters")
        if len(payload_json) > _MAX_PAYLOAD_BYTES:
            raise ValidationError(where + "payload", f"is larger than {_MAX_PAYLOAD_BYTES} bytes")
        if isinstance(self.priority, bool) or not isinstance(self.priority, int):
            raise ValidationError(where + "priority", "must be an integer")
        if not -1000 <= self.priority <= 1000:
            raise ValidationError(where + "priority", "must be between -1000 and 1000")
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise ValidationError(where + "max_attempts", "must be an integer")
        if not 1 <= self.max_attempts <= 100:
            raise ValidationError(where + "max_attempts", "must be between 1 and 100")
        if self.run_at is not None:
            if not isinstance(self.run_at, datetime):
                raise ValidationError(where + "run_at", "must be a datetime")
            if self.run_at.tzinfo is None:
                raise ValidationError(where + "run_at", "must be timezone-aware (e.g. UTC)")
            offset = self.run_at.utcoffset()
            if offset is None or abs(offset) >= timedelta(hours=16):
                raise ValidationError(where + "run_at", "has a UTC offset beyond ±15:59")
            try:
                in_utc = self.run_at.astimezone(UTC)
            except OverflowError:
                in_utc = None
            if in_utc is None or not 1970 <= in_utc.year <= 9999:
                raise ValidationError(where + "run_at", "must fall between 1970 and 9999 (UTC)")
        for name in ("idempotency_key", "correlation_id"):
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, str) or not value or len(value) > 255 or "\x00" in value:
                raise ValidationError(
                    where + name, "must be a non-empty string of at most 255 characters"
                )
        if isinstance(self.scopes, str) or not all(
            isinstance(s, str) and s and len(s) <= 128 and "\x00" not in s for s in self.scopes
        ):
            raise ValidationError(
                where + "scopes",
                "must be a list of non-empty strings of at most 128 characters, without NUL",
            )
        _check_expiry(self, where)
        if self.verify_within is not None:  # post-send verification (issue 15)
            if isinstance(self.verify_within, str):  # seconds here; "10m" is for the CLI
                raise ValidationError(where + "verify_within", "must be a number of seconds")
            check_ttl(self.verify_within, where + "verify_within")
        if addressing is None:
            from sluice.addressing import addressing_in_effect

            addressing = addressing_in_effect()
        addressing.check(self, where)
        return payload_json


def _check_expiry(msg: NewMessage, where: str) -> None:
    """``ttl``: positive, finite, bounded; ``expires_at``: aware and still ahead."""
    if msg.ttl is not None:
        if isinstance(msg.ttl, str):  # seconds here; "15m" is for the CLI and sluice.toml
            raise ValidationError(where + "ttl", "must be a number of seconds")
        check_ttl(msg.ttl, where + "ttl")
    if msg.expires_at is not None:
        if msg.ttl is not None:
            raise ValidationError(where + "expires_at", "give expires_at or ttl, not both")
        if not isinstance(msg.expires_at, datetime) or msg.expires_at.tzinfo is None:
            raise ValidationError(where + "expires_at", "must be a timezone-aware datetime")
        try:
            ahead = msg.expires_at.astimezone(UTC) - datetime.now(UTC)
        except (OverflowError, ValueError):
            raise ValidationError(where + "expires_at", "is out of range") from None
        if ahead <= timedelta(0):
            raise ValidationError(where + "expires_at", "is already past")
        if ahead > timedelta(days=366):
            raise ValidationError(where + "expires_at", "is more than 366 days ahead")


def content_hash(msg: NewMessage, payload_json: str) -> str:
    """Fingerprint of what the caller asked for, to tell a retry from a conflict.

    The correlation id is left out on purpose: a client retrying the same request
    often carries a fresh trace id, and that is still the same side effect.
    """
    parts = [
        msg.channel,
        msg.provider,
        msg.action,
        msg.recipient,
        payload_json,
        str(msg.priority),
        msg.run_at.isoformat() if msg.run_at else "",
        str(msg.max_attempts),
        ",".join(sorted(msg.scopes)),
    ]
    if msg.expires_at is not None or msg.ttl is not None:  # older hashes stay as they were
        parts.append(msg.expires_at.isoformat() if msg.expires_at else f"ttl={msg.ttl!r}")
    if msg.verify_within is not None:  # issue 15; older hashes stay as they were
        parts.append(f"verify_within={float(msg.verify_within)!r}")
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


@dataclass(slots=True)
class Message:
    """A message as stored."""

    id: str
    tenant: str
    channel: str
    provider: str
    action: str
    recipient: str
    payload: dict[str, Any]
    priority: int
    status: Status
    run_at: datetime
    attempts: int
    max_attempts: int
    claim_seq: int = 0
    idempotency_key: str | None = None
    correlation_id: str | None = None
    scopes: list[str] = field(default_factory=list)
    created_at: datetime | None = None
    updated_at: datetime | None = None
    last_error_code: str | None = None
    last_error: str | None = None
    provider_message_id: str | None = None
    worker_id: str | None = None
    lease_until: datetime | None = None
    hold_reason: str | None = None
    #: Who let this message through an approval control (``sluice approve``), if anyone.
    approved_by: str | None = None
    approved_at: datetime | None = None
    #: Throttle-class answers and put-backs so far (no attempt spent on them), and when
    #: the first happened: bounded by ``SLUICE_MAX_DEFERRALS`` / ``SLUICE_MAX_DEFER_AGE``.
    deferrals: int = 0
    deferred_since: datetime | None = None
    #: Not sent by then, it ends ``expired`` (``sluice.expiry``).
    expires_at: datetime | None = None
    #: Post-send verification (issue 15): seconds asked for, and the deadline once sent.
    verify_within: float | None = None
    verify_by: datetime | None = None


@dataclass(slots=True)
class Attempt:
    """One try at delivering a message: a row in the attempts table."""

    message_id: str
    attempt_no: int
    worker_id: str
    provider: str
    started_at: datetime
    finished_at: datetime
    outcome: AttemptOutcome
    error_code: str | None = None
    error_class: str | None = None
    provider_status: str | None = None
    provider_code: str | None = None
    detail: str | None = None
    latency_ms: float | None = None
    #: False when the claim had already been taken back (lease expired): the send
    #: happened, but its verdict did not change the message.
    applied: bool = True


@dataclass(slots=True)
class Completion:
    """The dispatcher's verdict on one claimed message, written back in a batch.

    ``claim_seq`` and ``worker_id`` guard the write: it only lands while the message
    is still ``sending`` under this very claim, so a worker whose lease expired can
    never overwrite a newer outcome.
    """

    message_id: str
    claim_seq: int
    worker_id: str
    status: Status  # sent, queued (retry / defer), held or dead
    #: None when no provider was called (held by a gate before the call).
    attempt: Attempt | None
    run_at: datetime | None = None  # for queued: when to try again
    refund_attempt: bool = False  # throttled or held: the attempt does not count
    provider_message_id: str | None = None
    #: For held: why, in words an operator can act on.
    hold_reason: str | None = None
    #: This outcome is a deferral (a throttle-class answer, or a put-back): counted on
    #: the message, and the first one's time kept.
    deferred: bool = False
    # -- recipient hygiene (issue 14) --
    #: Without an attempt (no provider called): the code and words the message keeps as
    #: its last error (``RECIPIENT_SUPPRESSED``, ``WINDOW_CLOSED``).
    error_code: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One row of the append-only, hash-chained audit log."""

    at: datetime
    actor: str
    action: str
    target: str | None = None
    reason: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    id: int | None = None
    prev_hash: str | None = None
    hash: str | None = None
