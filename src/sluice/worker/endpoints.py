"""Endpoint health, as one worker keeps it (issue 14): counts each webhook and ``http``
endpoint's outcomes, reports them to the store, disables an endpoint that has failed
without a success for ``endpoint_disable_after`` (5 days by default), and holds the
messages of disabled endpoints before any call.

What counts is what the breakers count (``Dispatcher._breaker_record``): a success, or
a failure that is the receiver's (5xx, timeout, unreachable). Refusals about the
message say nothing about the endpoint. The same watch sends tenants their
``message.dead`` digests (``sluice.store.tenant_events``), once a minute at most.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sluice.clock import Clock
from sluice.config import Settings
from sluice.errors import SluiceError
from sluice.model import AuditEntry, ErrorClass, ErrorCode, Outcome
from sluice.store.base import Store
from sluice.store.endpoints import EndpointReport, endpoint_event, hold_text
from sluice.store.tenant_events import DEAD_DIGEST_EVERY, dead_digest, emit_tenant_event

__all__ = ["EndpointWatch"]

#: Seconds between two reports to the store (a worker stopping reports at once).
SYNC_EVERY = 1.0


def _days(seconds: float) -> str:
    return f"{seconds / 86400:g} days" if seconds >= 86400 else f"{seconds:g} s"


@dataclass(slots=True)
class _Tally:
    provider: str
    ok: int = 0
    failed: int = 0
    last_ok: datetime | None = None
    last_failed: datetime | None = None
    streak_from: datetime | None = None
    error: str | None = None


class EndpointWatch:
    """One worker's view of endpoint health."""

    def __init__(
        self, store: Store, settings: Settings, *, clock: Clock, logger: Any, worker_id: str
    ) -> None:
        self.store = store
        self.disable_after = settings.endpoint_disable_after
        self.window = settings.endpoint_window
        self.clock = clock
        self.log = logger
        self.actor = f"worker:{worker_id}"
        self._tallies: dict[tuple[str, str], _Tally] = {}
        #: (tenant, endpoint) -> why it is disabled; None until first loaded.
        self._disabled: dict[tuple[str, str], str | None] | None = None
        self._synced = 0.0
        self._digest_at: datetime | None = None

    def outcome(
        self, tenant: str, endpoint: str, provider: str, outcome: Outcome, at: datetime
    ) -> None:
        """Count ``outcome`` if it says something about the endpoint (as the breakers do)."""
        if outcome.ok:
            self.record(tenant, endpoint, provider, True, None, at)
        elif outcome.code is not None and (
            outcome.code.error_class is ErrorClass.TRANSIENT
            or outcome.code is ErrorCode.PROVIDER_UNAVAILABLE
        ):
            said = outcome.provider_status or outcome.detail or ""
            self.record(tenant, endpoint, provider, False, f"{outcome.code}: {said}"[:300], at)

    def record(
        self, tenant: str, endpoint: str, provider: str, ok: bool, error: str | None, at: datetime
    ) -> None:
        """Count one outcome of a send to ``endpoint``."""
        t = self._tallies.get((tenant, endpoint))
        if t is None:
            t = self._tallies[(tenant, endpoint)] = _Tally(provider)
        if ok:
            t.ok, t.last_ok, t.streak_from = t.ok + 1, at, None
        else:
            t.failed, t.last_failed, t.error = t.failed + 1, at, error
            t.streak_from = t.streak_from or at

    def hold(self, tenant: str, endpoint: str | None) -> str | None:
        """The hold reason for a message to ``endpoint`` if it is disabled, else None."""
        if endpoint is None or not self._disabled:
            return None
        key = (tenant, endpoint)
        return hold_text(endpoint, self._disabled[key]) if key in self._disabled else None

    async def confirm(self, keys: Iterable[tuple[str, str | None]]) -> None:
        """Before holding: load the disabled endpoints (first time), and again when one
        of ``keys`` is disabled here, so that a message is never held on a stale view
        after an operator enabled its endpoint."""
        if self._disabled is None or any(k in self._disabled for k in keys):
            await self._load()

    async def _load(self) -> None:
        try:
            rows = await self.store.endpoint_list(state="disabled")
        except SluiceError as exc:
            self.log.warning("could not load disabled endpoints", error=str(exc))
            return
        self._disabled = {(e.tenant, e.endpoint): e.disabled_reason for e in rows}

    async def sync(self, *, force: bool = False) -> None:
        """Report outcomes, disable what failed too long, reload the disabled set; and
        the tenants' ``message.dead`` digests when due. At most once a second unless
        ``force``; a store failure keeps the counts for the next sync."""
        if not force and time.monotonic() - self._synced < SYNC_EVERY:
            return
        self._synced = time.monotonic()
        now = self.clock.now()
        tallies, self._tallies = self._tallies, {}
        reports = [
            EndpointReport(tenant, endpoint, t.provider, t.ok, t.failed, t.last_ok,
                           t.last_failed, t.streak_from, t.error)
            for (tenant, endpoint), t in tallies.items()
        ]  # fmt: skip
        try:
            await self.store.endpoint_report(reports, now, self.window)
            await self._disable_due(now)
            await self._load()
            if self._digest_at is None or now - self._digest_at >= DEAD_DIGEST_EVERY:
                self._digest_at = now
                await dead_digest(self.store, now)
        except SluiceError as exc:
            for key, t in tallies.items():  # not lost: merged into what came since
                self._tallies.setdefault(key, t)
            self.log.warning("could not report endpoint health", error=str(exc))

    async def _disable_due(self, now: datetime) -> None:
        before = now - timedelta(seconds=self.disable_after)
        for e in await self.store.endpoint_list(state="failing", failing_before=before):
            why = (
                f"failing without a success since {e.failing_since:%Y-%m-%d %H:%M} UTC "
                f"(more than {_days(self.disable_after)}); last error: {e.last_error or '?'}"
            )[:400]
            audit = AuditEntry(
                at=now, actor=self.actor, action="endpoint.disable", target=e.id, reason=why,
                detail={"tenant": e.tenant, "endpoint": e.endpoint, "provider": e.provider},
            )  # fmt: skip
            moved = await self.store.endpoint_move(e.id, "failing", "disabled", why, now, audit)
            if moved is None:
                continue  # another worker disabled it, or it recovered meanwhile
            self.log.error(
                "endpoint disabled; its messages are held",
                tenant=e.tenant, endpoint=e.endpoint, reason=why,
            )  # fmt: skip
            await emit_tenant_event(
                self.store, e.tenant, "endpoint.disabled", endpoint_event(moved),
                now=now, about_provider=e.provider, about_endpoint=e.endpoint,
            )  # fmt: skip
