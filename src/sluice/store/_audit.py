"""Hash chaining of audit entries: each entry's hash covers its content and the last hash."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from datetime import datetime
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


@dataclasses.dataclass(slots=True)
class ChainCheck:
    """Checks the hash chain a page at a time, oldest first, so that a long log is
    never read whole: ``feed`` each page in order until it returns a break."""

    #: The hash the next entry must chain to.
    prev: str = GENESIS
    #: Entries found sound so far.
    checked: int = 0
    #: Id of the last sound entry (0 before the first).
    last_id: int = 0

    def feed(self, entries_oldest_first: Sequence[AuditEntry]) -> tuple[int, str] | None:
        """``(id, why)`` of the first entry that breaks the chain, or None if all hold."""
        for e in entries_oldest_first:
            if e.prev_hash != self.prev:
                after = f"entry {self.last_id}" if self.last_id else "the start of the log"
                return e.id or 0, (
                    f"its prev_hash does not match the hash of {after} "
                    "(an entry before it was removed or changed)"
                )
            if chain_hash(self.prev, e) != e.hash:
                return e.id or 0, "its content does not match its hash (it was changed)"
            self.prev = e.hash or ""
            self.checked += 1
            self.last_id = e.id or 0
        return None


def verify_chain(entries_oldest_first: list[AuditEntry]) -> int | None:
    """Id of the first entry whose hash does not match, or None if the chain holds."""
    broken = ChainCheck().feed(entries_oldest_first)
    return broken[0] if broken else None


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


def audit_row(r: Sequence[Any], at: datetime) -> AuditEntry:
    """The entry of a row of ``audit_list``, ``audit_select`` or ``audit_walk`` (``at``
    already in the store's own time type converted to a datetime)."""
    return AuditEntry(
        id=r[0],
        at=at,
        actor=r[2],
        action=r[3],
        target=r[4],
        reason=r[5],
        detail=json.loads(r[6]),
        prev_hash=r[7],
        hash=r[8],
    )
