"""What both stores do the same way above their connections: the store methods that are
one named query and a row mapping, or that are made of the store's other methods.

A driver (``PostgresStore``, ``SqliteStore``) subclasses ``SqlDriver`` and supplies
its ``codec``, ``_fetch`` (run one named query, give back its rows), ``_move`` (a bulk
status change with its audit entry, in one transaction) and ``wake``; everything that
depends on how it holds a connection or a transaction stays in the driver.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextvars import ContextVar
from datetime import datetime, timedelta
from typing import Any

from sluice.connections import Connection
from sluice.errors import NotFound, ValidationError
from sluice.flow.controls import Control
from sluice.model import Attempt, Message, first_message_id
from sluice.store import _params, _retention, _rows
from sluice.store._annotations import AnnotationStore  # issue 15
from sluice.store._canaries import CanaryMethods
from sluice.store._console import ConsoleSessionStore  # issue 16
from sluice.store._endpoints import EndpointMethods
from sluice.store._requests import RequestStore
from sluice.store._verify import VerifyMethods
from sluice.store.base import (
    BREAKDOWN_BY,
    Activity,
    ApiKey,
    AttemptFilter,
    AuditEntry,
    AuditFilter,
    Breakdown,
    BreakerInfo,
    DlqGroup,
    Firing,
    InboxItem,
    Incident,
    LimitRow,
    MessageFilter,
    PurgeRule,
    Receipt,
    Throttle,
    WorkerInfo,
)

__all__ = ["SqlDriver"]

#: The labels ``tally`` counts each table's rows by, in the order its query gives them.
_TALLY: dict[str, tuple[str, ...]] = {
    "attempts": ("tenant", "channel", "provider", "action", "outcome", "error_code"),
    "inbox": ("provider", "kind", "state"),
    "audit": ("action", "target", "tenant"),  # tenant: the one its detail names
}

#: How far a producer's clock may run behind the database's: a message's id is made by
#: the producer, its created_at by the server. A filter on created_at seeks the primary
#: key to the first id this much before its start (then checks created_at exactly).
ID_SKEW = timedelta(minutes=5)


#: The series of ``activity`` each attempt outcome counts in (shadowed: in none).
_ACTIVITY_OUTCOMES = {
    "sent": "sent", "failed": "failed", "lease_expired": "failed",
    "throttled": "deferred", "deferred": "deferred",
}  # fmt: skip


#: The snapshots held (``SqlDriver.snapshot``), each as the store, the task, the connection.
_SNAPSHOTS: ContextVar[tuple[tuple[object, object, Any], ...]] = ContextVar(
    "sluice_store_snapshots", default=()
)


# issue 14: endpoints, tenants' events, requests; issue 15: annotations, canaries, verify;
# issue 16: console sessions
class SqlDriver(
    EndpointMethods, RequestStore, AnnotationStore, CanaryMethods, VerifyMethods,
    ConsoleSessionStore,
):  # fmt: skip
    """The dialect-independent part of a SQL store, with its method mixins (endpoints
    and tenants' events, two-person requests, annotations, canaries, post-send
    verification), all written over the primitives ``_hooks.DriverHooks`` declares."""

    # -- one moment ----------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def snapshot(self) -> AsyncIterator[None]:
        # Every read of this task on this store, until the block ends, goes to one
        # connection in one read-only transaction (``_read_transaction``). Tasks the block
        # starts read on their own connections: one connection must not interleave two
        # tasks' statements and transactions. A snapshot inside a snapshot is the same one.
        if self._pinned() is not None:
            yield
            return
        async with self._read_transaction() as conn:
            token = _SNAPSHOTS.set((*_SNAPSHOTS.get(), (self, asyncio.current_task(), conn)))
            try:
                yield
            finally:
                _SNAPSHOTS.reset(token)

    def _pinned(self) -> Any | None:
        """The connection of the snapshot the current task holds on this store, if any."""
        held = _SNAPSHOTS.get()
        if not held:  # every statement asks: nothing more to do unless a snapshot is open
            return None
        task = asyncio.current_task()
        for store, holder, conn in held:
            if store is self and holder is task:
                return conn
        return None

    # -- audit -------------------------------------------------------------------

    async def audit_list(
        self, limit: int = 100, flt: AuditFilter | None = None
    ) -> list[AuditEntry]:
        c = self.codec
        if flt is None:
            rows = await self._fetch("audit_list", {"limit": limit})
        else:
            params = {**flt.params(), "since": c.param(flt.since), "until": c.param(flt.until)}
            rows = await self._fetch("audit_select", {**params, "limit": limit})
        return [_rows.audit_entry(c, r) for r in rows]

    async def audit_walk(self, after_id: int, limit: int) -> list[AuditEntry]:
        rows = await self._fetch("audit_walk", {"after_id": after_id, "limit": limit})
        return [_rows.audit_entry(self.codec, r) for r in rows]

    # -- alert windows -----------------------------------------------------------

    async def tally(
        self, table: str, since: datetime, until: datetime
    ) -> list[tuple[dict[str, str], int]]:
        labels = _TALLY.get(table)
        if labels is None:
            raise ValidationError("table", f"{table!r} is not one of {', '.join(_TALLY)}")
        c = self.codec
        window = {"since": c.write_time(since), "until": c.write_time(until)}
        rows = await self._fetch(f"tally_{table}", window)
        return [(dict(zip(labels, r[:-1], strict=True)), int(r[-1])) for r in rows]

    async def sent_latencies(
        self, since: datetime, until: datetime, limit: int = 20_000
    ) -> list[tuple[dict[str, str], float]]:
        c = self.codec
        params = {"since": c.write_time(since), "until": c.write_time(until), "limit": limit}
        rows = await self._fetch("sent_latencies", params)
        return [({"tenant": t, "channel": ch, "provider": p}, float(s)) for t, ch, p, s in rows]

    async def activity(self, now: datetime, minutes: int = 60) -> Activity:
        if isinstance(minutes, bool) or not isinstance(minutes, int) or not 1 <= minutes <= 1440:
            raise ValidationError(
                "minutes", f"must be a whole number from 1 to 1440, not {minutes!r}"
            )
        params = _params.activity(self.codec, now, minutes)
        series = {name: [0] * minutes for name in ("enqueued", *_ACTIVITY_OUTCOMES.values())}
        for ago, n in await self._fetch("activity_enqueued", params):
            series["enqueued"][minutes - 1 - int(ago)] += int(n)
        for ago, outcome, n in await self._fetch("activity_attempts", params):
            name = _ACTIVITY_OUTCOMES.get(outcome)
            if name is not None:
                series[name][minutes - 1 - int(ago)] += int(n)
        return Activity(minutes=minutes, **series)

    # -- incidents ---------------------------------------------------------------

    async def incident_fire(self, firing: Firing, now: datetime) -> tuple[Incident, bool]:
        c = self.codec
        new_id = str(uuid.uuid4())
        key = {"rule": firing.rule, "scope_key": firing.scope_key}
        at = c.write_time(now)
        detail = json.dumps({"value": firing.value})
        rows = await self._script(
            [
                (
                    "incident_peak_event",
                    {**key, "now": at, "value": firing.value, "detail": detail},
                ),
                ("incident_touch", {**key, "now": at, "value": firing.value}),
                (
                    "incident_insert",
                    {
                        **key,
                        "id": new_id,
                        "scope": json.dumps(firing.scope),
                        "severity": firing.severity,
                        "types": json.dumps(list(firing.types)),
                        "runbook": firing.runbook,
                        "summary": firing.summary,
                        "value": firing.value,
                        "now": at,
                    },
                ),
                ("incident_fired_event", {"id": new_id, "now": at, "detail": detail}),
            ]
        )
        opened = bool(rows[2])
        incident_id = rows[2][0][0] if opened else rows[1][0][0]
        return await self.incident_get(incident_id), opened

    async def incident_clear(
        self, rule: str, firing: Sequence[str], now: datetime, clear_for: float
    ) -> list[str]:
        c = self.codec
        at, cutoff = c.write_time(now), c.write_time(now - timedelta(seconds=clear_for))
        detail = json.dumps({"clear_for_seconds": clear_for})
        rule_at = {"rule": rule, "now": at}
        rows = await self._script(
            [
                ("incident_clearing", {**rule_at, "firing": c.write_list(list(firing))}),
                ("incident_resolved_event", {**rule_at, "cutoff": cutoff, "detail": detail}),
                ("incident_resolve_clear", {**rule_at, "cutoff": cutoff}),
            ]
        )
        return [r[0] for r in rows[2]]

    async def incident_escalate(self, now: datetime, after: float) -> list[str]:
        c = self.codec
        window = {"now": c.write_time(now), "cutoff": c.write_time(now - timedelta(seconds=after))}
        detail = json.dumps({"unacknowledged_for_seconds": after})
        rows = await self._script(
            [("incident_escalated_event", {**window, "detail": detail}),
             ("incident_escalate", window)]
        )  # fmt: skip
        return [r[0] for r in rows[1]]

    async def incident_list(self, state: str = "active", limit: int = 100) -> list[Incident]:
        if state not in ("", "active", "open", "acknowledged", "resolved"):
            raise ValidationError(
                "state", f"{state!r} is not one of active, open, acknowledged, resolved"
            )
        rows = await self._fetch("incident_list", {"state": state, "limit": limit})
        return [_rows.incident(self.codec, r) for r in rows]

    async def incident_get(self, incident_id: str) -> Incident:
        iid = _params.uuid_or_none(incident_id)
        rows = await self._fetch("incident_get", {"id": iid}) if iid else []
        if not rows:
            raise NotFound(f"no incident with id {incident_id!r}")
        events = await self._fetch("incident_events", {"id": iid})
        incident = _rows.incident(self.codec, rows[0])
        return dataclasses.replace(
            incident, events=[_rows.incident_event(self.codec, e) for e in events]
        )

    async def incident_act(
        self, incident_id: str, act: str, *, actor: str, text: str, now: datetime
    ) -> Incident:
        current = await self.incident_get(incident_id)
        c = self.codec
        at = c.write_time(now)
        steps: list[tuple[str, dict[str, Any]]] = []
        if act == "ack":
            if current.state != "open":
                raise ValidationError(
                    "incident", f"is {current.state}; only an open one is acknowledged"
                )
            steps.append(("incident_ack", {"id": current.id, "now": at, "actor": actor}))
            kind = "acknowledged"
        elif act == "resolve":
            if current.state == "resolved":
                raise ValidationError("incident", "is resolved already")
            steps.append(("incident_resolve", {"id": current.id, "now": at, "actor": actor}))
            kind = "resolved"
        elif act == "note":
            kind = "note"
        else:
            raise ValidationError("act", f"{act!r} is not one of ack, resolve, note")
        steps.append(
            ("incident_event", {"id": current.id, "now": at, "kind": kind, "actor": actor,
                                "detail": json.dumps({"text": text})})
        )  # fmt: skip
        audit = AuditEntry(
            at=now, actor=actor, action=f"incident.{act}", target=current.id, reason=text,
            detail={"rule": current.rule, "scope": current.scope, "state": current.state},
        )  # fmt: skip
        rows = await self._script(steps, audit)
        if act != "note" and not rows[0]:  # changed under us by the evaluator or another act
            raise ValidationError("incident", "changed meanwhile; look at it again")
        return await self.incident_get(current.id)

    async def incident_log(
        self, incident_id: str, kind: str, actor: str, detail: Mapping[str, Any], now: datetime
    ) -> None:
        params = {"id": incident_id, "now": self.codec.write_time(now), "kind": kind,
                  "actor": actor, "detail": json.dumps(dict(detail))}  # fmt: skip
        await self._script([("incident_event", params)])

    async def incident_unnotified(self) -> list[Incident]:
        return [_rows.incident(self.codec, r) for r in await self._fetch("incident_unnotified", {})]

    async def incident_notified(self, incident_id: str, transition: str, now: datetime) -> None:
        at = self.codec.write_time(now)
        await self._script(
            [
                ("incident_notified", {"id": incident_id, "transition": transition}),
                ("incident_event", {"id": incident_id, "now": at, "kind": "notified",
                                    "actor": "evaluator",
                                    "detail": json.dumps({"transition": transition})}),
            ]
        )  # fmt: skip

    # -- messages ----------------------------------------------------------------

    async def message_select(self, status: str, flt: MessageFilter) -> list[str]:
        params = _params.message_select(self.codec, status, flt)
        return [r[0] for r in await self._fetch("message_select_by_status", params)]

    async def message_list(
        self, flt: MessageFilter, status: str | None, before_id: str | None, limit: int
    ) -> list[Message]:
        params = _params.message_list(self.codec, flt, status, before_id, limit)
        return [
            _rows.full_message(self.codec, r) for r in await self._fetch("message_list", params)
        ]

    async def message_requeue(
        self, ids: Sequence[str], from_status: str, now: datetime, audit: AuditEntry
    ) -> list[str]:
        return await self._move("message_requeue", ids, from_status, now, audit)

    async def message_cancel(
        self, ids: Sequence[str], from_status: str, now: datetime, audit: AuditEntry
    ) -> list[str]:
        return await self._move("message_cancel", ids, from_status, now, audit)

    async def message_approve(
        self, ids: Sequence[str], from_status: str, now: datetime, audit: AuditEntry
    ) -> list[str]:
        moved = await self._move("message_approve", ids, from_status, now, audit)
        self.wake()
        return moved

    async def message_waiting(
        self, flt: MessageFilter, now: datetime, ids: Sequence[str] | None = None
    ) -> list[str]:
        c = self.codec
        wanted = None if ids is None else [i for i in map(_params.uuid_or_none, ids) if i]
        params = {
            **_params.message_select(c, "queued", flt),
            "now": c.write_time(now),
            "ids": None if wanted is None else c.write_list(wanted),
        }
        return [r[0] for r in await self._fetch("message_select_waiting", params)]

    async def message_retry_now(
        self, ids: Sequence[str], now: datetime, audit: AuditEntry
    ) -> list[str]:
        wanted = [i for i in map(_params.uuid_or_none, ids) if i]
        moved = await self._move("message_retry_now", wanted, "queued", now, audit)
        self.wake()
        return moved

    async def message_expire_past(
        self, now: datetime, limit: int = 1000
    ) -> list[tuple[str, str, str, str]]:
        reason = "expired: not sent by its expiry; never sent late"
        params = {"now": self.codec.write_time(now), "limit": limit, "reason": reason}
        return [tuple(r) for r in await self._fetch("message_expire_past", params)]

    async def dlq_groups(self, flt: MessageFilter) -> list[DlqGroup]:
        rows = await self._fetch(
            "dlq_groups",
            {
                "tenant": flt.tenant,
                "channel": flt.channel,
                "provider": flt.provider,
                "action": flt.action,
                "error_code": flt.error_code,
                "since": self.codec.param(flt.since),
            },
        )
        return [_rows.dlq_group(self.codec, r) for r in rows]

    # -- flow --------------------------------------------------------------------

    async def flow_version(self) -> int:
        (version,) = (await self._fetch("flow_version", {}))[0]
        return int(version)

    async def throttle_list(self, now: datetime) -> list[Throttle]:
        rows = await self._fetch("throttle_list", {"now": self.codec.write_time(now)})
        return [_rows.throttle(self.codec, r) for r in rows]

    async def limit_list(self) -> list[LimitRow]:
        return [_rows.limit_row(self.codec, r) for r in await self._fetch("limit_select", {})]

    async def control_list(self) -> list[Control]:
        return [_rows.control(self.codec, r) for r in await self._fetch("control_select", {})]

    async def breaker_list(self) -> list[BreakerInfo]:
        return [_rows.breaker(self.codec, r) for r in await self._fetch("breaker_list", {})]

    async def worker_list(self, since: datetime) -> list[WorkerInfo]:
        rows = await self._fetch("worker_list", {"since": self.codec.write_time(since)})
        return [_rows.worker(self.codec, r) for r in rows]

    # -- connections -------------------------------------------------------------

    async def connection_list(
        self, tenant: str | None = None, provider: str | None = None
    ) -> list[Connection]:
        rows = await self._fetch("connection_select", {"tenant": tenant, "provider": provider})
        return [_rows.connection(self.codec, r) for r in rows]

    async def connection_get(self, tenant: str, provider: str) -> Connection:
        found = await self.connection_list(tenant, provider)
        if not found:
            raise NotFound(f"tenant {tenant!r} has no {provider} connection")
        return found[0]

    # -- the HTTP API and ingress -------------------------------------------------

    async def api_key_get(self, key_id: str) -> ApiKey:
        rows = await self._fetch("api_key_get", {"id": key_id})
        if not rows:
            raise NotFound(f"no API key {key_id!r}")
        return _rows.api_key(self.codec, rows[0])

    async def api_key_list(self) -> list[ApiKey]:
        return [_rows.api_key(self.codec, r) for r in await self._fetch("api_key_list", {})]

    async def inbox_list(
        self, state: str | None, provider: str | None, limit: int, before_id: int | None = None
    ) -> list[InboxItem]:
        params = {"state": state, "provider": provider, "limit": limit, "before_id": before_id}
        return [_rows.inbox_item(self.codec, r) for r in await self._fetch("inbox_list", params)]

    async def inbox_counts(self) -> dict[str, int]:
        return {s: n for s, n in await self._fetch("inbox_counts", {})}

    async def receipt_list(self, message_id: str) -> list[Receipt]:
        rows = await self._fetch("receipt_list", {"id": _params.uuid_text(message_id)})
        return [_rows.receipt(self.codec, r) for r in rows]

    # -- listings (issue 14) -------------------------------------------------------

    async def attempt_search(
        self, flt: AttemptFilter, limit: int
    ) -> tuple[list[Attempt], int | None]:
        mid = None
        if flt.message_id is not None:
            mid = _params.uuid_or_none(flt.message_id)
            if mid is None:
                raise ValidationError("message_id", f"{flt.message_id!r} is not a message id")
        c = self.codec
        params = {
            **dataclasses.asdict(flt),
            "message_id": mid,
            "since": c.param(flt.since),
            "until": c.param(flt.until),
            "limit": limit + 1,
        }
        rows = await self._fetch("attempt_search", params)
        page = [_rows.attempt(c, r) for r in rows[:limit]]
        return page, (int(rows[limit - 1][14]) if len(rows) > limit else None)

    async def message_breakdown(
        self, by: str, flt: MessageFilter, status: str | None, now: datetime
    ) -> list[Breakdown]:
        if by not in BREAKDOWN_BY:
            raise ValidationError("by", f"{by!r} is not one of {', '.join(BREAKDOWN_BY[1:])}")
        c = self.codec
        params = {
            "by": by, "status": status, "tenant": flt.tenant, "channel": flt.channel,
            "provider": flt.provider, "action": flt.action, "since": c.param(flt.since),
            "until": c.param(flt.until), "now": c.write_time(now),
            "since_id": None if flt.since is None else first_message_id(flt.since - ID_SKEW),
        }  # fmt: skip
        return [
            Breakdown(
                group=g,
                status=st,
                count=int(n),
                errored=int(e),
                oldest_created_at=c.time(oc),
                oldest_updated_at=c.time(ou),
                oldest_ready_at=c.time(orr),
            )
            for g, st, n, e, oc, ou, orr in await self._fetch("message_breakdown", params)
        ]

    # -- retention (issue 14) ----------------------------------------------------

    async def message_purge_count(self, rule: PurgeRule) -> dict[str, int]:
        out = {}
        for params in _retention.rule_params(self.codec, rule):
            (n,) = (await self._fetch("purge_count", params))[0]
            if n:
                out[params["status"]] = int(n)
        return out
