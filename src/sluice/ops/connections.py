"""Connection operations: add, list, show, rotate (re-consent), check, re-encrypt.

Secrets go in through here and never come out: results carry ``Connection.public()``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sluice.addressing import addressing_in_effect
from sluice.clock import Clock, SystemClock
from sluice.connections import Connection, ConnectionState
from sluice.errors import ConfigError, StoreError, ValidationError
from sluice.model import ErrorCode, new_message_id
from sluice.secrets import SecretBox, check_key
from sluice.store.base import AuditEntry, Store
from sluice.store.tenant_events import connection_event

__all__ = [
    "CheckReport",
    "connection_add",
    "connection_check",
    "connection_revoke",
    "connection_rotate",
    "keys_rotate",
    "verify_key",
]

#: What each provider's credentials must contain.
REQUIRED_KEYS: dict[str, tuple[str, ...]] = {
    "twilio": ("account_sid", "auth_token"),
    "sendgrid": ("api_key", "from_email"),
    "whatsapp": ("access_token", "phone_number_id"),
    "webhook": ("secret",),
    "sluice_events": ("secret",),
}


def _validate(
    provider: str, secrets: Mapping[str, str], scopes: Sequence[str], kind: str | None = None
) -> None:
    """``kind``: the built-in kind ``provider`` stands for (an alias needs the keys of its
    kind); ``None``: ``provider`` itself."""
    if not provider or not provider.strip():
        raise ValidationError("provider", "is required")
    if not secrets:
        raise ValidationError("credentials", "are required (key=value pairs)")
    for key, value in secrets.items():
        if not key or not isinstance(value, str) or not value:
            raise ValidationError("credentials", f"{key!r} needs a non-empty value")
    missing = [k for k in REQUIRED_KEYS.get(kind or provider, ()) if k not in secrets]
    if missing:
        raise ValidationError("credentials", f"a {provider} connection needs {', '.join(missing)}")
    if isinstance(scopes, str) or not all(isinstance(s, str) and s.strip() for s in scopes):
        raise ValidationError("scopes", "must be a list of non-empty strings")


async def connection_add(
    store: Store,
    box: SecretBox,
    *,
    tenant: str,
    provider: str,
    secrets: Mapping[str, str],
    scopes: Sequence[str],
    expires_at: datetime | None = None,
    actor: str,
    reason: str | None = None,
    clock: Clock | None = None,
) -> Connection:
    """Store a new connection, its secrets encrypted; audit it (never its secrets).

    ``provider`` must be one messages can name (a built-in or an alias of the
    ``sluice.toml`` in effect): a connection for any other would never be used."""
    if not tenant or not tenant.strip():
        raise ValidationError("tenant", "is required")
    if not provider or not provider.strip():
        raise ValidationError("provider", "is required")
    kind = addressing_in_effect().kind_of(provider)
    _validate(provider, secrets, scopes, kind)
    now = (clock or SystemClock()).now()
    cid = new_message_id()
    ciphertext, kid = box.encrypt(secrets, cid, tenant, provider)
    conn = Connection(
        id=cid, tenant=tenant, provider=provider, state=ConnectionState.ACTIVE,
        state_reason=None, state_changed_at=now, scopes=sorted(set(scopes)), missing_scopes=[],
        ciphertext=ciphertext, key_id=kid, credential_version=1, expires_at=expires_at,
        last_check_at=None, last_check_ok_at=None, last_check_error=None, created_at=now,
        updated_at=now,
    )  # fmt: skip
    audit = AuditEntry(
        at=now, actor=actor, action="connection.add", target=f"{tenant}/{provider}",
        reason=reason, detail={"scopes": conn.scopes, "credential_keys": sorted(secrets)},
    )  # fmt: skip
    created: Connection = await store.connection_insert(conn, audit)
    return created


async def connection_rotate(
    store: Store,
    box: SecretBox | None,
    *,
    tenant: str,
    provider: str,
    secrets: Mapping[str, str] | None,
    scopes: Sequence[str] | None,
    expires_at: datetime | None = None,
    actor: str,
    reason: str | None = None,
    clock: Clock | None = None,
) -> tuple[Connection, list[str]]:
    """Re-consent: new credentials and/or scopes; the connection becomes ``active`` and
    its held messages go back to the queue, oldest first. Returns the released ids."""
    if secrets is None and scopes is None:
        raise ValidationError("credentials", "give new credentials, new scopes, or both")
    current: Connection = await store.connection_get(tenant, provider)
    ciphertext = kid = None
    if secrets is not None:
        if box is None:
            raise ConfigError("SLUICE_SECRET_KEY is not set: new credentials cannot be stored")
        _validate(provider, secrets, scopes or [], addressing_in_effect().providers.get(provider))
        ciphertext, kid = box.encrypt(secrets, current.id, tenant, provider)
    elif isinstance(scopes, str) or not all(isinstance(x, str) and x.strip() for x in scopes or []):
        raise ValidationError("scopes", "must be a list of non-empty strings")
    now = (clock or SystemClock()).now()
    audit = AuditEntry(
        at=now, actor=actor, action="connection.rotate", target=f"{tenant}/{provider}",
        reason=reason or "re-consent",
        detail={
            "new_credentials": secrets is not None,
            "scopes": sorted(set(scopes)) if scopes is not None else None,
            "from_version": current.credential_version,
        },
    )  # fmt: skip
    result: tuple[Connection, list[str]] = await store.connection_rotate(
        tenant, provider, ciphertext=ciphertext, key_id=kid,
        scopes=sorted(set(scopes)) if scopes is not None else None,
        expires_at=expires_at, now=now, audit=audit,
    )  # fmt: skip
    return result


async def connection_revoke(
    store: Store, *, tenant: str, provider: str, actor: str, reason: str, clock: Clock | None = None
) -> list[str]:
    """Stop using a connection; its queued messages are held until re-consent."""
    if not reason or not reason.strip():
        raise ValidationError("reason", "is required to revoke a connection")
    await store.connection_get(tenant, provider)
    _, held = await store.connection_set_state(
        tenant, provider, ConnectionState.REVOKED, reason, [], (clock or SystemClock()).now(), actor
    )
    return list(held)


@dataclass(frozen=True, slots=True)
class CheckReport:
    """The result of ``sluice connections check`` for one connection."""

    connection: dict[str, Any]
    ok: bool
    detail: str
    granted_scopes: list[str] | None
    missing_scopes: list[str]
    days_until_expiry: float | None


async def connection_check(
    store: Store, box: SecretBox, provider_impl: Any, conn: Connection, clock: Clock | None = None
) -> CheckReport:
    """Call the provider's cheapest authenticated endpoint; record when it last succeeded."""
    now = (clock or SystemClock()).now()
    secrets = box.decrypt(conn.ciphertext, conn.key_id, conn.id, conn.tenant, conn.provider)
    result = await provider_impl.check(secrets)
    granted = list(result.granted_scopes) if result.granted_scopes is not None else None
    missing = sorted(set(conn.scopes) - set(granted)) if granted is not None else []
    ok = bool(result.ok) and not missing
    detail = result.detail or ("ok" if ok else "failed")
    if missing:
        detail = f"provider no longer grants: {', '.join(missing)}"
    expires_at = result.expires_at or conn.expires_at
    await store.connection_record_check(conn.id, ok, None if ok else detail, result.expires_at, now)
    # Found before any message fails: mark the connection now, so its messages wait
    # (held) instead of each discovering the problem at the provider.
    state = None
    if missing or result.code is ErrorCode.SCOPE_MISSING:
        state = ConnectionState.NEEDS_RECONSENT
    elif result.code is ErrorCode.AUTH_REVOKED:
        state = ConnectionState.PENDING_REAUTH
    if state is not None and conn.state is ConnectionState.ACTIVE:
        why = f"connections check: {detail}"
        changed, _ = await store.connection_set_state(
            conn.tenant, conn.provider, state, why, missing, now,
            "sluice connections check", expected_version=conn.credential_version,
        )  # fmt: skip
        if changed:
            await connection_event(
                store, conn.tenant, conn.provider, state.value, why, now, missing
            )
    days = (expires_at - now).total_seconds() / 86400 if expires_at else None
    return CheckReport(conn.public(), ok, detail, granted, missing, days)


async def keys_rotate(
    store: Store, box: SecretBox, *, actor: str, clock: Clock | None = None
) -> int:
    """Re-encrypt every credential under the current key; return how many changed."""
    now = (clock or SystemClock()).now()
    changed = 0
    for _ in range(5):  # a refresh or rotation racing us: re-read and go again
        pending = [c for c in await store.connection_list() if c.key_id != box.current_id]
        if not pending:
            break
        for conn in pending:
            secrets = box.decrypt(conn.ciphertext, conn.key_id, conn.id, conn.tenant, conn.provider)
            ciphertext, kid = box.encrypt(secrets, conn.id, conn.tenant, conn.provider)
            if await store.connection_store_secret(
                conn.id, ciphertext, kid, conn.expires_at, now, conn.credential_version
            ):
                changed += 1
    else:
        raise StoreError("credentials kept changing during key rotation; run it again")
    await store.audit_append(
        AuditEntry(
            at=now,
            actor=actor,
            action="keys.rotate",
            detail={"re_encrypted": changed, "key_id": box.current_id},
        )
    )
    return changed


async def verify_key(store: Store, box: SecretBox | None) -> int:
    """At startup: every stored credential must open with the configured key(s).

    Returns the number of connections; raises ``ConfigError`` naming the problem
    (``sluice.secrets.check_key``).
    """
    return check_key(await store.connection_list(), box)
