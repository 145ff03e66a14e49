"""The ``http`` provider: configured API calls on a tenant's behalf, with OAuth 2.0 tokens.

Each message names an *action* (``message.action``) declared in ``sluice.toml`` (see
``sluice.actions``): method, URL and body templates, the scopes it needs. The call carries
the tenant connection's bearer token (RFC 6750) and ``Idempotency-Key: <message id>``,
stable across retries. The key is only a request: an API that honours it (Stripe-style)
drops the duplicate that follows an uncertain outcome (a worker that died after the call,
before recording it); an API that ignores it may apply the action twice.

Credentials (a connection of provider ``http``): ``access_token``; for the refresh-token
flow (RFC 6749 §6) also ``refresh_token``, ``token_url`` and, for a confidential client,
``client_id`` + ``client_secret`` (HTTP Basic, ``client_secret_basic``; set
``client_auth = "client_secret_post"`` to send them in the form instead). ``expires_at``
and ``refreshed_at`` (ISO 8601) are written by every refresh; ``scope`` holds the scopes
the token endpoint last granted; ``check_url`` (optional) is a cheap authenticated GET
for ``check``. ``token_url`` and ``check_url`` must be ``https://`` (plain ``http://``
only on the loopback interface): they carry the client secret, the refresh token and the
bearer.

Every call (the action, the token endpoint, the check) goes only to public addresses:
the host is resolved right before the call and refused otherwise (``sluice.netguard``),
because ``token_url`` and ``check_url`` are the tenant's and action URLs carry its values.
A refused target is ``BAD_REQUEST`` (for a refresh ``AUTH_REVOKED``: the connection's
URL is wrong); loopback is allowed only with ``allow_loopback``, private networks only
as the operator lists them (``private``, ``SLUICE_ALLOW_PRIVATE_TARGETS``).

The provider never refreshes on its own: the worker's ``Refresher`` does, before the
gate hands out the credentials, one refresher per connection across all workers. A send
with a token that has already expired is therefore not attempted: with a refresh token
it is deferred (``PROVIDER_UNAVAILABLE``: the token endpoint has not answered yet, no
attempt is spent), without one it is ``AUTH_REVOKED`` (re-consent).

Every answer of the action's API becomes an ``Outcome`` through ``STATUS_CODES`` (and
``_code_for_status`` for the ranges); every answer of the token endpoint a
``RefreshResult`` through ``TOKEN_ERRORS`` and ``_token_code``. Transport failures are
mapped once, in ``sluice.providers._errors``.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx

from sluice.actions import ActionSpec, MissingValue, UnsafePathValue
from sluice.clock import Clock, SystemClock
from sluice.model import ErrorClass, ErrorCode, Message, Outcome
from sluice.netguard import NO_PRIVATE_TARGETS, PrivateTargets, Resolver, TargetGuard
from sluice.providers._errors import (
    CheckResult,
    Reply,
    check_failure,
    exchange,
    json_document,
    missing_credential,
    outcome_for_exception,
    snippet,
    throttle_delay,
)
from sluice.providers.base import Credentials

__all__ = [
    "STATUS_CODES",
    "TOKEN_ERRORS",
    "HttpActionProvider",
    "RefreshResult",
    "credentials_expire_at",
    "credentials_refreshed_at",
    "refreshable",
]

#: The action API's answers with a meaning of their own; any other 5xx is
#: ``PROVIDER_ERROR``, any other 3xx/4xx ``BAD_REQUEST``.
STATUS_CODES: Mapping[int, ErrorCode] = {
    400: ErrorCode.BAD_REQUEST,
    # The token was refused: the connection needs re-consent (held, not retried).
    401: ErrorCode.AUTH_REVOKED,
    # The token lacks a permission the action needs (held for re-consent).
    403: ErrorCode.SCOPE_MISSING,
    404: ErrorCode.BAD_REQUEST,
    408: ErrorCode.TIMEOUT,
    # Usually "already exists" or a state conflict: the same request cannot succeed.
    409: ErrorCode.BAD_REQUEST,
    422: ErrorCode.BAD_REQUEST,
    429: ErrorCode.RATE_LIMITED,
    502: ErrorCode.PROVIDER_UNAVAILABLE,
    503: ErrorCode.PROVIDER_UNAVAILABLE,
    504: ErrorCode.PROVIDER_UNAVAILABLE,
}

#: OAuth 2.0 error codes of the token endpoint (RFC 6749 §5.2). The permanent ones need
#: the operator (the connection goes to ``pending_reauth`` or ``needs_reconsent``);
#: ``temporarily_unavailable``/``server_error`` (§4.1.2.1) are answered by some servers
#: on the token endpoint too. An unknown code on a 4xx is treated as ``invalid_grant``.
TOKEN_ERRORS: Mapping[str, ErrorCode] = {
    "invalid_grant": ErrorCode.AUTH_REVOKED,  # refresh token expired, revoked or reused
    "invalid_client": ErrorCode.AUTH_REVOKED,  # client_id / client_secret wrong
    "unauthorized_client": ErrorCode.AUTH_REVOKED,
    "unsupported_grant_type": ErrorCode.AUTH_REVOKED,
    "invalid_request": ErrorCode.AUTH_REVOKED,
    "invalid_scope": ErrorCode.SCOPE_MISSING,
    "temporarily_unavailable": ErrorCode.PROVIDER_UNAVAILABLE,
    "server_error": ErrorCode.PROVIDER_ERROR,
}

_LOOPBACK_NAMES = frozenset({"localhost"})


@dataclass(frozen=True, slots=True)
class RefreshResult:
    """What the token endpoint said to a refresh (RFC 6749 §6).

    ``ok``: ``credentials`` are the connection's credentials after the refresh (the old
    ones with a new ``access_token``, ``expires_at``, possibly a rotated
    ``refresh_token`` and the granted ``scope``), ``expires_at`` when the new token
    expires (``None``: the server did not say), ``granted_scopes`` the scopes it granted
    (``None``: the same as before, RFC 6749 §5.1). Otherwise ``code`` says why:
    ``AUTH_REVOKED``/``SCOPE_MISSING`` need the operator, anything else is transient
    (``retry_after`` when the server asked for a pause).
    """

    ok: bool
    credentials: Mapping[str, str] = field(default_factory=dict)
    expires_at: datetime | None = None
    granted_scopes: tuple[str, ...] | None = None
    refresh_token_rotated: bool = False
    code: ErrorCode | None = None
    detail: str = ""
    retry_after: float | None = None

    @property
    def transient(self) -> bool:
        """A failure that another try may fix (5xx, timeout, refused connection)."""
        return not self.ok and (self.code is None or self.code.error_class is not ErrorClass.AUTH)


def refreshable(credentials: Credentials | None) -> bool:
    """Whether the credentials carry what a refresh needs (``refresh_token``, ``token_url``)."""
    c = credentials or {}
    return bool(c.get("refresh_token")) and bool(c.get("token_url"))


def credentials_expire_at(credentials: Credentials | None) -> datetime | None:
    """``credentials["expires_at"]`` as an aware datetime; ``None`` if absent or unreadable."""
    return _credential_time(credentials, "expires_at")


def credentials_refreshed_at(credentials: Credentials | None) -> datetime | None:
    """When the token in ``credentials`` was obtained by a refresh, if it was."""
    return _credential_time(credentials, "refreshed_at")


def _credential_time(credentials: Credentials | None, key: str) -> datetime | None:
    text = (credentials or {}).get(key)
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


class HttpActionProvider:
    """Runs configured actions with the tenant's OAuth 2.0 bearer token.

    ``client`` is shared by every call; ``actions`` are the configured actions by name;
    ``timeout`` bounds each whole call (the action, the token endpoint, the check), DNS
    included. ``allow_loopback`` admits 127.0.0.1 and ::1 as targets (the local
    simulator, test servers), ``private`` the operator's private networks and names;
    ``resolve`` replaces the system resolver.
    """

    name = "http"
    requires_connection = True

    def __init__(
        self,
        client: httpx.AsyncClient,
        actions: Mapping[str, ActionSpec],
        *,
        timeout: float = 10.0,
        clock: Clock | None = None,
        allow_loopback: bool = False,
        resolve: Resolver | None = None,
        private: PrivateTargets = NO_PRIVATE_TARGETS,
    ) -> None:
        self._client = client
        self._guard = TargetGuard(allow_loopback, resolve, private)
        self._actions = dict(actions)
        self._timeout = timeout
        self._clock = clock or SystemClock()

    @property
    def actions(self) -> Mapping[str, ActionSpec]:
        """The configured actions, by name."""
        return self._actions

    def endpoint(self, message: Message) -> str | None:
        """The upstream ``message`` goes to, for breakers and throttles: its action's
        configured URL (``None`` for an action that is not configured: that send fails
        before any call)."""
        spec = self._actions.get(message.action)
        return spec.url if spec is not None else None

    def scopes_for(self, message: Message) -> tuple[str, ...]:
        """The scopes ``message``'s action needs (the gate holds it while one is missing)."""
        spec = self._actions.get(message.action)
        return spec.scopes if spec is not None else ()

    async def send(self, message: Message, credentials: Credentials | None = None) -> Outcome:
        """Run ``message``'s action with the connection's bearer token."""
        spec = self._actions.get(message.action)
        if spec is None:
            configured = ", ".join(sorted(self._actions)) or "none"
            return Outcome.failure(
                ErrorCode.BAD_REQUEST,
                f"no http action named {message.action!r} is configured "
                f"(configured: {configured}); declare it under [actions] in sluice.toml",
            )
        refused = missing_credential(credentials, ("access_token",)) or self._expired(credentials)
        if refused is not None:
            return refused
        assert credentials is not None  # missing_credential refused None
        try:
            rendered = spec.render(message)
        except MissingValue as exc:
            return Outcome.failure(
                ErrorCode.BAD_REQUEST,
                f"payload lacks {exc.path.removeprefix('payload.')} (action {spec.name} uses "
                f"{{{exc.path}}})",
            )
        except UnsafePathValue as exc:
            # Permanent, and nothing is sent: the tenant's bearer token must not reach a
            # path the operator never configured.
            return Outcome.failure(ErrorCode.BAD_REQUEST, f"action {spec.name}: {exc}; not sent")
        except (TypeError, ValueError) as exc:
            return Outcome.failure(ErrorCode.BAD_REQUEST, f"action {spec.name}: {exc}")
        for key, value in rendered.headers.items():
            if "\r" in value or "\n" in value:
                return Outcome.failure(
                    ErrorCode.BAD_REQUEST, f"action {spec.name}: header {key} would span lines"
                )
        headers = {
            **rendered.headers,
            "authorization": f"Bearer {credentials['access_token']}",
            "idempotency-key": message.id,
        }
        reply = await self._call(
            rendered.method, rendered.url, headers=headers, content=rendered.content
        )
        if isinstance(reply, Outcome):
            return reply
        return _outcome_for_reply(reply, spec, self._clock.now())

    async def refresh(self, credentials: Credentials | None) -> RefreshResult:
        """Exchange the refresh token for a new access token (RFC 6749 §6).

        Never raises: a transport failure or a 5xx is a transient ``RefreshResult``, an
        ``invalid_grant`` (or any other permanent refusal) one with ``AUTH_REVOKED``.
        """
        credentials = credentials or {}
        for key in ("refresh_token", "token_url"):
            if not credentials.get(key):
                return RefreshResult(
                    False, code=ErrorCode.AUTH_REVOKED, detail=f"credentials lack {key}"
                )
        bad_url = _endpoint_problem("token_url", credentials["token_url"])
        if bad_url:
            return RefreshResult(False, code=ErrorCode.AUTH_REVOKED, detail=bad_url)
        form = {"grant_type": "refresh_token", "refresh_token": credentials["refresh_token"]}
        headers = {"accept": "application/json"}
        client_id = credentials.get("client_id")
        client_secret = credentials.get("client_secret")
        if client_id and client_secret and credentials.get("client_auth") != "client_secret_post":
            # RFC 6749 §2.3.1: both parts form-encoded before they are joined and encoded.
            pair = f"{quote(client_id, safe='')}:{quote(client_secret, safe='')}"
            headers["authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        elif client_id:
            form["client_id"] = client_id
            if client_secret:
                form["client_secret"] = client_secret
        started = self._clock.now()
        reply = await self._call("POST", credentials["token_url"], data=form, headers=headers)
        if isinstance(reply, Outcome):
            code = reply.code or ErrorCode.CONNECTION_FAILED
            if code is ErrorCode.BAD_REQUEST:  # the URL itself cannot work
                code = ErrorCode.AUTH_REVOKED
            return RefreshResult(False, code=code, detail=f"token endpoint: {reply.detail}")
        return _refresh_result(reply, credentials, started, self._clock.now())

    async def check(self, credentials: Credentials | None = None) -> CheckResult:
        """Whether the credentials work: a GET of ``check_url`` with the bearer token.

        Without ``check_url`` only what the credentials say is checked (present, not
        expired or refreshable). An expired token with a refresh token is fine: the
        worker refreshes it before the next send. Nothing here refreshes, because a
        refresh whose result was not stored would lose a rotated refresh token.
        """
        credentials = credentials or {}
        refused = missing_credential(credentials, ("access_token",))
        if refused is not None:
            return check_failure(refused)
        scope = credentials.get("scope")
        granted = sorted(set(scope.split())) if scope is not None else None
        expires_at = credentials_expire_at(credentials)
        now = self._clock.now()
        if expires_at is not None and expires_at <= now:
            if refreshable(credentials):
                return CheckResult(
                    True,
                    detail=f"access token expired at {expires_at.isoformat()}; the worker "
                    "refreshes it before the next send",
                    granted_scopes=granted,
                    expires_at=expires_at,
                )
            expired = self._expired(credentials)
            assert expired is not None
            return check_failure(expired)
        check_url = credentials.get("check_url")
        if not check_url:
            return CheckResult(
                True,
                detail="no check_url in the credentials: the token was not shown to the provider",
                granted_scopes=granted,
                expires_at=expires_at,
            )
        bad_url = _endpoint_problem("check_url", check_url)
        if bad_url:
            return CheckResult(False, ErrorCode.BAD_REQUEST, bad_url)
        reply = await self._call(
            "GET",
            check_url,
            headers={
                "authorization": f"Bearer {credentials['access_token']}",
                "accept": "application/json",
            },
        )
        if isinstance(reply, Outcome):
            return check_failure(reply)
        code = _code_for_status(reply.status)
        if code is not None:
            return CheckResult(
                False, code, f"{reply.provider_status}: {snippet(reply.raw)}".rstrip(": ")
            )
        return CheckResult(True, detail="ok", granted_scopes=granted, expires_at=expires_at)

    async def _call(self, method: str, url: str, **kwargs: Any) -> Reply | Outcome:
        """One call to ``url`` if the guard lets it through, within ``timeout`` in all."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            async with asyncio.timeout(self._timeout):
                # Resolved now, for this call: a name that was public last time may not
                # be now (DNS rebinding).
                refused = await self._guard.screen(url)
        except TimeoutError as exc:
            return outcome_for_exception(exc, self._timeout)
        if refused is not None:
            return refused
        remaining = self._timeout - (loop.time() - started)
        if remaining <= 0:
            return outcome_for_exception(TimeoutError(), self._timeout)
        return await exchange(self._client, method, url, timeout=remaining, **kwargs)

    def _expired(self, credentials: Credentials | None) -> Outcome | None:
        expires_at = credentials_expire_at(credentials)
        if expires_at is None or expires_at > self._clock.now():
            return None
        if refreshable(credentials):
            # The refresher could not refresh (the token endpoint failed): wait for it
            # without spending an attempt, rather than collect a 401 that would send
            # the connection to pending_reauth.
            return Outcome.failure(
                ErrorCode.PROVIDER_UNAVAILABLE,
                f"access token expired at {expires_at.isoformat()} and has not been "
                "refreshed yet (is the token endpoint answering?)",
            )
        return Outcome.failure(
            ErrorCode.AUTH_REVOKED,
            f"access token expired at {expires_at.isoformat()} and the connection has no "
            "refresh_token: re-consent needed",
        )


def _code_for_status(status: int) -> ErrorCode | None:
    """The canonical code for the action API's status; ``None`` means success."""
    if 200 <= status < 300:
        return None
    if status in STATUS_CODES:
        return STATUS_CODES[status]
    if status >= 500:
        return ErrorCode.PROVIDER_ERROR
    # 3xx are never followed (a redirect would carry the bearer elsewhere); other 4xx:
    # the request itself is wrong and sending it again cannot help.
    return ErrorCode.BAD_REQUEST


def _outcome_for_reply(reply: Reply, spec: ActionSpec, now: datetime) -> Outcome:
    code = _code_for_status(reply.status)
    if code is None:
        return Outcome.success(_response_id(reply.raw), reply.provider_status)
    detail = snippet(reply.raw)
    if 300 <= reply.status < 400:
        where = reply.headers.get("location", "")[:200]
        detail = f"redirect not followed (Location: {where})" + (f": {detail}" if detail else "")
    elif code is ErrorCode.SCOPE_MISSING:
        needs = ", ".join(spec.scopes) if spec.scopes else "no scopes declared"
        detail = f"action {spec.name} needs scopes: {needs}" + (f"; {detail}" if detail else "")
    return Outcome.failure(
        code,
        detail,
        provider_status=reply.provider_status,
        provider_code=str(reply.status),
        retry_after=throttle_delay(code, reply.headers, now),
    )


def _response_id(raw: bytes) -> str | None:
    document = json_document(raw)
    if isinstance(document, dict):
        value = document.get("id")
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
            return str(value)[:255]
    return None


# -- the token endpoint -------------------------------------------------------------


def _token_code(status: int, error: str | None) -> ErrorCode:
    """The canonical code for a token endpoint's refusal."""
    if status == 408:
        return ErrorCode.TIMEOUT
    if status == 429:
        return ErrorCode.RATE_LIMITED
    if status in (502, 503, 504):
        return ErrorCode.PROVIDER_UNAVAILABLE
    if status >= 500:
        return ErrorCode.PROVIDER_ERROR
    if error is not None and error in TOKEN_ERRORS:
        return TOKEN_ERRORS[error]
    # 400/401 (invalid_grant, invalid_client), other 4xx and 3xx: a wrong token_url or a
    # dead grant. Another try cannot help; the operator must look.
    return ErrorCode.AUTH_REVOKED


def _refresh_result(
    reply: Reply, old: Credentials, started: datetime, now: datetime
) -> RefreshResult:
    document = json_document(reply.raw)
    body = document if isinstance(document, dict) else {}
    token = body.get("access_token")
    error = body.get("error") if isinstance(body.get("error"), str) else None
    if 200 <= reply.status < 300 and isinstance(token, str) and token:
        return _refreshed(body, token, old, started)
    if 200 <= reply.status < 300 and error is None:
        return RefreshResult(
            False,
            code=ErrorCode.PROVIDER_ERROR,
            detail=f"token endpoint {reply.provider_status} without an access_token: "
            f"{snippet(reply.raw) or 'empty body'}",
        )
    # Some servers (GitHub) answer an OAuth error with 200.
    code = _token_code(reply.status if reply.status >= 300 else 400, error)
    described = body.get("error_description")
    words = " ".join(
        str(x) for x in (error, described if isinstance(described, str) else None) if x
    )
    return RefreshResult(
        False,
        code=code,
        detail=f"token endpoint {reply.provider_status}: {words or snippet(reply.raw)}"[:500],
        retry_after=throttle_delay(code, reply.headers, now),
    )


def _refreshed(
    body: Mapping[str, Any], token: str, old: Credentials, started: datetime
) -> RefreshResult:
    new = dict(old)
    new["access_token"] = token
    # With expires_at it gives the token's lifetime: the refresher never refreshes a token
    # before half of it has passed, however short the provider makes it.
    new["refreshed_at"] = started.isoformat()
    rotated = body.get("refresh_token")
    # RFC 6749 §6: a new refresh token replaces the old one, which the server may revoke.
    is_rotated = isinstance(rotated, str) and bool(rotated) and rotated != old.get("refresh_token")
    if isinstance(rotated, str) and rotated:
        new["refresh_token"] = rotated
    expires_at = None
    lifetime = _seconds(body.get("expires_in"))
    if lifetime is not None:
        # Counted from when we asked: the server started the clock no earlier than that.
        expires_at = started + timedelta(seconds=lifetime)
        new["expires_at"] = expires_at.isoformat()
    else:
        # The old expiry no longer applies; without one the token is used until a 401.
        new.pop("expires_at", None)
    granted = None
    scope = body.get("scope")
    if isinstance(scope, str):
        granted = tuple(sorted(set(scope.split())))
        new["scope"] = " ".join(granted)
    return RefreshResult(
        True,
        credentials=new,
        expires_at=expires_at,
        granted_scopes=granted,
        refresh_token_rotated=is_rotated,
    )


def _seconds(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, int | float) and math.isfinite(value) and value > 0:
        return float(value)
    return None


def _endpoint_problem(key: str, url: str) -> str | None:
    """Why ``url`` may not receive secrets, or ``None`` when it may."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        return f"{key} is not a valid URL: {exc}"
    if parsed.scheme == "https" and parsed.host:
        return None
    if parsed.scheme == "http" and _is_loopback(parsed.host):
        return None
    return f"{key} must be an https:// URL (http:// only on the loopback interface): {url[:200]}"


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
