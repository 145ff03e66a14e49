"""The ``twilio`` provider: SMS, and WhatsApp through Twilio, over the Messages API.

One send is ``POST {base_url}/2010-04-01/Accounts/{AccountSid}/Messages.json``,
form-encoded, with HTTP basic auth (account SID : auth token). The message's
``recipient`` is the ``To`` number; on the ``whatsapp`` channel both ``To`` and ``From``
get Twilio's ``whatsapp:`` prefix when they lack it. The payload gives ``body`` (free
text) or ``content_sid`` with optional ``content_variables`` (a Content API template),
and optionally ``media_url`` (one URL or a list).

Credentials: ``account_sid``, ``auth_token``, and ``from`` (a Twilio number) or
``messaging_service_sid`` (the service picks the sender; it wins when both are set).

**Duplicates.** Twilio's Messages API takes no idempotency key. If a worker dies after
Twilio accepted a message but before the outcome was written, the lease expires and the
message is sent again: the recipient can get the same SMS twice. Nothing on Twilio's
side can tell the two apart; the attempts table shows the expired lease, and Twilio's
``sid`` (stored as ``provider_message_id``) identifies the copy we know about. With a
``status_callback_url`` every message carries ``sluice_message_id`` in its callback URL,
so receipts for either copy map back to our message.

A 2xx whose body has no readable ``sid`` is still a success (``provider_message_id``
``None``, detail ``malformed response``): Twilio accepted the message, and retrying
would send it again.

Every answer becomes an ``Outcome`` in ``_outcome_for_reply``: Twilio's own error code
(``ERROR_CODES``) first, the HTTP status (``STATUS_CODES``) when the code is unknown.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx

from sluice.clock import Clock, SystemClock
from sluice.model import ErrorCode, Message, Outcome
from sluice.providers._errors import (
    CheckResult,
    Reply,
    check_failure,
    exchange,
    json_document,
    missing_credential,
    snippet,
    success,
    throttle_delay,
)
from sluice.providers.base import Credentials

__all__ = ["DEFAULT_BASE_URL", "ERROR_CODES", "STATUS_CODES", "TwilioProvider"]

DEFAULT_BASE_URL = "https://api.twilio.com"
_API = "/2010-04-01/Accounts"
_WHATSAPP = "whatsapp:"

#: Twilio error codes (https://www.twilio.com/docs/api/errors) with a canonical meaning.
#: Codes not listed fall back to the HTTP status (``STATUS_CODES``).
ERROR_CODES: Mapping[int, ErrorCode] = {
    # The recipient can never get this message: a bad number, a landline, a STOP.
    21211: ErrorCode.INVALID_RECIPIENT,  # invalid 'To' phone number
    21608: ErrorCode.INVALID_RECIPIENT,  # trial account: 'To' number not verified
    21612: ErrorCode.INVALID_RECIPIENT,  # 'To' not reachable via this channel
    21614: ErrorCode.INVALID_RECIPIENT,  # 'To' is not a mobile number
    # The recipient replied STOP: suppressed for the tenant (sluice.worker.hygiene).
    21610: ErrorCode.RECIPIENT_UNSUBSCRIBED,  # message to an unsubscribed recipient
    63014: ErrorCode.RECIPIENT_UNSUBSCRIBED,  # channel message blocked by user action
    # The credentials are wrong or were rotated: the connection needs fixing.
    20003: ErrorCode.AUTH_REVOKED,  # authentication failed
    # The account itself cannot send.
    10001: ErrorCode.ACCOUNT_SUSPENDED,  # account is not active
    20005: ErrorCode.ACCOUNT_SUSPENDED,  # account not active
    30002: ErrorCode.ACCOUNT_SUSPENDED,  # account suspended
    # The sender is misconfigured; every message from it fails the same way.
    20404: ErrorCode.BAD_REQUEST,  # resource not found (wrong account SID in the URL)
    21212: ErrorCode.BAD_REQUEST,  # invalid 'From' number
    21606: ErrorCode.BAD_REQUEST,  # 'From' is not a valid, message-capable Twilio number
    21659: ErrorCode.BAD_REQUEST,  # 'From' is not a Twilio number or short code
    # Too fast: wait, don't burn attempts.
    14107: ErrorCode.RATE_LIMITED,  # message send rate limit exceeded
    20429: ErrorCode.RATE_LIMITED,  # too many requests
    30001: ErrorCode.RATE_LIMITED,  # queue overflow
    63018: ErrorCode.RATE_LIMITED,  # WhatsApp: rate limit exceeded for the channel
    # WhatsApp: free text outside the 24-hour window needs an approved template.
    63016: ErrorCode.WINDOW_CLOSED,
}

#: The HTTP status when Twilio's error code is missing or not in ``ERROR_CODES``; any
#: other 5xx is ``PROVIDER_ERROR``, any other 3xx/4xx ``BAD_REQUEST``.
STATUS_CODES: Mapping[int, ErrorCode] = {
    401: ErrorCode.AUTH_REVOKED,
    # Twilio answers 403 when the account may not use a resource (a feature, a region,
    # a sub-account): the credentials lack a permission, which only the tenant can grant.
    403: ErrorCode.SCOPE_MISSING,
    429: ErrorCode.RATE_LIMITED,
    502: ErrorCode.PROVIDER_UNAVAILABLE,
    503: ErrorCode.PROVIDER_UNAVAILABLE,
    504: ErrorCode.PROVIDER_UNAVAILABLE,
}


class TwilioProvider:
    """Sends SMS (and WhatsApp through Twilio) with a tenant's Twilio account.

    ``client`` is shared by every send. ``base_url`` points at Twilio (or the provider
    simulator's ``/twilio``). ``timeout`` bounds each whole call. ``status_callback_url``
    (Sluice's ingress), when set, is sent as ``StatusCallback`` with
    ``sluice_message_id=<message id>`` added to its query.
    """

    name = "twilio"
    #: Sends only with a tenant connection (credentials, scopes, state).
    requires_connection = True

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = 10.0,
        status_callback_url: str | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._client = client
        self._base_url = base_url.rstrip("/")
        self._timeout = timeout
        self._status_callback_url = status_callback_url
        self._clock = clock or SystemClock()

    async def send(self, message: Message, credentials: Credentials | None = None) -> Outcome:
        """Create the message at Twilio and map the answer to an ``Outcome``."""
        credentials = credentials or {}
        refused = missing_credential(credentials, ("account_sid", "auth_token"))
        if refused is not None:
            return refused
        if not credentials.get("from") and not credentials.get("messaging_service_sid"):
            return Outcome.failure(
                ErrorCode.AUTH_REVOKED, "credentials lack from (or messaging_service_sid)"
            )
        form = self._form(message, credentials)
        if isinstance(form, Outcome):
            return form
        reply = await exchange(
            self._client,
            "POST",
            self._account_url(credentials["account_sid"], "/Messages.json"),
            timeout=self._timeout,
            data=form,
            auth=(credentials["account_sid"], credentials["auth_token"]),
        )
        if isinstance(reply, Outcome):
            return reply
        return _outcome_for_reply(reply, self._clock.now())

    async def check(self, credentials: Credentials | None = None) -> CheckResult:
        """Fetch the account (the cheapest authenticated call): works and is active?

        Twilio has no scopes, so ``granted_scopes`` is ``None``.
        """
        credentials = credentials or {}
        refused = missing_credential(credentials, ("account_sid", "auth_token"))
        if refused is not None:
            return check_failure(refused)
        reply = await exchange(
            self._client,
            "GET",
            self._account_url(credentials["account_sid"], ".json"),
            timeout=self._timeout,
            auth=(credentials["account_sid"], credentials["auth_token"]),
        )
        if isinstance(reply, Outcome):
            return check_failure(reply)
        if not 200 <= reply.status < 300:
            return check_failure(_outcome_for_reply(reply, self._clock.now()))
        document = json_document(reply.raw)
        status = document.get("status") if isinstance(document, dict) else None
        if status == "active":
            return CheckResult(ok=True, detail="account active")
        if isinstance(status, str):
            return CheckResult(
                ok=False, code=ErrorCode.ACCOUNT_SUSPENDED, detail=f"account {status}"
            )
        return CheckResult(
            ok=False,
            code=ErrorCode.PROVIDER_ERROR,
            detail=f"malformed response: no account status ({snippet(reply.raw)})",
        )

    def _account_url(self, account_sid: str, suffix: str) -> str:
        # Quoted: a SID with a '/' or '?' must not be able to reach another path.
        return f"{self._base_url}{_API}/{quote(account_sid, safe='')}{suffix}"

    def _form(self, message: Message, credentials: Credentials) -> dict[str, Any] | Outcome:
        whatsapp = message.channel == "whatsapp"
        form: dict[str, Any] = {"To": _address(message.recipient, whatsapp=whatsapp)}
        if credentials.get("messaging_service_sid"):
            form["MessagingServiceSid"] = credentials["messaging_service_sid"]
        else:
            form["From"] = _address(credentials["from"], whatsapp=whatsapp)
        payload = message.payload
        content_sid = payload.get("content_sid")
        body = payload.get("body")
        if content_sid is not None:
            if not isinstance(content_sid, str) or not content_sid:
                return Outcome.failure(ErrorCode.BAD_REQUEST, "payload.content_sid must be text")
            form["ContentSid"] = content_sid
            variables = payload.get("content_variables")
            if variables is not None:
                form["ContentVariables"] = (
                    variables if isinstance(variables, str) else json.dumps(variables)
                )
        elif isinstance(body, str) and body:
            form["Body"] = body
        elif not payload.get("media_url"):
            return Outcome.failure(
                ErrorCode.BAD_REQUEST, "payload needs body, content_sid or media_url"
            )
        media = payload.get("media_url")
        if media:
            form["MediaUrl"] = [media] if isinstance(media, str) else [str(m) for m in media]
        if self._status_callback_url:
            form["StatusCallback"] = str(
                httpx.URL(self._status_callback_url).copy_add_param("sluice_message_id", message.id)
            )
        return form


def _address(number: str, *, whatsapp: bool) -> str:
    if whatsapp and not number.startswith(_WHATSAPP):
        return _WHATSAPP + number
    return number


def _code_for_status(status: int) -> ErrorCode:
    if status in STATUS_CODES:
        return STATUS_CODES[status]
    if status >= 500:
        return ErrorCode.PROVIDER_ERROR
    return ErrorCode.BAD_REQUEST


def _outcome_for_reply(reply: Reply, now: datetime) -> Outcome:
    """Every Twilio answer to its ``Outcome``: the one place Twilio's errors are mapped."""
    document = json_document(reply.raw)
    if 200 <= reply.status < 300:
        sid = document.get("sid") if isinstance(document, dict) else None
        return success(reply, sid if isinstance(sid, str) else None, what="message sid")
    twilio_code = _error_code(document)
    code = ERROR_CODES.get(twilio_code) if twilio_code is not None else None
    if code is None:
        code = _code_for_status(reply.status)
    if isinstance(document, dict) and isinstance(document.get("message"), str):
        detail = f"Twilio {twilio_code}: {document['message']}"
    else:
        detail = snippet(reply.raw)
    if code is ErrorCode.SCOPE_MISSING:
        detail = f"Twilio denied permission for this account: {detail}"
    return Outcome.failure(
        code,
        detail,
        provider_status=reply.provider_status,
        provider_code=str(twilio_code) if twilio_code is not None else str(reply.status),
        retry_after=throttle_delay(code, reply.headers, now),
    )


def _error_code(document: Any) -> int | None:
    if not isinstance(document, dict):
        return None
    value = document.get("code")
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None
