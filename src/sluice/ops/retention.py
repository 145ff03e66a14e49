"""Retention: final messages removed once older than their status's retention, with their
attempts and receipts, in bounded batches; by one worker at a time, or by hand.

One implementation for the worker's passes (``Retention``, run beside each worker by
``retaining``; the one holding the store's ``retention`` lead works), ``sluice purge``
and ``POST /v1/purge``. The policy is ``sluice.retention`` (defaults per status,
``SLUICE_RETENTION`` overrides). A message that is not final is never removed; audit
rows and incidents are never removed.

Each batch is one transaction of at most ``batch`` messages (``SLUICE_RETENTION_BATCH``,
1,000), with ``SLUICE_RETENTION_PAUSE`` seconds between batches so the claim path keeps
the database (see ``bench/retention.py``). With an export (``--export FILE``, or
``SLUICE_RETENTION_EXPORT_DIR``), each batch is written to the file as JSON lines — one
message per line with its attempts and receipts — flushed and synced before the batch's
delete commits: nothing is removed that was not exported.

Each run that removed something writes one audit entry (``message.purge``) with the
counts per status, not one per message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

import structlog

from sluice.clock import Clock, SystemClock
from sluice.config import Settings
from sluice.errors import SluiceError, ValidationError
from sluice.metrics import PURGED
from sluice.ops.actions import require_actor
from sluice.ops.render import jsonable
from sluice.retention import KEEP, NON_FINAL, parse_span, retention_policy
from sluice.store.base import AuditEntry, Purged, PurgeRule, Store

__all__ = [
    "MAX_BATCH",
    "PurgeResult",
    "Retention",
    "check_batch",
    "export_file",
    "purge",
    "purge_rule",
    "retaining",
]

log = structlog.get_logger("sluice.retention")

#: The most messages one batch (one transaction) may remove: bigger batches hold their
#: locks longer and write their WAL in one burst that concurrent claims' commits wait
#: behind (bench/retention.py: 5,000 with no pause tripled the claim p99).
MAX_BATCH = 10_000
#: The actor of the worker's passes in the audit log.
RETENTION_ACTOR = "sluice:retention"


@dataclass(frozen=True, slots=True)
class PurgeResult:
    """What a purge removed (or, in a dry run, would remove), per status."""

    dry_run: bool
    counts: dict[str, int]
    batches: int = 0
    export: str | None = None
    #: Each status's cutoff: messages last changed before it are removed.
    before: dict[str, datetime] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run, "counts": dict(sorted(self.counts.items())),
            "total": self.total, "batches": self.batches, "export": self.export,
            "before": {s: t.isoformat() for s, t in sorted(self.before.items())},
        }  # fmt: skip


def purge_rule(
    now: datetime,
    *,
    older_than: str | None = None,
    statuses: Sequence[str] | None = None,
    tenant: str | None = None,
    retention: Sequence[str] = (),
) -> PurgeRule:
    """The rule a purge applies: ``older_than`` (a span, ``30d``) for every status named,
    else each status's own retention (``retention``: the ``SLUICE_RETENTION`` overrides).
    ``ValidationError`` naming ``older_than``, ``status`` or ``tenant``."""
    policy = retention_policy(retention)
    span = parse_span(older_than, "older_than") if older_than is not None else None
    if statuses is not None and not statuses:
        raise ValidationError("status", "name at least one status, or leave it out for all")
    for status in statuses or ():
        if status in NON_FINAL:
            raise ValidationError("status", f"{status!r} is not final: it is never purged")
        if status not in policy:
            raise ValidationError(
                "status", f"{status!r} is not a final status ({', '.join(policy)})"
            )
    if tenant is not None and (not tenant.strip() or len(tenant) > 128):
        raise ValidationError("tenant", "must be 1 to 128 characters")
    chosen = list(dict.fromkeys(statuses)) if statuses else list(policy)
    before = {}
    for status in chosen:
        seconds = span if span is not None else policy[status]
        if seconds != KEEP:
            before[status] = now - timedelta(seconds=seconds)
    return PurgeRule(before=before, tenant=tenant)


class _Export:
    """The JSON-lines file a purge writes each batch to before the batch is deleted."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = None

    def open(self) -> None:
        # "x": never overwrite or append to an earlier export.
        self._file = self.path.open("x", encoding="utf-8")

    def __call__(self, batch: Sequence[Purged]) -> None:
        if self._file is None:  # opened with the first batch: a pass with none leaves no file
            self.open()
            assert self._file is not None
        for row in batch:
            line = {"message": row.message, "attempts": row.attempts, "receipts": row.receipts}
            self._file.write(json.dumps(jsonable(line), sort_keys=True) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def check_batch(batch: int) -> None:
    """``ValidationError`` naming ``batch`` unless it is a whole number 1 to ``MAX_BATCH``."""
    if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= MAX_BATCH:
        raise ValidationError("batch", f"must be 1 to {MAX_BATCH:,}, not {batch!r}")


def _check_export(path: Path) -> None:
    if path.exists():
        raise ValidationError("export", f"{path} exists; name a new file")
    if not path.parent.is_dir():
        raise ValidationError("export", f"{path.parent} is not a directory")


async def purge(
    store: Store,
    rule: PurgeRule,
    *,
    actor: str,
    reason: str | None = None,
    dry_run: bool = False,
    export: str | Path | None = None,
    batch: int = 1000,
    pause: float = 0.0,
    clock: Clock | None = None,
    stop: asyncio.Event | None = None,
) -> PurgeResult:
    """Remove what ``rule`` matches in batches of ``batch`` (``pause`` seconds apart),
    exporting each batch to ``export`` first when given; or, with ``dry_run``, count it
    per status and change nothing. One audit entry for the run when it removed anything.
    Setting ``stop`` ends the run between two batches (a worker shutting down).
    ``ValidationError`` naming ``batch``, ``export`` or ``actor`` before anything changes."""
    require_actor(actor)
    check_batch(batch)
    if dry_run:
        return PurgeResult(True, await store.message_purge_count(rule), before=dict(rule.before))
    writer = None
    if export is not None:
        path = Path(export)
        _check_export(path)
        writer = _Export(path)
    counts: dict[str, int] = {}
    batches = 0
    clock = clock or SystemClock()
    try:
        while rule.before:
            got = await store.message_purge(rule, batch, writer)
            if not got:
                break
            batches += 1
            for status, n in got.items():
                counts[status] = counts.get(status, 0) + n
                PURGED.labels(status).inc(n)
            if sum(got.values()) < batch:
                break
            if stop is None:
                await asyncio.sleep(pause)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), pause)
            if stop.is_set():
                break
    finally:
        if writer is not None:
            writer.close()
        if counts:  # also when a later batch failed: what is gone is on record
            detail = {
                "counts": dict(sorted(counts.items())), "total": sum(counts.values()),
                "tenant": rule.tenant, "export": str(export) if export is not None else None,
                "before": {s: t.isoformat() for s, t in sorted(rule.before.items())},
            }  # fmt: skip
            entry = AuditEntry(
                at=clock.now(), actor=actor, action="message.purge", target="messages",
                reason=reason, detail=detail,
            )  # fmt: skip
            await store.audit_append(entry)
    exported = str(export) if writer is not None and counts else None
    return PurgeResult(False, counts, batches, exported, before=dict(rule.before))


def export_file(directory: str, now: datetime) -> Path:
    """A new file for one pass's export in ``directory`` (created if missing)."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"sluice-purge-{now.strftime('%Y%m%dT%H%M%SZ')}"
    path, n = folder / f"{stem}.jsonl", 1
    while path.exists():
        path, n = folder / f"{stem}-{n}.jsonl", n + 1
    return path


class Retention:
    """Applies the retention policy every ``SLUICE_RETENTION_INTERVAL`` seconds while it
    holds the store's ``retention`` lead (one worker at a time)."""

    def __init__(self, store: Store, settings: Settings, clock: Clock | None = None) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock or SystemClock()
        self._lead: Any = None
        #: Set when the worker stops: a pass ends between two batches.
        self.stopping = asyncio.Event()

    async def tick(self) -> PurgeResult | None:
        """Take the lead if free and, leading, run one pass; None when another leads."""
        if self._lead is None:
            self._lead = await self.store.try_lead("retention")
            if self._lead is None:
                return None
            log.info("retention leading")
        now = self.clock.now()
        s = self.settings
        directory = s.retention_export_dir
        result = await purge(
            self.store,
            purge_rule(now, retention=s.retention),
            actor=RETENTION_ACTOR,
            reason="retention policy",
            export=export_file(directory, now) if directory else None,
            batch=s.retention_batch,
            pause=s.retention_pause,
            clock=self.clock,
            stop=self.stopping,
        )
        if result.total:
            log.info("retention pass", removed=result.total, counts=result.counts)
        return result

    async def release(self) -> None:
        if self._lead is not None:
            lead, self._lead = self._lead, None
            await lead.release()

    async def run(self, stopping: asyncio.Event) -> None:
        """A pass every interval while leading, until ``stopping`` is set."""
        self.stopping = stopping
        try:
            while not stopping.is_set():
                try:
                    await self.tick()
                except (SluiceError, OSError) as exc:
                    log.warning("retention pass failed; trying again", error=str(exc))
                    await self.release()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), self.settings.retention_interval)
        finally:
            await self.release()


@contextlib.asynccontextmanager
async def retaining(
    store: Store, settings: Settings, clock: Clock | None = None
) -> AsyncIterator[Retention | None]:
    """Run ``Retention`` beside a worker for the duration of the block; nothing when
    ``SLUICE_RETENTION_INTERVAL`` is 0."""
    if not settings.retention_interval:
        yield None
        return
    retention = Retention(store, settings, clock)
    stopping = asyncio.Event()
    task = asyncio.create_task(retention.run(stopping), name="sluice-retention")
    try:
        yield retention
    finally:
        stopping.set()
        with contextlib.suppress(Exception):
            await task
