"""Parameters of the named queries, shaped once for both stores.

Both dialects' queries take the same named parameters; only how a time is passed
differs, which the dialect's ``Codec`` says. A function here is one query's parameter
set (or the part two queries share); the drivers pass it to ``execute`` as it is.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sluice.connections import HOLD_PREFIX, Connection, ConnectionState, hold_reason
from sluice.errors import NotFound
from sluice.flow.controls import Control, Mode, Scope, control_hold_reason
from sluice.model import Status
from sluice.store._codec import Codec
from sluice.store._receipts import failure_of
from sluice.store.base import LimitRow, MessageFilter, Receipt, RefreshOutcome

Params = dict[str, Any]


def uuid_or_none(value: str) -> str | None:
    """An id as the canonical UUID text the rows hold, or None if it is not a UUID."""
    try:
        return str(uuid.UUID(value))
    except (ValueError, TypeError, AttributeError):
        return None


def uuid_text(value: str, field: str = "id") -> str:
    """``uuid_or_none``, with ``NotFound`` for what is not a UUID (checked before the
    database sees it, so both stores answer alike and PostgreSQL's ``uuid`` type never
    refuses it with an error of its own)."""
    text = uuid_or_none(value)
    if text is None:
        raise NotFound(f"no message with {field} {value!r}")
    return text


def message_claim(
    c: Codec, worker_id: str, limit: int, lease_seconds: float, now: datetime, after: str
) -> Params:
    return {
        "worker_id": worker_id,
        "limit": limit,
        "now": c.write_time(now),
        "lease_until": c.write_time(now + timedelta(seconds=lease_seconds)),
        "after": after,
    }


def message_select(c: Codec, status: str, flt: MessageFilter) -> Params:
    """``message_select_by_status``: the ids an operator's filter picks."""
    return {
        "status": status,
        "tenant": flt.tenant,
        "channel": flt.channel,
        "provider": flt.provider,
        "action": flt.action,
        "error_code": flt.error_code,
        "reason": flt.reason,
        "since": c.param(flt.since),
        "limit": c.no_limit if flt.limit is None else flt.limit,
    }


def message_list(
    c: Codec, flt: MessageFilter, status: str | None, before_id: str | None, limit: int
) -> Params:
    """``message_list``: one page of the API's listing (``before_id`` is the cursor)."""
    return {
        "tenant": flt.tenant,
        "status": status,
        "channel": flt.channel,
        "provider": flt.provider,
        "action": flt.action,
        "error_code": flt.error_code,
        "since": c.param(flt.since),
        "correlation_id": flt.correlation_id,
        "until": c.param(flt.until),
        "updated_since": c.param(flt.updated_since),
        "updated_until": c.param(flt.updated_until),
        "before_id": None if before_id is None else uuid_text(before_id, "cursor"),
        "limit": limit,
    }


def limit_upsert(c: Codec, row: LimitRow) -> Params:
    return {
        "kind": row.kind,
        "tenant": row.tenant,
        "provider": row.provider,
        "action": row.action,
        "spec": json.dumps(row.spec),
        "actor": row.actor,
        "reason": row.reason,
        "now": c.write_time(row.updated_at),
    }


def throttle_set(
    c: Codec, tenant: str, provider: str, until: datetime, reason: str, now: datetime
) -> Params:
    return {
        "tenant": tenant,
        "provider": provider,
        "until": c.write_time(until),
        "reason": reason,
        "now": c.write_time(now),
    }


def control_upsert(
    c: Codec,
    scope: Scope,
    mode: Mode,
    *,
    actor: str,
    reason: str,
    expires_at: datetime | None,
    now: datetime,
    version: int,
) -> Params:
    """``control_upsert``; a new control gets a fresh id (an existing one keeps its own)."""
    return {
        **scope.params(),
        "id": str(uuid.uuid4()),
        "mode": mode.value,
        "actor": actor,
        "reason": reason,
        "now": c.write_time(now),
        "expires_at": c.param(expires_at),
        "version": version,
    }


def control_hold(c: Codec, control: Control, now: datetime, limit: int) -> Params:
    """``message_hold_controlled``: hold what a kill switch covers."""
    return {
        **control.scope.params(),
        "reason": control_hold_reason(control),
        "control_id": control.id,
        "now": c.write_time(now),
        "limit": limit,
    }


def connection_insert(c: Codec, conn: Connection) -> Params:
    return {
        "id": conn.id,
        "tenant": conn.tenant,
        "provider": conn.provider,
        "now": c.write_time(conn.created_at),
        "scopes": json.dumps(conn.scopes),
        "ciphertext": conn.ciphertext,
        "key_id": conn.key_id,
        "expires_at": c.param(conn.expires_at),
    }


def connection_set_state(
    c: Codec,
    tenant: str,
    provider: str,
    state: ConnectionState,
    reason: str,
    missing_scopes: Sequence[str],
    now: datetime,
    expected_version: int | None,
) -> Params:
    return {
        "tenant": tenant,
        "provider": provider,
        "state": state.value,
        "reason": reason,
        "missing_scopes": json.dumps(list(missing_scopes)),
        "now": c.write_time(now),
        "expected_version": expected_version,
    }


def connection_rotate(
    c: Codec,
    tenant: str,
    provider: str,
    *,
    ciphertext: bytes | None,
    key_id: str | None,
    scopes: Sequence[str] | None,
    expires_at: datetime | None,
    now: datetime,
    reason: str | None,
) -> Params:
    return {
        "tenant": tenant,
        "provider": provider,
        "now": c.write_time(now),
        "reason": reason or "re-consent",
        "scopes": None if scopes is None else json.dumps(list(scopes)),
        "ciphertext": ciphertext,
        "key_id": key_id,
        "expires_at": c.param(expires_at),
    }


def connection_store_secret(
    c: Codec,
    connection_id: str,
    ciphertext: bytes,
    key_id: str,
    expires_at: datetime | None,
    now: datetime,
    expected_version: int,
) -> Params:
    return {
        "id": connection_id,
        "ciphertext": ciphertext,
        "key_id": key_id,
        "expires_at": c.param(expires_at),
        "now": c.write_time(now),
        "expected_version": expected_version,
    }


def connection_record_check(
    c: Codec,
    connection_id: str,
    ok: bool,
    error: str | None,
    expires_at: datetime | None,
    now: datetime,
) -> Params:
    return {
        "id": connection_id,
        "ok": ok,
        "error": error,
        "expires_at": c.param(expires_at),
        "now": c.write_time(now),
    }


def refresh_store(c: Codec, current: Connection, outcome: RefreshOutcome, now: datetime) -> Params:
    """``connection_refresh_store``: the new credentials, if ``current`` is still current."""
    return {
        "id": current.id,
        "version": current.credential_version,
        "now": c.write_time(now),
        "ciphertext": outcome.ciphertext,
        "key_id": outcome.key_id,
        "expires_at": c.param(outcome.expires_at),
        "scopes": None if outcome.scopes is None else json.dumps(list(outcome.scopes)),
    }


def refresh_fail(c: Codec, current: Connection, outcome: RefreshOutcome, now: datetime) -> Params:
    """``connection_refresh_fail``: the state a failed refresh leaves, if still current."""
    assert outcome.state is not None
    return {
        "id": current.id,
        "version": current.credential_version,
        "now": c.write_time(now),
        "state": outcome.state.value,
        "reason": outcome.reason,
    }


def release_held(c: Codec, tenant: str, provider: str, now: datetime) -> Params:
    """``message_release_held``: what was held for want of this connection goes now."""
    return {"tenant": tenant, "provider": provider, "now": c.write_time(now), "prefix": HOLD_PREFIX}


def hold_queued(c: Codec, tenant: str, provider: str, now: datetime, why: str) -> Params:
    """``message_hold_queued``: hold what is queued for a connection that cannot send."""
    return {
        "tenant": tenant,
        "provider": provider,
        "now": c.write_time(now),
        "reason": hold_reason(why),
    }


def breaker_transition(
    c: Codec,
    key: str,
    provider: str,
    tenant: str,
    expected_state: str | None,
    new_state: str,
    *,
    retry_at: datetime | None,
    reason: str,
    forced: bool,
    now: datetime,
) -> Params:
    return {
        "key": key,
        "provider": provider,
        "tenant": tenant,
        "expected": expected_state,
        "state": new_state,
        "retry_at": c.param(retry_at),
        "forced": forced,
        "reason": reason,
        "now": c.write_time(now),
    }


def worker_upsert(
    c: Codec, worker_id: str, host: str, pid: int, in_flight: int, sent_total: int, now: datetime
) -> Params:
    return {
        "id": worker_id,
        "host": host,
        "pid": pid,
        "now": c.write_time(now),
        "in_flight": in_flight,
        "sent_total": sent_total,
    }


def receipt_insert(c: Codec, receipt: Receipt, message_id: str, inbox_id: int) -> Params:
    """``receipt_insert``; ``message_id`` is the receipt's, as canonical UUID text."""
    return {
        "message_id": message_id,
        "provider": receipt.provider,
        "status": receipt.status,
        "occurred_at": c.param(receipt.occurred_at),
        "received_at": c.write_time(receipt.received_at),
        "error_code": receipt.error_code,
        "detail": receipt.detail,
        "inbox_id": inbox_id,
    }


def receipt_advance(
    c: Codec, message_id: str, receipt: Receipt, target: Status, now: datetime
) -> Params:
    """``receipt_advance``: the message moves to ``target`` (a bounce says why)."""
    error_code, error = failure_of(receipt, target)
    return {
        "id": message_id,
        "status": target.value,
        "now": c.write_time(now),
        "error_code": error_code,
        "error": error,
        "receipt_status": receipt.status,  # post-send verification (issue 15)
    }


#: How much older than its creation a message's id may be and still be counted by
#: ``Store.activity`` (an id is minted when the message is built, a moment before the
#: store writes it; the slack also covers clocks of different hosts a little apart).
ID_SLACK = timedelta(minutes=5)


def first_id_at(at: datetime) -> str:
    """The smallest time-ordered message id (``sluice.model.new_message_id``) minted at
    ``at`` or later: a lower bound on the primary key for a window of creation times."""
    ms = max(0, int(at.timestamp() * 1000))
    h = f"{(ms & ((1 << 48) - 1)) << 80:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def activity(c: Codec, now: datetime, minutes: int) -> Params:
    """``activity_enqueued`` and ``activity_attempts``: the window (now - minutes, now]."""
    since = now - timedelta(minutes=minutes)
    return {
        "now": c.write_time(now),
        "since": c.write_time(since),
        "first_id": first_id_at(since - ID_SLACK),
    }
