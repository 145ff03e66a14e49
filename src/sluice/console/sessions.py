"""Who is looking at the console: sign-in with an API key, one-time login links,
sessions that expire, and the CSRF token each session's forms carry.

The cookie holds a random token; the store keeps only its SHA-256 (a copy of the table
signs nobody in). A session lives ``SESSION_TTL`` at most and ends after ``IDLE_TTL``
without a request; revoking the key it was opened with ends it at once (within the key
cache's few seconds), as it ends the key's API access.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sluice.errors import NotFound, ValidationError
from sluice.ops.apikeys import secret_matches, split_key
from sluice.store.base import ApiKey, ConsoleSession, Store

__all__ = [
    "IDLE_TTL",
    "SESSION_TTL",
    "TICKET_TTL",
    "Viewer",
    "console_actor",
    "login_link",
    "session_end",
    "session_from_key",
    "session_from_ticket",
    "session_viewer",
    "token_hash",
]

SESSION_TTL = timedelta(hours=8)
IDLE_TTL = timedelta(hours=1)
TICKET_TTL = timedelta(minutes=15)
#: A session's last-seen time is written at most this often (not on every request).
TOUCH_EVERY = timedelta(minutes=1)
_PERSON = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")


@dataclass(frozen=True, slots=True)
class Viewer:
    """A signed-in browser: the key it signed in with, and the person's audit name."""

    key_id: str
    key_name: str
    role: str
    tenant: str | None
    actor: str
    csrf: str
    token_hash: str

    @property
    def operator(self) -> bool:
        return self.role == "operator"

    def sees(self, tenant: str) -> bool:
        return self.operator or tenant == self.tenant

    def csrf_ok(self, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(presented, self.csrf)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def console_actor(person: str | None, key: ApiKey) -> str:
    """``console:<person>``, the person defaulting to the key's name; the audit log
    names console acts this way, as it names ``cli:<user>`` and ``api:<key>``."""
    name = (person or "").strip() or key.name
    if not _PERSON.fullmatch(name):
        raise ValidationError(
            "name", "must be 1-64 letters, digits or _.@- (it names you in the audit log)"
        )
    return f"console:{name}"


async def _usable_key(store: Store, token: str) -> ApiKey:
    parts = split_key(token)
    if parts is None:
        raise ValidationError("key", "is not an API key (sk_<id>.<secret>)")
    try:
        key = await store.api_key_get(parts[0])
    except NotFound:
        key = None
    if key is None or key.revoked_at is not None or not secret_matches(key, parts[1]):
        raise ValidationError("key", "is not a valid API key")
    return key


async def _open(store: Store, key: ApiKey, actor: str, now: datetime) -> tuple[str, Viewer]:
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    session = ConsoleSession(
        token_hash=token_hash(token), kind="session", key_id=key.id, actor=actor, csrf=csrf,
        created_at=now, seen_at=now, expires_at=now + SESSION_TTL,
    )  # fmt: skip
    await store.console_session_insert(session)
    return token, _viewer(key, session)


def _viewer(key: ApiKey, s: ConsoleSession) -> Viewer:
    return Viewer(key.id, key.name, key.role, key.tenant, s.actor, s.csrf, s.token_hash)


async def session_from_key(
    store: Store, token: str, person: str | None, now: datetime
) -> tuple[str, Viewer]:
    """Sign in with an API key: the new session's cookie token and its viewer.
    ``ValidationError`` names what is wrong (the same words for every bad key)."""
    key = await _usable_key(store, token)
    return await _open(store, key, console_actor(person, key), now)


async def login_link(store: Store, key: ApiKey, actor: str, now: datetime) -> str:
    """A one-time login token for ``key`` (``sluice run`` prints it as a link): it opens
    one session within ``TICKET_TTL``, then never again."""
    token = secrets.token_urlsafe(32)
    ticket = ConsoleSession(
        token_hash=token_hash(token), kind="ticket", key_id=key.id, actor=actor,
        csrf="", created_at=now, seen_at=now, expires_at=now + TICKET_TTL,
    )  # fmt: skip
    await store.console_session_insert(ticket)
    return token


async def session_from_ticket(store: Store, ticket: str, now: datetime) -> tuple[str, Viewer]:
    """Use a one-time login token: a new session, or ``ValidationError`` when the link
    is unknown, already used or expired (all alike)."""
    taken = await store.console_session_take(token_hash(ticket))
    if taken is None or taken.kind != "ticket" or taken.expires_at <= now:
        raise ValidationError("link", "is not valid: it was used already or has expired")
    try:
        key = await store.api_key_get(taken.key_id)
    except NotFound:
        key = None
    if key is None or key.revoked_at is not None:
        raise ValidationError("link", "is not valid: its key was revoked")
    return await _open(store, key, taken.actor, now)


async def session_viewer(
    store: Store, token: str, now: datetime, key_of: Callable[[str], Awaitable[ApiKey | None]]
) -> Viewer | None:
    """The viewer of a session cookie, or None when it is unknown, expired, idle too
    long, or its key (found with ``key_of``, the API's key cache) is gone or revoked."""
    try:
        s = await store.console_session_get(token_hash(token))
    except NotFound:
        return None
    if s.kind != "session" or s.expires_at <= now or s.seen_at + IDLE_TTL <= now:
        return None
    key = await key_of(s.key_id)
    if key is None or key.revoked_at is not None:
        return None
    if now - s.seen_at >= TOUCH_EVERY:
        await store.console_session_touch(s.token_hash, now)
    return _viewer(key, s)


async def session_end(store: Store, token: str) -> None:
    """Log out: the session is deleted, so its cookie opens nothing any more."""
    await store.console_session_take(token_hash(token))
