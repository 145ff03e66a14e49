"""Hash chaining of audit entries: each entry's hash covers its content and the last hash."""

from __future__ import annotations

import hashlib
import json

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
