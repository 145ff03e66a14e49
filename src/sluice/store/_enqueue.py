"""Enqueue planning shared by every way in: validation, idempotency, conflict checks.

Free of I/O so the same rules hold whether the rows go through the caller's
psycopg or sqlite3 connection, SQLAlchemy, or Sluice's own store.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sluice import tracing
from sluice.addressing import Addressing, addressing_in_effect
from sluice.config import look_up_config
from sluice.errors import IdempotencyConflict, ValidationError
from sluice.expiry import rules_in_effect
from sluice.metrics import DUPLICATES, ENQUEUED, message_tenant_label, of, tenant_label
from sluice.model import NewMessage, content_hash

__all__ = ["MAX_BATCH", "PreparedRow", "prepare", "resolve"]

#: Most messages one enqueue call takes; larger loads are split by the caller.
MAX_BATCH = 50_000


@dataclass(slots=True)
class PreparedRow:
    """One validated message, as the columns the insert needs."""

    message: NewMessage
    payload_json: str
    scopes_json: str
    content_hash: str
    #: Seconds to live from the insert (the message's ``ttl``, else ``[expiry]``'s), when
    #: the message gives no ``expires_at`` of its own.
    ttl: float | None = None


def prepare(
    messages: Iterable[NewMessage], addressing: Addressing | None = None
) -> list[PreparedRow]:
    """Validate every message before anything is written; raise on the first bad field.

    ``addressing``: what destinations are accepted (default: the configuration in
    effect, read once for the whole batch).
    """
    if isinstance(messages, NewMessage):
        messages = [messages]
    rows: list[PreparedRow] = []
    batch = list(messages)
    if not batch:
        raise ValidationError("messages", "is empty: give at least one message")
    if len(batch) > MAX_BATCH:
        raise ValidationError("messages", f"has {len(batch)} messages; at most {MAX_BATCH}")
    # One look at the configuration for both readers (a stat between two round trips
    # is dear); the expiry rules are read only when a message leaves its expiry to the
    # configuration (one that names its own needs no sluice.toml, readable or not).
    lookup = None
    if addressing is None:
        lookup = look_up_config()
        addressing = addressing_in_effect(lookup=lookup)
    rules = None
    for i, msg in enumerate(batch):
        if not isinstance(msg, NewMessage):
            raise ValidationError(f"messages[{i}]", "is not a sluice.NewMessage")
        where = f"messages[{i}]." if len(batch) > 1 else ""
        payload_json = msg.validate(where, addressing)
        ttl = msg.ttl
        if msg.expires_at is None and ttl is None:
            rules = rules or rules_in_effect(lookup)
            ttl = rules.ttl_for(msg.channel, msg.action)
        rows.append(
            PreparedRow(
                msg, payload_json, json.dumps(list(msg.scopes)) if msg.scopes else "[]",
                content_hash(msg, payload_json), None if msg.expires_at is not None else ttl,
            )
        )  # fmt: skip
    return rows


def keyed(rows: Sequence[PreparedRow], inserted: set[str] | None) -> list[tuple[str, str]]:
    """(tenant, key) pairs whose row may not have been inserted and must be looked up."""
    return [
        (r.message.tenant, r.message.idempotency_key)
        for r in rows
        if r.message.idempotency_key is not None
        and (inserted is None or r.message.id not in inserted)
    ]


def resolve(
    rows: Sequence[PreparedRow], existing: dict[tuple[str, str], tuple[str, str]]
) -> list[str]:
    """The id each message ended up with; raise ``IdempotencyConflict`` on a mismatch.

    ``existing`` maps (tenant, key) to (id, content_hash) of the stored message. A
    repeated key inside one batch resolves against the first row that carried it.
    """
    ids: list[str] = []
    for r in rows:
        m = r.message
        if m.idempotency_key is None:
            ids.append(m.id)
            continue
        found = existing.get((m.tenant, m.idempotency_key))
        if found is None:  # inserted, and nothing else holds the key
            ids.append(m.id)
            continue
        existing_id, existing_hash = found
        if existing_hash != r.content_hash:
            raise IdempotencyConflict(m.tenant, m.idempotency_key, existing_id)
        ids.append(existing_id)
    _count(rows, ids)
    return ids


def _count(rows: Sequence[PreparedRow], ids: Sequence[str]) -> None:
    """Count what this write added and what it recognised as already there. Inside the
    caller's transaction: a transaction rolled back afterwards has still been counted,
    and traced (``sluice.tracing``)."""
    if len(rows) == 1:  # a single enqueue: no tally to build
        _count_one(rows[0].message, ids[0])
        return
    # One increment per label set, not per message: a batch is mostly a few tenants.
    added: Counter[tuple[str, str, str, str]] = Counter()
    known: Counter[str] = Counter()
    traced = tracing.enabled()
    for r, mid in zip(rows, ids, strict=True):
        m = r.message
        if mid == m.id:
            added[m.tenant, m.action, m.channel, m.provider] += 1
        else:
            known[m.tenant] += 1
        if traced:
            tracing.enqueued(m, mid, duplicate=mid != m.id)
    for (tenant, action, channel, provider), n in added.items():
        # canaries (issue 15) count under _canary, not their tenant
        of(ENQUEUED, message_tenant_label(tenant, action), channel, provider).inc(n)
    for tenant, n in known.items():
        of(DUPLICATES, "enqueue", tenant_label(tenant)).inc(n)


def _count_one(m: NewMessage, mid: str) -> None:
    if mid == m.id:
        of(ENQUEUED, message_tenant_label(m.tenant, m.action), m.channel, m.provider).inc()
    else:
        of(DUPLICATES, "enqueue", tenant_label(m.tenant)).inc()
    if tracing.enabled():
        tracing.enqueued(m, mid, duplicate=mid != m.id)
