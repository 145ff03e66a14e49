"""The store methods of endpoint health and tenants' event settings (issue 14), written
once for both dialects over their named queries; ``SqlDriver`` inherits them."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sluice.errors import NotFound
from sluice.model import AuditEntry
from sluice.store._codec import Codec
from sluice.store._hooks import DriverHooks
from sluice.store.endpoints import EndpointInfo, EndpointReport, TenantEvents

__all__ = ["EndpointMethods"]


def _endpoint(c: Codec, r: Any) -> EndpointInfo:
    return EndpointInfo(
        id=r[0], tenant=r[1], endpoint=r[2], provider=r[3], state=r[4],
        failing_since=c.time(r[5]), last_success_at=c.time(r[6]),
        last_failure_at=c.time(r[7]), last_error=r[8], disabled_at=c.time(r[9]),
        disabled_reason=r[10], window_start=c.read_time(r[11]), window_ok=int(r[12]),
        window_failed=int(r[13]), updated_at=c.read_time(r[14]),
    )  # fmt: skip


def _tenant_events(c: Codec, r: Any) -> TenantEvents:
    return TenantEvents(r[0], r[1], c.time(r[2]), c.read_time(r[3]))


class EndpointMethods(DriverHooks):
    """``endpoint_*`` and ``tenant_events_*`` of the ``Store`` protocol."""

    async def audit_append(self, entry: AuditEntry) -> AuditEntry:
        raise NotImplementedError

    async def endpoint_report(
        self, reports: Sequence[EndpointReport], now: datetime, window_seconds: float
    ) -> None:
        c = self.codec
        cut = c.write_time(now - timedelta(seconds=window_seconds))
        steps = [
            ("endpoint_report", {
                "id": str(uuid.uuid4()), "tenant": r.tenant, "endpoint": r.endpoint,
                "provider": r.provider, "ok": r.ok, "failed": r.failed,
                "last_ok": c.param(r.last_ok_at), "last_failed": c.param(r.last_failed_at),
                "streak_from": c.param(r.streak_from),
                "error": None if r.error is None else r.error[:500],
                "now": c.write_time(now), "window_cut": cut,
            })
            for r in sorted(reports, key=lambda r: (r.tenant, r.endpoint))  # one lock order
        ]  # fmt: skip
        if steps:
            await self._script(steps)

    async def endpoint_list(
        self,
        tenant: str | None = None,
        state: str | None = None,
        failing_before: datetime | None = None,
    ) -> list[EndpointInfo]:
        params = {"tenant": tenant, "state": state, "failing_before": None}
        params["failing_before"] = self.codec.param(failing_before)
        return [_endpoint(self.codec, r) for r in await self._fetch("endpoint_list", params)]

    async def endpoint_get(self, endpoint_id: str) -> EndpointInfo:
        rows = await self._fetch("endpoint_get", {"id": endpoint_id})
        if not rows:
            raise NotFound(f"no endpoint {endpoint_id!r}")
        return _endpoint(self.codec, rows[0])

    async def endpoint_move(
        self,
        endpoint_id: str,
        expected: str | None,
        state: str,
        reason: str | None,
        now: datetime,
        audit: AuditEntry,
    ) -> EndpointInfo | None:
        params = {
            "id": endpoint_id, "expected": expected, "state": state, "reason": reason,
            "now": self.codec.write_time(now),
        }  # fmt: skip
        if expected is None:  # an operator's act: the change and its audit in one step
            [moved] = await self._script([("endpoint_move", params)], audit)
        else:  # a worker's compare-and-swap: only the one that moved it audits it
            [moved] = await self._script([("endpoint_move", params)])
            if moved:
                await self.audit_append(audit)
        return await self.endpoint_get(endpoint_id) if moved else None

    async def tenant_events_get(self, tenant: str) -> TenantEvents | None:
        rows = await self._fetch("tenant_events_get", {"tenant": tenant})
        return _tenant_events(self.codec, rows[0]) if rows else None

    async def tenant_events_list(self) -> list[TenantEvents]:
        return [_tenant_events(self.codec, r) for r in await self._fetch("tenant_events_list", {})]

    async def tenant_events_set(
        self, tenant: str, url: str | None, now: datetime, audit: AuditEntry
    ) -> None:
        params = {"tenant": tenant, "url": url, "now": self.codec.write_time(now)}
        await self._script([("tenant_events_set", params)], audit)

    async def tenant_events_dead_seen(
        self, tenant: str, expected: datetime | None, until: datetime
    ) -> bool:
        c = self.codec
        params = {"tenant": tenant, "expected": c.param(expected), "until": c.write_time(until)}
        return bool(await self._fetch("tenant_events_dead_seen", params))
