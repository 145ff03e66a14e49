"""The ``Store`` protocol and the plain types its methods take and return.

Methods are named noun-first (``message_claim``, ``dlq_groups``) and every one is
covered by the contract suite in ``tests/contract``, run against each implementation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sluice.model import Attempt, Completion, Message, NewMessage

__all__ = [
    "AuditEntry",
    "DlqGroup",
    "MessageFilter",
    "RescueResult",
    "StatusReport",
    "Store",
    "WorkerInfo",
]


@dataclass(frozen=True, slots=True)
class MessageFilter:
    """Which messages an operator command applies to. ``None`` matches anything."""

    tenant: str | None = None
    channel: str | None = None
    error_code: str | None = None
    since: datetime | None = None
    limit: int | None = None


@dataclass(frozen=True, slots=True)
class DlqGroup:
    """Dead-lettered messages of one channel and error code."""

    channel: str
    error_code: str
    count: int
    first_at: datetime
    last_at: datetime


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A worker process as last seen by the store."""

    id: str
    host: str
    pid: int
    started_at: datetime
    last_seen_at: datetime
    stopped_at: datetime | None
    in_flight: int
    sent_total: int


@dataclass(frozen=True, slots=True)
class StatusReport:
    """What ``sluice status`` shows."""

    counts: dict[str, int]
    oldest_ready_age_seconds: float | None
    dead: list[DlqGroup]
    workers: list[WorkerInfo]


@dataclass(frozen=True, slots=True)
class RescueResult:
    """Messages whose lease expired: put back in the queue, or dead when out of attempts."""

    requeued: list[str] = field(default_factory=list)
    dead: list[str] = field(default_factory=list)


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


class Store(Protocol):
    """Everything Sluice keeps, behind one interface with one contract suite."""

    dialect: str

    async def migrate(self) -> list[int]:
        """Apply pending migrations; return the versions applied (none: up to date)."""
        ...

    async def schema_pending(self) -> list[int]:
        """Versions not yet applied."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...

    async def enqueue_many(self, messages: Sequence[NewMessage]) -> list[str]:
        """Store messages in one transaction; return their ids in order (see outbox)."""
        ...

    async def message_claim(
        self, worker_id: str, limit: int, lease_seconds: float, now: datetime
    ) -> list[Message]:
        """Lease up to ``limit`` ready messages, highest priority then oldest first."""
        ...

    async def message_complete_many(
        self, worker_id: str, completions: Sequence[Completion], now: datetime
    ) -> set[str]:
        """Write outcomes and attempts; return the ids whose claim was still current."""
        ...

    async def message_release(
        self, worker_id: str, claims: Sequence[tuple[str, int]], now: datetime
    ) -> list[str]:
        """Give back claimed messages that were never started (their attempt is refunded)."""
        ...

    async def message_rescue_expired(self, now: datetime, limit: int = 1000) -> RescueResult:
        """Return messages whose lease expired to the queue, recording ``lease_expired``."""
        ...

    async def message_get(self, message_id: str) -> Message:
        """One message; ``NotFound`` if there is none."""
        ...

    async def attempt_list(self, message_id: str) -> list[Attempt]:
        """Every attempt of a message, oldest first."""
        ...

    async def status_report(self, now: datetime) -> StatusReport:
        """Counts by status, oldest ready age, dead letters by channel and code, workers."""
        ...

    async def dlq_groups(self, flt: MessageFilter) -> list[DlqGroup]:
        """Dead letters grouped by channel and error code, largest group first."""
        ...

    async def message_select(self, status: str, flt: MessageFilter) -> list[str]:
        """Ids of messages in ``status`` matching ``flt``, oldest change first."""
        ...

    async def message_requeue(
        self, ids: Sequence[str], from_status: str, now: datetime, audit: AuditEntry
    ) -> list[str]:
        """Put messages back in the queue with fresh attempts; audit the act."""
        ...

    async def message_cancel(
        self, ids: Sequence[str], from_status: str, now: datetime, audit: AuditEntry
    ) -> list[str]:
        """Cancel messages for good; audit the act."""
        ...

    async def audit_append(self, entry: AuditEntry) -> AuditEntry:
        """Append to the audit log, chaining the hash of the previous entry."""
        ...

    async def audit_list(self, limit: int = 100) -> list[AuditEntry]:
        """The newest audit entries, newest first."""
        ...

    async def worker_heartbeat(
        self, worker_id: str, host: str, pid: int, in_flight: int, sent_total: int, now: datetime
    ) -> None:
        """Record that a worker is alive."""
        ...

    async def worker_stop(self, worker_id: str, now: datetime) -> None:
        """Record that a worker stopped cleanly."""
        ...

    async def worker_list(self, since: datetime) -> list[WorkerInfo]:
        """Workers running, or stopped after ``since``."""
        ...

    async def wait_for_work(self, timeout: float) -> bool:
        """Sleep until new work may be ready or ``timeout`` passes; True if woken early."""
        ...
