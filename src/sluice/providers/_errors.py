"""What the HTTP-API adapters (Twilio, SendGrid, WhatsApp) share: the call and its failures.

Each adapter maps its vendor's *answers* to canonical codes in its own table; what no
vendor decides — a timeout, a refused or dropped connection, a missing credential, a 2xx
whose body we cannot read — is mapped here, once, so the three adapters cannot drift
apart. ``exchange`` is the only place their HTTP calls are made and the only place
``httpx`` exceptions are caught.

``CheckResult`` is what every adapter's ``check`` (the cheapest authenticated call a
provider offers) reports, for connection health checks and re-consent flows.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from sluice.model import ErrorClass, ErrorCode, Outcome

#: Longest ``Retry-After`` we honour; a receiver asking for a week is treated as a day.
MAX_RETRY_AFTER = 86_400.0


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date).

    Capped at ``MAX_RETRY_AFTER``; ``None`` for a missing or unparseable header, so the
    dispatcher falls back to its own backoff.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # RFC 9110 dates are GMT; a naive one still means UTC
            when = when.replace(tzinfo=UTC)
        seconds = (when - now).total_seconds()
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


__all__ = [
    "CheckResult",
    "Reply",
    "check_failure",
    "exchange",
    "json_document",
    "missing_credential",
    "outcome_for_exception",
    "snippet",
    "success",
    "throttle_delay",
]

#: How much of a response body we read: enough for any provider's id or error document,
#: and a misbehaving endpoint streaming megabytes cannot blow up a worker's memory.
MAX_BODY_BYTES = 64 * 1024
DETAIL_CHARS = 300


@dataclass(frozen=True, slots=True)
class CheckResult:
    """What a provider said about a connection's credentials.

    ``ok``: the credentials work for sending. ``code``: why not (``AUTH_REVOKED``,
    ``SCOPE_MISSING``, ``ACCOUNT_SUSPENDED``, or a transport code when the provider
    could not be asked). ``granted_scopes``: what the provider reports the credentials
    may do, ``None`` when it has no such notion or does not say. ``expires_at``: when
    the credentials stop working, if the provider says.
    """

    ok: bool
    code: ErrorCode | None = None
    detail: str = ""
    granted_scopes: list[str] | None = None
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Reply:
    """A provider's answer, read (capped) before the deadline."""

    status: int
    headers: httpx.Headers
    raw: bytes

    @property
    def provider_status(self) -> str:
        """The HTTP status as recorded on attempts (``HTTP 429``)."""
        return f"HTTP {self.status}"


def missing_credential(
    credentials: Mapping[str, str] | None, keys: Iterable[str]
) -> Outcome | None:
    """``AUTH_REVOKED`` naming the first of ``keys`` that is absent or empty, else ``None``.

    A connection without a required secret is a connection to fix, not a message to
    retry: the auth class holds the message for re-consent instead of burning attempts.
    """
    for key in keys:
        if not (credentials or {}).get(key):
            return Outcome.failure(ErrorCode.AUTH_REVOKED, f"credentials lack {key}")
    return None


async def exchange(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    timeout: float,
    **kwargs: Any,
) -> Reply | Outcome:
    """Make one call; a transport failure comes back as its ``Outcome``, never raised.

    ``timeout`` bounds the whole call, connection wait and body included (httpx's own
    timeouts are per phase), so a send never outlives the lease that covers it.
    Redirects are never followed: a provider API answering 3xx is a misconfigured base
    URL, and following it would hand a tenant's credentials to another host.
    """
    try:
        async with asyncio.timeout(timeout):
            async with client.stream(
                method, url, timeout=timeout, follow_redirects=False, **kwargs
            ) as response:
                raw = await _read_capped(response)
    except (httpx.HTTPError, TimeoutError) as exc:
        return outcome_for_exception(exc, timeout)
    return Reply(response.status_code, response.headers, raw)


def outcome_for_exception(exc: Exception, timeout: float) -> Outcome:
    """Map a transport failure; the request may or may not have reached the provider."""
    if str(exc):
        detail = f"{type(exc).__name__}: {exc}"[:DETAIL_CHARS]
    elif isinstance(exc, TimeoutError):  # our own deadline, which says nothing itself
        detail = f"no answer within {timeout:g} s"
    else:
        detail = type(exc).__name__
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return Outcome.failure(ErrorCode.TIMEOUT, detail)
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        # The configured base URL is wrong: no retry will reach the provider.
        return Outcome.failure(ErrorCode.BAD_REQUEST, detail)
    # ConnectError, ReadError, RemoteProtocolError (a dropped connection) and anything
    # else httpx raises mid-flight: worth another try.
    return Outcome.failure(ErrorCode.CONNECTION_FAILED, detail)


def success(reply: Reply, provider_message_id: str | None, *, what: str) -> Outcome:
    """A 2xx; without the id we expected (``what``) it is still a success.

    The provider accepted the request: retrying would send the SMS, email or WhatsApp
    message a second time, which is worse than not knowing the provider's id. The
    outcome says ``malformed response`` so the attempt row shows what happened.
    """
    if provider_message_id:
        return Outcome.success(provider_message_id[:255], reply.provider_status)
    return Outcome(
        True,
        detail=f"malformed response: no {what} ({snippet(reply.raw) or 'empty body'})",
        provider_status=reply.provider_status,
    )


def check_failure(outcome: Outcome) -> CheckResult:
    """A failed check, from the outcome a send with the same answer would have had."""
    return CheckResult(ok=False, code=outcome.code, detail=outcome.detail)


def throttle_delay(code: ErrorCode, headers: httpx.Headers, now: datetime) -> float | None:
    """Seconds the provider asked us to wait (``Retry-After``), read only for throttling.

    A ``Retry-After`` on a permanent or transient error is not a promise about when the
    same request will work, so it is ignored there, as the webhook adapter does.
    """
    if code.error_class is not ErrorClass.THROTTLE:
        return None
    return parse_retry_after(headers.get("retry-after"), now)


def json_document(raw: bytes) -> Any:
    """The JSON in ``raw``, or ``None`` when it is empty, truncated or not JSON."""
    if not raw or len(raw) >= MAX_BODY_BYTES:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def snippet(raw: bytes) -> str:
    """A short, single-line excerpt of a body, for an outcome's detail."""
    text = raw[: DETAIL_CHARS * 4].decode("utf-8", errors="replace")
    text = " ".join(text.split())
    if len(text) > DETAIL_CHARS:
        text = text[: DETAIL_CHARS - 1] + "…"
    return text


async def _read_capped(response: httpx.Response) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size >= MAX_BODY_BYTES:
            break
    return b"".join(chunks)[:MAX_BODY_BYTES]
