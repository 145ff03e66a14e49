"""Recipient hygiene in the store: what both drivers share (rows and parameters).

Suppressions and the last inbound time of each recipient are keyed on (tenant, medium,
recipient), the recipient as ``sluice.flow.hygiene.normalise`` spells it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sluice.flow.hygiene import Suppression
from sluice.store._codec import Codec

__all__ = ["Key", "list_params", "suppression", "suppression_params"]

#: (tenant, medium, recipient).
Key = tuple[str, str, str]


def suppression(c: Codec, r: Sequence[Any]) -> Suppression:
    """A row of ``suppression_list`` / ``suppression_delete``."""
    tenant, channel, recipient, reason, source, actor, created_at = r
    return Suppression(tenant, channel, recipient, reason, source, actor, c.read_time(created_at))


def suppression_params(c: Codec, s: Suppression) -> dict[str, Any]:
    """The parameters of ``suppression_insert``."""
    return {
        "tenant": s.tenant,
        "channel": s.channel,
        "recipient": s.recipient,
        "reason": s.reason,
        "source": s.source,
        "actor": s.actor,
        "created_at": c.write_time(s.created_at),
    }


def list_params(
    tenant: str | None,
    channel: str | None,
    recipient: str | None,
    after: Key | None,
    limit: int,
) -> dict[str, Any]:
    """The parameters of ``suppression_list`` (``after``: the last key of the page before)."""
    a_tenant, a_channel, a_recipient = after if after is not None else (None, None, None)
    return {
        "tenant": tenant,
        "channel": channel,
        "recipient": recipient,
        "after_tenant": a_tenant,
        "after_channel": a_channel,
        "after_recipient": a_recipient,
        "limit": limit,
    }


def contacts(c: Codec, rows: Sequence[Sequence[Any]]) -> dict[Key, datetime]:
    """Rows of ``contact_find`` as key -> last inbound time."""
    return {(t, ch, r): c.read_time(at) for t, ch, r, at in rows}
