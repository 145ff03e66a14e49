"""The ``sendgrid`` provider: email over SendGrid's v3 Mail Send API.

One send is ``POST {base_url}/v3/mail/send`` with ``Authorization: Bearer <api_key>`` and
a JSON body: one personalization to ``message.recipient``, the sender from the
connection, and either ``subject`` with ``text`` and/or ``html`` from the payload, or
``template_id`` with ``dynamic_template_data`` (a dynamic template; ``subject`` optional).
``reply_to`` (an address) and extra ``categories`` may also come from the payload.
``categories`` always starts with ``message.action`` (SendGrid allows at most 10, each
at most 255 characters; we trim to fit). ``custom_args`` carries ``sluice_message_id``
(and ``tenant``), which SendGrid copies into every event webhook for the email.

Credentials: ``api_key``, ``from_email``; optionally ``from_name``.

**Duplicates.** Mail Send takes no idempotency key. If a worker dies after SendGrid
accepted an email but before the outcome was written, the lease expires and the email
is sent again: the recipient can get it twice. Both copies carry the same
``sluice_message_id`` in ``custom_args``, so event webhooks for either map back to our
message and the duplicate is visible (two ``X-Message-Id`` values, one message id).

Success is ``202 Accepted`` with the ``X-Message-Id`` header, stored as
``provider_message_id``. A 2xx without that header is still a success (id ``None``,
detail ``malformed response``): SendGrid accepted the email, and retrying would send it
again.

Every answer becomes an ``Outcome`` in ``_outcome_for_reply``: the first matching rule of
``ERROR_RULES`` (status plus the ``errors[].field`` / ``errors[].message`` SendGrid
returns), else the HTTP status (``STATUS_CODES``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from sluice.clock import Clock, SystemClock
from sluice.model import ErrorClass, ErrorCode, Message, Outcome
from sluice.providers._errors import (
    MAX_RETRY_AFTER,
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
    "DEFAULT_BASE_URL",
    "ERROR_RULES",
    "MAIL_SEND_SCOPE",
    "STATUS_CODES",
    "ErrorRule",
    "SendGridProvider",
]

DEFAULT_BASE_URL = "https://api.sendgrid.com"
#: The API key permission a send needs.
MAIL_SEND_SCOPE = "mail.send"
_MAX_CATEGORIES = 10
_MAX_CATEGORY_CHARS = 255


@dataclass(frozen=True, slots=True)
class ErrorRule:
    """A SendGrid error the HTTP status alone does not classify.

    Matches an answer with ``status`` (any, when ``None``) carrying an error whose
    ``field`` matches ``field`` (``None``: any; ``""``: the field must be absent) and
    whose ``message`` matches ``message`` (``None``: any). ``example`` is an error
    SendGrid really sends that the rule is for, as ``(field, message)``: documentation,
    and what the tests send to prove each rule.
    """

    status: int | None
    field: str | None
    message: str | None
    code: ErrorCode
    why: str
    example: tuple[str | None, str]

    def matches(self, status: int, error: Mapping[str, Any]) -> bool:
        """Whether this rule covers one entry of SendGrid's ``errors`` list."""
        if self.status is not None and status != self.status:
            return False
        field = error.get("field")
        field = field if isinstance(field, str) else ""
        if self.field == "" and field:
            return False
        if self.field and not re.search(self.field, field):
            return False
        text = error.get("message")
        text = text if isinstance(text, str) else ""
        return self.message is None or re.search(self.message, text, re.IGNORECASE) is not None


#: SendGrid errors with a meaning beyond their status, checked in order.
ERROR_RULES: Sequence[ErrorRule] = (
    ErrorRule(
        400,
        r"^personalizations\.\d+\.(to|cc|bcc)\b",
        None,
        ErrorCode.INVALID_RECIPIENT,
        "a recipient address is invalid",
        ("personalizations.0.to.0.email", "Does not contain a valid address."),
    ),
    ErrorRule(
        400,
        "",
        r"\bto email\b|\brecipient",
        ErrorCode.INVALID_RECIPIENT,
        "a recipient address is invalid (no field named)",
        (None, "The to email does not contain a valid address."),
    ),
    ErrorRule(
        401,
        None,
        r"maximum credits exceeded",
        ErrorCode.QUOTA_EXCEEDED,
        "the account's email credits are spent until the plan resets",
        (None, "Maximum credits exceeded"),
    ),
    ErrorRule(
        403,
        None,
        r"sender identity",
        ErrorCode.BAD_REQUEST,
        "the from address is not a verified sender of this account",
        (
            "from",
            "The from address does not match a verified Sender Identity. Mail cannot be "
            "sent until this error is resolved.",
        ),
    ),
)

#: The HTTP status when no rule matched; any other 5xx is ``PROVIDER_ERROR``, any other
#: 3xx/4xx ``BAD_REQUEST`` (413: the email is too large, 400: the request is wrong).
STATUS_CODES: Mapping[int, ErrorCode] = {
    401: ErrorCode.AUTH_REVOKED,
    403: ErrorCode.SCOPE_MISSING,  # the API key lacks the mail.send permission
    429: ErrorCode.RATE_LIMITED,
    502: ErrorCode.PROVIDER_UNAVAILABLE,
    503: ErrorCode.PROVIDER_UNAVAILABLE,
    504: ErrorCode.PROVIDER_UNAVAILABLE,
}


class SendGridProvider:
    """Sends email with a tenant's SendGrid API key.

    ``client`` is shared by every send. ``base_url`` points at SendGrid (or the provider
    simulator's ``/sendgrid``). ``timeout`` bounds each whole call.
    ``status_callback_url`` is accepted for symmetry with the other adapters but unused:
    SendGrid's event webhook is configured per account, not per message.
    """

    name = "sendgrid"
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
        """Hand the email to SendGrid and map the answer to an ``Outcome``."""
        credentials = credentials or {}
        refused = missing_credential(credentials, ("api_key", "from_email"))
        if refused is not None:
            return refused
        document = _mail(message, credentials)
        if isinstance(document, Outcome):
            return document
        reply = await exchange(
            self._client,
            "POST",
            f"{self._base_url}/v3/mail/send",
            timeout=self._timeout,
            json=document,
            headers=_auth(credentials),
        )
        if isinstance(reply, Outcome):
            return reply
        return _outcome_for_reply(reply, self._clock.now())

    async def check(self, credentials: Credentials | None = None) -> CheckResult:
        """List the API key's scopes (any key may): valid, and may it send mail?"""
        credentials = credentials or {}
        refused = missing_credential(credentials, ("api_key",))
        if refused is not None:
            return check_failure(refused)
        reply = await exchange(
            self._client,
            "GET",
            f"{self._base_url}/v3/scopes",
            timeout=self._timeout,
            headers=_auth(credentials),
        )
        if isinstance(reply, Outcome):
            return check_failure(reply)
        if not 200 <= reply.status < 300:
            return check_failure(_outcome_for_reply(reply, self._clock.now()))
        document = json_document(reply.raw)
        scopes = document.get("scopes") if isinstance(document, dict) else None
        if not isinstance(scopes, list):
            return CheckResult(
                ok=False,
                code=ErrorCode.PROVIDER_ERROR,
                detail=f"malformed response: no scopes ({snippet(reply.raw)})",
            )
        granted = [s for s in scopes if isinstance(s, str)]
        if MAIL_SEND_SCOPE not in granted:
            return CheckResult(
                ok=False,
                code=ErrorCode.SCOPE_MISSING,
                detail=f"API key lacks the {MAIL_SEND_SCOPE} scope",
                granted_scopes=granted,
            )
        return CheckResult(ok=True, detail="API key may send mail", granted_scopes=granted)


def _auth(credentials: Credentials) -> dict[str, str]:
    return {"authorization": f"Bearer {credentials['api_key']}"}


def _mail(message: Message, credentials: Credentials) -> dict[str, Any] | Outcome:
    payload = message.payload
    tags = {"sluice_message_id": message.id, "tenant": message.tenant}
    personalization: dict[str, Any] = {
        "to": [{"email": message.recipient}],
        "custom_args": tags,
    }
    sender: dict[str, str] = {"email": credentials["from_email"]}
    if credentials.get("from_name"):
        sender["name"] = credentials["from_name"]
    document: dict[str, Any] = {
        "personalizations": [personalization],
        "from": sender,
        "categories": _categories(message.action, payload.get("categories")),
        # Message-level too, so a personalization added later still carries our id.
        "custom_args": tags,
    }
    subject = payload.get("subject")
    template_id = payload.get("template_id")
    if template_id is not None:
        if not isinstance(template_id, str) or not template_id:
            return Outcome.failure(ErrorCode.BAD_REQUEST, "payload.template_id must be text")
        document["template_id"] = template_id
        data = payload.get("dynamic_template_data")
        if data is not None:
            if not isinstance(data, Mapping):
                return Outcome.failure(
                    ErrorCode.BAD_REQUEST, "payload.dynamic_template_data must be an object"
                )
            personalization["dynamic_template_data"] = dict(data)
        if isinstance(subject, str) and subject:
            document["subject"] = subject
    else:
        if not isinstance(subject, str) or not subject:
            return Outcome.failure(ErrorCode.BAD_REQUEST, "payload needs subject (or template_id)")
        content = [
            {"type": kind, "value": payload[key]}
            # SendGrid requires text/plain, when present, before text/html.
            for key, kind in (("text", "text/plain"), ("html", "text/html"))
            if isinstance(payload.get(key), str) and payload[key]
        ]
        if not content:
            return Outcome.failure(ErrorCode.BAD_REQUEST, "payload needs text or html")
        document["subject"] = subject
        document["content"] = content
    reply_to = payload.get("reply_to")
    if isinstance(reply_to, str) and reply_to:
        document["reply_to"] = {"email": reply_to}
    return document


def _categories(action: str, extra: Any) -> list[str]:
    names = [action]
    if isinstance(extra, list):
        names += [c for c in extra if isinstance(c, str) and c]
    unique = dict.fromkeys(name[:_MAX_CATEGORY_CHARS] for name in names)
    return list(unique)[:_MAX_CATEGORIES]


def _code_for_status(status: int) -> ErrorCode:
    if status in STATUS_CODES:
        return STATUS_CODES[status]
    if status >= 500:
        return ErrorCode.PROVIDER_ERROR
    return ErrorCode.BAD_REQUEST


def _outcome_for_reply(reply: Reply, now: datetime) -> Outcome:
    """Every SendGrid answer to its ``Outcome``: the one place its errors are mapped."""
    if 200 <= reply.status < 300:
        return success(reply, reply.headers.get("x-message-id"), what="X-Message-Id header")
    document = json_document(reply.raw)
    errors = document.get("errors") if isinstance(document, dict) else None
    entries = [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []
    code = next(
        (rule.code for rule in ERROR_RULES for e in entries if rule.matches(reply.status, e)),
        _code_for_status(reply.status),
    )
    detail = "; ".join(_describe(e) for e in entries) if entries else snippet(reply.raw)
    if code is ErrorCode.SCOPE_MISSING:
        detail = f"API key lacks a permission (sending needs {MAIL_SEND_SCOPE}): {detail}"
    return Outcome.failure(
        code,
        detail,
        provider_status=reply.provider_status,
        provider_code=str(reply.status),
        retry_after=_retry_after(code, reply.headers, now),
    )


def _describe(error: Mapping[str, Any]) -> str:
    field, text = error.get("field"), error.get("message")
    text = text if isinstance(text, str) else "(no message)"
    return f"{field}: {text}" if isinstance(field, str) and field else text


def _retry_after(code: ErrorCode, headers: httpx.Headers, now: datetime) -> float | None:
    """``Retry-After`` if SendGrid sent one, else its ``X-RateLimit-Reset`` (epoch seconds)."""
    delay = throttle_delay(code, headers, now)
    if delay is not None or code.error_class is not ErrorClass.THROTTLE:
        return delay
    try:
        reset = float(headers.get("x-ratelimit-reset", ""))
    except ValueError:
        return None
    if reset != reset:  # NaN
        return None
    return min(max(reset - now.timestamp(), 0.0), MAX_RETRY_AFTER)
