"""Diagnose a runbook against the store now (``sluice runbook diagnose``,
``/v1/runbooks/{id}/diagnose``, and ``sluice incidents show``).

Each check of a runbook names a probe here: a few reads of the store over the window,
giving a :class:`Finding` — a headline, the lines that back it, whether it is what is
wrong (``alarm``) and the scope values it points to (``fills``: the failing provider, the
tenant most affected, the leading error code). The runbook's commands are then filled
with the scope asked for, else with what the alarming findings point to; a slot nothing
fills stays ``<name>`` for the operator to choose. Probes only read.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sluice.config import Settings
from sluice.connections import ConnectionState
from sluice.errors import NotFound, ValidationError
from sluice.flow.breakers import parse_key
from sluice.metrics import hold_kind
from sluice.ops.audit import audit_verify
from sluice.ops.breakers import breakers_list
from sluice.ops.listings import parse_time
from sluice.runbooks import RUNBOOKS, Check, Command, Runbook, find, placeholders, rules_for
from sluice.store.base import AttemptFilter, AuditFilter, Incident, MessageFilter, Store

__all__ = [
    "PROBES",
    "Diagnosis",
    "Finding",
    "Scope",
    "configured_routes",
    "diagnose",
    "diagnose_now",
    "fill",
    "incident_diagnosis",
    "make_scope",
    "runbook_get",
    "runbook_list",
    "runbook_view",
]

#: The longest window a diagnosis reads (tally reads every row of it).
MAX_SINCE = timedelta(days=7)
#: A provider whose attempts fail at this rate or more (with at least MIN_FAILED
#: failures) is named as failing.
FAILING_RATE = 0.2
MIN_FAILED = 3
#: The oldest ready message is late past this many seconds (seed 002 §1).
LATE_SECONDS = 300.0
#: A worker not seen for this long is stale.
STALE_SECONDS = 60.0
#: p95 delivery latency past this is slow (seed 002 §6).
SLOW_P95 = 30.0
AUTH_CODES = frozenset({"AUTH_REVOKED", "SCOPE_MISSING"})
RATE_CODES = frozenset({"RATE_LIMITED", "QUOTA_EXCEEDED"})
_LABELS = ("tenant", "provider", "channel", "action")


@dataclass(frozen=True, slots=True)
class Scope:
    """What a diagnosis looks at: any of tenant, provider, channel, action (None: all),
    over the window from ``since`` (``since_text`` as asked, for the commands) to ``now``."""

    since: datetime
    now: datetime
    since_text: str = "1h"
    tenant: str | None = None
    provider: str | None = None
    channel: str | None = None
    action: str | None = None

    def labels(self) -> dict[str, str]:
        return {k: v for k in _LABELS if (v := getattr(self, k))}

    def matches(self, row: Mapping[str, Any]) -> bool:
        """Does a row with these labels fall in the scope? A label the row lacks matches,
        and so does an empty tenant (a provider's breaker or throttle: every tenant's)."""
        return all(
            row.get(k) is None or row.get(k) == v or (k == "tenant" and row.get(k) == "")
            for k, v in self.labels().items()
        )


@dataclass(slots=True)
class Finding:
    """What one check found."""

    probe: str
    looks_for: str
    headline: str
    alarm: bool = False
    lines: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    #: Scope values it points to (provider, tenant, channel, error_code, key, action).
    fills: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Diagnosis:
    """A runbook run against the store now."""

    runbook: str
    title: str
    source: str
    at: datetime
    since: datetime
    scope: dict[str, str]
    rules: list[str]
    #: The headlines of the alarming findings: what is wrong, in the order checked.
    causes: list[str]
    findings: list[Finding]
    verification: list[Finding]
    containment: list[dict[str, Any]]
    recovery: list[dict[str, Any]]
    escalation: list[str]
    filled: dict[str, str]
    incident: str | None = None


@dataclass(slots=True)
class _Ctx:
    store: Store
    settings: Settings
    scope: Scope
    routes: Mapping[str, Sequence[str]]
    _tally: list[tuple[dict[str, str], int]] | None = None
    #: What the alarming findings so far point to (a later probe may narrow by it).
    found: dict[str, str] = field(default_factory=dict)

    async def attempts(self) -> list[tuple[dict[str, str], int]]:
        """Attempts of the window per label combination, in scope (read once)."""
        if self._tally is None:
            rows = await self.store.tally("attempts", self.scope.since, self.scope.now)
            self._tally = [(labels, n) for labels, n in rows if self.scope.matches(labels)]
        return self._tally

    def flt(self, **kw: Any) -> MessageFilter:
        s = self.scope
        return MessageFilter(
            tenant=s.tenant, provider=s.provider, channel=s.channel, action=s.action, **kw
        )


Probe = Callable[[_Ctx, Check], Awaitable[Finding]]
PROBES: dict[str, Probe] = {}


def probe(name: str) -> Callable[[Probe], Probe]:
    def register(fn: Probe) -> Probe:
        PROBES[name] = fn
        return fn

    return register


def _f(check: Check, headline: str, **kw: Any) -> Finding:
    return Finding(check.probe, check.looks_for, headline, **kw)


def _ago(now: datetime, then: datetime | None) -> str:
    if then is None:
        return "-"
    s = max(0.0, (now - then).total_seconds())
    return f"{s:.0f}s" if s < 120 else f"{s / 60:.0f}m" if s < 7200 else f"{s / 3600:.1f}h"


def _clock(at: datetime | None) -> str:
    return f"{at:%H:%M:%S} UTC" if at else "(unknown)"


def _top(counter: Counter[str], n: int = 3) -> str:
    return ", ".join(f"{k} {v}" for k, v in counter.most_common(n)) or "none"


# -- the probes ------------------------------------------------------------------------


@probe("failures")
async def _failures(ctx: _Ctx, check: Check) -> Finding:
    total: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    codes: dict[str, Counter[str]] = defaultdict(Counter)
    channels: dict[str, Counter[str]] = defaultdict(Counter)
    for labels, n in await ctx.attempts():
        p = str(labels["provider"])
        if labels["outcome"] in ("sent", "failed", "throttled"):
            total[p] += n
            channels[p][labels["channel"]] += n
        if labels["outcome"] in ("failed", "throttled"):
            failed[p] += n
            codes[p][labels["error_code"] or "-"] += n
    rows = []
    worst: tuple[float, str] | None = None
    for p in sorted(total, key=lambda p: -failed[p]):
        rate = failed[p] / total[p] if total[p] else 0.0
        rows.append(
            {
                "provider": p,
                "attempts": total[p],
                "failed": failed[p],
                "failure_rate": round(rate, 4),
                "top_codes": dict(codes[p].most_common(3)),
            }
        )
        if failed[p] >= MIN_FAILED and rate >= FAILING_RATE and (worst is None or rate > worst[0]):
            worst = (rate, p)
    lines = [
        f"{p}: {failed[p]} of {total[p]} attempts failed "
        f"({failed[p] / total[p]:.0%}); top codes: {_top(codes[p])}"
        for p in sorted(total, key=lambda p: -failed[p])
    ]
    if worst is None:
        head = "no provider is failing" if rows else "no attempts in the window"
        return _f(check, head, lines=lines, data={"providers": rows})
    rate, p = worst
    code = codes[p].most_common(1)[0][0]
    return _f(
        check,
        f"provider {p} is failing: {rate:.0%} of its attempts, mostly {code}",
        alarm=True,
        lines=lines,
        data={"providers": rows},
        fills={
            "provider": p,
            "error_code": code,
            "key": f"p:{p}",
            "channel": channels[p].most_common(1)[0][0],
        },
    )


@probe("breakers")
async def _breakers(ctx: _Ctx, check: Check) -> Finding:
    now = ctx.scope.now
    rows = [
        b
        for b in await breakers_list(ctx.store, ctx.settings, now)
        if b.state != "closed" and ctx.scope.matches({"provider": b.provider, "tenant": b.tenant})
    ]
    if not rows:
        return _f(check, "every breaker is closed")
    lines = [
        f"{b.key}: {b.state}{' (forced)' if b.forced else ''} for {_ago(now, b.since)}"
        f"{f', retry at {b.retry_at:%H:%M:%S}' if b.retry_at else ''}"
        f"{f' — {b.reason}' if b.reason else ''}"
        for b in rows
    ]
    first = rows[0]
    return _f(
        check,
        f"breaker {first.key} is {first.state} since {_clock(first.since)}",
        alarm=True,
        lines=lines,
        data={
            "breakers": [
                {
                    "key": b.key,
                    "state": b.state,
                    "since": b.since.isoformat() if b.since else None,
                    "forced": b.forced,
                    "reason": b.reason,
                }
                for b in rows
            ]
        },
        fills={"provider": first.provider, "key": first.key},
    )


@probe("failover")
async def _failover(ctx: _Ctx, check: Check) -> Finding:
    sent: Counter[tuple[str, str]] = Counter()
    used: Counter[tuple[str, str]] = Counter()
    rows = await ctx.attempts()
    if ctx.scope.provider:  # the backups' attempts are outside a provider's scope: read them
        wider = dataclasses.replace(ctx.scope, provider=None)
        tally = await ctx.store.tally("attempts", wider.since, wider.now)
        rows = [(labels, n) for labels, n in tally if wider.matches(labels)]
    for labels, n in rows:
        used[(labels["channel"], labels["provider"])] += n
        if labels["outcome"] == "sent":
            sent[(labels["channel"], labels["provider"])] += n
    provider = ctx.scope.provider
    channels = (
        [ctx.scope.channel]
        if ctx.scope.channel
        else sorted({c for c, p in used if provider in (None, p)}) or sorted(ctx.routes)
    )
    lines, routes, carrying = [], {}, False
    for ch in channels:
        route = list(ctx.routes.get(ch, ()))
        routes[ch] = route
        if len(route) < 2:
            lines.append(f"{ch}: no failover route ([routes] {ch} = {route or 'unset'})")
            continue
        alts = [p for p in route if p != provider] if provider else route[1:]
        parts = [f"{p} sent {sent[(ch, p)]}" for p in alts]
        carrying |= any(sent[(ch, p)] for p in alts)
        lines.append(f"{ch}: route {' → '.join(route)}; {', '.join(parts)} in the window")
    has_route = any(len(r) >= 2 for r in routes.values())
    head = (
        "a failover route carries traffic"
        if carrying
        else "a failover route exists but carries nothing yet"
        if has_route
        else "no failover route: containing means pausing, not rerouting"
    )
    return _f(
        check,
        head,
        alarm=not has_route,
        lines=lines,
        data={"routes": routes, "carrying": carrying, "has_route": has_route},
    )


@probe("tenants")
async def _tenants(ctx: _Ctx, check: Check) -> Finding:
    failed: Counter[str] = Counter()
    for labels, n in await ctx.attempts():
        if labels["outcome"] in ("failed", "throttled"):
            failed[labels["tenant"]] += n
    if not failed:
        return _f(check, "no tenant had a failed attempt in the window")
    tenant = failed.most_common(1)[0][0]
    return _f(
        check,
        f"{len(failed)} tenant(s) affected, most of all {tenant} ({failed[tenant]} failures)",
        alarm=True,
        lines=[f"{t}: {n} failed attempts" for t, n in failed.most_common(20)],
        data={"tenants": dict(failed)},
        fills={"tenant": tenant},
    )


@probe("dead_letters")
async def _dead(ctx: _Ctx, check: Check) -> Finding:
    groups = await ctx.store.dlq_groups(ctx.flt())
    if not groups:
        return _f(check, "no dead letters")
    groups.sort(key=lambda g: -g.count)
    top = groups[0]
    total = sum(g.count for g in groups)
    return _f(
        check,
        f"{total} dead letters, most {top.error_code} on {top.channel} ({top.count})",
        alarm=True,
        lines=[
            f"{g.channel} {g.error_code}: {g.count} (last {g.last_at:%H:%M:%S})"
            for g in groups[:10]
        ],
        data={
            "total": total,
            "groups": [
                {"channel": g.channel, "error_code": g.error_code, "count": g.count} for g in groups
            ],
        },
        fills={"error_code": top.error_code, "channel": top.channel},
    )


@probe("queue")
async def _queue(ctx: _Ctx, check: Check) -> Finding:
    rows = await ctx.store.message_breakdown("", ctx.flt(), None, ctx.scope.now)
    counts = {r.status: r.count for r in rows}
    ready = [r.oldest_ready_at for r in rows if r.status == "queued" and r.oldest_ready_at]
    oldest = min(ready) if ready else None
    late = oldest is not None and (ctx.scope.now - oldest).total_seconds() > LATE_SECONDS
    lines = [", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "no messages"]
    if oldest:
        lines.append(f"oldest ready message due {_ago(ctx.scope.now, oldest)} ago")
    age = (ctx.scope.now - oldest).total_seconds() if oldest else None
    head = (
        f"the oldest ready message has waited {_ago(ctx.scope.now, oldest)}"
        if late
        else f"{counts.get('queued', 0)} queued, none late"
    )
    return _f(
        check,
        head,
        alarm=late,
        lines=lines,
        data={"counts": counts, "oldest_ready_age_seconds": age},
    )


@probe("workers")
async def _workers(ctx: _Ctx, check: Check) -> Finding:
    now = ctx.scope.now
    workers = await ctx.store.worker_list(now - timedelta(hours=1))
    live = [w for w in workers if w.stopped_at is None]
    fresh = [w for w in live if (now - w.last_seen_at).total_seconds() <= STALE_SECONDS]
    stale = [w for w in live if w not in fresh]
    lines = [
        f"{w.id} on {w.host} pid {w.pid}: seen {_ago(now, w.last_seen_at)} ago, "
        f"{w.in_flight} in flight"
        for w in live
    ]
    data = {"live": len(fresh), "stale": [w.id for w in stale]}
    if not fresh:
        return _f(
            check, "no live worker: nothing is being sent", alarm=True, lines=lines, data=data
        )
    if stale:
        return _f(
            check,
            f"{len(stale)} worker(s) stopped heartbeating",
            alarm=True,
            lines=lines,
            data=data,
        )
    return _f(check, f"{len(fresh)} live worker(s)", lines=lines, data=data)


@probe("retrying")
async def _retrying(ctx: _Ctx, check: Check) -> Finding:
    obs = await ctx.store.observe(ctx.scope.now)
    three = obs.retrying.get(3, 0)
    head = (
        f"{three} queued messages have failed 3 times or more"
        if three
        else "no message is stuck retrying"
    )
    return _f(
        check,
        head,
        alarm=bool(three),
        data={"retrying": obs.retrying},
        lines=[f"tried at least {k} times: {v}" for k, v in sorted(obs.retrying.items())],
    )


@probe("throttles")
async def _throttles(ctx: _Ctx, check: Check) -> Finding:
    now = ctx.scope.now
    rows = [
        t
        for t in await ctx.store.throttle_list(now)
        if ctx.scope.matches({"tenant": t.tenant, "provider": t.provider})
    ]
    limited: Counter[tuple[str, str]] = Counter()
    for labels, n in await ctx.attempts():
        if labels["error_code"] in RATE_CODES or labels["outcome"] == "throttled":
            limited[(labels["tenant"], labels["provider"])] += n
    lines = [
        f"{t.tenant or '*'}/{t.provider}: throttled until {t.until:%H:%M:%S} "
        f"({t.reason or 'no reason given'})"
        for t in rows
    ]
    lines += [f"{t}/{p}: {n} attempts rate limited" for (t, p), n in limited.most_common(10)]
    data = {"throttles": len(rows), "rate_limited": sum(limited.values())}
    if not rows and not limited:
        return _f(check, "no throttle in force and no 429s", data=data)
    if limited:
        (tenant, provider), n = limited.most_common(1)[0]
    else:
        tenant, provider, n = rows[0].tenant, rows[0].provider, 0
    head = f"{provider} is rate limiting{f' {tenant}' if tenant else ''}: " + (
        f"{n} attempts answered 429" if n else f"throttled until {rows[0].until:%H:%M:%S}"
    )
    fills = {"provider": provider, **({"tenant": tenant} if tenant else {})}
    return _f(check, head, alarm=True, lines=lines, data=data, fills=fills)


@probe("connections")
async def _connections(ctx: _Ctx, check: Check) -> Finding:
    conns = await ctx.store.connection_list(ctx.scope.tenant, ctx.scope.provider)
    bad = [c for c in conns if c.state != ConnectionState.ACTIVE or c.missing_scopes]
    if not bad:
        return _f(check, f"{len(conns)} connection(s), all active with their scopes")
    c = bad[0]
    what = (
        f"missing scopes {', '.join(c.missing_scopes)}"
        if c.missing_scopes and c.state == ConnectionState.ACTIVE
        else f"{c.state}"
    )
    return _f(
        check,
        f"connection {c.tenant}/{c.provider} is {what} since {c.state_changed_at:%H:%M:%S} UTC",
        alarm=True,
        lines=[
            f"{x.tenant}/{x.provider}: {x.state} ({x.state_reason or '-'})"
            f"{f'; missing {x.missing_scopes}' if x.missing_scopes else ''}"
            for x in bad
        ],
        data={
            "not_active": [
                {
                    "tenant": x.tenant,
                    "provider": x.provider,
                    "state": str(x.state),
                    "missing_scopes": x.missing_scopes,
                }
                for x in bad
            ]
        },
        fills={"tenant": c.tenant, "provider": c.provider},
    )


@probe("auth")
async def _auth(ctx: _Ctx, check: Check) -> Finding:
    hits: Counter[tuple[str, str, str]] = Counter()
    for labels, n in await ctx.attempts():
        if labels["error_code"] in AUTH_CODES:
            hits[(labels["tenant"], labels["provider"], labels["error_code"])] += n
    if not hits:
        return _f(check, "no attempt refused for credentials")
    (tenant, provider, code), n = hits.most_common(1)[0]
    return _f(
        check,
        f"{provider} refuses {tenant}'s credentials: {n} attempts {code}",
        alarm=True,
        lines=[f"{t}/{p}: {k} x {c}" for (t, p, c), k in hits.most_common(10)],
        data={"refused": sum(hits.values())},
        fills={"tenant": tenant, "provider": provider, "error_code": code},
    )


@probe("held")
async def _held(ctx: _Ctx, check: Check) -> Finding:
    rows = await ctx.store.message_breakdown("hold_reason", ctx.flt(), "held", ctx.scope.now)
    rows = [r for r in rows if r.count]
    if not rows:
        return _f(check, "nothing is held")
    rows.sort(key=lambda r: -r.count)
    top = rows[0]
    kinds: Counter[str] = Counter()
    for r in rows:
        kinds[hold_kind(r.group)] += r.count
    tenants = await ctx.store.message_breakdown("tenant", ctx.flt(), "held", ctx.scope.now)
    tenant = max(tenants, key=lambda r: r.count).group if tenants else ""
    return _f(
        check,
        f"{sum(r.count for r in rows)} held, most for {top.group!r} ({top.count}), "
        f"oldest held {_ago(ctx.scope.now, top.oldest_updated_at)}",
        alarm=True,
        lines=[f"{r.group}: {r.count}" for r in rows[:10]],
        data={"held": sum(r.count for r in rows), "by_kind": dict(kinds)},
        fills={"tenant": tenant} if tenant else {},
    )


@probe("latency")
async def _latency(ctx: _Ctx, check: Check) -> Finding:
    rows = await ctx.store.sent_latencies(ctx.scope.since, ctx.scope.now)
    groups: dict[tuple[str, str], list[float]] = defaultdict(list)
    for labels, s in rows:
        if ctx.scope.matches(labels):
            groups[(labels["channel"], labels["provider"])].append(s)
    if not groups:
        return _f(check, "nothing sent in the window")
    stats = {}
    for key, values in groups.items():
        values.sort()
        stats[key] = (_q(values, 0.95), _q(values, 0.99), len(values))
    (ch, p), (p95, p99, _) = max(stats.items(), key=lambda kv: kv[1][0])
    lines = [
        f"{c}/{q}: p95 {a:.1f}s, p99 {b:.1f}s over {n} sends"
        for (c, q), (a, b, n) in sorted(stats.items())
    ]
    slow = p95 > SLOW_P95
    head = (
        f"{ch} via {p} is slow: p95 {p95:.1f}s"
        if slow
        else f"delivery latency normal (worst p95 {p95:.1f}s)"
    )
    return _f(
        check,
        head,
        alarm=slow,
        lines=lines,
        data={"worst_p95": p95, "worst_p99": p99},
        fills={"channel": ch, "provider": p} if slow else {},
    )


def _q(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, math.ceil(q * len(values)) - 1)]


@probe("quota")
async def _quota(ctx: _Ctx, check: Check) -> Finding:
    crossed = await _audit_rows(ctx, "quota.", 20)
    exceeded: Counter[tuple[str, str]] = Counter()
    for labels, n in await ctx.attempts():
        if labels["error_code"] == "QUOTA_EXCEEDED":
            exceeded[(labels["tenant"], labels["provider"])] += n
    quotas = [r for r in await ctx.store.limit_list() if r.kind == "quota"]
    lines = [f"{e.at:%H:%M:%S} {e.target}: {e.reason}" for e in crossed]
    lines += [f"{t}/{p}: {n} attempts QUOTA_EXCEEDED" for (t, p), n in exceeded.most_common(5)]
    lines += [f"quota {r.tenant or '*'}/{r.provider or '*'}: {r.spec}" for r in quotas]
    data = {"thresholds_crossed": len(crossed), "quota_exceeded": sum(exceeded.values())}
    if exceeded:
        (t, p), n = exceeded.most_common(1)[0]
        return _f(
            check,
            f"{p} says {t}'s quota is used up ({n} attempts)",
            alarm=True,
            lines=lines,
            data=data,
            fills={"tenant": t, "provider": p},
        )
    if crossed:
        return _f(
            check,
            f"quota threshold crossed: {crossed[0].target}",
            alarm=True,
            lines=lines,
            data=data,
        )
    return _f(check, "no quota crossed or exceeded", lines=lines, data=data)


@probe("top_senders")
async def _top_senders(ctx: _Ctx, check: Check) -> Finding:
    flt = ctx.flt(since=ctx.scope.since, until=ctx.scope.now + timedelta(seconds=1))
    rows = await ctx.store.message_breakdown("tenant", flt, None, ctx.scope.now)
    per: Counter[str] = Counter()
    for r in rows:
        per[r.group] += r.count
    if not per:
        return _f(check, "no message created in the window")
    tenant, n = per.most_common(1)[0]
    total = sum(per.values())
    share = n / total
    return _f(
        check,
        f"{tenant} created {n} of {total} messages in the window ({share:.0%})",
        alarm=len(per) == 1 or share >= 0.5,
        lines=[f"{t}: {k}" for t, k in per.most_common(10)],
        data={"tenants": dict(per), "total": total},
        fills={"tenant": tenant},
    )


@probe("inbox")
async def _inbox(ctx: _Ctx, check: Check) -> Finding:
    counts = await ctx.store.inbox_counts()
    obs = await ctx.store.observe(ctx.scope.now)
    oldest = obs.inbox_oldest_pending
    lines = [", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "inbox empty"]
    late = oldest is not None and (ctx.scope.now - oldest).total_seconds() > LATE_SECONDS
    if oldest:
        lines.append(f"oldest pending event arrived {_ago(ctx.scope.now, oldest)} ago")
    dead, rejected = counts.get("dead", 0), counts.get("rejected", 0)
    data = {"counts": counts, "late": late}
    if dead:
        return _f(
            check,
            f"{dead} provider events dead: the projector gave up on them",
            alarm=True,
            lines=lines,
            data=data,
        )
    if late:
        return _f(
            check,
            f"the projector lags: oldest event waits {_ago(ctx.scope.now, oldest)}",
            alarm=True,
            lines=lines,
            data=data,
        )
    if rejected:
        return _f(
            check,
            f"{rejected} provider events rejected at ingress",
            alarm=True,
            lines=lines,
            data=data,
        )
    return _f(check, "the inbox keeps up", lines=lines, data=data)


async def _audit_rows(ctx: _Ctx, action: str, limit: int = 50) -> list[Any]:
    flt = AuditFilter(
        since=ctx.scope.since,
        until=ctx.scope.now + timedelta(seconds=1),
        action=action,
        tenant=ctx.scope.tenant,
    )
    return await ctx.store.audit_list(limit, flt)


@probe("caps")
async def _caps(ctx: _Ctx, check: Check) -> Finding:
    rows = await _audit_rows(ctx, "limit.tripped")
    if not rows:
        return _f(check, "no recipient cap tripped in the window")
    tenants: Counter[str] = Counter(str(e.detail.get("tenant", "")) for e in rows)
    tenant = tenants.most_common(1)[0][0]
    actions = Counter(str(e.detail.get("action") or "") for e in rows if e.detail.get("action"))
    fills = {"tenant": tenant} if tenant else {}
    if actions:
        fills["action"] = actions.most_common(1)[0][0]
    return _f(
        check,
        f"recipient cap tripped {len(rows)} time(s), most for tenant {tenant}",
        alarm=True,
        lines=[f"{e.at:%H:%M:%S} {e.reason}" for e in rows[:10]],
        data={"tripped": len(rows), "tenants": dict(tenants)},
        fills=fills,
    )


@probe("tenancy")
async def _tenancy(ctx: _Ctx, check: Check) -> Finding:
    rows = await _audit_rows(ctx, "tenancy.")
    if not rows:
        return _f(check, "no tenancy violation in the window")
    e = rows[0]
    mine, theirs = e.detail.get("message_tenant"), e.detail.get("connection_tenant")
    return _f(
        check,
        f"{len(rows)} tenancy violation(s) refused; latest: {e.reason or e.target}",
        alarm=True,
        lines=[f"{x.at:%H:%M:%S} {x.actor}: {x.reason}" for x in rows[:10]],
        data={"violations": len(rows), "message_tenant": mine, "connection_tenant": theirs},
        fills={"tenant": str(mine)} if mine else {},
    )


@probe("controls")
async def _controls(ctx: _Ctx, check: Check) -> Finding:
    rows = [c for c in await ctx.store.control_list() if str(c.mode) != "live"]
    if not rows:
        return _f(check, "no control in force: everything is live")
    lines = [f"{c.scope}: {c.mode} ({c.reason or '-'}, by {c.actor})" for c in rows]
    return _f(
        check,
        f"{len(rows)} control(s) in force: {lines[0]}",
        alarm=True,
        lines=lines,
        data={"controls": len(rows)},
    )


@probe("endpoints")
async def _endpoints(ctx: _Ctx, check: Check) -> Finding:
    rows = [
        e
        for e in await ctx.store.endpoint_list(ctx.scope.tenant)
        if e.state != "healthy" and ctx.scope.matches({"provider": e.provider})
    ]
    if not rows:
        return _f(check, "every endpoint is healthy")
    e = rows[0]
    return _f(
        check,
        f"endpoint {e.endpoint} of {e.tenant} is {e.state}"
        f"{f' since {e.failing_since:%H:%M:%S} UTC' if e.failing_since else ''}",
        alarm=True,
        lines=[f"{x.tenant} {x.endpoint}: {x.state} ({x.last_error or '-'})" for x in rows],
        data={"endpoints": len(rows)},
        fills={"tenant": e.tenant, "provider": e.provider},
    )


@probe("audit_chain")
async def _audit_chain(ctx: _Ctx, check: Check) -> Finding:
    result = await audit_verify(ctx.store)
    if result.ok:
        return _f(
            check,
            f"the audit log reads and its chain holds ({result.checked} entries)",
            data={"checked": result.checked},
        )
    return _f(
        check,
        f"the audit chain breaks at entry {result.broken_at}: {result.why}",
        alarm=True,
        data={"broken_at": result.broken_at},
    )


@probe("partial")
async def _partial(ctx: _Ctx, check: Check) -> Finding:
    flt = ctx.flt(since=ctx.scope.since, until=ctx.scope.now + timedelta(seconds=1))
    rows = await ctx.store.message_breakdown("action", flt, None, ctx.scope.now)
    by: dict[str, Counter[str]] = defaultdict(Counter)
    for r in rows:
        by[r.group or "(send)"][r.status] += r.count
    done = sum(c[s] for c in by.values() for s in ("sent", "delivered", "read"))
    lost = {a: c["dead"] + c["held"] for a, c in by.items() if c["dead"] + c["held"]}
    lines = [f"{a}: " + ", ".join(f"{s} {n}" for s, n in sorted(c.items())) for a, c in by.items()]
    if not (done and lost):
        return _f(check, "no flow went out in part only", lines=lines)
    action = max(lost, key=lambda a: lost[a])
    return _f(
        check,
        f"steps went out while {sum(lost.values())} did not, most of action {action}",
        alarm=True,
        lines=lines,
        data={"not_sent": lost},
        fills={"action": action} if action != "(send)" else {},
    )


@probe("suppressions")
async def _suppressions(ctx: _Ctx, check: Check) -> Finding:
    counts = await ctx.store.suppression_counts()
    total = sum(counts.values())
    return _f(
        check,
        f"{total} recipients suppressed" if total else "no recipient suppressed",
        lines=[f"{k}: {v}" for k, v in sorted(counts.items())],
        data={"counts": counts},
    )


@probe("sample")
async def _sample(ctx: _Ctx, check: Check) -> Finding:
    provider = ctx.scope.provider or ctx.found.get("provider")
    flt = AttemptFilter(provider=provider, outcome="failed", since=ctx.scope.since,
                        until=ctx.scope.now + timedelta(seconds=1))  # fmt: skip
    rows, _ = await ctx.store.attempt_search(flt, 5)  # of every tenant: attempts name none
    if not rows:
        return _f(check, f"no failed attempt{f' of {provider}' if provider else ''} to show")
    said = Counter(a.detail or a.provider_status or "-" for a in rows)
    return _f(
        check,
        f"latest failures{f' of {provider}' if provider else ''} say: {said.most_common(1)[0][0]}",
        lines=[
            f"{a.finished_at:%H:%M:%S} {a.message_id} {a.provider} {a.error_code or '-'}: "
            f"{(a.detail or '-')[:120]}"
            for a in rows
        ],
        data={
            "attempts": [
                {
                    "message_id": a.message_id,
                    "provider": a.provider,
                    "error_code": a.error_code,
                    "detail": a.detail,
                }
                for a in rows
            ]
        },
    )


@probe("incidents")
async def _incidents(ctx: _Ctx, check: Check) -> Finding:
    rows = [i for i in await ctx.store.incident_list("active", 50) if ctx.scope.matches(i.scope)]
    if not rows:
        return _f(check, "no other incident is open")
    return _f(
        check,
        f"{len(rows)} incident(s) open: {', '.join(sorted({i.rule for i in rows}))}",
        lines=[f"{i.id} [{i.severity}] {i.rule} {i.scope_key or '-'} ({i.state})" for i in rows],
        data={"open": [i.id for i in rows]},
    )


# -- the diagnosis -----------------------------------------------------------------------


def runbook_list() -> list[dict[str, Any]]:
    """Every runbook: id, title, source, the rules that point to it."""
    return [
        {
            "id": r.id,
            "title": r.title,
            "source": r.source,
            "also": list(r.also),
            "rules": [x.name for x in rules_for(r)],
        }
        for r in RUNBOOKS
    ]


def runbook_get(ref: str) -> Runbook:
    """A runbook by id or seed section (``NotFound`` naming the ids there are)."""
    return find(ref)


def runbook_view(r: Runbook) -> dict[str, Any]:
    """A runbook as plain data (``show``)."""

    def cmds(cs: Sequence[Command]) -> list[dict[str, Any]]:
        return [{"command": c.line, "why": c.why, "dry_run": c.dry_run} for c in cs]

    def checks(cs: Sequence[Check]) -> list[dict[str, str]]:
        return [{"probe": c.probe, "looks_for": c.looks_for} for c in cs]

    return {
        "id": r.id,
        "title": r.title,
        "source": r.source,
        "also": list(r.also),
        "summary": r.summary,
        "rules": [x.name for x in rules_for(r)],
        "diagnosis": checks(r.diagnosis),
        "containment": cmds(r.containment),
        "recovery": cmds(r.recovery),
        "verification": checks(r.verification),
        "escalation": list(r.escalation),
        "follow_ups": list(r.follow_ups),
    }


def fill(line: str, values: Mapping[str, str]) -> str:
    """A command template with its slots filled; one nothing fills stays ``<name>``."""
    out = line
    for name in placeholders(line):
        value = values.get(name)
        out = out.replace("{" + name + "}", _quoted(value) if value else f"<{name}>")
    return out


def _quoted(value: str) -> str:
    """A value safe to paste into a shell line: as it is when plain, else single-quoted."""
    if value and all(c.isalnum() or c in "-_.:@+/" for c in value):
        return value
    return "'" + value.replace("'", "'\"'\"'") + "'"


def _scope_value(name: str, value: Any) -> str | None:
    """A tenant, provider, channel or action as asked; ``ValidationError`` naming it for
    an empty, huge or unprintable one (a lone surrogate included)."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(name, "must be a non-empty string when given")
    if len(value) > 200:
        raise ValidationError(name, f"is {len(value)} characters; at most 200")
    if not value.isprintable():  # control characters, lone surrogates
        raise ValidationError(name, "must be printable text (no control characters)")
    return value


def make_scope(
    since: str | None = "1h",
    *,
    now: datetime | None = None,
    tenant: str | None = None,
    provider: str | None = None,
    channel: str | None = None,
    action: str | None = None,
) -> Scope:
    """The scope of a diagnosis from what an operator typed; ``ValidationError`` naming
    the field that is wrong (``since``: a span like ``1h`` or an ISO time, at most seven
    days back, not in the future)."""
    now = now or datetime.now(UTC)
    text = since if since is not None else "1h"
    if not isinstance(text, str):
        raise ValidationError("since", "must be a span like 15m, 1h, 2d or an ISO time")
    start = parse_time("since", text, now)
    assert start is not None
    if start >= now:
        raise ValidationError("since", f"{text!r} is not in the past")
    if now - start > MAX_SINCE:
        raise ValidationError("since", f"{text!r} reaches back more than 7 days")
    return Scope(
        since=start,
        now=now,
        since_text=text.strip(),
        tenant=_scope_value("tenant", tenant),
        provider=_scope_value("provider", provider),
        channel=_scope_value("channel", channel),
        action=_scope_value("action", action),
    )


async def diagnose(
    store: Store,
    settings: Settings,
    ref: str,
    scope: Scope,
    *,
    routes: Mapping[str, Sequence[str]] | None = None,
    incident: str | None = None,
) -> Diagnosis:
    """Run ``ref``'s checks against ``store`` now; fill its commands."""
    rb = find(ref)
    ctx = _Ctx(store, settings, scope, routes or {})
    values: dict[str, str] = dict(scope.labels())
    ctx.found = values
    findings = []
    for check in rb.diagnosis:
        f = await _run(ctx, check)
        findings.append(f)
        if f.alarm:
            for k, v in f.fills.items():
                values.setdefault(k, v)
    verification = [await _run(ctx, c) for c in rb.verification]
    values.setdefault("since", scope.since_text)
    if incident:
        values["incident"] = incident
    if "provider" in values:
        values.setdefault("key", f"p:{values['provider']}")

    def filled(cs: Sequence[Command]) -> list[dict[str, Any]]:
        return [{"command": fill(c.line, values), "why": c.why, "dry_run": c.dry_run} for c in cs]

    return Diagnosis(
        runbook=rb.id,
        title=rb.title,
        source=rb.source,
        at=scope.now,
        since=scope.since,
        scope=scope.labels(),
        rules=[r.name for r in rules_for(rb)],
        causes=[f.headline for f in findings if f.alarm],
        findings=findings,
        verification=verification,
        containment=filled(rb.containment),
        recovery=filled(rb.recovery),
        escalation=list(rb.escalation),
        filled={k: v for k, v in values.items() if k != "since"},
        incident=incident,
    )


async def _run(ctx: _Ctx, check: Check) -> Finding:
    fn = PROBES.get(check.probe)
    if fn is None:  # a test keeps every runbook's probes known; never silently skipped
        return _f(check, f"no probe {check.probe!r} in this Sluice", alarm=True)
    return await fn(ctx, check)


async def incident_diagnosis(
    store: Store,
    settings: Settings,
    incident: Incident,
    *,
    routes: Mapping[str, Sequence[str]] | None = None,
    now: datetime | None = None,
) -> Diagnosis | None:
    """The diagnosis of an incident's runbook over its scope, from an hour before it opened
    (at most seven days) to now; None when its runbook is not one Sluice has."""
    try:
        find(incident.runbook)
    except NotFound:
        return None
    now = now or datetime.now(UTC)
    start = max(
        min(incident.opened_at - timedelta(hours=1), now - timedelta(minutes=1)), now - MAX_SINCE
    )
    labels = {k: incident.scope.get(k) or None for k in _LABELS}
    key = incident.scope.get("key", "")
    if key[:2] in ("p:", "c:"):  # a breaker's incident: its provider (and tenant)
        try:
            _, provider, tenant = parse_key(key)
        except ValidationError:
            provider, tenant = "", ""
        labels["provider"] = labels["provider"] or provider or None
        labels["tenant"] = labels["tenant"] or tenant or None
    scope = Scope(since=start, now=now, since_text=start.strftime("%Y-%m-%dT%H:%MZ"), **labels)
    return await diagnose(
        store, settings, incident.runbook, scope, routes=routes, incident=incident.id
    )


def configured_routes() -> dict[str, list[str]]:
    """``[routes]`` of the ``sluice.toml`` in effect (what the failover check reads)."""
    from sluice.flow.limits import configured_flow

    return configured_flow()[1]


async def diagnose_now(
    store: Store,
    settings: Settings,
    ref: str,
    since: str | None = "1h",
    **labels: str | None,
) -> Diagnosis:
    """What the CLI and the API call: check the runbook and the scope first (nothing is
    read for a bad one), then diagnose over ``[routes]`` as configured."""
    find(ref)
    scope = make_scope(since, now=await store.clock_now(), **labels)
    return await diagnose(store, settings, ref, scope, routes=configured_routes())
