"""The plain types of endpoint health and tenants' event settings (issue 14).

An *endpoint* is where a webhook or an ``http`` action goes, per tenant: the receiver a
webhook's URL names (``sluice.providers.webhook.endpoint_of``) or an action's configured
URL. Every worker counts its outcomes (``EndpointReport``) and the store keeps one row
per endpoint (``EndpointInfo``): healthy, failing since the first failure of the current
streak, or disabled (its messages held until an operator enables it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = [
    "ENDPOINT_STATES",
    "HOLD_PREFIX",
    "EndpointInfo",
    "EndpointReport",
    "TenantEvents",
    "endpoint_event",
    "hold_text",
]

#: The states an endpoint can be in.
ENDPOINT_STATES = ("healthy", "failing", "disabled")


@dataclass(frozen=True, slots=True)
class EndpointReport:
    """What one worker saw of one endpoint since its last report."""

    tenant: str
    endpoint: str
    provider: str
    ok: int = 0
    failed: int = 0
    last_ok_at: datetime | None = None
    last_failed_at: datetime | None = None
    #: The first failure after the last success of this report (None: it ended on a
    #: success, or saw no failure).
    streak_from: datetime | None = None
    #: The last failure's code and detail.
    error: str | None = None


@dataclass(frozen=True, slots=True)
class EndpointInfo:
    """One endpoint's health, as the store keeps it."""

    id: str
    tenant: str
    endpoint: str
    provider: str
    state: str
    failing_since: datetime | None
    last_success_at: datetime | None
    last_failure_at: datetime | None
    last_error: str | None
    disabled_at: datetime | None
    disabled_reason: str | None
    window_start: datetime
    window_ok: int
    window_failed: int
    updated_at: datetime

    @property
    def failure_rate(self) -> float | None:
        """Failed / all outcomes in the current window (None: none yet)."""
        total = self.window_ok + self.window_failed
        return None if total == 0 else self.window_failed / total

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, for the CLI and the API."""

        def iso(t: datetime | None) -> str | None:
            return None if t is None else t.isoformat()

        rate = self.failure_rate
        return {
            "id": self.id,
            "tenant": self.tenant,
            "endpoint": self.endpoint,
            "provider": self.provider,
            "state": self.state,
            "failing_since": iso(self.failing_since),
            "last_success_at": iso(self.last_success_at),
            "last_failure_at": iso(self.last_failure_at),
            "last_error": self.last_error,
            "disabled_at": iso(self.disabled_at),
            "disabled_reason": self.disabled_reason,
            "window_start": iso(self.window_start),
            "window_ok": self.window_ok,
            "window_failed": self.window_failed,
            "failure_rate": None if rate is None else round(rate, 4),
            "updated_at": iso(self.updated_at),
        }


@dataclass(frozen=True, slots=True)
class TenantEvents:
    """Where a tenant's operational events go (the signing secret is its
    ``sluice_events`` connection)."""

    tenant: str
    events_url: str | None
    #: The ``message.dead`` digests have covered dead messages up to here.
    dead_seen_until: datetime | None
    updated_at: datetime


#: How the hold reason of a disabled endpoint's message starts (``sluice held list
#: --reason``, and what ``sluice endpoints enable`` releases).
HOLD_PREFIX = "endpoint disabled: "


def hold_text(endpoint: str, why: str | None) -> str:
    """The hold reason of a message to a disabled ``endpoint``."""
    return f"{HOLD_PREFIX}{endpoint} ({why or 'disabled'}); enable it with: sluice endpoints enable"


def endpoint_event(info: EndpointInfo) -> dict[str, Any]:
    """What ``endpoint.disabled`` / ``endpoint.recovered`` tell the tenant."""
    return {
        "endpoint_id": info.id,
        "endpoint": info.endpoint,
        "state": info.state,
        "reason": info.disabled_reason,
        "failing_since": info.failing_since and info.failing_since.isoformat(),
        "last_success_at": info.last_success_at and info.last_success_at.isoformat(),
        "last_error": info.last_error,
    }
