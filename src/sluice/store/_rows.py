"""Rows as Sluice's own types: one mapping per table, shared by both stores.

Each function takes the dialect's ``Codec`` (how it keeps times and JSON) and one row
as the named query returns it; both dialects' queries return the same columns in the
same order, which the contract suite holds them to.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sluice.connections import Connection, ConnectionState
from sluice.flow.controls import Control, Mode, Scope
from sluice.model import Attempt, AttemptOutcome, Message, Status
from sluice.store._codec import Codec
from sluice.store.base import (
    ApiKey,
    AuditEntry,
    BreakerInfo,
    DlqGroup,
    InboxItem,
    Incident,
    IncidentEvent,
    LimitRow,
    Receipt,
    Throttle,
    WorkerInfo,
)

Row = Sequence[Any]


def message(c: Codec, r: Row, status: Status = Status.SENDING) -> Message:
    """A claimed message (``message_claim``: 16 columns, up to 20 with approval,
    deferral and expiry); ``status`` is what the claim made it."""
    (mid, tenant, channel, provider, action, recipient, payload, priority, run_at, attempts,
     max_attempts, claim_seq, idem, corr, scopes, created_at) = r[:16]  # fmt: skip
    return Message(
        id=mid,
        tenant=tenant,
        channel=channel,
        provider=provider,
        action=action,
        recipient=recipient,
        payload=c.read_json(payload),
        priority=priority,
        status=status,
        run_at=c.read_time(run_at),
        attempts=attempts,
        max_attempts=max_attempts,
        claim_seq=claim_seq,
        idempotency_key=idem,
        correlation_id=corr,
        scopes=c.read_json(scopes),
        created_at=c.time(created_at),
        approved_by=r[16] if len(r) > 16 else None,
        deferrals=r[17] if len(r) > 17 else 0,
        deferred_since=c.time(r[18]) if len(r) > 18 else None,
        expires_at=c.time(r[19]) if len(r) > 19 else None,
    )


def full_message(c: Codec, r: Row) -> Message:
    """A message with every column (``message_get``, ``message_list``, ``message_get_many``)."""
    msg = message(c, [*r[:8], *r[9:17]], Status(r[8]))
    msg.expires_at = c.time(r[28]) if len(r) > 28 else None
    msg.updated_at, msg.last_error_code, msg.last_error = c.time(r[17]), r[18], r[19]
    msg.provider_message_id, msg.worker_id, msg.lease_until = r[20], r[21], c.time(r[22])
    msg.hold_reason, msg.approved_by, msg.approved_at = r[23], r[24], c.time(r[25])
    msg.deferrals, msg.deferred_since = r[26], c.time(r[27])
    if len(r) > 30:  # post-send verification (issue 15)
        msg.verify_within, msg.verify_by = r[29], c.time(r[30])
    return msg


def control(c: Codec, r: Row) -> Control:
    cid, tenant, channel, provider, action, mode, actor, reason, created, expires, version = r
    return Control(
        id=cid,
        scope=Scope(tenant, channel, provider, action),
        mode=Mode(mode),
        actor=actor,
        reason=reason,
        created_at=c.read_time(created),
        expires_at=c.time(expires),
        version=version,
    )


def attempt(c: Codec, r: Row) -> Attempt:
    return Attempt(
        message_id=r[0],
        attempt_no=r[1],
        worker_id=r[2],
        provider=r[3],
        started_at=c.read_time(r[4]),
        finished_at=c.read_time(r[5]),
        outcome=AttemptOutcome(r[6]),
        error_code=r[7],
        error_class=r[8],
        provider_status=r[9],
        provider_code=r[10],
        detail=r[11],
        latency_ms=r[12],
        applied=bool(r[13]),
    )


def connection(c: Codec, r: Row) -> Connection:
    return Connection(
        id=r[0],
        tenant=r[1],
        provider=r[2],
        state=ConnectionState(r[3]),
        state_reason=r[4],
        state_changed_at=c.read_time(r[5]),
        scopes=list(c.read_json(r[6])),
        missing_scopes=list(c.read_json(r[7])),
        ciphertext=bytes(r[8]),
        key_id=r[9],
        credential_version=r[10],
        expires_at=c.time(r[11]),
        last_check_at=c.time(r[12]),
        last_check_ok_at=c.time(r[13]),
        last_check_error=r[14],
        created_at=c.read_time(r[15]),
        updated_at=c.read_time(r[16]),
    )


def audit_entry(c: Codec, r: Row) -> AuditEntry:
    """An audit row; ``detail`` is JSON text in both dialects (``detail::text``)."""
    return AuditEntry(
        id=r[0],
        at=c.read_time(r[1]),
        actor=r[2],
        action=r[3],
        target=r[4],
        reason=r[5],
        detail=json.loads(r[6]),
        prev_hash=r[7],
        hash=r[8],
    )


def breaker(c: Codec, r: Row) -> BreakerInfo:
    return BreakerInfo(
        key=r[0],
        provider=r[1],
        tenant=r[2],
        state=r[3],
        since=c.read_time(r[4]),
        retry_at=c.time(r[5]),
        forced=bool(r[6]),
        reason=r[7],
        probes_ok=r[8],
        updated_at=c.read_time(r[9]),
    )


def throttle(c: Codec, r: Row) -> Throttle:
    tenant, provider, until, reason, set_at = r
    return Throttle(tenant, provider, c.read_time(until), reason, c.read_time(set_at))


def limit_row(c: Codec, r: Row) -> LimitRow:
    """A limit; ``spec`` is JSON text in both dialects."""
    kind, tenant, provider, action, spec, actor, reason, updated_at = r
    return LimitRow(
        kind, tenant, provider, action, json.loads(spec), actor, reason, c.read_time(updated_at)
    )


def api_key(c: Codec, r: Row) -> ApiKey:
    kid, name, role, tenant, secret_hash, created_by, created_at, revoked_at = r
    return ApiKey(
        kid,
        name,
        role,
        tenant,
        secret_hash,
        created_by,
        c.read_time(created_at),
        c.time(revoked_at),
    )


def inbox_item(c: Codec, r: Row) -> InboxItem:
    return InboxItem(
        id=r[0],
        provider=r[1],
        event_id=r[2],
        kind=r[3],
        status=r[4],
        message_id=r[5],
        provider_message_id=r[6],
        occurred_at=c.time(r[7]),
        error_code=r[8],
        detail=r[9],
        address=r[10],
        data=c.read_json(r[11]),
        received_at=c.read_time(r[12]),
        state=r[13],
        attempts=r[14],
        last_error=r[15],
        result=r[16],
        source_tenant=r[17],
    )


def receipt(c: Codec, r: Row) -> Receipt:
    mid, provider, status, occurred_at, received_at, error_code, detail = r
    return Receipt(
        mid, provider, status, c.time(occurred_at), c.read_time(received_at), error_code, detail
    )


def worker(c: Codec, r: Row) -> WorkerInfo:
    wid, host, pid, started, seen, stopped, in_flight, sent, version, acked = r
    return WorkerInfo(
        wid, host, pid, c.read_time(started), c.read_time(seen), c.time(stopped),
        in_flight, sent, version, c.time(acked),
    )  # fmt: skip


def dlq_group(c: Codec, r: Row) -> DlqGroup:
    channel, error_code, count, first_at, last_at = r
    return DlqGroup(channel, error_code, count, c.read_time(first_at), c.read_time(last_at))


def incident(c: Codec, r: Row) -> Incident:
    return Incident(
        id=r[0], rule=r[1], scope_key=r[2], scope=c.read_json(r[3]), severity=r[4],
        types=c.read_json(r[5]), runbook=r[6], summary=r[7], state=r[8],
        opened_at=c.read_time(r[9]), acknowledged_at=c.time(r[10]), acknowledged_by=r[11],
        resolved_at=c.time(r[12]), resolved_by=r[13], value=float(r[14]), peak=float(r[15]),
        clear_since=c.time(r[16]), notified=r[17], updated_at=c.read_time(r[18]),
        escalated_at=c.time(r[19]),
    )  # fmt: skip


def incident_event(c: Codec, r: Row) -> IncidentEvent:
    return IncidentEvent(r[0], r[1], c.read_time(r[2]), r[3], r[4], c.read_json(r[5]))
