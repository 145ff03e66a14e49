"""The two-person rule's requests in a SQL store (``sluice_requests``): the part of
:class:`sluice.store._driver.SqlDriver` that files, lists and decides them, the same for
both dialects."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sluice.errors import Conflict, NotFound, ValidationError
from sluice.store._codec import Codec
from sluice.store._hooks import DriverHooks
from sluice.store.base import AuditEntry, OpRequest

__all__ = ["RequestStore"]

STATES = ("pending", "approved", "denied", "expired")


def _request(c: Codec, r: Sequence[Any]) -> OpRequest:
    return OpRequest(
        id=r[0],
        act=r[1],
        args=c.read_json(r[2]),
        scope=r[3],
        tenant=r[4],
        affected=r[5],
        requester=r[6],
        reason=r[7],
        created_at=c.read_time(r[8]),
        expires_at=c.read_time(r[9]),
        state=r[10],
        decided_by=r[11],
        decided_at=c.time(r[12]),
        decision=r[13],
        result=None if r[14] is None else c.read_json(r[14]),
    )


class RequestStore(DriverHooks):
    """Store methods of the two-person rule, over the driver's named queries."""

    async def request_file(self, req: OpRequest, audit: AuditEntry) -> OpRequest:
        c = self.codec
        params = {
            "id": req.id,
            "act": req.act,
            "args": json.dumps(req.args),
            "scope": req.scope,
            "tenant": req.tenant,
            "affected": req.affected,
            "requester": req.requester,
            "reason": req.reason,
            "now": c.write_time(req.created_at),
            "expires_at": c.write_time(req.expires_at),
        }
        rows = await self._script([("request_insert", params)], audit, audit_if=0)
        if not rows[0]:
            raise Conflict(f"a request with id {req.id!r} exists already")
        return await self.request_get(req.id)

    async def request_get(self, request_id: str) -> OpRequest:
        rows = await self._fetch("request_get", {"id": request_id})
        if not rows:
            raise NotFound(f"no request with id {request_id!r}")
        return _request(self.codec, rows[0])

    async def request_list(
        self, state: str | None, limit: int, before: str | None = None
    ) -> list[OpRequest]:
        if state is not None and state not in STATES:
            raise ValidationError("state", f"{state!r} is not one of {', '.join(STATES)}")
        params = {"state": state, "limit": limit, "before": before}
        return [_request(self.codec, r) for r in await self._fetch("request_list", params)]

    async def request_decide(
        self,
        request_id: str,
        state: str,
        *,
        actor: str,
        decision: str | None,
        now: datetime,
        audit: AuditEntry,
    ) -> bool:
        if state not in ("approved", "denied"):
            raise ValidationError("state", f"must be approved or denied, not {state!r}")
        params = {
            "id": request_id,
            "state": state,
            "actor": actor,
            "decision": decision,
            "now": self.codec.write_time(now),
        }
        rows = await self._script([("request_decide", params)], audit, audit_if=0)
        return bool(rows[0])

    async def request_result(self, request_id: str, result: Any) -> None:
        await self._script([("request_result", {"id": request_id, "result": json.dumps(result)})])

    async def request_expire(self, now: datetime) -> list[str]:
        rows = await self._script([("request_expire", {"now": self.codec.write_time(now)})])
        return [r[0] for r in rows[0]]
