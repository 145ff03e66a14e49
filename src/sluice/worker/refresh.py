"""Refreshing OAuth 2.0 access tokens before they expire, once per connection, not per worker.

The gate asks the ``Refresher`` for fresh credentials before handing them to a provider.
A token that expires within ``margin`` seconds (the connection's ``expires_at`` column or
``credentials["expires_at"]``, whichever is earlier; half the token's lifetime when it
lives shorter than twice the margin) is refreshed through the provider's
``refresh`` (RFC 6749 §6) — by exactly one caller:

- inside one process, callers for the same connection queue on an ``asyncio.Lock`` and
  the ones after the first take the credentials it stored;
- across processes, ``Store.connection_refresh`` serialises them: on PostgreSQL the
  connection's row lock (``SELECT … FOR UPDATE``) is held across the token call, and a
  waiter re-reads the row when it gets the lock, sees the new expiry and does not call
  the token endpoint again. On SQLite the write is a compare-and-swap instead (the
  file's write lock is never held across HTTP): see ``SqliteStore.connection_refresh``.

What a refresh can end in:

- new credentials: sealed with the ``SecretBox``, stored (``credential_version`` + 1),
  audited as ``connection.refresh`` without a secret in it;
- ``invalid_grant`` (or another permanent refusal): the connection goes to
  ``pending_reauth`` (``needs_reconsent`` for ``invalid_scope``) in the same transaction,
  its queued messages are held, and so is the message that asked; nothing burns an
  attempt or reaches the dead-letter queue, and re-consent releases them;
- a transient failure (5xx, timeout): nothing is written; the current token is used
  while it is still valid, and the connection is not tried again for
  ``failure_backoff`` seconds (or the ``Retry-After`` asked for), so an outage of the
  token endpoint costs one call per process per interval, not one per message. A send
  whose token has already expired meanwhile is deferred by the provider.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, cast

import structlog

from sluice.clock import Clock, SystemClock
from sluice.connections import Connection, ConnectionState, hold_reason
from sluice.errors import MigrationError, NotFound, StoreError
from sluice.metrics import OAUTH_REFRESHES
from sluice.model import ErrorCode
from sluice.providers.base import Credentials
from sluice.providers.http_action import (
    RefreshResult,
    credentials_expire_at,
    credentials_refreshed_at,
    refreshable,
)
from sluice.secrets import SecretBox
from sluice.store.base import RefreshOutcome, Store
from sluice.store.tenant_events import connection_event

__all__ = ["DEFAULT_MARGIN", "Fresh", "Refresher", "TokenRefreshing"]

#: Refresh a token this many seconds before it expires.
DEFAULT_MARGIN = 300.0
#: After a transient failure, leave the token endpoint alone this long (per process).
DEFAULT_FAILURE_BACKOFF = 15.0
#: The longest pause a token endpoint's ``Retry-After`` can impose.
_MAX_BACKOFF = 600.0
_MAX_REMEMBERED = 10_000


class TokenRefreshing(Protocol):
    """A provider whose credentials can be refreshed (``HttpActionProvider``)."""

    async def refresh(self, credentials: Credentials | None) -> RefreshResult:
        """Exchange the refresh token for new credentials; never raises."""
        ...


@dataclass(frozen=True, slots=True)
class Fresh:
    """The refresher's answer: credentials to send with, or why the message must wait."""

    connection: Connection
    credentials: dict[str, str] | None = None
    hold: str | None = None


class Refresher:
    """Keeps access tokens fresh for the providers in ``providers`` that can ``refresh``.

    ``refresh_calls`` counts the token endpoint calls this instance made (the tests use
    it, with the token endpoint's own count, to show single-flight).
    """

    def __init__(
        self,
        store: Store,
        box: SecretBox,
        providers: Mapping[str, object],
        *,
        margin: float = DEFAULT_MARGIN,
        failure_backoff: float = DEFAULT_FAILURE_BACKOFF,
        clock: Clock | None = None,
        worker_id: str = "refresher",
        logger: Any = None,
    ) -> None:
        self.store = store
        self.box = box
        self.providers: dict[str, TokenRefreshing] = {
            name: cast(TokenRefreshing, p)
            for name, p in providers.items()
            if callable(getattr(p, "refresh", None))
        }
        self.margin = timedelta(seconds=margin)
        self.failure_backoff = failure_backoff
        self.clock = clock or SystemClock()
        self.worker_id = worker_id
        self.log = logger or structlog.get_logger("sluice.worker").bind(worker=worker_id)
        self.refresh_calls = 0
        self._locks: dict[str, asyncio.Lock] = {}
        # The newest row (and its plaintext) this process stored or read under the lock,
        # so the rest of a batch does not queue on the database for the same answer.
        self._latest: dict[str, tuple[Connection, dict[str, str]]] = {}
        self._retry_at: dict[str, datetime] = {}

    def handles(self, provider: str) -> bool:
        """Whether connections of ``provider`` are refreshed here."""
        return provider in self.providers

    def expires_at(self, conn: Connection, credentials: Credentials) -> datetime | None:
        """When the access token expires: the earlier of the column and the credentials."""
        known = [t for t in (conn.expires_at, credentials_expire_at(credentials)) if t]
        return min(known) if known else None

    def due(self, conn: Connection, credentials: Credentials, now: datetime) -> bool:
        """Whether the token expires within the margin and can be refreshed.

        A token that lives shorter than twice the margin is refreshed once half its
        lifetime has passed instead: otherwise every send would refresh it again.
        """
        expires_at = self.expires_at(conn, credentials)
        if expires_at is None or not refreshable(credentials):
            return False
        window = self.margin
        refreshed_at = credentials_refreshed_at(credentials)
        if refreshed_at is not None and expires_at > refreshed_at:
            window = min(window, (expires_at - refreshed_at) / 2)
        return expires_at - now <= window

    async def ensure_fresh(
        self, conn: Connection, credentials: Mapping[str, str], now: datetime
    ) -> Fresh:
        """Credentials for ``conn`` that will not expire within the margin, if it can be had.

        ``credentials`` are ``conn``'s, decrypted. Raises what ``SecretBox.decrypt``
        raises (``ConfigError``, ``ValueError``) for the rows it reads; store failures
        are logged and the current credentials used.
        """
        if not self.handles(conn.provider):
            return Fresh(conn, dict(credentials))
        if not self.due(conn, credentials, now):
            return Fresh(conn, _annotated(conn, credentials))
        lock = self._locks.setdefault(conn.id, asyncio.Lock())
        async with lock:
            latest = self._latest.get(conn.id)
            if latest is not None and _version(latest[0]) >= _version(conn):
                conn, credentials = latest
                if conn.state is not ConnectionState.ACTIVE:
                    return _held(conn)
                if not self.due(conn, credentials, self.clock.now()):
                    return Fresh(conn, _annotated(conn, credentials))
            retry_at = self._retry_at.get(conn.id)
            if retry_at is not None and self.clock.now() < retry_at:
                return Fresh(conn, _annotated(conn, credentials))
            return await self._refresh(conn, dict(credentials))

    async def _refresh(self, conn: Connection, credentials: dict[str, str]) -> Fresh:
        provider = self.providers[conn.provider]
        seen: list[RefreshResult] = []

        async def under_lock(current: Connection) -> RefreshOutcome | None:
            if current.state is not ConnectionState.ACTIVE:
                return None
            plain = self.box.decrypt(
                current.ciphertext, current.key_id, current.id, current.tenant, current.provider
            )
            if not self.due(current, plain, self.clock.now()):
                return None  # another worker refreshed while we waited for the lock
            self.refresh_calls += 1
            try:
                result = await provider.refresh(plain)
            except Exception as exc:  # an adapter bug must not leave the row locked or raise
                self.log.exception("refresh raised", connection_id=current.id)
                result = RefreshResult(
                    False, code=ErrorCode.INTERNAL, detail=f"{type(exc).__name__}: {exc}"
                )
            seen.append(result)
            OAUTH_REFRESHES.labels(
                current.provider,
                "ok" if result.ok else "transient" if result.transient else "refused",
            ).inc()
            if result.ok:
                sealed, kid = self.box.encrypt(
                    result.credentials, current.id, current.tenant, current.provider
                )
                return RefreshOutcome(
                    ciphertext=sealed,
                    key_id=kid,
                    expires_at=result.expires_at,
                    scopes=result.granted_scopes,
                    detail={"refresh_token_rotated": result.refresh_token_rotated},
                )
            if result.transient:
                return None
            state = (
                ConnectionState.NEEDS_RECONSENT
                if result.code is ErrorCode.SCOPE_MISSING
                else ConnectionState.PENDING_REAUTH
            )
            return RefreshOutcome(
                state=state,
                reason=f"token refresh failed: {result.code}: {result.detail}"[:300],
                detail={"code": str(result.code)},
            )

        try:
            stored = await self.store.connection_refresh(
                conn.tenant,
                conn.provider,
                under_lock,
                self.clock.now(),
                actor=f"worker:{self.worker_id}",
            )
        except NotFound:
            return Fresh(
                conn,
                hold=hold_reason(
                    f"tenant {conn.tenant!r} has no {conn.provider} connection any more"
                ),
            )
        except (StoreError, MigrationError) as exc:
            self.log.warning(
                "could not refresh the access token; using the current one",
                connection_id=conn.id,
                tenant=conn.tenant,
                provider=conn.provider,
                error=str(exc),
            )
            self._back_off(conn, None)
            return Fresh(conn, _annotated(conn, credentials))

        result = seen[0] if seen else None
        if stored.state is not ConnectionState.ACTIVE:
            self._remember(stored, {})
            if result is not None:
                self.log.warning(
                    "connection needs the operator",
                    tenant=stored.tenant,
                    provider=stored.provider,
                    state=stored.state.value,
                    reason=stored.state_reason,
                )
                await connection_event(
                    self.store, stored.tenant, stored.provider, stored.state.value,
                    stored.state_reason, self.clock.now(), stored.missing_scopes,
                )  # fmt: skip
            return _held(stored)
        if stored.ciphertext == conn.ciphertext:
            plain = credentials
        else:
            plain = self.box.decrypt(
                stored.ciphertext, stored.key_id, stored.id, stored.tenant, stored.provider
            )
        self._remember(stored, plain)
        if result is not None and result.ok:
            self._retry_at.pop(conn.id, None)
            self.log.info(
                "access token refreshed",
                connection_id=stored.id,
                tenant=stored.tenant,
                provider=stored.provider,
                expires_at=stored.expires_at.isoformat() if stored.expires_at else None,
                credential_version=stored.credential_version,
                refresh_token_rotated=result.refresh_token_rotated,
            )
        elif result is not None and result.transient:
            self._back_off(conn, result)
            self.log.warning(
                "token refresh failed; will try again",
                connection_id=conn.id,
                tenant=conn.tenant,
                provider=conn.provider,
                code=str(result.code),
                detail=result.detail,
                expires_at=_iso(self.expires_at(stored, plain)),
            )
        return Fresh(stored, _annotated(stored, plain))

    def _back_off(self, conn: Connection, result: RefreshResult | None) -> None:
        pause = max(self.failure_backoff, (result.retry_after or 0.0) if result else 0.0)
        self._retry_at[conn.id] = self.clock.now() + timedelta(seconds=min(pause, _MAX_BACKOFF))

    def _remember(self, conn: Connection, plain: dict[str, str]) -> None:
        if len(self._latest) >= _MAX_REMEMBERED:
            self._latest.clear()
        self._latest[conn.id] = (conn, plain)


def _version(conn: Connection) -> tuple[int, datetime]:
    return conn.credential_version, conn.updated_at


def _annotated(conn: Connection, credentials: Mapping[str, str]) -> dict[str, str]:
    """The credentials, with the column's expiry when they do not carry their own, so
    the provider can tell an expired token without another lookup."""
    out = dict(credentials)
    if "expires_at" not in out and conn.expires_at is not None:
        out["expires_at"] = conn.expires_at.isoformat()
    return out


def _held(conn: Connection) -> Fresh:
    why = conn.state_reason or "token refresh failed"
    return Fresh(conn, hold=hold_reason(f"{conn.state.value}: {why}"))


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when else None
