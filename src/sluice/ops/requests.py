"""The two-person rule: acts a rule names wait for a second operator.

Every act the rule may hold back goes through :func:`perform`, the one choke point the
CLI and the HTTP API call: it checks the act's arguments, asks the rules in
``Settings.two_person`` (the language: :mod:`sluice.twoperson`) and either does the act
at once — returning what the act returns — or files a request (``sluice_requests``)
and returns :class:`Filed`. Nothing has changed then but the request and its audit row.

:func:`request_approve` does the recorded act with the recorded arguments, as the
approver, once another operator (a different actor) approves; :func:`request_deny`
closes it. Both are audited with both actors (``request.filed``, ``request.approved``,
``request.denied``); the act itself writes its own audit row too. A request not decided
within ``two_person_expiry`` seconds expires.

What the approver approves is what runs, never more: for an act that counts messages, the
dry run is done again at approval, and the act is bounded to the number the request
recorded (the oldest first, as every bulk act selects them); both numbers go in the
audit row and the result.

The approval is recorded (one conditional UPDATE: of two approvers at once, one wins)
before the act runs, so an act is never done twice; a request approved with no result
means the process stopped in between — the act's own audit row tells whether it ran.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sluice.clock import Clock, SystemClock
from sluice.config import Settings
from sluice.errors import Conflict, NotFound, SluiceError, ValidationError
from sluice.flow.breakers import parse_key
from sluice.flow.controls import Mode, Scope
from sluice.flow.limits import validate_runtime
from sluice.ops import (
    actions,
    apikeys,
    breakers,
    connections,
    controls,
    endpoints,
    inbox,
    limits,
    retention,
    suppressions,
    tenant_events,
    waiting,
)
from sluice.ops.actions import filter_dict, require_actor
from sluice.ops.render import jsonable
from sluice.store.base import AuditEntry, MessageFilter, OpRequest, PurgeRule, Store
from sluice.twoperson import ACTS, parse_rules

__all__ = [
    "MAX_LIST",
    "Decided",
    "Filed",
    "message_args",
    "perform",
    "request_approve",
    "request_deny",
    "request_get",
    "request_page",
    "scope_args",
]

#: The most requests one page lists.
MAX_LIST = 1000

_ID = re.compile(r"[0-9a-f]{1,64}")


@dataclass(frozen=True, slots=True)
class Filed:
    """An act a two-person rule held back: the request filed instead, and the rules
    that held."""

    request: OpRequest
    rules: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"filed": True, "rules": self.rules, "request": jsonable(self.request)}

    def summary(self) -> str:
        r = self.request
        return (
            f"request {r.id} filed: {r.act} waits for another operator "
            f"(rule {', '.join(self.rules)}); approve with: sluice requests approve {r.id} "
            f"(expires {r.expires_at.isoformat(timespec='seconds')})"
        )


@dataclass(frozen=True, slots=True)
class Decided:
    """A request after its decision, and (approved) what the act returned."""

    request: OpRequest
    result: Any = None

    def as_dict(self) -> dict[str, Any]:
        return {"request": jsonable(self.request), "result": jsonable(_plain(self.result))}


@dataclass(frozen=True, slots=True)
class _Ctx:
    actor: str
    reason: str | None
    clock: Clock
    settings: Settings


@dataclass(frozen=True, slots=True)
class _Act:
    #: Do it (also a dry run, for acts whose arguments say ``dry_run``).
    run: Callable[[Store, Mapping[str, Any], _Ctx], Awaitable[Any]]
    #: The tenant it is confined to ('' for global); raises on bad arguments.
    tenant: Callable[[Mapping[str, Any]], str]
    #: Check the arguments, changing nothing (an act that counts is checked by its dry run).
    check: Callable[[Store, Mapping[str, Any], _Ctx], Awaitable[None]] | None = None
    #: How many messages it would change (None: it counts nothing).
    count: Callable[[Store, Mapping[str, Any], _Ctx], Awaitable[int]] | None = None
    #: Containment with these arguments: never held back (control.set to killed, paused).
    containment: Callable[[Mapping[str, Any]], bool] = lambda a: False
    #: What the act's target is, looked up and added to the arguments before ``tenant``
    #: (an endpoint's tenant and URL): the request shows it and its scope is right.
    lookup: Callable[[Store, Mapping[str, Any]], Awaitable[Mapping[str, Any]]] | None = None
    #: Whether it would change nothing (an act that does not count): then it is done at
    #: once, as a counted act that affects nothing is.
    idle: Callable[[Store, Mapping[str, Any], _Ctx], Awaitable[bool]] | None = None


# -- the arguments of each act, as JSON --------------------------------------------------


def message_args(
    flt: MessageFilter, ids: list[str] | None = None, dry_run: bool = False
) -> dict[str, Any]:
    """The arguments of a bulk act on messages (``dlq.*``, ``held.*``)."""
    out: dict[str, Any] = {"filter": filter_dict(flt), "dry_run": dry_run}
    if ids is not None:
        out["ids"] = list(ids)
    return out


def purge_args(
    rule: PurgeRule, *, batch: int, export: str | None = None, dry_run: bool = False
) -> dict[str, Any]:
    """The arguments of ``purge``: the cut-off times fixed when it was asked for, so an
    approval later removes no more than the request counted (a message's last change
    only moves forward)."""
    return {
        "before": {s: t.isoformat() for s, t in rule.before.items()},
        "tenant": rule.tenant, "batch": batch, "export": export, "dry_run": dry_run,
    }  # fmt: skip


def scope_args(scope: Scope) -> dict[str, str]:
    """A control's scope as arguments."""
    return {k: getattr(scope, k) for k in ("tenant", "channel", "provider", "action")}


def _filter(args: Mapping[str, Any]) -> MessageFilter:
    raw = dict(args.get("filter") or {})
    since = raw.pop("since", None)
    return MessageFilter(**raw, since=datetime.fromisoformat(since) if since else None)


def _scope(args: Mapping[str, Any]) -> Scope:
    s = args.get("scope") or {}
    return Scope.of(
        s.get("tenant") or None,
        s.get("channel") or None,
        s.get("provider") or None,
        s.get("action") or None,
    )


async def _need_reason(store: Store, args: Mapping[str, Any], ctx: _Ctx) -> None:
    require_actor(ctx.actor, ctx.reason, need_reason=True)


# -- the acts -----------------------------------------------------------------------------


def _bulk(fn: Callable[..., Awaitable[actions.DlqAction]], by_ids: bool) -> _Act:
    async def run(store: Store, args: Mapping[str, Any], ctx: _Ctx) -> Any:
        # held acts take the ids as an argument, DLQ acts as a keyword (None: by filter)
        ids = [args.get("ids")] if by_ids else []
        named = {} if by_ids else {"ids": args.get("ids")}
        return await fn(
            store,
            _filter(args),
            *ids,
            **named,
            dry_run=bool(args.get("dry_run")),
            actor=ctx.actor,
            reason=ctx.reason,
            clock=ctx.clock,
        )

    async def count(store: Store, args: Mapping[str, Any], ctx: _Ctx) -> int:
        result = await run(store, {**args, "dry_run": True}, ctx)
        return int(result.matched)

    return _Act(run, lambda a: _filter(a).tenant or "", count=count)


async def _resume(store: Store, args: Mapping[str, Any], ctx: _Ctx) -> Any:
    return await controls.control_clear(
        store,
        _scope(args),
        actor=ctx.actor,
        reason=ctx.reason or "",
        release=bool(args.get("release", True)),
        wait=bool(args.get("wait", True)),
        timeout=float(args.get("timeout", 10.0)),
        clock=ctx.clock,
    )


async def _control_set(store: Store, args: Mapping[str, Any], ctx: _Ctx) -> Any:
    return await controls.control_set(
        store,
        _scope(args),
        str(args.get("mode")),
        actor=ctx.actor,
        reason=ctx.reason or "",
        expires_in=args.get("expires_in"),
        wait=bool(args.get("wait", True)),
        timeout=float(args.get("timeout", 10.0)),
        clock=ctx.clock,
    )


async def _check_control(store: Store, args: Mapping[str, Any], ctx: _Ctx) -> None:
    await _need_reason(store, args, ctx)
    _scope(args)
    if "mode" in args:
        Mode.parse(str(args["mode"]))


async def _limit_set(store: Store, args: Mapping[str, Any], ctx: _Ctx) -> Any:
    return await limits.limit_set(
        store, args["limit"], actor=ctx.actor, reason=ctx.reason or "", clock=ctx.clock
    )


async def _limit_clear(store: Store, args: Mapping[str, Any], ctx: _Ctx) -> Any:
    await limits.limit_clear(
        store,
        str(args["kind"]),
        tenant=args.get("tenant") or "",
        provider=args.get("provider") or "",
        action=args.get("action") or "",
        actor=ctx.actor,
        reason=ctx.reason or "",
        clock=ctx.clock,
    )
    return {"cleared": args["kind"]}


async def _breaker(store: Store, args: Mapping[str, Any], ctx: _Ctx) -> Any:
    now = ctx.clock.now()
    if args.get("state") is None:
        return await breakers.breaker_reset(
            store, str(args["key"]), actor=ctx.actor, reason=ctx.reason or "", now=now
        )
    return await breakers.breaker_force(
        store,
        str(args["key"]),
        str(args["state"]),
        actor=ctx.actor,
        reason=ctx.reason or "",
        now=now,
    )


async def _key_create(store: Store, args: Mapping[str, Any], ctx: _Ctx) -> Any:
    return await apikeys.api_key_create(
        store,
        str(args["name"]),
        str(args["role"]),
        args.get("tenant"),
        actor=ctx.actor,
        clock=ctx.clock,
    )


async def _key_revoke(store: Store, args: Mapping[str, Any], ctx: _Ctx) -> Any:
    return await apikeys.api_key_revoke(
        store, str(args["key_id"]), actor=ctx.actor, reason=ctx.reason, clock=ctx.clock
    )


async def _connection_revoke(store: Store, args: Mapping[str, Any], ctx: _Ctx) -> Any:
    return await connections.connection_revoke(
        store,
        tenant=str(args["tenant"]),
        provider=str(args["provider"]),
        actor=ctx.actor,
        reason=ctx.reason or "",
        clock=ctx.clock,
    )


async def _inbox_retry(store: Store, args: Mapping[str, Any], ctx: _Ctx) -> Any:
    ids = args.get("ids")
    return await inbox.inbox_retry(store, ids, actor=ctx.actor, reason=ctx.reason, clock=ctx.clock)


async def _check_limit(store: Store, args: Mapping[str, Any], ctx: _Ctx) -> None:
    await _need_reason(store, args, ctx)
    validate_runtime(args["limit"])


async def _check_limit_clear(store: Store, args: Mapping[str, Any], ctx: _Ctx) -> None:
    await _need_reason(store, args, ctx)
    scope = tuple(str(args.get(k) or "") for k in ("kind", "tenant", "provider", "action"))
    if not any((r.kind, r.tenant, r.provider, r.action) == scope for r in await store.limit_list()):
        raise NotFound(f"no run-time {scope[0]} limit for that scope (limits in sluice.toml stay)")


async def _check_breaker(store: Store, args: Mapping[str, Any], ctx: _Ctx) -> None:
    await _need_reason(store, args, ctx)
    parse_key(str(args.get("key") or ""))


async def _check_new_key(store: Store, args: Mapping[str, Any], ctx: _Ctx) -> None:
    require_actor(ctx.actor)
    apikeys.check_new_key(args.get("name"), args.get("role"), args.get("tenant"))  # type: ignore[arg-type]  # checked there


async def _check_revoke_key(store: Store, args: Mapping[str, Any], ctx: _Ctx) -> None:
    require_actor(ctx.actor)
    await store.api_key_get(str(args.get("key_id") or "").removeprefix("sk_").split(".", 1)[0])


async def _check_connection(store: Store, args: Mapping[str, Any], ctx: _Ctx) -> None:
    await _need_reason(store, args, ctx)
    await store.connection_get(str(args.get("tenant")), str(args.get("provider")))


async def _check_inbox(store: Store, args: Mapping[str, Any], ctx: _Ctx) -> None:
    require_actor(ctx.actor)
    inbox.check_ids(args.get("ids"))


# -- issue 14's operator acts ------------------------------------------------------------


async def _throttles_clear(store: Store, args: Mapping[str, Any], ctx: _Ctx) -> Any:
    return await waiting.throttle_clear(
        store,
        tenant=args.get("tenant"),
        provider=args.get("provider"),
        everything=bool(args.get("all")),
        dry_run=bool(args.get("dry_run")),
        actor=ctx.actor,
        reason=ctx.reason or "",
        wait=bool(args.get("wait", True)),
        timeout=float(args.get("timeout", 10.0)),
        clock=ctx.clock,
    )


async def _check_throttles(store: Store, args: Mapping[str, Any], ctx: _Ctx) -> None:
    await _throttles_clear(store, {**args, "dry_run": True}, ctx)  # checks, changes nothing


async def _no_throttles(store: Store, args: Mapping[str, Any], ctx: _Ctx) -> bool:
    return not (await _throttles_clear(store, {**args, "dry_run": True}, ctx)).throttles


async def _purge(store: Store, args: Mapping[str, Any], ctx: _Ctx) -> Any:
    rule = PurgeRule(
        before={s: datetime.fromisoformat(t) for s, t in dict(args.get("before") or {}).items()},
        tenant=args.get("tenant"),
    )
    return await retention.purge(
        store, rule, actor=ctx.actor, reason=ctx.reason, dry_run=bool(args.get("dry_run")),
        export=args.get("export"), batch=int(args.get("batch") or ctx.settings.retention_batch),
        pause=ctx.settings.retention_pause, clock=ctx.clock,
    )  # fmt: skip


async def _purge_count(store: Store, args: Mapping[str, Any], ctx: _Ctx) -> int:
    return int((await _purge(store, {**args, "dry_run": True}, ctx)).total)


async def _endpoint_enable(store: Store, args: Mapping[str, Any], ctx: _Ctx) -> Any:
    return await endpoints.endpoint_enable(
        store, str(args.get("id")), actor=ctx.actor, reason=ctx.reason, clock=ctx.clock
    )


async def _check_endpoint(store: Store, args: Mapping[str, Any], ctx: _Ctx) -> None:
    require_actor(ctx.actor)
    await _endpoint_lookup(store, args)


async def _endpoint_lookup(store: Store, args: Mapping[str, Any]) -> Mapping[str, Any]:
    found = await store.endpoint_get(endpoints.checked_id(args.get("id")))
    return {**args, "tenant": found.tenant, "endpoint": found.endpoint, "state": found.state}


def _suppression(args: Mapping[str, Any], ctx: _Ctx) -> dict[str, Any]:
    return {
        "tenant": str(args.get("tenant") or ""),
        "channel": str(args.get("channel") or ""),
        "recipient": str(args.get("recipient") or ""),
        "actor": ctx.actor,
        # at approval the reason says which request it was: keep it within the limit
        "reason": (ctx.reason or "")[: suppressions.MAX_REASON],
        "clock": ctx.clock,
    }


async def _suppression_remove(store: Store, args: Mapping[str, Any], ctx: _Ctx) -> Any:
    return await suppressions.suppression_remove(store, **_suppression(args, ctx))


async def _check_suppression(store: Store, args: Mapping[str, Any], ctx: _Ctx) -> None:
    require_actor(ctx.actor)
    found = _suppression(args, ctx)
    await suppressions.suppression_find(
        store, tenant=found["tenant"], channel=found["channel"],
        recipient=found["recipient"], reason=ctx.reason or "",
    )  # fmt: skip


async def _events_url_clear(store: Store, args: Mapping[str, Any], ctx: _Ctx) -> Any:
    return await tenant_events.events_url_clear(
        store,
        tenant=str(args.get("tenant") or ""),
        actor=ctx.actor,
        reason=ctx.reason,
        clock=ctx.clock,
    )


async def _check_events_url(store: Store, args: Mapping[str, Any], ctx: _Ctx) -> None:
    require_actor(ctx.actor)
    tenant = str(args.get("tenant") or "")
    if not await tenant_events.events_url_get(store, tenant):  # checks the name, too
        raise ValidationError("tenant", f"{tenant!r} has no events URL to clear")


_ACTS: dict[str, _Act] = {
    "dlq.retry": _bulk(actions.dlq_retry, by_ids=False),
    "dlq.cancel": _bulk(actions.dlq_cancel, by_ids=False),
    "held.approve": _bulk(controls.held_approve, by_ids=True),
    "held.release": _bulk(controls.held_release, by_ids=True),
    "held.cancel": _bulk(controls.held_cancel, by_ids=True),
    "resume": _Act(_resume, lambda a: _scope(a).tenant, check=_check_control),
    "control.set": _Act(
        _control_set,
        lambda a: _scope(a).tenant,
        check=_check_control,
        containment=lambda a: Mode.parse(str(a.get("mode"))) in (Mode.KILLED, Mode.PAUSED),
    ),
    "limit.set": _Act(
        _limit_set, lambda a: str(a["limit"].get("tenant") or ""), check=_check_limit
    ),
    "limit.clear": _Act(
        _limit_clear, lambda a: str(a.get("tenant") or ""), check=_check_limit_clear
    ),
    "breaker.force": _Act(_breaker, lambda a: parse_key(str(a["key"]))[2], check=_check_breaker),
    "breaker.reset": _Act(_breaker, lambda a: parse_key(str(a["key"]))[2], check=_check_breaker),
    "apikeys.create": _Act(_key_create, lambda a: str(a.get("tenant") or ""), _check_new_key),
    "apikeys.revoke": _Act(_key_revoke, lambda a: "", check=_check_revoke_key),
    "connection.revoke": _Act(
        _connection_revoke, lambda a: str(a["tenant"]), check=_check_connection
    ),
    "inbox.retry": _Act(_inbox_retry, lambda a: "", check=_check_inbox),
    # -- issue 14's operator acts --
    "messages.retry_now": _bulk(waiting.retry_now, by_ids=True),
    "throttles.clear": _Act(
        _throttles_clear,
        lambda a: str(a.get("tenant") or ""),
        check=_check_throttles,
        idle=_no_throttles,
    ),
    "endpoint.enable": _Act(
        _endpoint_enable, lambda a: str(a["tenant"]), _check_endpoint, lookup=_endpoint_lookup
    ),
    "suppression.remove": _Act(
        _suppression_remove, lambda a: str(a.get("tenant") or ""), check=_check_suppression
    ),
    "purge": _Act(_purge, lambda a: str(a.get("tenant") or ""), count=_purge_count),
    "events_url.clear": _Act(
        _events_url_clear, lambda a: str(a.get("tenant") or ""), check=_check_events_url
    ),
}
assert set(_ACTS) == set(ACTS), "sluice.twoperson.ACTS and the acts here must be one list"


# -- the choke point ----------------------------------------------------------------------


async def perform(
    store: Store,
    settings: Settings,
    act: str,
    args: Mapping[str, Any],
    *,
    actor: str,
    reason: str | None = None,
    clock: Clock | None = None,
) -> Any:
    """Do ``act`` with ``args`` at once and return what it returns, or — when a rule in
    ``settings.two_person`` holds for it — file a request and return :class:`Filed`.

    A dry run, and containment (``control.set`` to killed or paused), is never held back.
    """
    spec = _ACTS.get(act)
    if spec is None:
        raise ValidationError("act", f"{act!r} is not one of {', '.join(sorted(_ACTS))}")
    ctx = _Ctx(actor, reason, clock or SystemClock(), settings)
    rules = [r for r in parse_rules(settings.two_person) if act in r.acts]
    if not rules or args.get("dry_run") or spec.containment(args):
        return await spec.run(store, args, ctx)
    if spec.check is not None:
        await spec.check(store, args, ctx)
    if spec.idle is not None and await spec.idle(store, args, ctx):
        return await spec.run(store, args, ctx)  # it changes nothing: nobody need approve
    if spec.lookup is not None:
        args = await spec.lookup(store, args)
    tenant = spec.tenant(args)
    scope = "tenant" if tenant else "global"
    # The dry run checks the arguments too, and the approver sees what it counted.
    affected = None if spec.count is None else await spec.count(store, args, ctx)
    holding = [r.text for r in rules if r.holds(act, scope, affected)]
    if not holding or affected == 0:  # an act that changes nothing needs nobody's approval
        return await spec.run(store, args, ctx)
    now = ctx.clock.now()
    req = OpRequest(
        id=secrets.token_hex(4),
        act=act,
        args=jsonable(dict(args)),
        scope=scope,
        tenant=tenant,
        affected=affected,
        requester=actor,
        reason=reason,
        created_at=now,
        expires_at=now + timedelta(seconds=settings.two_person_expiry),
        state="pending",
    )
    audit = AuditEntry(
        at=now,
        actor=actor,
        action="request.filed",
        target=f"request:{req.id}",
        reason=reason,
        detail={
            "act": act,
            "args": req.args,
            "tenant": tenant,
            "affected": affected,
            "rules": holding,
        },
    )
    return Filed(await store.request_file(req, audit), holding)


async def request_page(
    store: Store,
    state: str | None = "pending",
    limit: int = 50,
    before: str | None = None,
    clock: Clock | None = None,
) -> tuple[list[OpRequest], str | None]:
    """Requests newest first (``state`` None: all), and the cursor of the next page."""
    if not 1 <= limit <= MAX_LIST:
        raise ValidationError("limit", f"must be between 1 and {MAX_LIST}")
    if before is not None and not (isinstance(before, str) and _ID.fullmatch(before)):
        raise ValidationError("before", f"{before!r} is not a request id (a page's cursor)")
    await store.request_expire((clock or SystemClock()).now())
    rows = await store.request_list(state, limit + 1, before)
    return rows[:limit], (rows[limit - 1].id if len(rows) > limit else None)


def _known_id(request_id: str) -> str:
    # Ids are short hex; anything else names no request (and never reaches the store).
    if not isinstance(request_id, str) or not _ID.fullmatch(request_id):
        raise NotFound(f"no request with id {request_id!r}")
    return request_id


async def request_get(store: Store, request_id: str, clock: Clock | None = None) -> OpRequest:
    """One request (``NotFound`` if there is none), expired if its time is up."""
    _known_id(request_id)
    await store.request_expire((clock or SystemClock()).now())
    return await store.request_get(request_id)


async def _pending(store: Store, request_id: str, now: datetime) -> OpRequest:
    _known_id(request_id)
    await store.request_expire(now)
    req = await store.request_get(request_id)
    if req.state != "pending":
        raise Conflict(f"request {req.id} is {req.state}; only a pending request is decided")
    return req


async def request_approve(
    store: Store,
    settings: Settings,
    request_id: str,
    *,
    actor: str,
    reason: str | None = None,
    clock: Clock | None = None,
) -> Decided:
    """Approve a pending request and do its act, as ``actor``, with the recorded
    arguments. The requester can never approve their own request (``ValidationError``
    naming ``actor``); ``Conflict`` when it is not pending (decided, expired)."""
    require_actor(actor)
    clock = clock or SystemClock()
    now = clock.now()
    req = await _pending(store, request_id, now)
    if actor.strip() == req.requester.strip():
        raise ValidationError(
            "actor", f"{actor} filed request {req.id}; another operator must approve it"
        )
    spec = _ACTS[req.act]
    how = f"two-person request {req.id}, filed by {req.requester}"
    ctx = _Ctx(actor, f"{req.reason} ({how})" if req.reason else how, clock, settings)
    args = dict(req.args)
    now_affected = None
    if spec.count is not None and req.affected is not None:
        now_affected = await spec.count(store, args, ctx)
        if "ids" not in args:  # never more than the request showed
            flt = dict(args.get("filter") or {})
            flt["limit"] = min(int(flt.get("limit") or req.affected), req.affected)
            args["filter"] = flt
    audit = AuditEntry(
        at=now,
        actor=actor,
        action="request.approved",
        target=f"request:{req.id}",
        reason=reason,
        detail={
            "act": req.act,
            "requester": req.requester,
            "approver": actor,
            "tenant": req.tenant,
            "affected_at_request": req.affected,
            "affected_at_approval": now_affected,
        },
    )
    decided = await store.request_decide(
        req.id, "approved", actor=actor, decision=reason, now=now, audit=audit
    )
    if not decided:
        raise Conflict(f"request {req.id} was decided or expired meanwhile")
    try:
        result = await spec.run(store, args, ctx)
    except SluiceError as exc:
        await store.request_result(req.id, {"error": str(exc), "kind": type(exc).__name__})
        raise
    kept = jsonable(_plain(result))
    if req.act == "apikeys.create" and isinstance(kept, dict):
        kept.pop("token", None)  # shown once, to the approver; never stored
        kept.get("key", {}).pop("secret_hash", None)
    await store.request_result(req.id, kept)
    return Decided(replace(await store.request_get(req.id), result=kept), result)


async def request_deny(
    store: Store,
    request_id: str,
    *,
    actor: str,
    reason: str | None = None,
    clock: Clock | None = None,
) -> Decided:
    """Deny a pending request: its act is never done. The requester may deny (withdraw)
    their own."""
    require_actor(actor)
    now = (clock or SystemClock()).now()
    req = await _pending(store, request_id, now)
    audit = AuditEntry(
        at=now,
        actor=actor,
        action="request.denied",
        target=f"request:{req.id}",
        reason=reason,
        detail={
            "act": req.act,
            "requester": req.requester,
            "denied_by": actor,
            "tenant": req.tenant,
        },
    )
    if not await store.request_decide(
        req.id, "denied", actor=actor, decision=reason, now=now, audit=audit
    ):
        raise Conflict(f"request {req.id} was decided or expired meanwhile")
    return Decided(await store.request_get(req.id))


def _plain(result: Any) -> Any:
    as_dict = getattr(result, "as_dict", None)
    return as_dict() if callable(as_dict) else result
