"""Hash chaining of audit entries: each entry's hash covers its content and the last hash."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from sluice.store.base import AuditEntry

GENESIS = "0" * 64


def chain_hash(prev_hash: str, entry: AuditEntry) -> str:
    """sha256 over the previous hash and a canonical form of the entry."""
    body = json.dumps(
        [
            prev_hash,
            entry.at.isoformat(),
            entry.actor,
            entry.action,
            entry.target,
            entry.reason,
            entry.detail,
        ],
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(body.encode()).hexdigest()


def verify_chain(entries_oldest_first: list[AuditEntry]) -> int | None:
    """Id of the first entry whose hash does not match, or None if the chain holds."""
    prev = GENESIS
    for e in entries_oldest_first:
        if e.prev_hash != prev or chain_hash(prev, e) != e.hash:
            return e.id
        prev = e.hash
    return None


def seal(
    entry: AuditEntry, prev_hash: str | None, detail: dict[str, Any] | None = None
) -> AuditEntry:
    """The entry as stored: chained to ``prev_hash`` (the genesis hash for the first).

    The time is cut to milliseconds, which both stores give back exactly, so that a
    hash recomputed from a stored row matches the one written.
    """
    prev = prev_hash or GENESIS
    at = entry.at.replace(microsecond=entry.at.microsecond // 1000 * 1000)
    body = dataclasses.replace(
        entry,
        at=at,
        detail=entry.detail if detail is None else detail,
        id=None,
        prev_hash=prev,
        hash=None,
    )
    return dataclasses.replace(body, hash=chain_hash(prev, body))


def insert_params(sealed: AuditEntry, at: Any) -> dict[str, Any]:
    """Parameters of the ``audit_insert`` query (``at`` in the store's own time type)."""
    return {
        "at": at,
        "actor": sealed.actor,
        "action": sealed.action,
        "target": sealed.target,
        "reason": sealed.reason,
        "detail": json.dumps(sealed.detail, default=str),
        "prev_hash": sealed.prev_hash,
        "hash": sealed.hash,
    }


def stored_detail(detail: dict[str, Any]) -> Any:
    """``detail`` as it reads back from the store (JSON types only), for comparisons."""
    return json.loads(json.dumps(detail, default=str))
