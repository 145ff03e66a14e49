"""The ``whatsapp`` provider: Meta's WhatsApp Business Cloud API (Graph API).

One send is ``POST {base_url}/{api_version}/{phone_number_id}/messages`` with
``Authorization: Bearer <access_token>`` and a JSON body to ``message.recipient`` (the
user's phone number): a ``text`` message from ``payload["body"]`` (``preview_url``
optional), or a ``template`` message from ``payload["template"]`` =
``{"name", "language" (a code or {"code"}), "components" (optional)}``. Outside the
24-hour customer-service window only templates are delivered.

Credentials: ``access_token``, ``phone_number_id``; optionally ``api_version`` (default
``DEFAULT_API_VERSION``).

Every message carries ``biz_opaque_callback_data`` = our message id: the Cloud API does
not act on it but returns it in the ``statuses`` webhooks (sent, delivered, read), so
receipts map back to our message without a lookup table.

**Duplicates.** The Cloud API takes no idempotency key. If a worker dies after Meta
accepted a message but before the outcome was written, the lease expires and the message
is sent again: the user can see it twice. Both copies carry the same
``biz_opaque_callback_data``, so their status webhooks reveal the duplicate (two
``wamid`` values, one message id).

Success is ``200`` with ``{"messages": [{"id": "wamid..."}]}``; the ``wamid`` is stored
as ``provider_message_id``. A 2xx without it is still a success (id ``None``, detail
``malformed response``): Meta accepted the message, and retrying would send it again.

Every answer becomes an ``Outcome`` in ``_outcome_for_reply``: the Graph error's ``code``
(``ERROR_CODES``; 200-299 are all permission errors) first, else the HTTP status
(``STATUS_CODES``).
"""

from __future__ import annotations

import re
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

__all__ = [
    "DEFAULT_API_VERSION",
    "DEFAULT_BASE_URL",
    "ERROR_CODES",
    "MESSAGING_SCOPE",
    "STATUS_CODES",
    "WhatsAppProvider",
]

DEFAULT_BASE_URL = "https://graph.facebook.com"
DEFAULT_API_VERSION = "v21.0"
#: The permission a send needs (granted to the app's system-user token).
MESSAGING_SCOPE = "whatsapp_business_messaging"
_API_VERSION = re.compile(r"v\d+\.\d+")

#: Graph API error codes (developers.facebook.com/docs/whatsapp/cloud-api/support/
#: error-codes) with a canonical meaning. Codes not listed, outside 200-299, fall back to
#: the HTTP status (``STATUS_CODES``).
ERROR_CODES: Mapping[int, ErrorCode] = {
    # The token expired, was invalidated or revoked: the connection needs re-consent.
    190: ErrorCode.AUTH_REVOKED,
    # The token lacks a permission (e.g. whatsapp_business_messaging).
    3: ErrorCode.SCOPE_MISSING,  # capability or permission issue
    10: ErrorCode.SCOPE_MISSING,  # permission denied
    200: ErrorCode.SCOPE_MISSING,  # permission error (200-299 all are)
    299: ErrorCode.SCOPE_MISSING,
    131005: ErrorCode.SCOPE_MISSING,  # access denied: permission not granted or removed
    # Too fast: wait, don't burn attempts.
    4: ErrorCode.RATE_LIMITED,  # application request limit
    80007: ErrorCode.RATE_LIMITED,  # WhatsApp Business Account rate limit
    130429: ErrorCode.RATE_LIMITED,  # Cloud API throughput reached
    131048: ErrorCode.RATE_LIMITED,  # spam rate limit: too many messages blocked/flagged
    131056: ErrorCode.RATE_LIMITED,  # too many messages to the same user (pair rate limit)
    # The recipient cannot receive this.
    131026: ErrorCode.INVALID_RECIPIENT,  # undeliverable: not on WhatsApp, old client, ...
    131030: ErrorCode.INVALID_RECIPIENT,  # not in the test number's allowed list
    # The user stopped marketing messages from us: suppressed for the tenant.
    131050: ErrorCode.RECIPIENT_UNSUBSCRIBED,
    # Free text outside the 24-hour window (only a template may re-engage).
    131047: ErrorCode.WINDOW_CLOSED,  # re-engagement: >24 h since the user wrote
    # Template problems.
    132000: ErrorCode.TEMPLATE_NOT_APPROVED,  # parameter count mismatch
    132001: ErrorCode.TEMPLATE_NOT_APPROVED,  # template does not exist (name/language)
    132005: ErrorCode.TEMPLATE_NOT_APPROVED,  # translated text too long
    132007: ErrorCode.TEMPLATE_NOT_APPROVED,  # format character policy violated
    132012: ErrorCode.TEMPLATE_NOT_APPROVED,  # parameter format mismatch
    132015: ErrorCode.TEMPLATE_NOT_APPROVED,  # template paused (low quality)
    132016: ErrorCode.TEMPLATE_NOT_APPROVED,  # template disabled
    # The business account cannot send.
    368: ErrorCode.ACCOUNT_SUSPENDED,  # temporarily blocked for policy violations
    131031: ErrorCode.ACCOUNT_SUSPENDED,  # business account locked
    131042: ErrorCode.ACCOUNT_SUSPENDED,  # eligibility: payment method problem
    # Meta's side is failing: defer, an outage must not fill the dead-letter queue.
    1: ErrorCode.PROVIDER_UNAVAILABLE,  # unknown API error
    2: ErrorCode.PROVIDER_UNAVAILABLE,  # API service temporarily unavailable
    131000: ErrorCode.PROVIDER_UNAVAILABLE,  # something went wrong
    131016: ErrorCode.PROVIDER_UNAVAILABLE,  # service unavailable
    133004: ErrorCode.PROVIDER_UNAVAILABLE,  # server temporarily unavailable
    # The request is wrong; sending it again cannot help.
    100: ErrorCode.BAD_REQUEST,  # invalid parameter
    131008: ErrorCode.BAD_REQUEST,  # required parameter missing
    131009: ErrorCode.BAD_REQUEST,  # parameter value not valid
    131049: ErrorCode.BAD_REQUEST,  # not delivered, to keep ecosystem engagement healthy
    131051: ErrorCode.BAD_REQUEST,  # unsupported message type
}

#: The HTTP status when the Graph error code is missing or unknown; any other 5xx is
#: ``PROVIDER_ERROR``, any other 3xx/4xx ``BAD_REQUEST``.
STATUS_CODES: Mapping[int, ErrorCode] = {
    401: ErrorCode.AUTH_REVOKED,
    403: ErrorCode.SCOPE_MISSING,
    429: ErrorCode.RATE_LIMITED,
    502: ErrorCode.PROVIDER_UNAVAILABLE,
    503: ErrorCode.PROVIDER_UNAVAILABLE,
    504: ErrorCode.PROVIDER_UNAVAILABLE,
}


class WhatsAppProvider:
    """Sends WhatsApp messages from a tenant's business phone number.

    ``client`` is shared by every send. ``base_url`` points at the Graph API (or the
    provider simulator's ``/whatsapp``). ``timeout`` bounds each whole call.
    ``status_callback_url`` is accepted for symmetry but unused: Cloud API status
    webhooks are configured per app, not per message.
    """

    name = "whatsapp"
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
        """Send the message through the Cloud API and map the answer to an ``Outcome``."""
        credentials = credentials or {}
        refused = missing_credential(credentials, ("access_token", "phone_number_id"))
        if refused is not None:
            return refused
        url = self._url(credentials, "/messages")
        if isinstance(url, Outcome):
            return url
        document = _document(message)
        if isinstance(document, Outcome):
            return document
        reply = await exchange(
            self._client,
            "POST",
            url,
            timeout=self._timeout,
            json=document,
            headers=_auth(credentials),
        )
        if isinstance(reply, Outcome):
            return reply
        return _outcome_for_reply(reply, self._clock.now())

    async def check(self, credentials: Credentials | None = None) -> CheckResult:
        """Read the phone number (cheapest call): does the token reach it?

        The Graph API reports a token's scopes only to the app (``debug_token`` needs the
        app's own token), so ``granted_scopes`` is ``None``.
        """
        credentials = credentials or {}
        refused = missing_credential(credentials, ("access_token", "phone_number_id"))
        if refused is not None:
            return check_failure(refused)
        url = self._url(credentials, "")
        if isinstance(url, Outcome):
            return check_failure(url)
        reply = await exchange(
            self._client,
            "GET",
            url,
            timeout=self._timeout,
            params={"fields": "id,display_phone_number,quality_rating"},
            headers=_auth(credentials),
        )
        if isinstance(reply, Outcome):
            return check_failure(reply)
        if not 200 <= reply.status < 300:
            return check_failure(_outcome_for_reply(reply, self._clock.now()))
        document = json_document(reply.raw)
        if not isinstance(document, dict) or "id" not in document:
            return CheckResult(
                ok=False,
                code=ErrorCode.PROVIDER_ERROR,
                detail=f"malformed response: no phone number id ({snippet(reply.raw)})",
            )
        number = document.get("display_phone_number", "?")
        quality = document.get("quality_rating", "?")
        return CheckResult(ok=True, detail=f"phone number {number}, quality {quality}")

    def _url(self, credentials: Credentials, suffix: str) -> str | Outcome:
        version = credentials.get("api_version") or DEFAULT_API_VERSION
        if not _API_VERSION.fullmatch(version):
            return Outcome.failure(
                ErrorCode.AUTH_REVOKED,
                f"credentials api_version {version[:40]!r} is not like {DEFAULT_API_VERSION}",
            )
        # Quoted: an id with a '/' or '?' must not be able to reach another Graph path.
        number = quote(credentials["phone_number_id"], safe="")
        return f"{self._base_url}/{version}/{number}{suffix}"


def _auth(credentials: Credentials) -> dict[str, str]:
    return {"authorization": f"Bearer {credentials['access_token']}"}


def _document(message: Message) -> dict[str, Any] | Outcome:
    payload = message.payload
    document: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": message.recipient,
        "biz_opaque_callback_data": message.id,
    }
    template = payload.get("template")
    if template is not None:
        if not isinstance(template, Mapping):
            return Outcome.failure(ErrorCode.BAD_REQUEST, "payload.template must be an object")
        name, language = template.get("name"), template.get("language")
        if isinstance(language, str):
            language = {"code": language}
        if not isinstance(name, str) or not name:
            return Outcome.failure(ErrorCode.BAD_REQUEST, "payload.template needs a name")
        if not isinstance(language, Mapping) or not language.get("code"):
            return Outcome.failure(ErrorCode.BAD_REQUEST, "payload.template needs a language")
        body: dict[str, Any] = {"name": name, "language": dict(language)}
        components = template.get("components")
        if components is not None:
            body["components"] = components
        document["type"] = "template"
        document["template"] = body
        return document
    text = payload.get("body")
    if not isinstance(text, str) or not text:
        return Outcome.failure(ErrorCode.BAD_REQUEST, "payload needs body (or template)")
    document["type"] = "text"
    document["text"] = {"body": text}
    if "preview_url" in payload:
        document["text"]["preview_url"] = bool(payload["preview_url"])
    return document


def _code_for_graph(code: int | None, status: int) -> ErrorCode:
    if code is not None:
        if code in ERROR_CODES:
            return ERROR_CODES[code]
        if 200 <= code <= 299:  # Graph's "API Permission" range, one code per permission
            return ErrorCode.SCOPE_MISSING
    if status in STATUS_CODES:
        return STATUS_CODES[status]
    if status >= 500:
        return ErrorCode.PROVIDER_ERROR
    return ErrorCode.BAD_REQUEST


def _outcome_for_reply(reply: Reply, now: datetime) -> Outcome:
    """Every Graph answer to its ``Outcome``: the one place its errors are mapped."""
    document = json_document(reply.raw)
    if 200 <= reply.status < 300:
        return success(reply, _wamid(document), what="messages[0].id")
    error = document.get("error") if isinstance(document, dict) else None
    error = error if isinstance(error, dict) else {}
    graph_code = _integer(error.get("code"))
    subcode = _integer(error.get("error_subcode"))
    code = _code_for_graph(graph_code, reply.status)
    if graph_code is not None:
        label = f"Graph {graph_code}" + (f"/{subcode}" if subcode is not None else "")
        text = error.get("message") if isinstance(error.get("message"), str) else ""
        details = error.get("error_data")
        if isinstance(details, dict) and isinstance(details.get("details"), str):
            text = f"{text} ({details['details']})"
        detail = f"{label}: {text}"
    else:
        detail = snippet(reply.raw)
    if code is ErrorCode.SCOPE_MISSING:
        detail = f"token lacks a permission (sending needs {MESSAGING_SCOPE}): {detail}"
    return Outcome.failure(
        code,
        detail,
        provider_status=reply.provider_status,
        provider_code=str(graph_code) if graph_code is not None else str(reply.status),
        retry_after=throttle_delay(code, reply.headers, now),
    )


def _wamid(document: Any) -> str | None:
    messages = document.get("messages") if isinstance(document, dict) else None
    if isinstance(messages, list) and messages and isinstance(messages[0], dict):
        value = messages[0].get("id")
        if isinstance(value, str):
            return value
    return None


def _integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None
