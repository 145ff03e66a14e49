"""Injected faults: one ``Faults`` set per path prefix, parsed from ``POST /_sim/faults``."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from sluice.providers.simulator._base import PROVIDERS, number_field, status_field, text_field

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
            path_prefix=text_field(document, "path_prefix", default_prefix),
            invalid_recipients=frozenset(recipients),
            latency_ms=number_field(document, "latency_ms", 0.0, 0.0, 600_000.0),
            error_rate=number_field(document, "error_rate", 0.0, 0.0, 1.0),
            error_status=status_field(document, "error_status") or 500,
            status=status_field(document, "status"),
            drop_after_effect_rate=number_field(document, "drop_after_effect_rate", 0.0, 0.0, 1.0),
            fail_first=int(number_field(document, "fail_first", 0, 0, 1_000_000, integer=True)),
        )
        if not faults.path_prefix.startswith("/"):
            raise ValueError("path_prefix must start with '/'")
        retry_after = document.get("retry_after")
        if isinstance(retry_after, str):
            faults.retry_after = retry_after
        elif retry_after is not None:
            faults.retry_after = number_field(document, "retry_after", 0.0, 0.0, 10**9)
        seed = document.get("seed")
        if seed is not None:
            faults.seed = int(number_field(document, "seed", 0, -(2**63), 2**63, integer=True))
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
