"""What every part of the simulator shares: the receiver protocol and request helpers.

A provider's wire format is a ``Receiver``: how a request authenticates, what key it
dedupes on and what its answers look like. The helpers read what the providers send
(form and JSON bodies, basic and bearer auth) and parse the control routes' documents,
raising ``ValueError`` with a message that names the field.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Protocol
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

#: Every wire format the simulator speaks, each mounted under ``/<name>``.
PROVIDERS = ("webhook", "twilio", "sendgrid", "whatsapp")
#: Headers never kept with an effect: an effect record must not become a secret store.
SECRET_HEADERS = frozenset({"authorization"})
#: Aborts the connection a request came in on; True if it found and aborted it.
ConnectionAborter = Callable[[Scope], Awaitable[bool]]


@dataclass(frozen=True, slots=True)
class Callback:
    """A status callback to POST (form-encoded) once the effect is recorded."""

    url: str
    form: dict[str, str]
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class Delivery:
    """What a receiver made of an authentic request."""

    key: str  # what the provider would dedupe on (webhook-id, Idempotency-Key, ...)
    headers: dict[str, str]
    #: Who it is for, matched against ``Faults.invalid_recipients``; None: no such notion.
    recipient: str | None = None
    #: The provider's answer when it is accepted (a Twilio message resource, ...).
    answer: dict[str, Any] = field(default_factory=dict)
    #: The id the provider hands back (message sid, X-Message-Id, wamid).
    provider_id: str = ""
    callback: Callback | None = None


#: A read-only provider route (account fetch, scopes): authenticates and answers.
Lookup = Callable[[Request], Response]


class Receiver(Protocol):
    """One provider's wire format, mounted under ``prefix``."""

    provider: str
    prefix: str
    #: Route patterns under ``prefix`` whose POSTs carry effects.
    effect_paths: tuple[str, ...]

    def authenticate(self, request: Request, body: bytes) -> Delivery | Response:
        """The delivery, or the refusal a real provider would send (counted as rejected)."""
        ...

    def accepted(self, delivery: Delivery, count: int) -> Response:
        """The answer to a request that was recorded."""
        ...

    def refused(self, status: int, retry_after: str | None) -> Response:
        """The answer to a request failed by an injected fault."""
        ...

    def invalid_recipient(self, delivery: Delivery) -> Response:
        """The provider's error for a recipient listed in ``invalid_recipients``."""
        ...

    def lookups(self) -> list[tuple[str, Lookup]]:
        """GET routes under ``prefix`` (faults apply, nothing is recorded)."""
        ...


def form_fields(body: bytes) -> dict[str, Any]:
    """A form-encoded body; a field given more than once (``MediaUrl``) is a list."""
    fields = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    return {k: v[0] if len(v) == 1 else v for k, v in fields.items()}


def json_object(body: bytes) -> dict[str, Any] | None:
    try:
        document = json.loads(body)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


def kept_headers(request: Request) -> dict[str, str]:
    return {k: v for k, v in request.headers.items() if k not in SECRET_HEADERS}


def bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def basic(request: Request) -> tuple[str, str] | None:
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


def phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def listed(recipients: frozenset[str], recipient: str) -> bool:
    # Twilio's WhatsApp numbers carry a channel prefix; the listed number may not.
    return recipient in recipients or recipient.removeprefix("whatsapp:") in recipients


def json_document(body: bytes) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise ValueError("expected a JSON object")
    return document


def text_field(document: dict[str, Any], name: str, default: str) -> str:
    value = document.get(name, default)
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string")
    return value


def number_field(
    document: dict[str, Any],
    name: str,
    default: float,
    low: float,
    high: float,
    *,
    integer: bool = False,
) -> float:
    value = document.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number")
    if integer and not float(value).is_integer():
        raise ValueError(f"{name} must be an integer")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low:g} and {high:g}")
    return int(value) if integer else float(value)


def status_field(document: dict[str, Any], name: str) -> int | None:
    value = document.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 300 <= value <= 599:
        raise ValueError(f"{name} must be an HTTP status between 300 and 599")
    return int(value)


def required_text(document: dict[str, Any], name: str) -> str:
    value = document.get(name)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} is required and must be a non-empty string")
    return value


def scope_set(value: Any) -> set[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("scopes must be a list of strings")
    return set(value)
