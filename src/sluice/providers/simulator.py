"""The provider simulator: a local HTTP server that plays the receiving end.

It speaks each provider's wire format on 127.0.0.1 so the demo and the tests exercise the
real adapters, counts every effect by its idempotency key (so a test over thousands of
messages can prove each landed exactly once), and injects faults on demand.

Routes::

    POST   /webhook/{path...}    a Standard Webhooks receiver (signature checked)
    POST   /twilio/2010-04-01/Accounts/{sid}/Messages.json    Twilio's Messages API
    GET    /twilio/2010-04-01/Accounts/{sid}.json             Twilio's account fetch
    POST   /sendgrid/v3/mail/send                             SendGrid's Mail Send
    GET    /sendgrid/v3/scopes                                SendGrid's API key scopes
    POST   /whatsapp/{version}/{phone_number_id}/messages     WhatsApp Cloud API send
    GET    /whatsapp/{version}/{phone_number_id}              WhatsApp phone number read
    POST   /_sim/faults          install a fault set (JSON, see ``Faults``)
    GET    /_sim/faults          the installed fault sets
    DELETE /_sim/faults          remove them (``?path_prefix=`` for one)
    POST   /_sim/credentials     register a provider credential (see ``Credential``)
    GET    /_sim/credentials     the registered credentials (secrets shortened)
    DELETE /_sim/credentials     forget them (``?provider=`` for one provider's)
    POST   /_sim/credentials/revoke   {"provider", "token"}: answer 401 from now on
    POST   /_sim/credentials/scopes   {"provider", "token", "scopes"}: replace its scopes
    GET    /_sim/effects         counters: unique, total, duplicates, rejected, ...
                                 (``?by_provider=1`` adds ``by_provider``)
    GET    /_sim/effects/ids     every effect key with how often it arrived
    GET    /_sim/effects/{id}    the first body and headers received under that key
    DELETE /_sim/effects         forget every effect and reset the counters
    GET    /_sim/health          200 when up

A provider's wire format is a ``_Receiver``: how a request authenticates, what key it
dedupes on and what its answers look like. Faults, effect counting and connection drops
are shared by every receiver. The Standard Webhooks receiver checks a signature; the
provider APIs check credentials registered through ``/_sim/credentials`` (unknown or
revoked ones get the provider's real 401, a missing scope its real 403) and key each
effect by Sluice's message id where the provider carries it: Twilio's ``StatusCallback``
query ``sluice_message_id``, SendGrid's ``custom_args.sluice_message_id``, WhatsApp's
``biz_opaque_callback_data`` (else by the id the simulator hands out).

Run it with ``serve`` (the ``sluice simulator`` command) or, inside a test or
``sluice run``, with ``SimulatorThread``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import random
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http import HTTPStatus
from typing import Any, Protocol
from urllib.parse import parse_qs, parse_qsl, urlsplit

import httpx
import uvicorn
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from sluice.clock import Clock, SystemClock
from sluice.providers.webhook import decode_secret

__all__ = [
    "DEFAULT_PORT",
    "PROVIDERS",
    "Credential",
    "Effect",
    "Faults",
    "SimulatorState",
    "SimulatorThread",
    "create_app",
    "serve",
]

DEFAULT_PORT = 8025
#: Signatures older or newer than this are refused, as the Standard Webhooks spec advises.
SIGNATURE_TOLERANCE = timedelta(minutes=5)
#: Bodies kept per effect; enough to inspect any real payload, bounded for 100k-message runs.
_MAX_KEPT_BODY = 256 * 1024

#: Aborts the connection a request came in on; True if it found and aborted it.
ConnectionAborter = Callable[[Scope], Awaitable[bool]]

#: Every wire format the simulator speaks, each mounted under ``/<name>``.
PROVIDERS = ("webhook", "twilio", "sendgrid", "whatsapp")
#: Scopes a credential gets when its registration names none: everything it can do.
_DEFAULT_SCOPES: dict[str, tuple[str, ...]] = {
    "twilio": (),
    "sendgrid": ("mail.send",),
    "whatsapp": ("whatsapp_business_messaging", "whatsapp_business_management"),
}
#: Headers never kept with an effect: an effect record must not become a secret store.
_SECRET_HEADERS = frozenset({"authorization"})


@dataclass(slots=True)
class Effect:
    """A side effect the simulator received, keyed by its idempotency key."""

    key: str
    path: str
    headers: dict[str, str]
    body: bytes
    received_at: datetime
    count: int = 1
    provider: str = "webhook"

    def to_json(self) -> dict[str, Any]:
        """The effect as the ``GET /_sim/effects/{id}`` answer (form bodies as objects)."""
        body: Any
        if self.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            body = _form(self.body)
        else:
            try:
                body = json.loads(self.body)
            except ValueError:
                body = self.body.decode("utf-8", errors="replace")
        return {
            "id": self.key,
            "provider": self.provider,
            "count": self.count,
            "path": self.path,
            "received_at": self.received_at.isoformat(),
            "headers": self.headers,
            "body": body,
        }


_FAULT_FIELDS = {
    "path_prefix",
    "latency_ms",
    "error_rate",
    "error_status",
    "status",
    "retry_after",
    "drop_after_effect_rate",
    "fail_first",
    "seed",
    "provider",
    "invalid_recipients",
}


@dataclass(slots=True)
class Faults:
    """One set of injected faults, applying to request paths under ``path_prefix``.

    - ``latency_ms``: wait this long before answering anything.
    - ``status``: answer every request with this status (e.g. 429); nothing is recorded.
    - ``fail_first``: the first N requests per effect key answer ``error_status``, later
      ones go through; makes retry tests deterministic.
    - ``error_rate``: this fraction of requests answers ``error_status``, not recorded.
    - ``retry_after``: ``Retry-After`` on every injected error (seconds, or a string
      sent verbatim, e.g. an HTTP-date).
    - ``drop_after_effect_rate``: this fraction of requests is recorded, then the
      connection is dropped without an answer: the sender cannot know it landed.
    - ``invalid_recipients``: requests to these recipients (phone numbers, email
      addresses) get the provider's real invalid-recipient error; not recorded.
    - ``seed``: seeds the random choices, for repeatable runs.

    In a ``POST /_sim/faults`` body, ``provider`` (``twilio``, ...) is shorthand for
    ``path_prefix: "/twilio"``: the fault set covers that provider's routes only.
    """

    path_prefix: str = "/"
    latency_ms: float = 0.0
    error_rate: float = 0.0
    error_status: int = 500
    status: int | None = None
    retry_after: float | str | None = None
    drop_after_effect_rate: float = 0.0
    fail_first: int = 0
    seed: int | None = None
    invalid_recipients: frozenset[str] = frozenset()
    _random: random.Random = field(default_factory=random.Random, repr=False)
    _seen: dict[str, int] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, document: Any) -> Faults:
        """Parse a ``POST /_sim/faults`` body; ``ValueError`` says what is wrong."""
        if not isinstance(document, dict):
            raise ValueError("expected a JSON object")
        unknown = sorted(set(document) - _FAULT_FIELDS)
        if unknown:
            raise ValueError(f"unknown fields {unknown}; known: {sorted(_FAULT_FIELDS)}")
        provider = document.get("provider")
        default_prefix = "/"
        if provider is not None:
            if provider not in PROVIDERS:
                raise ValueError(f"provider must be one of {list(PROVIDERS)}")
            default_prefix = f"/{provider}"
            prefix = document.get("path_prefix", default_prefix)
            if not isinstance(prefix, str) or not (
                prefix == default_prefix or prefix.startswith(default_prefix + "/")
            ):
                raise ValueError(f"path_prefix must lie under /{provider} when provider is set")
        recipients = document.get("invalid_recipients", [])
        if not isinstance(recipients, list) or not all(isinstance(r, str) for r in recipients):
            raise ValueError("invalid_recipients must be a list of strings")
        faults = cls(
            path_prefix=_text(document, "path_prefix", default_prefix),
            invalid_recipients=frozenset(recipients),
            latency_ms=_number(document, "latency_ms", 0.0, 0.0, 600_000.0),
            error_rate=_number(document, "error_rate", 0.0, 0.0, 1.0),
            error_status=_status(document, "error_status") or 500,
            status=_status(document, "status"),
            drop_after_effect_rate=_number(document, "drop_after_effect_rate", 0.0, 0.0, 1.0),
            fail_first=int(_number(document, "fail_first", 0, 0, 1_000_000, integer=True)),
        )
        if not faults.path_prefix.startswith("/"):
            raise ValueError("path_prefix must start with '/'")
        retry_after = document.get("retry_after")
        if isinstance(retry_after, str):
            faults.retry_after = retry_after
        elif retry_after is not None:
            faults.retry_after = _number(document, "retry_after", 0.0, 0.0, 10**9)
        seed = document.get("seed")
        if seed is not None:
            faults.seed = int(_number(document, "seed", 0, -(2**63), 2**63, integer=True))
            faults._random = random.Random(faults.seed)
        return faults

    def to_json(self) -> dict[str, Any]:
        """The fault set as given (without its counters)."""
        return {
            "path_prefix": self.path_prefix,
            "latency_ms": self.latency_ms,
            "error_rate": self.error_rate,
            "error_status": self.error_status,
            "status": self.status,
            "retry_after": self.retry_after,
            "drop_after_effect_rate": self.drop_after_effect_rate,
            "fail_first": self.fail_first,
            "seed": self.seed,
            "invalid_recipients": sorted(self.invalid_recipients),
        }

    def retry_after_header(self) -> str | None:
        """The ``Retry-After`` value to send with an injected error."""
        if self.retry_after is None or isinstance(self.retry_after, str):
            return self.retry_after
        if float(self.retry_after).is_integer():
            return str(int(self.retry_after))
        return str(self.retry_after)

    def injected_status(self, key: str) -> int | None:
        """The error status to answer this request with, or ``None`` to let it through."""
        if self.status is not None:
            return self.status
        if self.fail_first:
            seen = self._seen[key] = self._seen.get(key, 0) + 1
            if seen <= self.fail_first:
                return self.error_status
        if self.error_rate and self._random.random() < self.error_rate:
            return self.error_status
        return None

    def drops(self) -> bool:
        """Whether to drop this (recorded) request's connection."""
        return bool(self.drop_after_effect_rate) and (
            self._random.random() < self.drop_after_effect_rate
        )


def _text(document: dict[str, Any], name: str, default: str) -> str:
    value = document.get(name, default)
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string")
    return value


def _number(
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


def _status(document: dict[str, Any], name: str) -> int | None:
    value = document.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 300 <= value <= 599:
        raise ValueError(f"{name} must be an HTTP status between 300 and 599")
    return int(value)


_TOKEN_FIELD = {"twilio": "auth_token", "sendgrid": "api_key", "whatsapp": "access_token"}
_ACCOUNT_FIELD = {"twilio": "account_sid", "whatsapp": "phone_number_id"}
_CREDENTIAL_FIELDS = {
    "twilio": {"provider", "account_sid", "auth_token", "status"},
    "sendgrid": {"provider", "api_key", "scopes"},
    "whatsapp": {"provider", "access_token", "phone_number_id", "scopes", "display_phone_number"},
}


@dataclass(slots=True)
class Credential:
    """A provider credential the simulator accepts, as ``POST /_sim/credentials`` gives it.

    ``{"provider": "twilio", "account_sid", "auth_token", "status"?}`` (``status`` other
    than ``active``, e.g. ``suspended``, makes sends fail with Twilio's 20005);
    ``{"provider": "sendgrid", "api_key", "scopes"?}``;
    ``{"provider": "whatsapp", "access_token", "phone_number_id", "scopes"?,
    "display_phone_number"?}``. Without ``scopes`` a credential has every scope its
    provider knows (``mail.send``; ``whatsapp_business_messaging`` and
    ``whatsapp_business_management``).
    """

    provider: str
    token: str
    account: str | None = None
    scopes: set[str] = field(default_factory=set)
    revoked: bool = False
    status: str = "active"
    display_phone_number: str = "+1 555-010-0000"

    @classmethod
    def from_json(cls, document: Any) -> Credential:
        """Parse a registration; ``ValueError`` says what is wrong."""
        if not isinstance(document, dict):
            raise ValueError("expected a JSON object")
        provider = document.get("provider")
        if provider not in _TOKEN_FIELD:
            raise ValueError(f"provider must be one of {sorted(_TOKEN_FIELD)}")
        unknown = sorted(set(document) - _CREDENTIAL_FIELDS[provider])
        if unknown:
            known = sorted(_CREDENTIAL_FIELDS[provider])
            raise ValueError(f"unknown fields {unknown} for {provider}; known: {known}")
        token = _required_text(document, _TOKEN_FIELD[provider])
        account_field = _ACCOUNT_FIELD.get(provider)
        account = _required_text(document, account_field) if account_field else None
        credential = cls(
            provider,
            token,
            account,
            _scopes(document.get("scopes", list(_DEFAULT_SCOPES[provider]))),
            status=_text(document, "status", "active"),
        )
        if "display_phone_number" in document:
            credential.display_phone_number = _required_text(document, "display_phone_number")
        return credential

    def to_json(self) -> dict[str, Any]:
        """The credential with its secret shortened, for ``GET /_sim/credentials``."""
        return {
            "provider": self.provider,
            "token": self.token[:4] + "…",
            "account": self.account,
            "scopes": sorted(self.scopes),
            "revoked": self.revoked,
            "status": self.status,
        }


def _required_text(document: dict[str, Any], name: str) -> str:
    value = document.get(name)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} is required and must be a non-empty string")
    return value


def _scopes(value: Any) -> set[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("scopes must be a list of strings")
    return set(value)


def _zero_counters() -> dict[str, int]:
    return {
        "total": 0,
        "rejected": 0,
        "errors_injected": 0,
        "dropped": 0,
        "callbacks_sent": 0,
        "callbacks_failed": 0,
    }


class SimulatorState:
    """Everything the simulator remembers: effects, counters, fault sets, credentials.

    Handlers run on one event loop and never await while they change state; the lock is
    for readers on other threads (a test holding a ``SimulatorThread``).
    """

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock: Clock = clock or SystemClock()
        #: Set by whoever runs the app on uvicorn; without it a drop is approximated.
        self.abort_connection: ConnectionAborter | None = None
        self._lock = threading.Lock()
        self._effects: dict[str, Effect] = {}
        self._faults: dict[str, Faults] = {}
        self._credentials: dict[tuple[str, str], Credential] = {}
        self._total = self._rejected = self._errors_injected = self._dropped = 0
        self._by_provider: dict[str, dict[str, int]] = {}
        # Background work (status callbacks) must stay referenced until it is done, or
        # the event loop may collect a task mid-flight.
        self._tasks: set[asyncio.Task[None]] = set()

    # -- effects ---------------------------------------------------------------

    def record(
        self,
        key: str,
        path: str,
        headers: dict[str, str],
        body: bytes,
        provider: str = "webhook",
    ) -> int:
        """Count one arrival of ``key``; the first keeps its body. Returns the count."""
        with self._lock:
            self._total += 1
            self._counters(provider)["total"] += 1
            effect = self._effects.get(key)
            if effect is None:
                self._effects[key] = Effect(
                    key, path, headers, body[:_MAX_KEPT_BODY], self.clock.now(), provider=provider
                )
                return 1
            effect.count += 1
            return effect.count

    def count_rejected(self, provider: str = "webhook") -> None:
        """A request failed authentication or validation."""
        with self._lock:
            self._rejected += 1
            self._counters(provider)["rejected"] += 1

    def count_error_injected(self, provider: str = "webhook") -> None:
        """A request was answered with an injected error."""
        with self._lock:
            self._errors_injected += 1
            self._counters(provider)["errors_injected"] += 1

    def count_dropped(self, provider: str = "webhook") -> None:
        """A recorded request's connection was dropped."""
        with self._lock:
            self._dropped += 1
            self._counters(provider)["dropped"] += 1

    def count_callback(self, provider: str, *, ok: bool) -> None:
        """A status callback was delivered (2xx) or failed (anything else)."""
        with self._lock:
            self._counters(provider)["callbacks_sent" if ok else "callbacks_failed"] += 1

    def _counters(self, provider: str) -> dict[str, int]:
        counters = self._by_provider.get(provider)
        if counters is None:
            counters = self._by_provider[provider] = _zero_counters()
        return counters

    def by_provider(self) -> dict[str, dict[str, int]]:
        """The counters of ``summary`` per provider, plus status callbacks sent/failed."""
        with self._lock:
            unique: dict[str, int] = {}
            for effect in self._effects.values():
                unique[effect.provider] = unique.get(effect.provider, 0) + 1
            result: dict[str, dict[str, int]] = {}
            for provider in PROVIDERS:
                counters = self._by_provider.get(provider, _zero_counters())
                n = unique.get(provider, 0)
                result[provider] = {
                    "unique": n,
                    "duplicates": counters["total"] - n,
                    **counters,
                }
            return result

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` in the background on the running loop, kept until it finishes."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def summary(self) -> dict[str, int]:
        """Counters; ``duplicates`` is arrivals beyond the first (``total - unique``)."""
        with self._lock:
            unique = len(self._effects)
            return {
                "unique": unique,
                "total": self._total,
                "duplicates": self._total - unique,
                "rejected": self._rejected,
                "errors_injected": self._errors_injected,
                "dropped": self._dropped,
            }

    def counts(self) -> dict[str, int]:
        """Every effect key with how many times it arrived."""
        with self._lock:
            return {key: effect.count for key, effect in self._effects.items()}

    def effect(self, key: str) -> Effect | None:
        """The effect recorded under ``key``, if any."""
        with self._lock:
            return self._effects.get(key)

    def reset_effects(self) -> None:
        """Forget every effect and zero the counters (fault sets and credentials stay)."""
        with self._lock:
            self._effects.clear()
            self._by_provider.clear()
            self._total = self._rejected = self._errors_injected = self._dropped = 0

    # -- credentials -----------------------------------------------------------

    def register_credential(self, credential: Credential | dict[str, Any]) -> Credential:
        """Accept ``credential`` from now on (a document is parsed as ``Credential``)."""
        if not isinstance(credential, Credential):
            credential = Credential.from_json(credential)
        with self._lock:
            self._credentials[(credential.provider, credential.token)] = credential
        return credential

    def credential(self, provider: str, token: str) -> Credential | None:
        """The credential registered for ``provider`` with this secret, revoked or not."""
        with self._lock:
            return self._credentials.get((provider, token))

    def revoke_credential(self, provider: str, token: str) -> bool:
        """Refuse this credential from now on (the provider's 401); False if unknown.

        ``token`` is the secret, or for Twilio and WhatsApp also the account SID or phone
        number id it belongs to (revoking every credential of that account).
        """
        return bool(self._update_credentials(provider, token, revoked=True))

    def set_scopes(self, provider: str, token: str, scopes: Iterable[str]) -> bool:
        """Replace the credential's scopes (calls needing a lost one get the 403)."""
        return bool(self._update_credentials(provider, token, scopes=set(scopes)))

    def _update_credentials(
        self,
        provider: str,
        token: str,
        *,
        revoked: bool | None = None,
        scopes: set[str] | None = None,
    ) -> int:
        with self._lock:
            found = [
                c
                for (p, _), c in self._credentials.items()
                if p == provider and token in (c.token, c.account)
            ]
            for credential in found:
                if revoked is not None:
                    credential.revoked = revoked
                if scopes is not None:
                    credential.scopes = set(scopes)
            return len(found)

    def clear_credentials(self, provider: str | None = None) -> None:
        """Forget every credential, or only ``provider``'s."""
        with self._lock:
            for key in [k for k in self._credentials if provider in (None, k[0])]:
                del self._credentials[key]

    def credentials(self) -> list[Credential]:
        """Every registered credential."""
        with self._lock:
            return list(self._credentials.values())

    # -- faults ----------------------------------------------------------------

    def set_faults(self, faults: Faults) -> None:
        """Install ``faults``, replacing any set with the same ``path_prefix``."""
        with self._lock:
            self._faults[faults.path_prefix] = faults

    def clear_faults(self, path_prefix: str | None = None) -> None:
        """Remove every fault set, or only the one for ``path_prefix``."""
        with self._lock:
            if path_prefix is None:
                self._faults.clear()
            else:
                self._faults.pop(path_prefix, None)

    def faults(self) -> list[Faults]:
        """The installed fault sets."""
        with self._lock:
            return list(self._faults.values())

    def faults_for(self, path: str) -> Faults | None:
        """The fault set with the longest ``path_prefix`` that ``path`` starts with."""
        if not self._faults:  # the common case, without the lock
            return None
        with self._lock:
            best: Faults | None = None
            for prefix, faults in self._faults.items():
                if path.startswith(prefix) and (
                    best is None or len(prefix) > len(best.path_prefix)
                ):
                    best = faults
            return best


# -- receivers: one per provider wire format ----------------------------------


@dataclass(frozen=True, slots=True)
class _Callback:
    """A status callback to POST (form-encoded) once the effect is recorded."""

    url: str
    form: dict[str, str]
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class _Delivery:
    """What a receiver made of an authentic request."""

    key: str  # what the provider would dedupe on (webhook-id, Idempotency-Key, ...)
    headers: dict[str, str]
    #: Who it is for, matched against ``Faults.invalid_recipients``; None: no such notion.
    recipient: str | None = None
    #: The provider's answer when it is accepted (a Twilio message resource, ...).
    answer: dict[str, Any] = field(default_factory=dict)
    #: The id the provider hands back (message sid, X-Message-Id, wamid).
    provider_id: str = ""
    callback: _Callback | None = None


#: A read-only provider route (account fetch, scopes): authenticates and answers.
_Lookup = Callable[[Request], Response]


class _Receiver(Protocol):
    """One provider's wire format, mounted under ``prefix``."""

    provider: str
    prefix: str
    #: Route patterns under ``prefix`` whose POSTs carry effects.
    effect_paths: tuple[str, ...]

    def authenticate(self, request: Request, body: bytes) -> _Delivery | Response:
        """The delivery, or the refusal a real provider would send (counted as rejected)."""
        ...

    def accepted(self, delivery: _Delivery, count: int) -> Response:
        """The answer to a request that was recorded."""
        ...

    def refused(self, status: int, retry_after: str | None) -> Response:
        """The answer to a request failed by an injected fault."""
        ...

    def invalid_recipient(self, delivery: _Delivery) -> Response:
        """The provider's error for a recipient listed in ``invalid_recipients``."""
        ...

    def lookups(self) -> list[tuple[str, _Lookup]]:
        """GET routes under ``prefix`` (faults apply, nothing is recorded)."""
        ...


class _ClockedWebhook(Webhook):
    """``Webhook`` whose timestamp tolerance is checked against the simulator's clock.

    The library reads the wall clock; a test that moves a ``FrozenClock`` forward (to skip
    a backoff) signs with the moved time, so the receiver must judge by the same clock.
    Overriding the name-mangled private check keeps the library's own signature code.
    """

    def __init__(self, secret: str, clock: Clock) -> None:
        super().__init__(decode_secret(secret))
        self._clock = clock

    def _Webhook__verify_timestamp(self, timestamp_header: str) -> datetime:
        try:
            timestamp = datetime.fromtimestamp(float(timestamp_header), tz=UTC)
        except (ValueError, OverflowError, OSError) as exc:
            raise WebhookVerificationError("Invalid Signature Headers") from exc
        now = self._clock.now()
        if timestamp < now - SIGNATURE_TOLERANCE:
            raise WebhookVerificationError("Message timestamp too old")
        if timestamp > now + SIGNATURE_TOLERANCE:
            raise WebhookVerificationError("Message timestamp too new")
        return timestamp


class _WebhookReceiver:
    """A Standard Webhooks receiver: verifies the signature, dedupes on ``webhook-id``."""

    provider = "webhook"
    prefix = "/webhook"
    effect_paths: tuple[str, ...] = ("", "/{path:path}")

    def __init__(self, secret: str, clock: Clock) -> None:
        self._verifier = _ClockedWebhook(secret, clock)

    def authenticate(self, request: Request, body: bytes) -> _Delivery | Response:
        headers = dict(request.headers)
        try:
            self._verifier.verify(body, headers, json_parse=False)
        # The library lets malformed headers and non-UTF-8 bodies escape as ValueError.
        except (WebhookVerificationError, ValueError) as exc:
            return JSONResponse(
                {"error": "invalid signature", "detail": str(exc)[:200]}, status_code=401
            )
        return _Delivery(key=headers["webhook-id"], headers=headers)

    def accepted(self, delivery: _Delivery, count: int) -> Response:
        return JSONResponse({"id": delivery.key, "received": count})

    def refused(self, status: int, retry_after: str | None) -> Response:
        headers = {"retry-after": retry_after} if retry_after is not None else None
        return JSONResponse(
            {"error": "injected fault", "status": status}, status_code=status, headers=headers
        )

    def invalid_recipient(self, delivery: _Delivery) -> Response:
        # Never asked: a webhook's recipient is its URL, and deliveries carry none.
        return self.refused(400, None)

    def lookups(self) -> list[tuple[str, _Lookup]]:
        return []


# -- the provider APIs: Twilio, SendGrid, WhatsApp Cloud API ------------------


def _form(body: bytes) -> dict[str, Any]:
    """A form-encoded body; a field given more than once (``MediaUrl``) is a list."""
    fields = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    return {k: v[0] if len(v) == 1 else v for k, v in fields.items()}


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        document = json.loads(body)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


def _kept_headers(request: Request) -> dict[str, str]:
    return {k: v for k, v in request.headers.items() if k not in _SECRET_HEADERS}


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _basic(request: Request) -> tuple[str, str] | None:
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _twilio_signature(auth_token: str, url: str, form: dict[str, str]) -> str:
    """``X-Twilio-Signature``: HMAC-SHA1 over the URL and the sorted form fields."""
    text = url + "".join(f"{k}{v}" for k, v in sorted(form.items()))
    digest = hmac.new(auth_token.encode(), text.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


class _TwilioReceiver:
    """Twilio's Messages API: basic auth, form bodies, ``{code, message, ...}`` errors.

    The effect key is ``sluice_message_id`` from the ``StatusCallback`` URL's query, else
    the message ``sid`` the simulator hands out. With a ``StatusCallback``, a
    ``delivered`` callback (signed with ``X-Twilio-Signature``) follows in the background.
    """

    provider = "twilio"
    prefix = "/twilio"
    effect_paths: tuple[str, ...] = ("/2010-04-01/Accounts/{account_sid}/Messages.json",)

    def __init__(self, state: SimulatorState) -> None:
        self._state = state

    def _account(self, request: Request) -> Credential | Response:
        auth = _basic(request)
        credential = self._state.credential("twilio", auth[1]) if auth else None
        if (
            auth is None
            or credential is None
            or credential.revoked
            or credential.account != auth[0]
            or request.path_params.get("account_sid") != auth[0]
        ):
            return _twilio_error(
                401, 20003, "Authenticate", detail="Your AccountSid or AuthToken was incorrect."
            )
        return credential

    def authenticate(self, request: Request, body: bytes) -> _Delivery | Response:
        credential = self._account(request)
        if isinstance(credential, Response):
            return credential
        if credential.status != "active":
            return _twilio_error(401, 20005, f"Account not active ({credential.status})")
        form = _form(body)
        to, sender = form.get("To"), form.get("From")
        service = form.get("MessagingServiceSid")
        if not to:
            return _twilio_error(400, 21604, "A 'To' phone number is required.")
        if not sender and not service:
            return _twilio_error(
                400, 21603, "A 'From' or 'MessagingServiceSid' parameter is required."
            )
        if not (form.get("Body") or form.get("ContentSid") or form.get("MediaUrl")):
            return _twilio_error(400, 21602, "Message body is required.")
        sid = "SM" + uuid.uuid4().hex
        account = str(credential.account)
        key, callback = sid, None
        callback_url = form.get("StatusCallback")
        if isinstance(callback_url, str) and callback_url:
            query = dict(parse_qsl(urlsplit(callback_url).query))
            key = query.get("sluice_message_id") or sid
            fields = {
                "MessageSid": sid,
                "SmsSid": sid,
                "MessageStatus": "delivered",
                "SmsStatus": "delivered",
                "To": str(to),
                "From": str(sender or ""),
                "AccountSid": account,
                "ApiVersion": "2010-04-01",
            }
            if service:
                fields["MessagingServiceSid"] = str(service)
            signature = _twilio_signature(credential.token, callback_url, fields)
            callback = _Callback(callback_url, fields, {"x-twilio-signature": signature})
        now = format_datetime(self._state.clock.now().astimezone(UTC))
        uri = f"/2010-04-01/Accounts/{account}/Messages/{sid}"
        answer = {
            "account_sid": account,
            "api_version": "2010-04-01",
            "body": form.get("Body", ""),
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": sender,
            "messaging_service_sid": service,
            "num_media": "0",
            "num_segments": "1",
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": "queued" if sender else "accepted",
            "subresource_uris": {"media": f"{uri}/Media.json"},
            "to": to,
            "uri": f"{uri}.json",
        }
        return _Delivery(
            key,
            _kept_headers(request),
            recipient=str(to),
            answer=answer,
            provider_id=sid,
            callback=callback,
        )

    def accepted(self, delivery: _Delivery, count: int) -> Response:
        return JSONResponse(delivery.answer, status_code=201)

    def refused(self, status: int, retry_after: str | None) -> Response:
        code = 20003 if status == 401 else 20000 + status
        return _twilio_error(status, code, _phrase(status), retry_after=retry_after)

    def invalid_recipient(self, delivery: _Delivery) -> Response:
        return _twilio_error(
            400, 21211, f"The 'To' number {delivery.recipient} is not a valid phone number."
        )

    def lookups(self) -> list[tuple[str, _Lookup]]:
        return [("/2010-04-01/Accounts/{account_sid}.json", self._fetch_account)]

    def _fetch_account(self, request: Request) -> Response:
        credential = self._account(request)
        if isinstance(credential, Response):
            return credential
        return JSONResponse(
            {
                "sid": credential.account,
                "friendly_name": "Sluice simulator account",
                "status": credential.status,
                "type": "Full",
                "uri": f"/2010-04-01/Accounts/{credential.account}.json",
            }
        )


def _twilio_error(
    status: int,
    code: int,
    message: str,
    *,
    detail: str | None = None,
    retry_after: str | None = None,
) -> Response:
    document: dict[str, Any] = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    if detail is not None:
        document["detail"] = detail
    headers = {"retry-after": retry_after} if retry_after is not None else None
    return JSONResponse(document, status_code=status, headers=headers)


class _SendGridReceiver:
    """SendGrid's v3 API: bearer API keys with scopes, ``{"errors": [...]}`` bodies.

    The effect key is ``custom_args.sluice_message_id`` (the first personalization's,
    else the message's), else the ``X-Message-Id`` the simulator hands out.
    """

    provider = "sendgrid"
    prefix = "/sendgrid"
    effect_paths: tuple[str, ...] = ("/v3/mail/send",)

    def __init__(self, state: SimulatorState) -> None:
        self._state = state

    def _key(self, request: Request, scope: str | None) -> Credential | Response:
        token = _bearer(request)
        credential = self._state.credential("sendgrid", token) if token else None
        if credential is None or credential.revoked:
            return _sendgrid_error(
                401, "The provided authorization grant is invalid, expired, or revoked"
            )
        if scope is not None and scope not in credential.scopes:
            return _sendgrid_error(403, "access forbidden")
        return credential

    def authenticate(self, request: Request, body: bytes) -> _Delivery | Response:
        credential = self._key(request, "mail.send")
        if isinstance(credential, Response):
            return credential
        document = _json_object(body)
        if document is None:
            return _sendgrid_error(400, "Bad Request")
        personalizations = document.get("personalizations")
        if not isinstance(personalizations, list) or not personalizations:
            return _sendgrid_error(
                400, "The personalizations field is required.", field="personalizations"
            )
        first = personalizations[0] if isinstance(personalizations[0], dict) else {}
        to = first.get("to")
        email = (
            to[0].get("email") if isinstance(to, list) and to and isinstance(to[0], dict) else None
        )
        if not isinstance(email, str) or "@" not in email:
            return _sendgrid_error(
                400,
                "The to email does not contain a valid address.",
                field="personalizations.0.to.0.email",
            )
        sender = document.get("from")
        if not isinstance(sender, dict) or not sender.get("email"):
            return _sendgrid_error(
                400, "The from email does not contain a valid address.", field="from.email"
            )
        if not document.get("template_id"):
            if not document.get("content"):
                return _sendgrid_error(
                    400,
                    "Unless a valid template_id is provided, the content parameter is required.",
                    field="content",
                )
            if not document.get("subject") and not first.get("subject"):
                return _sendgrid_error(400, "The subject is required.", field="subject")
        message_id = secrets.token_urlsafe(16)
        key = message_id
        for args in (first.get("custom_args"), document.get("custom_args")):
            if isinstance(args, dict) and isinstance(args.get("sluice_message_id"), str):
                key = args["sluice_message_id"]
                break
        return _Delivery(key, _kept_headers(request), recipient=email, provider_id=message_id)

    def accepted(self, delivery: _Delivery, count: int) -> Response:
        return Response(status_code=202, headers={"x-message-id": delivery.provider_id})

    def refused(self, status: int, retry_after: str | None) -> Response:
        headers: dict[str, str] = {}
        if status == 429:
            # SendGrid says when the window resets; a fault's Retry-After sets it too.
            wait = float(retry_after) if retry_after and _is_number(retry_after) else 1.0
            reset = int(self._state.clock.now().timestamp() + wait)
            headers.update(
                {
                    "x-ratelimit-limit": "600",
                    "x-ratelimit-remaining": "0",
                    "x-ratelimit-reset": str(reset),
                }
            )
        if retry_after is not None:
            headers["retry-after"] = retry_after
        message = "too many requests" if status == 429 else _phrase(status)
        return _sendgrid_error(status, message, headers=headers)

    def invalid_recipient(self, delivery: _Delivery) -> Response:
        return _sendgrid_error(
            400,
            "The to email does not contain a valid address.",
            field="personalizations.0.to.0.email",
        )

    def lookups(self) -> list[tuple[str, _Lookup]]:
        return [("/v3/scopes", self._scopes)]

    def _scopes(self, request: Request) -> Response:
        credential = self._key(request, None)  # any key may list its own scopes
        if isinstance(credential, Response):
            return credential
        return JSONResponse({"scopes": sorted(credential.scopes)})


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _sendgrid_error(
    status: int,
    message: str,
    *,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    error = {"message": message, "field": field, "help": None}
    return JSONResponse({"errors": [error]}, status_code=status, headers=headers or None)


class _WhatsAppReceiver:
    """The WhatsApp Cloud API: bearer tokens per phone number id, Graph error bodies.

    The effect key is ``biz_opaque_callback_data``, else the ``wamid`` the simulator
    hands out. Sending needs ``whatsapp_business_messaging``; reading the phone number
    needs that or ``whatsapp_business_management``.
    """

    provider = "whatsapp"
    prefix = "/whatsapp"
    effect_paths: tuple[str, ...] = ("/{version}/{phone_number_id}/messages",)

    def __init__(self, state: SimulatorState) -> None:
        self._state = state

    def _token(self, request: Request, method: str, needs: set[str]) -> Credential | Response:
        token = _bearer(request)
        credential = self._state.credential("whatsapp", token) if token else None
        if credential is None:
            return _graph_error(401, 190, "Invalid OAuth access token - Cannot parse access token")
        if credential.revoked:
            return _graph_error(
                401,
                190,
                "Error validating access token: The user has not authorized application.",
                subcode=458,
            )
        number = request.path_params.get("phone_number_id")
        if credential.account != number:
            return _graph_error(
                400,
                100,
                f"Unsupported {method} request. Object with ID '{number}' does not exist, cannot "
                "be loaded due to missing permissions, or does not support this operation.",
                subcode=33,
            )
        if not credential.scopes & needs:
            return _graph_error(
                403, 10, "(#10) Application does not have permission for this action"
            )
        return credential

    def authenticate(self, request: Request, body: bytes) -> _Delivery | Response:
        credential = self._token(request, "post", {"whatsapp_business_messaging"})
        if isinstance(credential, Response):
            return credential
        document = _json_object(body)
        if document is None:
            return _graph_error(400, 100, "(#100) Invalid parameter")
        if document.get("messaging_product") != "whatsapp":
            return _graph_error(400, 100, "(#100) The parameter messaging_product is required.")
        to = document.get("to")
        if not isinstance(to, str) or not to:
            return _graph_error(400, 100, "(#100) The parameter to is required.")
        kind = document.get("type", "text")
        content = document.get(kind)
        if kind == "text":
            valid = isinstance(content, dict) and bool(content.get("body"))
        elif kind == "template":
            language = content.get("language") if isinstance(content, dict) else None
            valid = (
                isinstance(content, dict)
                and bool(content.get("name"))
                and isinstance(language, dict)
                and bool(language.get("code"))
            )
        else:
            valid = isinstance(content, dict)
        if not valid:
            return _graph_error(400, 131008, f"(#131008) Required parameter is missing: {kind}")
        wamid = "wamid." + base64.b64encode(secrets.token_bytes(30)).decode()
        opaque = document.get("biz_opaque_callback_data")
        key = opaque if isinstance(opaque, str) and opaque else wamid
        answer = {
            "messaging_product": "whatsapp",
            "contacts": [{"input": to, "wa_id": "".join(c for c in to if c.isdigit())}],
            "messages": [{"id": wamid, "message_status": "accepted"}],
        }
        return _Delivery(
            key, _kept_headers(request), recipient=to, answer=answer, provider_id=wamid
        )

    def accepted(self, delivery: _Delivery, count: int) -> Response:
        return JSONResponse(delivery.answer)

    def refused(self, status: int, retry_after: str | None) -> Response:
        if status == 429:
            code, message = 130429, "(#130429) Rate limit hit"
        elif status == 401:
            code, message = 190, "Error validating access token"
        elif status == 403:
            code, message = 10, "(#10) Application does not have permission for this action"
        elif status >= 500:
            code, message = 2, "(#2) Service temporarily unavailable"
        else:
            code, message = 100, "(#100) Invalid parameter"
        headers = {"retry-after": retry_after} if retry_after is not None else None
        return _graph_error(status, code, message, headers=headers)

    def invalid_recipient(self, delivery: _Delivery) -> Response:
        return _graph_error(
            400,
            131030,
            "(#131030) Recipient phone number not in allowed list",
            details="Recipient phone number not in allowed list: Add recipient phone number "
            "to recipient list and try again.",
        )

    def lookups(self) -> list[tuple[str, _Lookup]]:
        return [("/{version}/{phone_number_id}", self._phone_number)]

    def _phone_number(self, request: Request) -> Response:
        credential = self._token(
            request, "get", {"whatsapp_business_messaging", "whatsapp_business_management"}
        )
        if isinstance(credential, Response):
            return credential
        return JSONResponse(
            {
                "id": credential.account,
                "display_phone_number": credential.display_phone_number,
                "quality_rating": "GREEN",
                "verified_name": "Sluice Simulator",
            }
        )


def _graph_error(
    status: int,
    code: int,
    message: str,
    *,
    subcode: int | None = None,
    details: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    error: dict[str, Any] = {"message": message, "type": "OAuthException", "code": code}
    if subcode is not None:
        error["error_subcode"] = subcode
    if details is not None:
        error["error_data"] = {"messaging_product": "whatsapp", "details": details}
    error["fbtrace_id"] = secrets.token_urlsafe(12)
    return JSONResponse({"error": error}, status_code=status, headers=headers)


async def _send_callback(state: SimulatorState, provider: str, callback: _Callback) -> None:
    """POST one status callback; best effort, the outcome only counted."""
    try:
        async with httpx.AsyncClient(timeout=5.0, trust_env=False) as client:
            response = await client.post(callback.url, data=callback.form, headers=callback.headers)
        ok = response.is_success
    # Whatever goes wrong (bad URL, refused, timeout) is the receiver's problem, as with
    # the real provider: count it and carry on, never disturb the simulator's loop.
    except Exception:
        ok = False
    state.count_callback(provider, ok=ok)


def _listed(recipients: frozenset[str], recipient: str) -> bool:
    # Twilio's WhatsApp numbers carry a channel prefix; the listed number may not.
    return recipient in recipients or recipient.removeprefix("whatsapp:") in recipients


class _DroppedConnection(Response):
    """No answer at all: the connection is aborted after the effect was recorded."""

    def __init__(self, abort: ConnectionAborter | None) -> None:
        super().__init__()
        self._abort = abort

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._abort is not None and await self._abort(scope):
            return
        # Not on our uvicorn (e.g. an in-process test client): the nearest we can do is
        # start an answer and break off, which servers turn into a closed connection.
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"1")]}
        )
        raise ConnectionAbortedError("simulator dropped the connection")


def _receiver_endpoint(
    state: SimulatorState, receiver: _Receiver
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        path = request.url.path
        try:
            body = await request.body()
        except ClientDisconnect:
            return Response(status_code=499)  # nobody left to answer
        faults = state.faults_for(path)
        if faults is not None and faults.latency_ms:
            # After the body is in, as with a slow real receiver: a sender that times out
            # meanwhile may still have its effect recorded, and must treat it as uncertain.
            await asyncio.sleep(faults.latency_ms / 1000)
        delivery = receiver.authenticate(request, body)
        provider = receiver.provider
        if isinstance(delivery, Response):
            state.count_rejected(provider)
            return delivery
        if faults is not None:
            status = faults.injected_status(delivery.key)
            if status is not None:
                state.count_error_injected(provider)
                return receiver.refused(status, faults.retry_after_header())
            if delivery.recipient is not None and _listed(
                faults.invalid_recipients, delivery.recipient
            ):
                state.count_error_injected(provider)
                return receiver.invalid_recipient(delivery)
        count = state.record(delivery.key, path, delivery.headers, body, provider)
        if delivery.callback is not None:
            # In the background: a slow or dead callback receiver must not slow the
            # answer, as with the real provider.
            state.spawn(_send_callback(state, provider, delivery.callback))
        if faults is not None and faults.drops():
            state.count_dropped(provider)
            return _DroppedConnection(state.abort_connection)
        return receiver.accepted(delivery, count)

    return endpoint


def _lookup_endpoint(
    state: SimulatorState, receiver: _Receiver, lookup: _Lookup
) -> Callable[[Request], Awaitable[Response]]:
    """A read-only route: latency and injected errors apply; nothing is recorded."""

    async def endpoint(request: Request) -> Response:
        path = request.url.path
        faults = state.faults_for(path)
        if faults is not None and faults.latency_ms:
            await asyncio.sleep(faults.latency_ms / 1000)
        answer = lookup(request)
        if answer.status_code >= 400:
            state.count_rejected(receiver.provider)
            return answer
        if faults is not None:
            status = faults.injected_status(path)
            if status is not None:
                state.count_error_injected(receiver.provider)
                return receiver.refused(status, faults.retry_after_header())
        return answer

    return endpoint


# -- control endpoints --------------------------------------------------------


def _control_routes(state: SimulatorState) -> list[BaseRoute]:
    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def put_faults(request: Request) -> Response:
        try:
            faults = Faults.from_json(json.loads(await request.body()))
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        state.set_faults(faults)
        return JSONResponse({"faults": [f.to_json() for f in state.faults()]})

    async def get_faults(request: Request) -> Response:
        return JSONResponse({"faults": [f.to_json() for f in state.faults()]})

    async def delete_faults(request: Request) -> Response:
        state.clear_faults(request.query_params.get("path_prefix"))
        return JSONResponse({"faults": [f.to_json() for f in state.faults()]})

    async def summary(request: Request) -> Response:
        document: dict[str, Any] = dict(state.summary())
        if request.query_params.get("by_provider", "").lower() in ("1", "true", "yes"):
            document["by_provider"] = state.by_provider()
        return JSONResponse(document)

    async def ids(request: Request) -> Response:
        return JSONResponse({"ids": state.counts()})

    async def one(request: Request) -> Response:
        effect = state.effect(request.path_params["key"])
        if effect is None:
            return JSONResponse({"error": "no such effect"}, status_code=404)
        return JSONResponse(effect.to_json())

    async def reset(request: Request) -> Response:
        state.reset_effects()
        return JSONResponse(state.summary())

    def listing() -> Response:
        return JSONResponse({"credentials": [c.to_json() for c in state.credentials()]})

    async def register(request: Request) -> Response:
        try:
            credential = state.register_credential(_document(await request.body()))
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"credential": credential.to_json()})

    async def get_credentials(request: Request) -> Response:
        return listing()

    async def delete_credentials(request: Request) -> Response:
        state.clear_credentials(request.query_params.get("provider"))
        return listing()

    async def revoke(request: Request) -> Response:
        try:
            document = _document(await request.body())
            provider, token = (
                _required_text(document, "provider"),
                _required_text(document, "token"),
            )
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        if not state.revoke_credential(provider, token):
            return JSONResponse({"error": "no such credential"}, status_code=404)
        return listing()

    async def scopes(request: Request) -> Response:
        try:
            document = _document(await request.body())
            provider, token = (
                _required_text(document, "provider"),
                _required_text(document, "token"),
            )
            granted = _scopes(document.get("scopes"))
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        if not state.set_scopes(provider, token, granted):
            return JSONResponse({"error": "no such credential"}, status_code=404)
        return listing()

    return [
        Route("/_sim/credentials", register, methods=["POST"]),
        Route("/_sim/credentials", get_credentials, methods=["GET"]),
        Route("/_sim/credentials", delete_credentials, methods=["DELETE"]),
        Route("/_sim/credentials/revoke", revoke, methods=["POST"]),
        Route("/_sim/credentials/scopes", scopes, methods=["POST"]),
        Route("/_sim/health", health, methods=["GET"]),
        Route("/_sim/faults", put_faults, methods=["POST"]),
        Route("/_sim/faults", get_faults, methods=["GET"]),
        Route("/_sim/faults", delete_faults, methods=["DELETE"]),
        Route("/_sim/effects", summary, methods=["GET"]),
        Route("/_sim/effects", reset, methods=["DELETE"]),
        Route("/_sim/effects/ids", ids, methods=["GET"]),
        Route("/_sim/effects/{key}", one, methods=["GET"]),
    ]


def _document(body: bytes) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise ValueError("expected a JSON object")
    return document


def create_app(secret: str, *, clock: Clock | None = None) -> Starlette:
    """The simulator as an ASGI app; its ``SimulatorState`` is ``app.state.simulator``.

    ``secret`` is the Standard Webhooks secret senders sign with; an invalid one raises
    ``ConfigError``. ``clock`` judges signature timestamps and stamps effects.
    """
    state = SimulatorState(clock)
    receivers: list[_Receiver] = [
        _WebhookReceiver(secret, state.clock),
        _TwilioReceiver(state),
        _SendGridReceiver(state),
        _WhatsAppReceiver(state),
    ]
    routes = _control_routes(state)
    for receiver in receivers:
        endpoint = _receiver_endpoint(state, receiver)
        for path in receiver.effect_paths:
            routes.append(Route(receiver.prefix + path, endpoint, methods=["POST"]))
        for path, lookup in receiver.lookups():
            routes.append(
                Route(
                    receiver.prefix + path,
                    _lookup_endpoint(state, receiver, lookup),
                    methods=["GET"],
                )
            )
    app = Starlette(routes=routes)
    app.state.simulator = state
    return app


# -- running it ---------------------------------------------------------------


def _uvicorn_aborter(server: uvicorn.Server) -> ConnectionAborter:
    """Abort the TCP connection a request arrived on, found by its peer address.

    ASGI has no way to say "drop this connection without answering": uvicorn answers 500
    when an app raises or returns early. Its connection set does hold the transport.
    """

    async def abort(scope: Scope) -> bool:
        client = scope.get("client")
        if not client:
            return False
        peer = (str(client[0]), int(client[1]))
        for connection in list(server.server_state.connections):
            if getattr(connection, "client", None) == peer:
                connection.transport.abort()
                # Let connection_lost run so uvicorn sees a disconnect, not an app that
                # returned without answering (which it would answer with a 500).
                for _ in range(100):
                    if connection not in server.server_state.connections:
                        break
                    await asyncio.sleep(0)
                return True
        return False

    return abort


def _server(
    app: Starlette, host: str, port: int, log_level: str, *, embedded: bool
) -> uvicorn.Server:
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        # Embedded (a test, ``sluice run``): leave the host process's logging alone.
        log_config=None if embedded else uvicorn.config.LOGGING_CONFIG,
        # Embedded, uvicorn must not swap the process-wide event loop policy (uvloop).
        loop="asyncio" if embedded else "auto",
        access_log=False,
        lifespan="off",
        # The peer address must be the socket's, or drops cannot find their connection.
        proxy_headers=False,
        # Longer than httpx's 5 s keep-alive, so the client always closes an idle
        # connection first and never reuses one the server is closing.
        timeout_keep_alive=75,
        timeout_graceful_shutdown=3,
        backlog=4096,
    )
    server = uvicorn.Server(config)
    app.state.simulator.abort_connection = _uvicorn_aborter(server)
    return server


def serve(host: str, port: int, secret: str, log_level: str = "warning") -> None:
    """Run the simulator in the foreground until interrupted (``sluice simulator``)."""
    app = create_app(secret)
    _server(app, host, port, log_level, embedded=False).run()


class SimulatorThread:
    """The simulator on a background thread, for tests and ``sluice run``.

    ::

        with SimulatorThread(secret) as sim:
            url = sim.url + "/webhook/orders"
            ...
            assert sim.state.summary()["unique"] == 1

    ``port=0`` picks a free port. ``start`` returns once the server accepts connections.
    """

    def __init__(
        self,
        secret: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Clock | None = None,
        log_level: str = "warning",
    ) -> None:
        self.app = create_app(secret, clock=clock)
        self.state: SimulatorState = self.app.state.simulator
        self._host = host
        self._port = port
        self._log_level = log_level
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.url = ""

    def start(self, timeout: float = 10.0) -> SimulatorThread:
        """Start serving; raise ``RuntimeError`` if it is not up within ``timeout``."""
        if self._thread is not None:
            raise RuntimeError(f"simulator already running on {self.url}")
        # Binding here, not in the thread, gives port 0 its real number before we return
        # and turns "address in use" into an exception the caller sees.
        # IPPROTO_TCP spelled out: asyncio only sets TCP_NODELAY on accepted sockets whose
        # proto says TCP, and with proto 0 Nagle meets delayed ACK: 40 ms per request.
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self._host, self._port))
        except OSError:
            sock.close()
            raise
        host, port = sock.getsockname()[:2]
        self.url = (
            f"http://[{host}]:{port}" if family == socket.AF_INET6 else f"http://{host}:{port}"
        )
        server = _server(self.app, host, port, self._log_level, embedded=True)
        self._server = server

        def run() -> None:
            try:
                server.run(sockets=[sock])
            except BaseException as exc:  # handed to start() / stop() to re-raise
                self._error = exc
            finally:
                sock.close()

        self._thread = threading.Thread(target=run, name=f"sluice-simulator-{port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"simulator did not start on {self.url}") from self._error
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and wait for the thread; in-flight requests get a moment."""
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(timeout)
        self._server = self._thread = None

    def __enter__(self) -> SimulatorThread:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
