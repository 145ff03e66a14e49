"""What the simulator remembers: effects, counters, fault sets, credentials, requests."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sluice.clock import Clock, SystemClock
from sluice.providers.simulator._base import (
    PROVIDERS,
    ConnectionAborter,
    form_fields,
    required_text,
    scope_set,
    text_field,
)
from sluice.providers.simulator._callbacks import Callbacks
from sluice.providers.simulator._faults import Faults
from sluice.providers.simulator._requests import DEFAULT_CAPACITY, RequestLog

#: Bodies kept per effect; enough to inspect any real payload, bounded for 100k-message runs.
_MAX_KEPT_BODY = 256 * 1024
#: Scopes a credential gets when its registration names none: everything it can do.
_DEFAULT_SCOPES: dict[str, tuple[str, ...]] = {
    "twilio": (),
    "sendgrid": ("mail.send",),
    "whatsapp": ("whatsapp_business_messaging", "whatsapp_business_management"),
}


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
            body = form_fields(self.body)
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
        token = required_text(document, _TOKEN_FIELD[provider])
        account_field = _ACCOUNT_FIELD.get(provider)
        account = required_text(document, account_field) if account_field else None
        credential = cls(
            provider,
            token,
            account,
            scope_set(document.get("scopes", list(_DEFAULT_SCOPES[provider]))),
            status=text_field(document, "status", "active"),
        )
        if "display_phone_number" in document:
            credential.display_phone_number = required_text(document, "display_phone_number")
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


def _zero_counters() -> dict[str, int]:
    return {
        "total": 0,
        "rejected": 0,
        "errors_injected": 0,
        "dropped": 0,
        "callbacks_sent": 0,
        "callbacks_failed": 0,
        "callbacks_skipped": 0,
    }


class SimulatorState:
    """Everything the simulator remembers: effects, counters, fault sets, credentials.

    Handlers run on one event loop and never await while they change state; the lock is
    for readers on other threads (a test holding a ``SimulatorThread``).
    """

    def __init__(
        self,
        clock: Clock | None = None,
        *,
        callbacks: bool = True,
        request_log_size: int = DEFAULT_CAPACITY,
    ) -> None:
        self.clock: Clock = clock or SystemClock()
        #: Status callbacks: the global switch and the one client that posts them.
        self.callbacks = Callbacks(enabled=callbacks)
        #: Every request to a provider route, newest ``request_log_size`` kept.
        self.requests = RequestLog(request_log_size)
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

    def count_callback(self, provider: str, *, ok: bool | None) -> None:
        """A status callback was delivered (2xx), failed (anything else) or skipped (None:
        callbacks off, or the message asked for none)."""
        name = "callbacks_skipped" if ok is None else "callbacks_sent" if ok else "callbacks_failed"
        with self._lock:
            self._counters(provider)[name] += 1

    def _counters(self, provider: str) -> dict[str, int]:
        counters = self._by_provider.get(provider)
        if counters is None:
            counters = self._by_provider[provider] = _zero_counters()
        return counters

    def by_provider(self) -> dict[str, dict[str, int]]:
        """The counters of ``summary`` per provider, plus status callbacks sent/failed/skipped."""
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
