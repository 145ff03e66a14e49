"""HTTP API keys: create (the secret is shown once), list, revoke — for the CLI and API.

A key reads ``sk_<id>.<secret>``: the id finds the row, the secret is checked against
its SHA-256 in constant time. The secret has 256 random bits, so a plain hash is enough
(a slow password hash guards low-entropy secrets; this one cannot be guessed).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from sluice.clock import Clock, SystemClock
from sluice.errors import ValidationError
from sluice.ops.actions import require_actor
from sluice.store.base import ApiKey, AuditEntry, Store

__all__ = [
    "ROLES",
    "NewKey",
    "api_key_create",
    "api_key_list",
    "api_key_revoke",
    "check_new_key",
    "secret_matches",
    "split_key",
]  # fmt: skip

ROLES = ("tenant", "operator")
_KEY = re.compile(r"sk_([0-9a-f]{16})\.([A-Za-z0-9_-]{43})")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}")


@dataclass(frozen=True, slots=True)
class NewKey:
    """A key just made: ``token`` is the only time the secret exists outside the caller."""

    key: ApiKey
    token: str


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split_key(token: str) -> tuple[str, str] | None:
    """``(id, secret)`` of a well-formed key, else None."""
    match = _KEY.fullmatch(token.strip())
    return (match.group(1), match.group(2)) if match else None


def secret_matches(key: ApiKey, secret: str) -> bool:
    return hmac.compare_digest(key.secret_hash, _hash(secret))


def check_new_key(name: str, role: str, tenant: str | None) -> None:
    """``ValidationError`` naming what is wrong with a key to make (nothing is made)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValidationError(
            "name", "must be 1-64 letters, digits or _.:@- and start with a letter or digit"
        )
    if role not in ROLES:
        raise ValidationError("role", f"must be one of {list(ROLES)}, not {role!r}")
    if role == "tenant" and not (tenant and tenant.strip()):
        raise ValidationError("tenant", "is required for a tenant key")
    if role == "operator" and tenant:
        raise ValidationError("tenant", "an operator key sees every tenant; leave it out")
    if tenant is not None and len(tenant) > 128:
        raise ValidationError("tenant", "is longer than 128 characters")


async def api_key_create(
    store: Store,
    name: str,
    role: str,
    tenant: str | None,
    *,
    actor: str,
    clock: Clock | None = None,
) -> NewKey:
    """Make a key for ``tenant`` (role ``tenant``) or for operators (role ``operator``)."""
    require_actor(actor)
    check_new_key(name, role, tenant)
    now = (clock or SystemClock()).now()
    key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    key = ApiKey(
        id=key_id,
        name=name,
        role=role,
        tenant=tenant if role == "tenant" else None,
        secret_hash=_hash(secret),
        created_by=actor,
        created_at=now,
    )
    audit = AuditEntry(
        at=now,
        actor=actor,
        action="api_key.create",
        target=f"api_key:{key_id}",
        reason=None,
        detail={"name": name, "role": role, "tenant": key.tenant},
    )
    await store.api_key_insert(key, audit)
    return NewKey(key, f"sk_{key_id}.{secret}")


async def api_key_list(store: Store) -> list[ApiKey]:
    return await store.api_key_list()


async def api_key_revoke(
    store: Store, key_id: str, *, actor: str, reason: str | None = None, clock: Clock | None = None
) -> ApiKey:
    """Revoke a key by id (``sk_<id>`` or the bare id): it stops working at once in new
    processes and within seconds in running ones (their cache of keys)."""
    require_actor(actor)
    key_id = key_id.removeprefix("sk_").split(".", 1)[0]
    now: datetime = (clock or SystemClock()).now()
    audit = AuditEntry(
        at=now, actor=actor, action="api_key.revoke", target=f"api_key:{key_id}", reason=reason
    )
    return await store.api_key_revoke(key_id, now, audit)
