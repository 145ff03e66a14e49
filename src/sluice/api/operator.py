"""Operator endpoints: what the CLI does, over HTTP, through the same ``sluice.ops``.

Every act is audited with the key's name as the actor (``api:<name>``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from sluice import ops
from sluice.api.auth import Operator
from sluice.api.problems import Problem
from sluice.api.requests import FILED, gated
from sluice.api.schemas import PROBLEMS, AuditOut, AuditPage, Text
from sluice.flow.controls import Mode, Scope
from sluice.ops import audit, inbox, incidents
from sluice.ops.breakers import breakers_list
from sluice.ops.listings import status_view
from sluice.ops.render import jsonable
from sluice.ops.requests import message_args, scope_args
from sluice.store.base import MessageFilter

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["operator"], responses=PROBLEMS)

_Name = Annotated[Text | None, Query(min_length=1, max_length=128)]


def _as_dict(result: Any) -> Any:
    return result.as_dict()


class ScopeIn(BaseModel):
    """A scope: any combination of tenant, channel, provider and action (none: all).

    Numbers and switches in operator bodies are strict, as in ``MessageIn``: ``"5"`` is
    not a limit and ``1`` is not ``true``.
    """

    model_config = ConfigDict(extra="forbid")

    tenant: Text | None = Field(None, min_length=1, max_length=128)
    channel: Text | None = Field(None, min_length=1, max_length=64)
    provider: Text | None = Field(None, min_length=1, max_length=64)
    action: Text | None = Field(None, min_length=1, max_length=128)

    def scope(self) -> Scope:
        return Scope.of(self.tenant, self.channel, self.provider, self.action)


class Selection(ScopeIn):
    """Which messages an act applies to (all fields optional: together they narrow)."""

    error_code: Text | None = Field(None, min_length=1, max_length=64)
    since: AwareDatetime | None = None
    limit: int | None = Field(None, ge=1, le=100_000, strict=True)
    dry_run: bool = Field(False, strict=True)
    reason: Text | None = Field(None, max_length=1000)

    def filter(self, contains: str | None = None) -> MessageFilter:
        return MessageFilter(
            tenant=self.tenant, channel=self.channel, provider=self.provider,
            action=self.action, error_code=self.error_code,
            since=self.since, limit=self.limit, reason=contains,
        )  # fmt: skip


class HeldSelection(Selection):
    ids: list[Text] | None = Field(None, min_length=1, max_length=10_000)
    #: Text the hold reason contains.
    contains: Text | None = Field(None, min_length=1, max_length=200)


class ControlIn(ScopeIn):
    mode: Mode
    reason: Text = Field(min_length=1, max_length=1000)
    #: Seconds until the control reverts by itself.
    expires_in: float | None = Field(None, gt=0, le=366 * 86400, strict=True)
    #: Return only once every live worker applied it (or ``timeout`` passed).
    wait: bool = Field(True, strict=True)
    timeout: float = Field(10.0, gt=0, le=60, strict=True)


class ControlClearIn(ScopeIn):
    reason: Text = Field(min_length=1, max_length=1000)
    #: Put the messages this control held back in the queue.
    release: bool = Field(True, strict=True)
    wait: bool = Field(True, strict=True)
    timeout: float = Field(10.0, gt=0, le=60, strict=True)


class ReasonIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Text = Field(min_length=1, max_length=1000)


class InboxRetryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: Dead events to retry; all dead events when left out.
    ids: list[Annotated[int, Field(ge=1, lt=2**63, strict=True)]] | None = Field(
        None, min_length=1, max_length=10_000
    )
    reason: Text | None = Field(None, max_length=1000)


@router.get("/status")
async def status(
    who: Operator,
    request: Request,
    by: Literal["tenant", "provider", "action", "channel"] | None = None,
) -> Any:
    """Counts by status, oldest ready age (by ``run_at`` and by creation), dead letters,
    workers (with host and pid), held messages by reason, controls, inbox; with ``by``
    the counts per status of each tenant, provider, action or channel."""
    state = request.app.state
    async with state.store.snapshot():  # every figure as of one moment
        report = await ops.status(state.store, state.clock)
        view = await status_view(state.store, by, state.clock)
        controls = await ops.control_list(state.store, state.clock)
    return {**jsonable(report), **jsonable(view), "controls": [c.as_dict() for c in controls]}


@router.get("/dlq")
async def dlq_list(
    who: Operator,
    request: Request,
    tenant: _Name = None,
    channel: _Name = None,
    provider: _Name = None,
    action: _Name = None,
    error_code: _Name = None,
    since: AwareDatetime | None = None,
) -> Any:
    """Dead letters grouped by channel and error code."""
    flt = MessageFilter(
        tenant=tenant, channel=channel, provider=provider, action=action,
        error_code=error_code, since=since,
    )  # fmt: skip
    return jsonable(await ops.dlq_list(request.app.state.store, flt))


class DlqSelection(Selection):
    #: Dead messages by id instead of a filter (those still dead move).
    ids: list[Text] | None = Field(None, min_length=1, max_length=10_000)


@router.post("/dlq/{verb}", responses=FILED)
async def dlq_act(
    verb: Literal["retry", "cancel"], body: DlqSelection, who: Operator, request: Request
) -> Any:
    """Replay (``retry``) or give up on (``cancel``) the dead letters selected (by
    filter, or by ``ids``)."""
    args = message_args(body.filter(), body.ids, dry_run=body.dry_run)
    return await gated(request, who, f"dlq.{verb}", args, body.reason, _as_dict)


@router.get("/held")
async def held_list(
    who: Operator,
    request: Request,
    tenant: _Name = None,
    channel: _Name = None,
    provider: _Name = None,
    action: _Name = None,
    contains: _Name = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Any:
    """Messages held by controls, approval, scopes or re-authorisation."""
    flt = MessageFilter(
        tenant=tenant, channel=channel, provider=provider, action=action,
        reason=contains, limit=limit,
    )  # fmt: skip
    return jsonable(await ops.held_list(request.app.state.store, flt))


@router.post("/held/{verb}", responses=FILED)
async def held_act(
    verb: Literal["approve", "release", "cancel"],
    body: HeldSelection,
    who: Operator,
    request: Request,
) -> Any:
    """Approve, release or cancel held messages, by ids or by selection."""
    args = message_args(body.filter(body.contains), body.ids, body.dry_run)
    return await gated(request, who, f"held.{verb}", args, body.reason, _as_dict)


@router.get("/controls")
async def controls_list(who: Operator, request: Request) -> Any:
    state = request.app.state
    return [c.as_dict() for c in await ops.control_list(state.store, state.clock)]


@router.post("/controls", responses=FILED)
async def controls_set(body: ControlIn, who: Operator, request: Request) -> Any:
    """Set a scope's mode (kill, pause, shadow, approval, live); with ``wait``, answer
    once every live worker has applied it — the ``ack`` names any that did not."""
    args = {"scope": scope_args(body.scope()), "mode": body.mode.value,
            "expires_in": body.expires_in, "wait": body.wait, "timeout": body.timeout}  # fmt: skip
    return await gated(request, who, "control.set", args, body.reason, _as_dict)


@router.post("/controls/clear", responses=FILED)
async def controls_clear(body: ControlClearIn, who: Operator, request: Request) -> Any:
    """Remove a scope's control (``sluice resume``), releasing what it held."""
    args = {"scope": scope_args(body.scope()), "release": body.release, "wait": body.wait,
            "timeout": body.timeout}  # fmt: skip
    return await gated(request, who, "resume", args, body.reason, _as_dict)


@router.get("/breakers")
async def breakers(who: Operator, request: Request) -> Any:
    state = request.app.state
    return jsonable(await breakers_list(state.store, state.settings, state.clock.now()))


@router.post("/breakers/{key}/{verb}", responses=FILED)
async def breaker_act(
    key: Annotated[Text, Field(min_length=1, max_length=300)],
    verb: Literal["open", "close", "reset"],
    body: ReasonIn,
    who: Operator,
    request: Request,
) -> Any:
    """Force a breaker open or closed until reset, or reset it to automatic."""
    if verb == "reset":
        return await gated(request, who, "breaker.reset", {"key": key}, body.reason, jsonable)
    args = {"key": key, "state": "open" if verb == "open" else "closed"}
    return await gated(request, who, "breaker.force", args, body.reason, jsonable)


@router.get("/connections")
async def connections(
    who: Operator, request: Request, tenant: _Name = None, provider: _Name = None
) -> Any:
    """Connections with their state and scopes; secrets are never returned."""
    rows = await request.app.state.store.connection_list(tenant, provider)
    return [c.public() for c in rows]


@router.get("/inbox")
async def inbox_list(
    who: Operator,
    request: Request,
    state: Literal["pending", "done", "dead"] | None = None,
    provider: _Name = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Any:
    """Provider events taken in by ingress, newest first (``state=dead``: what the
    projector gave up on, with the reason)."""
    return jsonable(await inbox.inbox_list(request.app.state.store, state, provider, limit))


@router.post("/inbox/retry", responses=FILED)
async def inbox_retry(body: InboxRetryIn, who: Operator, request: Request) -> Any:
    """Put dead inbox events back to the projector (all of them, or ``ids``)."""
    return await gated(request, who, "inbox.retry", {"ids": body.ids}, body.reason,
                       lambda moved: {"requeued": len(moved), "ids": moved})  # fmt: skip


class LimitIn(BaseModel):
    """A limit as ``sluice limits set`` takes it: ``kind`` and scope, plus the fields of
    that kind (rate/burst, limit/window, max/window/cooldown, max for concurrency)."""

    model_config = ConfigDict(extra="allow")

    @model_validator(mode="after")
    def _no_nul(self) -> LimitIn:
        for name, value in (self.model_extra or {}).items():
            if isinstance(value, str) and "\x00" in value:
                raise ValueError(f"{name}: must not contain NUL characters")
        return self

    kind: Literal["rate", "quota", "recipient", "action", "concurrency"]
    reason: Text = Field(min_length=1, max_length=1000)


class LimitClearIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["rate", "quota", "recipient", "action", "concurrency"]
    tenant: Text = Field("", max_length=128)
    provider: Text = Field("", max_length=64)
    action: Text = Field("", max_length=128)
    reason: Text = Field(min_length=1, max_length=1000)


@router.get("/limits")
async def limits_list(who: Operator, request: Request) -> Any:
    """Every limit in force (sluice.toml and run time); quotas with their use."""
    from sluice.flow.limits import configured_flow

    state = request.app.state
    configured, _ = configured_flow()
    views = await ops.limit_list(state.store, configured, state.settings, state.clock)
    return [v.as_dict() for v in views]


@router.post("/limits", responses=FILED)
async def limits_set(body: LimitIn, who: Operator, request: Request) -> Any:
    """Set a limit at run time (every worker applies it on its next control poll)."""
    raw = body.model_dump(exclude={"reason"})
    return await gated(request, who, "limit.set", {"limit": raw}, body.reason, _as_dict)


@router.post("/limits/clear", responses=FILED)
async def limits_clear(body: LimitClearIn, who: Operator, request: Request) -> Any:
    """Remove a run-time limit (limits in sluice.toml stay)."""
    args = body.model_dump(exclude={"reason"})
    return await gated(request, who, "limit.clear", args, body.reason, lambda done: done)


# -- incidents ---------------------------------------------------------------------------


class IncidentActIn(BaseModel):
    """Why (for ``ack`` and ``resolve``), or the note (for ``note``)."""

    model_config = ConfigDict(extra="forbid")
    text: Text = Field(min_length=1, max_length=2000)


@router.get("/incidents")
async def incidents_list(
    who: Operator,
    request: Request,
    state: Literal["active", "open", "acknowledged", "resolved", "all"] = "active",
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> Any:
    """Incidents the built-in evaluator opened, newest first."""
    return jsonable(await incidents.incident_list(request.app.state.store, state, limit))


@router.get("/incidents/{incident_id}")
async def incidents_show(incident_id: str, who: Operator, request: Request) -> Any:
    """One incident with its timeline."""
    return jsonable(await incidents.incident_show(request.app.state.store, incident_id))


@router.post("/incidents/{incident_id}/{act}")
async def incidents_act(
    incident_id: str,
    act: Literal["ack", "resolve", "note"],
    body: IncidentActIn,
    who: Operator,
    request: Request,
) -> Any:
    """Acknowledge, resolve or add a note (audited with the key's name as the actor)."""
    state = request.app.state
    done = await incidents.incident_act(
        state.store, incident_id, act, actor=who.actor, text=body.text, clock=state.clock
    )
    return jsonable(done)


@router.get("/audit", response_model=AuditPage)
async def audit_list(
    who: Operator,
    request: Request,
    since: AwareDatetime | None = None,
    until: AwareDatetime | None = None,
    actor: Annotated[Text | None, Query(min_length=1, max_length=300)] = None,
    action: Annotated[
        Text | None,
        Query(min_length=1, max_length=300, description="A prefix: control., tenancy.…"),
    ] = None,
    tenant: _Name = None,
    channel: _Name = None,
    provider: _Name = None,
    action_name: Annotated[
        Text | None,
        Query(min_length=1, max_length=128, description="A message action type in scope"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=audit.MAX_LIST)] = 50,
    cursor: Annotated[Text | None, Query(max_length=20)] = None,
) -> AuditPage:
    """The audit log, newest first, a page at a time (``next_cursor`` fetches the next).

    ``since`` is inclusive, ``until`` exclusive; ``tenant`` matches the entries that
    name the tenant (controls, limits, connections, breakers, bulk acts, tenancy
    violations on either side)."""
    before = None
    if cursor is not None:
        if not cursor.isdigit() or not 0 < int(cursor) < 2**63:
            raise Problem(
                422, "cursor: is not a cursor this API returned", field="cursor",
                kind="validation",
            )  # fmt: skip
        before = int(cursor)
    flt = audit.audit_filter(
        since=since, until=until, actor=actor, action=action, tenant=tenant, channel=channel,
        provider=provider, scope_action=action_name, before_id=before,
    )  # fmt: skip
    rows, older = await audit.audit_page(request.app.state.store, flt, limit)
    return AuditPage(
        items=[AuditOut.of(e) for e in rows], next_cursor=None if older is None else str(older)
    )
