"""The ``webhook`` provider: an HTTP POST signed with Standard Webhooks.

The message's ``recipient`` is the target URL. The receiver gets ``webhook-id`` (the
message id, stable across retries so it can drop duplicates), ``webhook-timestamp`` and
``webhook-signature`` as in https://www.standardwebhooks.com, plus ``idempotency-key``
for receivers that look for that header instead.

Every response and every transport failure becomes an ``Outcome``; the mapping lives in
``_outcome_for_status``, and transport failures in ``sluice.providers._errors``,
shared by every adapter.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import json
import math
import os
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from standardwebhooks.webhooks import Webhook

from sluice.clock import Clock, SystemClock
from sluice.errors import ConfigError
from sluice.model import ErrorClass, ErrorCode, Message, Outcome
from sluice.netguard import NO_PRIVATE_TARGETS, PrivateTargets, Resolver, TargetGuard
from sluice.providers._errors import (  # re-exported: the adapters' shared helpers
    MAX_RETRY_AFTER,
    outcome_for_exception,
    parse_retry_after,
)
from sluice.providers.base import Credentials

__all__ = [
    "MAX_RETRY_AFTER",
    "UNSIGNABLE",
    "TenantEventsProvider",
    "WebhookProvider",
    "decode_secret",
    "endpoint_of",
    "generate_secret",
    "parse_retry_after",
]

_SECRET_PREFIX = "whsec_"  # noqa: S105 -- the format's prefix, not a secret
#: Why a worker without ``SLUICE_WEBHOOK_SECRET`` leaves a webhook for another worker.
UNSIGNABLE = (
    "this worker has no SLUICE_WEBHOOK_SECRET and the tenant has no webhook connection "
    "with a secret of its own, so it cannot sign the webhook: it waits for a worker that "
    "has the secret (set SLUICE_WEBHOOK_SECRET on the workers, or add a connection: "
    "sluice connections add --provider webhook --credential secret=whsec_...)"
)
#: How much of a response body we read: enough for an ``id`` or an error message, and a
#: misbehaving receiver streaming megabytes cannot blow up a worker's memory.
_MAX_BODY_BYTES = 64 * 1024
_DETAIL_CHARS = 300


def decode_secret(secret: str | None) -> bytes:
    """The signing key in a Standard Webhooks secret (``whsec_`` + base64).

    Raises ``ConfigError`` naming ``SLUICE_WEBHOOK_SECRET`` when the secret is missing or
    is not valid base64. The library itself decodes leniently (it drops characters that
    are not base64), so a typo would silently sign with a different key; we decode
    strictly first so that mistake shows up at start-up, not as 401s from every receiver.
    """
    if not secret or not secret.strip():
        raise ConfigError(
            "SLUICE_WEBHOOK_SECRET is not set: the webhook provider needs a Standard Webhooks "
            "secret (whsec_ followed by base64, e.g. from `openssl rand -base64 32`)"
        )
    body = secret.strip().removeprefix(_SECRET_PREFIX)
    try:
        key = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if not key:
        raise ConfigError(
            "SLUICE_WEBHOOK_SECRET is not a valid Standard Webhooks secret: expected whsec_ "
            "followed by base64 (e.g. from `openssl rand -base64 32`)"
        )
    return key


def generate_secret(nbytes: int = 24) -> str:
    """A fresh random secret in Standard Webhooks form (``whsec_`` + base64)."""
    return _SECRET_PREFIX + base64.b64encode(os.urandom(nbytes)).decode()


class WebhookProvider:
    """Delivers messages as signed JSON POSTs to the URL in ``message.recipient``.

    ``client`` is shared by every send (one connection pool per worker); redirects are
    never followed, whatever the client's default, because a redirect would re-send the
    signed body to a host the tenant did not name (and could point it at an internal
    one). ``timeout`` bounds the whole call, DNS and connection wait included, so a send
    never outlives the lease that covers it. ``credentials={"secret": "whsec_..."}``
    (a tenant's webhook connection) overrides ``secret`` for one send.

    ``secret=None``: this worker has no signing secret of its own
    (``SLUICE_WEBHOOK_SECRET`` unset). It then signs only with a connection's secret;
    ``worker_problem`` says so for any other message, and the dispatcher leaves those
    for a worker that has the secret instead of failing them.

    The URL is the tenant's, so before every send its host is resolved and refused
    unless every address is public (``sluice.netguard``): ``allow_loopback`` admits
    127.0.0.1 and ::1 for the local simulator, ``private`` the operator's private
    networks and names, ``resolve`` replaces the system resolver.
    """

    name = "webhook"

    def __init__(
        self,
        client: httpx.AsyncClient,
        secret: str | None,
        *,
        timeout: float = 10.0,
        clock: Clock | None = None,
        allow_loopback: bool = False,
        resolve: Resolver | None = None,
        private: PrivateTargets = NO_PRIVATE_TARGETS,
    ) -> None:
        self._client = client
        self._guard = TargetGuard(allow_loopback, resolve, private)
        self._signer = Webhook(decode_secret(secret)) if secret is not None else None
        self._timeout = timeout
        self._clock = clock or SystemClock()
        # Connection secrets repeat across a batch; decoding them once is enough.
        self._signers: dict[str, Webhook] = {}

    def endpoint(self, message: Message) -> str:
        """The receiver ``message`` goes to, for breakers and throttles: every URL is a
        server of its own (``endpoint_of``)."""
        return endpoint_of(message.recipient)

    async def send(self, message: Message, credentials: Credentials | None = None) -> Outcome:
        """POST ``message`` to its recipient URL and map the answer to an ``Outcome``."""
        url = _check_url(message.recipient)
        if isinstance(url, Outcome):
            return url
        signer = self._signer_for(credentials)
        if isinstance(signer, Outcome):
            return signer

        now = self._clock.now().astimezone(UTC)
        try:
            body = _render_body(message, now)
        except (TypeError, ValueError) as exc:
            return Outcome.failure(ErrorCode.BAD_REQUEST, f"payload is not JSON: {exc}")
        headers = {
            "content-type": "application/json",
            "webhook-id": message.id,
            "webhook-timestamp": str(math.floor(now.timestamp())),
            "webhook-signature": signer.sign(message.id, now, body),
            "idempotency-key": message.id,
        }
        try:
            async with asyncio.timeout(self._timeout):
                # Resolved now, for this send: an answer that was public last time may
                # not be now (DNS rebinding).
                refused = await self._guard.screen(url)
                if refused is not None:
                    return refused
                async with self._client.stream(
                    "POST",
                    url,
                    content=body.encode(),
                    headers=headers,
                    timeout=self._timeout,
                    follow_redirects=False,
                ) as response:
                    raw = await _read_capped(response)
        except (httpx.HTTPError, TimeoutError) as exc:
            return outcome_for_exception(exc, self._timeout)
        return _outcome_for_status(
            response.status_code, response.headers, raw, message.id, self._clock.now()
        )

    def worker_problem(self, credentials: Credentials | None) -> str | None:
        """Why this worker cannot send a message that comes with ``credentials`` (its
        connection's, if any), or ``None`` when it can: a problem of the worker's own
        configuration, which another worker may not have."""
        if self._signer is None and not (credentials or {}).get("secret"):
            return UNSIGNABLE
        return None

    def _signer_for(self, credentials: Credentials | None) -> Webhook | Outcome:
        secret = (credentials or {}).get("secret")
        if not secret:
            if self._signer is None:
                # Only reached when a caller skips worker_problem (the dispatcher does
                # not): never send unsigned, and let a retry find a worker that can.
                return Outcome.failure(ErrorCode.INTERNAL, UNSIGNABLE)
            return self._signer
        signer = self._signers.get(secret)
        if signer is None:
            try:
                signer = Webhook(decode_secret(secret))
            except ConfigError:
                # The connection is at fault, not the message: the auth class holds the
                # message for re-consent instead of burning its attempts.
                return Outcome.failure(
                    ErrorCode.AUTH_REVOKED,
                    "the connection's webhook secret is not a valid Standard Webhooks secret",
                )
            if len(self._signers) >= 1024:
                self._signers.clear()
            self._signers[secret] = signer
        return signer


class TenantEventsProvider(WebhookProvider):
    """Tenants' operational events (``sluice.store.tenant_events``): a webhook signed
    only with the tenant's ``sluice_events`` connection, never with the operator's
    secret; without that connection the gate holds the event."""

    name = "sluice_events"
    requires_connection = True

    def __init__(self, client: httpx.AsyncClient, **kw: Any) -> None:
        super().__init__(client, None, **kw)


_DEFAULT_PORTS = {"http": 80, "https": 443}


@functools.lru_cache(maxsize=4096)  # per send, for breakers and throttles; recipients repeat
def endpoint_of(url: str) -> str:
    """``url`` as the identity of a receiver: scheme and host in lower case, the port
    only when it is not the scheme's default, the path (``/`` when empty); no user
    information, query or fragment. Receivers that share a host (hooks.slack.com,
    hooks.zapier.com) are told apart by their paths, and so are endpoints here."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return url.strip()[:512]
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    if port is not None and port != _DEFAULT_PORTS.get(scheme):
        host = f"{host}:{port}"
    return f"{scheme}://{host}{parts.path or '/'}"


def _check_url(recipient: str) -> httpx.URL | Outcome:
    url = _parsed(recipient)
    if isinstance(url, str):
        return Outcome.failure(ErrorCode.BAD_REQUEST, url)
    return url


@functools.lru_cache(maxsize=4096)
def _parsed(recipient: str) -> httpx.URL | str:
    """``recipient`` as an http(s) URL (parsed once per distinct recipient: an
    ``httpx.URL`` is immutable), or why it is not one."""
    try:
        url = httpx.URL(recipient)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        return f"recipient is not a valid URL: {exc}"
    if url.scheme not in ("http", "https") or not url.host:
        return f"recipient {recipient[:200]!r} is not an http:// or https:// URL"
    return url


def _render_body(message: Message, now: datetime) -> str:
    document: dict[str, Any] = {
        "type": message.action,
        "id": message.id,
        "tenant": message.tenant,
        "channel": message.channel,
        "timestamp": now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "data": message.payload,
    }
    if message.correlation_id is not None:
        document["correlation_id"] = message.correlation_id
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


async def _read_capped(response: httpx.Response) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size >= _MAX_BODY_BYTES:
            break
    return b"".join(chunks)[:_MAX_BODY_BYTES]


#: Status codes with a meaning of their own; ranges are handled in ``_code_for_status``.
_STATUS_CODES: dict[int, ErrorCode] = {
    408: ErrorCode.TIMEOUT,
    410: ErrorCode.ENDPOINT_GONE,
    429: ErrorCode.RATE_LIMITED,
    502: ErrorCode.PROVIDER_UNAVAILABLE,
    503: ErrorCode.PROVIDER_UNAVAILABLE,
    504: ErrorCode.PROVIDER_UNAVAILABLE,
}


def _code_for_status(status: int) -> ErrorCode | None:
    """The canonical code for an HTTP status; ``None`` means success."""
    if 200 <= status < 300:
        return None
    if status in _STATUS_CODES:
        return _STATUS_CODES[status]
    if status >= 500:
        return ErrorCode.PROVIDER_ERROR
    # 1xx should never reach us, 3xx are not followed, other 4xx: the request itself is
    # wrong and sending it again cannot help.
    return ErrorCode.BAD_REQUEST


def _outcome_for_status(
    status: int, headers: httpx.Headers, raw: bytes, message_id: str, now: datetime
) -> Outcome:
    provider_status = f"HTTP {status}"
    code = _code_for_status(status)
    if code is None:
        return Outcome.success(
            provider_message_id=_response_id(raw) or message_id, provider_status=provider_status
        )
    snippet = _snippet(raw)
    if 300 <= status < 400:
        location = headers.get("location", "")
        detail = f"redirect not followed (Location: {location[:200]})"
        snippet = f"{detail}: {snippet}" if snippet else detail
    retry_after = None
    if code.error_class is ErrorClass.THROTTLE:
        retry_after = parse_retry_after(headers.get("retry-after"), now)
    return Outcome.failure(
        code,
        snippet,
        provider_status=provider_status,
        provider_code=str(status),
        retry_after=retry_after,
    )


def _response_id(raw: bytes) -> str | None:
    if not raw or len(raw) >= _MAX_BODY_BYTES:
        return None
    try:
        document = json.loads(raw)
    except ValueError:
        return None
    if isinstance(document, dict):
        value = document.get("id")
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
            return str(value)[:255]
    return None


def _snippet(raw: bytes) -> str:
    text = raw[: _DETAIL_CHARS * 4].decode("utf-8", errors="replace")
    text = " ".join(text.split())
    if len(text) > _DETAIL_CHARS:
        text = text[: _DETAIL_CHARS - 1] + "…"
    return text
