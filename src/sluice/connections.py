"""Tenant connections: a tenant's credentials for one provider, with scopes and a state.

States (every change has a time and a reason, and an audit row)::

    active ──401/invalid_grant/failed refresh──▶ pending_reauth ──rotate──▶ active
    active ──403 missing scope──▶ needs_reconsent ──rotate with the scope──▶ active
    any ──operator──▶ revoked

While a connection is not ``active`` its messages are *held*: they wait, visibly,
without burning attempts or filling the dead-letter queue, and ``rotate`` (new
credentials or scopes: the re-consent) releases them, oldest first.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

__all__ = ["Connection", "ConnectionState", "hold_reason"]


class ConnectionState(enum.StrEnum):
    """Whether a connection may be used to send."""

    ACTIVE = "active"
    PENDING_REAUTH = "pending_reauth"
    NEEDS_RECONSENT = "needs_reconsent"
    REVOKED = "revoked"


@dataclass(slots=True)
class Connection:
    """A connection as stored; ``ciphertext`` is opened only by ``SecretBox``."""

    id: str
    tenant: str
    provider: str
    state: ConnectionState
    state_reason: str | None
    state_changed_at: datetime
    scopes: list[str]
    missing_scopes: list[str]
    ciphertext: bytes = field(repr=False)
    key_id: str
    credential_version: int
    expires_at: datetime | None
    last_check_at: datetime | None
    last_check_ok_at: datetime | None
    last_check_error: str | None
    created_at: datetime
    updated_at: datetime

    def public(self) -> dict[str, object]:
        """Everything but the secrets, for output to people and programs."""
        return {
            "id": self.id,
            "tenant": self.tenant,
            "provider": self.provider,
            "state": self.state.value,
            "state_reason": self.state_reason,
            "state_changed_at": self.state_changed_at.isoformat(),
            "scopes": list(self.scopes),
            "missing_scopes": list(self.missing_scopes),
            "credential_version": self.credential_version,
            "key_id": self.key_id,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "last_check_at": self.last_check_at.isoformat() if self.last_check_at else None,
            "last_check_ok_at": self.last_check_ok_at.isoformat()
            if self.last_check_ok_at
            else None,
            "last_check_error": self.last_check_error,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


#: Every hold caused by a connection starts with this, so re-consent releases exactly those.
HOLD_PREFIX = "connection:"


def hold_reason(detail: str) -> str:
    """The ``hold_reason`` of a message waiting on its connection."""
    return f"{HOLD_PREFIX} {detail}"[:500]
