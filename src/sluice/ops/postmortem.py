"""Postmortem drafts and incident statistics, computed from the store.

One implementation for ``sluice incidents postmortem ID`` / ``GET
/v1/incidents/{id}/postmortem`` (a Markdown draft in the template of seed 003 §6) and for
``sluice incidents stats`` / ``GET /v1/incidents/stats`` (seed 002's post-incident metrics:
MTTD, MTTR, and time to contain, per rule and severity). Reads only: nothing is audited.

The times of one incident, as this module reckons them:

* **started**: the first signal. The rule fired only after its condition held for its
  ``for``, so the signal began no later than ``opened - for``; where the store keeps the
  rows the rule counts (failed attempts in scope, the audit entry of a breaker opening, a
  quota threshold, a connection losing its grant), the first such row in the look-back
  before the opening is earlier still, and the earliest of the two is the start.
* **detected**: the incident opened. Time to detect = detected - started (MTTD).
* **contained**: the first act in scope from then on that stops or slows sending: a
  control other than ``live``, a run-time limit, a breaker forced or tripped open, an
  endpoint disabled, a connection revoked (audit log), or a control on the incident's own
  timeline. Time to contain = contained - detected (0 when it came first).
* **resolved**: time to resolve = resolved - detected (MTTR, seed 002: "from detection
  to resolution").

The window of the draft runs from started to resolved (or now, while it is open).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sluice.alerts.rules import RULES, All, Count, Latency, Ratio, Rule, State, Where
from sluice.clock import Clock, SystemClock
from sluice.errors import NotFound, ValidationError
from sluice.model import Message
from sluice.ops.listings import parse_time
from sluice.ops.render import jsonable
from sluice.store.base import (
    AttemptFilter,
    AuditEntry,
    AuditFilter,
    Incident,
    MessageFilter,
    Store,
)

__all__ = [
    "CATEGORIES",
    "SECTIONS",
    "AnnotationSource",
    "Facts",
    "FollowUps",
    "Loss",
    "RuleStats",
    "Stats",
    "TimelineRow",
    "incident_stats",
    "postmortem_draft",
    "postmortem_facts",
    "render_postmortem",
    "rule_follow_ups",
]

#: The sections of seed 003 §6's template, in its order (the draft's ``###`` headings).
SECTIONS = (
    "1) Summary",
    "2) Impact",
    "3) Detection",
    "4) Timeline (UTC)",
    "5) Root cause(s)",
    "6) What went well",
    "7) What went poorly",
    "8) Where we got lucky",
    "9) Corrective actions",
    "10) Follow-up changes to docs/tests",
    "11) Appendix",
)

#: What became of the messages accepted in the window, in the order the draft lists them.
#: ``sent`` is the only one not counted as affected.
CATEGORIES = (
    "sent late", "delayed", "held", "dead", "cancelled", "expired", "suppressed", "shadowed",
    "sent",
)  # fmt: skip
_SENT = ("sent", "delivered", "read", "bounced")
_STATUS_CATEGORY = {
    "queued": "delayed", "sending": "delayed", "held": "held", "dead": "dead",
    "cancelled": "cancelled", "expired": "expired", "suppressed": "suppressed",
    "shadowed": "shadowed",
}  # fmt: skip

#: How far before ``opened - for`` the first row of a state rule's signal is looked for
#: (a state crosses its threshold some time after its first row). A window rule looks
#: back over its window only: what came before it did not make the rule fire.
LOOKBACK_SLACK = 600.0
#: The most audit entries the timeline reads, and shows.
MAX_AUDIT = 2000
MAX_TIMELINE = 150
#: The most distinct messages the loss check looks up.
MAX_LOSS_CHECK = 20_000
#: The most incidents ``incident_stats`` reckons over, and its longest period.
MAX_STATS = 1000
MAX_PERIOD = 366 * 86400.0
#: The audit actions that contain (stop or slow sending); ``control.set`` only to a mode
#: other than ``live``.
CONTAIN_ACTIONS = (
    "control.set", "limit.set", "breaker.force_open", "breaker.open", "endpoint.disable",
    "connection.revoke",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class TimelineRow:
    """One row of the draft's timeline: seed 003's Time | Event | Owner | Evidence link."""

    at: datetime
    event: str
    owner: str
    evidence: str


#: Where the timeline's annotations come from (deploy and config markers), given the
#: store and the window. ``None``: none are shown.
AnnotationSource = Callable[[Store, datetime, datetime], Awaitable[list[TimelineRow]]]
#: The follow-up prompts of an incident (its runbook's follow-ups), given the incident
#: and its rule (None for a rule Sluice no longer has).
FollowUps = Callable[[Incident, Rule | None], list[str]]


async def stored_annotations(store: Store, since: datetime, until: datetime) -> list[TimelineRow]:
    """The deploy, config and other markers operators recorded in the window (``sluice
    annotate``), one timeline row each."""
    found = await store.annotation_list(since, until, limit=MAX_TIMELINE)
    return [
        TimelineRow(
            a.at,
            f"annotation ({a.kind}): {a.text}" + (f" [tenant {a.tenant}]" if a.tenant else ""),
            a.actor,
            f"annotation #{a.id}",
        )
        for a in found
    ]


#: Where drafts read annotations from (a test may pass its own to ``postmortem_facts``).
annotation_source: AnnotationSource | None = stored_annotations


@dataclass(frozen=True, slots=True)
class Loss:
    """The loss check: messages known to have been accepted, and those with no row now."""

    #: Rows created in the window and in scope (each in some state now).
    accepted: int
    accounted: int
    #: Distinct messages any attempt of the window names (every scope).
    tried: int
    #: Of those, the ones whose row is gone: lost, unless an operator's purge says why.
    missing: list[str]
    #: Retention purges audited from the window's start on (they remove attempts too).
    purges: list[AuditEntry]
    #: True when more messages were tried than the check looked up.
    capped: bool = False


@dataclass(frozen=True, slots=True)
class Facts:
    """What the draft says, computed: the numbers a test compares with the store's."""

    incident: Incident
    rule: Rule | None
    started: datetime
    #: What set ``started``: the rule's ``for``, or the first row in the store.
    started_by: str
    first_evidence: datetime | None
    detect_seconds: float
    contained_at: datetime | None
    contained_by: TimelineRow | None
    contain_seconds: float | None
    resolve_seconds: float | None
    until: datetime
    #: Messages accepted in the window and in scope, per category of ``CATEGORIES``.
    by_category: dict[str, int]
    #: Affected messages per tenant, channel, provider and action (most first).
    impact: dict[str, list[tuple[str, int]]]
    top_errors: list[tuple[str, int]]
    loss: Loss
    timeline: list[TimelineRow]
    #: Timeline rows left out (the draft says how many, and where to read them).
    timeline_more: int
    follow_ups: list[str]
    generated_at: datetime

    @property
    def affected(self) -> int:
        """Messages accepted in the window that were not simply sent."""
        return sum(n for c, n in self.by_category.items() if c != "sent")

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = jsonable(
            {
                "incident": self.incident.id, "rule": self.incident.rule,
                "started": self.started, "started_by": self.started_by,
                "first_evidence": self.first_evidence, "detect_seconds": self.detect_seconds,
                "contained_at": self.contained_at, "contain_seconds": self.contain_seconds,
                "resolve_seconds": self.resolve_seconds, "until": self.until,
                "by_category": self.by_category, "affected": self.affected,
                "impact": {k: [list(p) for p in v] for k, v in self.impact.items()},
                "top_errors": [list(p) for p in self.top_errors],
                "loss": {"accepted": self.loss.accepted, "accounted": self.loss.accounted,
                         "tried": self.loss.tried, "missing": self.loss.missing,
                         "capped": self.loss.capped},
            }
        )  # fmt: skip
        return out


# -- the rule's signal ---------------------------------------------------------------


def _rule(name: str) -> Rule | None:
    """The rule as the evaluator ran it: its ``for`` as ``[alerts.for]`` of the
    ``sluice.toml`` in effect sets it (else the rule's own)."""
    from sluice.ops.notify import alert_settings

    rule = next((r for r in RULES if r.name == name), None)
    if rule is None:
        return None
    _, durations = alert_settings()
    return dataclasses.replace(rule, for_seconds=durations.get(name, rule.for_seconds))


_FAILED: Where = (("outcome", ("failed",)),)
#: State metrics whose first row in the store is known: (table, where, words).
_STATE_SIGNAL: dict[str, tuple[str, Where, str]] = {
    "sluice_dead_letters": ("attempts", _FAILED, "first failed attempt"),
    "sluice_retrying_messages": ("attempts", _FAILED, "first failed attempt"),
    "sluice_breaker_open": ("audit", (("action", ("breaker.open",)),), "breaker opened"),
    "sluice_quota_use_ratio": (
        "audit", (("action", ("quota.threshold",)),), "first quota threshold crossed",
    ),
    "sluice_connections": (
        "audit",
        (("action", ("connection.pending_reauth", "connection.needs_reconsent")),),
        "connection lost its grant",
    ),
}  # fmt: skip


def _signal(rule: Rule) -> tuple[str, Where, str] | None:
    """Which rows of the store are the rule's signal: (table, where, words), or None."""
    cond = rule.builtin
    if isinstance(cond, State):
        return _STATE_SIGNAL.get(cond.metric)
    if isinstance(cond, Count) and cond.table in ("attempts", "audit"):
        return cond.table, cond.where, f"first {cond.table[:-1]} the rule counts"
    if isinstance(cond, Ratio) and cond.table == "attempts":
        if cond.op in (">", ">="):
            return "attempts", cond.numerator, "first attempt the rule counts"
        return "attempts", _FAILED, "first failed attempt"
    return None  # Latency, All (an absence), PrometheusOnly: only ``for`` is known


def _window_of(rule: Rule) -> float:
    cond = rule.builtin
    if isinstance(cond, Count | Ratio | Latency):
        return float(cond.window)
    if isinstance(cond, All):
        return float(max(getattr(c, "window", 0) for c in cond.conditions))
    return 0.0


def _matches(labels: Mapping[str, str], where: Where) -> bool:
    for name, allowed in where:
        value = labels.get(name, "")
        if not any(value.startswith(a[:-1]) if a.endswith("*") else value == a for a in allowed):
            return False
    return True


def _scope_fields(scope: Mapping[str, str]) -> dict[str, str]:
    """The incident's scope as message fields (tenant, channel, provider, action); a
    breaker key ``p:<provider>`` or ``c:<tenant>:<provider>`` read as such."""
    out = {k: v for k, v in scope.items() if k in ("tenant", "channel", "provider", "action")}
    key = scope.get("key", "")
    parts = key.split(":")
    if parts[0] == "p" and len(parts) == 2:
        out.setdefault("provider", parts[1])
    elif parts[0] == "c" and len(parts) == 3:
        out.setdefault("tenant", parts[1])
        out.setdefault("provider", parts[2])
    return out


def _in_scope(labels: Mapping[str, str], fields: Mapping[str, str]) -> bool:
    return all(labels.get(k, v) == v for k, v in fields.items())


def _audit_filter(fields: Mapping[str, str], **kw: Any) -> AuditFilter:
    return AuditFilter(
        tenant=fields.get("tenant"), channel=fields.get("channel"),
        provider=fields.get("provider"), scope_action=fields.get("action"), **kw,
    )  # fmt: skip


async def _count(
    store: Store, where: Where, fields: Mapping[str, str], since: datetime, until: datetime
) -> int:
    rows = await store.tally("attempts", since, until)
    return sum(n for labels, n in rows if _matches(labels, where) and _in_scope(labels, fields))


async def _first_attempt(
    store: Store, where: Where, fields: Mapping[str, str], since: datetime, until: datetime
) -> datetime | None:
    """When the first matching attempt in (since, until] finished, to the second: the
    window halved until it is a second wide (the store counts, it does not list, by
    tenant and channel)."""
    total = await _count(store, where, fields, since, until)
    if not total:
        return None
    lo, hi = since, until  # every matching row is after lo; at least one is at or before hi
    while hi - lo > timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        if await _count(store, where, fields, mid, until) == total:
            lo = mid
        else:
            hi = mid
    return hi.replace(microsecond=0) if hi.microsecond else hi


async def _first_audit(
    store: Store, where: Where, fields: Mapping[str, str], since: datetime, until: datetime
) -> datetime | None:
    firsts = []
    for name, actions in where:
        if name != "action":
            continue
        for action in actions:
            flt = _audit_filter(fields, since=since, until=until, action=action.rstrip("*"))
            entries, _ = await _entries(store, flt)
            if entries:
                firsts.append(entries[0].at)
    return min(firsts) if firsts else None


async def _entries(
    store: Store, flt: AuditFilter, most: int = MAX_AUDIT
) -> tuple[list[AuditEntry], bool]:
    """Audit entries ``flt`` selects, oldest first, at most ``most`` (the newest); True
    when there were more."""
    out: list[AuditEntry] = []
    before: int | None = None
    while len(out) < most:
        page = await store.audit_list(500, _paged(flt, before))
        out.extend(page)
        if len(page) < 500 or page[-1].id is None:
            return out[::-1], False
        before = page[-1].id
    return out[:most][::-1], True


def _paged(flt: AuditFilter, before_id: int | None) -> AuditFilter:
    return AuditFilter(
        since=flt.since, until=flt.until, actor=flt.actor, action=flt.action,
        tenant=flt.tenant, channel=flt.channel, provider=flt.provider,
        scope_action=flt.scope_action, before_id=before_id,
    )  # fmt: skip


def _previous_end(incident: Incident, others: Iterable[Incident]) -> datetime | None:
    """When the last incident of the same rule and scope before this one resolved: the
    signal of this one is not looked for before then (it was that one's)."""
    ends = [
        o.resolved_at
        for o in others
        if o.id != incident.id and o.rule == incident.rule and o.scope_key == incident.scope_key
        and o.resolved_at is not None and o.resolved_at <= incident.opened_at
    ]  # fmt: skip
    return max(ends) if ends else None


async def _started(
    store: Store, incident: Incident, rule: Rule | None, not_before: datetime | None = None
) -> tuple[datetime, str, datetime | None, str]:
    """(started, what set it, the first row of the signal in the store or None, what that
    row is). Rows before ``not_before`` are not looked at."""
    for_s = float(rule.for_seconds) if rule else 0.0
    by_for = incident.opened_at - timedelta(seconds=for_s)
    words = f"the rule's `for` ({_span(for_s)}) before it opened"
    signal = _signal(rule) if rule else None
    if rule is None or signal is None:
        return by_for, words, None, ""
    table, where, what = signal
    fields = _scope_fields(incident.scope)
    slack = LOOKBACK_SLACK if isinstance(rule.builtin, State) else 0.0
    since = by_for - timedelta(seconds=_window_of(rule) + slack)
    if not_before is not None and not_before > since:
        since = min(not_before, incident.opened_at)
    if table == "attempts":
        first = await _first_attempt(store, where, fields, since, incident.opened_at)
    else:
        first = await _first_audit(store, where, fields, since, incident.opened_at)
    if first is not None and first < by_for:
        return first, f"{what} in scope ({first:%Y-%m-%d %H:%M:%S} UTC)", first, what
    return by_for, words, first, what


# -- containment, timeline -------------------------------------------------------------


def _is_global(entry: AuditEntry) -> bool:
    """A control on everything (it contains any incident, whatever its scope)."""
    scope = entry.detail.get("scope") if entry.action.startswith("control.") else None
    return isinstance(scope, dict) and not any(scope.values())


def _contains(entry: AuditEntry) -> bool:
    if not entry.action.startswith(CONTAIN_ACTIONS):
        return False
    return not (entry.action == "control.set" and entry.detail.get("mode") == "live")


def _audit_row(e: AuditEntry) -> TimelineRow:
    what = e.action + (f" {e.target}" if e.target else "")
    mode = e.detail.get("mode") if e.action.startswith("control.") else None
    if mode:
        what += f" → {mode}"
    if e.reason:
        what += f": {e.reason}"
    return TimelineRow(e.at, what, e.actor, f"audit #{e.id}")


def _event_row(
    incident: Incident, kind: str, at: datetime, actor: str, d: dict[str, Any]
) -> TimelineRow:
    if kind == "fired":
        what = f"incident opened: {incident.summary}"
    elif kind == "control":
        what = f"control {d.get('control', '')} {d.get('scope', '')} → {d.get('mode', '')}"
        what += f": {d['reason']}" if d.get("reason") else ""
    elif kind == "peak":
        what = f"new peak {d.get('value', '')}"
    else:
        text = d.get("text") or d.get("reason") or ""
        what = f"incident {kind}" + (f": {text}" if text else "")
    return TimelineRow(at, what, actor, f"incident {incident.id[:8]} timeline")


async def _scoped_audit(
    store: Store, fields: Mapping[str, str], since: datetime, until: datetime
) -> tuple[list[AuditEntry], bool]:
    """Audit entries of the window about the scope, and controls on everything."""
    scoped, more = await _entries(store, _audit_filter(fields, since=since, until=until))
    if not fields:
        return scoped, more
    glob, _ = await _entries(store, AuditFilter(since=since, until=until, action="control."))
    seen = {e.id for e in scoped}
    extra = [e for e in glob if _is_global(e) and e.id not in seen]
    return sorted(scoped + extra, key=lambda e: (e.at, e.id or 0)), more


def _containment(
    incident: Incident, audit: Sequence[AuditEntry], started: datetime
) -> TimelineRow | None:
    rows = [_audit_row(e) for e in audit if e.at >= started and _contains(e)]
    rows += [
        _event_row(incident, e.kind, e.at, e.actor, e.detail)
        for e in incident.events
        if e.kind == "control" and e.detail.get("mode") not in (None, "live")
    ]
    return min(rows, key=lambda r: r.at) if rows else None


# -- messages ------------------------------------------------------------------------


def _category(m: Message) -> str:
    if m.status in _SENT:
        return "sent late" if m.attempts > 1 or m.deferrals > 0 else "sent"
    return _STATUS_CATEGORY.get(m.status, str(m.status))


async def _in_play(
    store: Store, fields: Mapping[str, str], since: datetime, until: datetime
) -> tuple[dict[str, Message], dict[str, Message | None], bool]:
    """The messages of the window: those accepted in it (in scope), and every message an
    attempt of the window names (any scope; None when its row is gone). True when capped."""
    flt = MessageFilter(
        tenant=fields.get("tenant"), channel=fields.get("channel"),
        provider=fields.get("provider"), action=fields.get("action"), since=since, until=until,
    )  # fmt: skip
    created: dict[str, Message] = {}
    after: str | None = None
    capped = False
    while True:
        page = await store.message_list(flt, None, after, 1000)
        created.update((m.id, m) for m in page)
        if len(page) < 1000:
            break
        if len(created) >= MAX_LOSS_CHECK:
            capped = True
            break
        after = page[-1].id
    tried: dict[str, Message | None] = {}
    before: int | None = None
    while True:
        attempts, before = await store.attempt_search(
            AttemptFilter(since=since, until=until, before_id=before), 1000
        )
        for a in attempts:
            tried.setdefault(a.message_id, None)
        if before is None:
            break
        if len(tried) >= MAX_LOSS_CHECK:
            capped = True
            break
    for mid in tried:
        if mid in created:
            tried[mid] = created[mid]
            continue
        try:
            tried[mid] = await store.message_get(mid)
        except NotFound:
            tried[mid] = None  # no row: lost, unless something says why
    return created, tried, capped


def _labels(m: Message) -> dict[str, str]:
    return {"tenant": m.tenant, "channel": m.channel, "provider": m.provider, "action": m.action}


def _tally_messages(
    messages: Iterable[Message],
) -> tuple[dict[str, int], dict[str, list[tuple[str, int]]]]:
    by_category = dict.fromkeys(CATEGORIES, 0)
    per: dict[str, dict[str, int]] = {k: {} for k in ("tenant", "channel", "provider", "action")}
    for m in messages:
        cat = _category(m)
        by_category[cat] = by_category.get(cat, 0) + 1
        if cat == "sent":
            continue
        for k, groups in per.items():
            v = getattr(m, k)
            groups[v] = groups.get(v, 0) + 1
    impact = {k: sorted(g.items(), key=lambda p: (-p[1], p[0])) for k, g in per.items()}
    return by_category, impact


async def _top_errors(
    store: Store, fields: Mapping[str, str], since: datetime, until: datetime
) -> list[tuple[str, int]]:
    per: dict[str, int] = {}
    for labels, n in await store.tally("attempts", since, until):
        if labels.get("error_code") and _in_scope(labels, fields):
            per[labels["error_code"]] = per.get(labels["error_code"], 0) + n
    return sorted(per.items(), key=lambda p: (-p[1], p[0]))[:10]


async def _loss(
    store: Store,
    created: Mapping[str, Message],
    tried: Mapping[str, Message | None],
    since: datetime,
    capped: bool,
) -> Loss:
    """Every message known accepted must still have a row. A purge removes a message's
    attempts with it, so an attempt without its message is a loss."""
    known = set(created) | set(tried)
    missing = sorted(mid for mid, m in tried.items() if m is None)
    purges, _ = await _entries(store, AuditFilter(since=since, action="message.purge"))
    return Loss(len(known), len(known) - len(missing), len(tried), missing, purges, capped)


# -- follow-ups ------------------------------------------------------------------------

_TYPE_PROMPTS = {
    "QUEUE": "Could the backlog have been drained or held sooner (`sluice pause`, more workers)?",
    "PROVIDER": "Does this channel have a failover route in `[routes]`, and did it carry traffic?",
    "AUTH": "Should connection expiry or scope loss alert earlier (`SluiceConnectionExpiring`)?",
    "RATE": "Are the limits and quotas for this provider set below what it allows?",
    "ENGAGE": "Is a recipient cap or cooldown in place against the loop that ran here?",
    "SAFETY": "Which invariant let this happen, and which test now proves it cannot again?",
    "DATA": "Were receipts or inbound events lost or replayed, and does the inbox show it?",
    "OBS": "Which signal was missing, and what now exports it?",
}


def rule_follow_ups(incident: Incident, rule: Rule | None) -> list[str]:
    """Follow-up prompts derived from the incident's rule and runbook (the default until
    the runbook registry supplies the runbook's own follow-ups)."""
    out = [f"Update runbook `{incident.runbook}` with what this incident taught."]
    if rule is not None:
        out.append(
            f"Did `{rule.name}` ({rule.condition or rule.description}) fire early enough? "
            f"Its threshold comes from seed {rule.seed}."
        )
    for tag in incident.types:
        if tag in _TYPE_PROMPTS:
            out.append(_TYPE_PROMPTS[tag])
    out.append("Add a regression test that replays this failure against the simulator.")
    return out


def runbook_follow_ups(incident: Incident, rule: Rule | None) -> list[str]:
    """The follow-ups of the incident's runbook (``sluice runbook show``), or those
    derived from its rule when the catalog has no runbook by that reference."""
    from sluice.errors import NotFound
    from sluice.runbooks import find

    try:
        runbook = find(incident.runbook or "")
    except NotFound:
        return rule_follow_ups(incident, rule)
    if not runbook.follow_ups:
        return rule_follow_ups(incident, rule)
    return [f"{f} (runbook {runbook.id})" for f in runbook.follow_ups] + [
        f"Update runbook `{incident.runbook}` with what this incident taught."
    ]


#: Where drafts take their follow-up prompts from (a test may pass its own).
follow_up_source: FollowUps = runbook_follow_ups


# -- the facts, the draft ----------------------------------------------------------------


async def postmortem_facts(
    store: Store,
    incident_id: str,
    *,
    clock: Clock | None = None,
    annotations: AnnotationSource | None = None,
    follow_ups: FollowUps | None = None,
) -> Facts:
    """Everything the draft states about one incident (``NotFound`` for an unknown id)."""
    incident = await store.incident_get(incident_id)
    now = (clock or SystemClock()).now()
    rule = _rule(incident.rule)
    before = _previous_end(incident, await store.incident_list("", MAX_STATS))
    started, started_by, first, first_what = await _started(store, incident, rule, before)
    until = incident.resolved_at or now
    fields = _scope_fields(incident.scope)
    edge = until + timedelta(microseconds=1)
    audit, more = await _scoped_audit(store, fields, started, edge)
    contained = _containment(incident, audit, started)
    contained_at = contained.at if contained else None
    contain_s = (
        max(0.0, (contained_at - incident.opened_at).total_seconds()) if contained_at else None
    )
    resolve_s = (
        (incident.resolved_at - incident.opened_at).total_seconds()
        if incident.resolved_at
        else None
    )
    created, tried, capped = await _in_play(store, fields, started, edge)
    in_play = dict(created)
    in_play.update(
        (mid, m) for mid, m in tried.items() if m is not None and _in_scope(_labels(m), fields)
    )
    by_category, impact = _tally_messages(in_play.values())
    top = await _top_errors(store, fields, started - timedelta(microseconds=1), until)
    loss = await _loss(store, created, tried, started, capped)
    # An act on this incident is on its timeline already (and audited): shown once.
    rows = [
        _audit_row(e)
        for e in audit
        if not (e.action.startswith("incident.") and e.target == incident.id)
    ]
    rows += [
        _event_row(incident, e.kind, e.at, e.actor, e.detail)
        for e in incident.events
        if not (e.kind == "control" and any(a.at == e.at and a.actor == e.actor for a in audit))
    ]
    if first is not None:
        link = "`sluice attempts list`" if "attempt" in first_what else "`sluice audit list`"
        rows.append(TimelineRow(first, f"first signal: {first_what} in scope", "sluice", link))
    source = annotations or annotation_source
    if source is not None:  # deploy and config markers (issue 15, annotations)
        rows += await source(store, started, edge)
    rows.sort(key=lambda r: r.at)
    shown = rows[:MAX_TIMELINE]
    return Facts(
        incident=incident, rule=rule, started=started, started_by=started_by,
        first_evidence=first,
        detect_seconds=max(0.0, (incident.opened_at - started).total_seconds()),
        contained_at=contained_at, contained_by=contained, contain_seconds=contain_s,
        resolve_seconds=resolve_s, until=until, by_category=by_category, impact=impact,
        top_errors=top, loss=loss, timeline=shown,
        timeline_more=len(rows) - len(shown) + (1 if more else 0),
        follow_ups=(follow_ups or follow_up_source)(incident, rule), generated_at=now,
    )  # fmt: skip


async def postmortem_draft(
    store: Store,
    incident_id: str,
    *,
    clock: Clock | None = None,
    annotations: AnnotationSource | None = None,
    follow_ups: FollowUps | None = None,
) -> str:
    """The Markdown draft of seed 003 §6 for one incident, filled with computed facts."""
    facts = await postmortem_facts(
        store, incident_id, clock=clock, annotations=annotations, follow_ups=follow_ups
    )
    return render_postmortem(facts)


def _span(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    s = round(seconds)
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


def _after(at: datetime) -> str:
    """The first whole second after ``at``, as ``--until`` takes it (exclusive)."""
    return f"{at.replace(microsecond=0) + timedelta(seconds=1):%Y-%m-%dT%H:%M:%SZ}"


def _t(at: datetime | None) -> str:
    return f"{at:%Y-%m-%d %H:%M:%S}" if at else "—"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _prompt(text: str) -> str:
    return f"- _{text}_"


def render_postmortem(f: Facts) -> str:
    """The draft, from the facts: seed 003 §6's sections in its order."""
    i = f.incident
    scope = i.scope_key or "everything"
    out: list[str] = [
        f"## Postmortem: {i.id} — {i.summary}",
        "",
        f"> Draft generated by Sluice at {_t(f.generated_at)} UTC from the store. Numbers "
        "are computed; lines in _italics_ are prompts for a person.",
        "",
    ]
    state = "resolved" if i.resolved_at else f"still {i.state}"
    duration = _span((f.until - f.started).total_seconds())
    tenants = [t for t, _ in f.impact.get("tenant", [])]
    sec = iter(SECTIONS)
    out += [
        f"### {next(sec)}",
        f"- `{i.rule}` ({i.severity}; {', '.join(i.types) or 'untagged'}) opened at "
        f"{_t(i.opened_at)} UTC for {scope}; {state}.",
        f"- {f.affected} of the {sum(f.by_category.values())} messages in play in the window "
        f"were affected, across {len(tenants)} tenant(s).",
        f"- Duration from first signal to {'resolution' if i.resolved_at else 'now'}: {duration}.",
        _prompt("What happened, in two to five sentences."),
        "",
        f"### {next(sec)}",
        f"- Window: {_t(f.started)} → {_t(f.until)} UTC; scope: {scope}.",
        "- Client impact (tenants, affected messages): "
        + (", ".join(f"{t} ({n})" for t, n in f.impact.get("tenant", [])) or "none"),
        "- Platform impact (channels / providers): "
        + (", ".join(f"{c} ({n})" for c, n in f.impact.get("channel", [])) or "none")
        + " / "
        + (", ".join(f"{p} ({n})" for p, n in f.impact.get("provider", [])) or "none"),
        "- Actions impacted: "
        + (", ".join(f"{a} ({n})" for a, n in f.impact.get("action", [])) or "none"),
        "",
        "Messages in play: accepted in the window, or tried in it (in scope). _Sent late_: "
        "sent after a failed try or a deferral; _delayed_: not sent yet.",
        "",
        "| Final or current state | Messages |",
        "|---|---|",
        *[f"| {c} | {f.by_category[c]} |" for c in CATEGORIES],
        f"| **in play in the window (in scope)** | **{sum(f.by_category.values())}** |",
        "",
        *_loss_lines(f.loss),
        _prompt("Business impact: missed or late notifications, risk to whom."),
        "",
        f"### {next(sec)}",
        f"- How: alert rule `{i.rule}` of the built-in evaluator"
        + (f" ({f.rule.condition})" if f.rule and f.rule.condition else "")
        + f"; runbook `{i.runbook}`.",
        f"- First signal: {_t(f.started)} UTC, set by {f.started_by}.",
        f"- Time to detection: {_span(f.detect_seconds)} (opened {_t(i.opened_at)} UTC).",
        "- Time to contain: "
        + (
            f"{_span(f.contain_seconds)} ({f.contained_by.event} by {f.contained_by.owner}, "
            f"{_t(f.contained_at)} UTC)"
            if f.contained_by
            else "no containing act in scope was recorded"
        )
        + ".",
        f"- Time to resolve: {_span(f.resolve_seconds)}"
        + (f" (resolved by {i.resolved_by})" if i.resolved_by else " (not resolved yet)")
        + ".",
        _prompt("What signal should have detected it earlier?"),
        "",
        f"### {next(sec)}",
        "| Time | Event | Owner | Evidence link |",
        "|------|-------|-------|--------------|",
        *[
            f"| {_t(r.at)} | {_cell(r.event)} | {_cell(r.owner)} | {_cell(r.evidence)} |"
            for r in f.timeline
        ],
    ]
    if f.timeline_more:
        out.append(
            f"\n{f.timeline_more} more entries: `sluice audit list --since "
            f"{f.started:%Y-%m-%dT%H:%M:%SZ} --until {_after(f.until)}`."
        )
    out += [
        "",
        f"### {next(sec)}",
        "- Top error codes in scope over the window: "
        + (", ".join(f"`{c}` ({n})" for c, n in f.top_errors) or "none recorded"),
        _prompt("Primary cause."),
        _prompt("Contributing factors."),
        _prompt("Preconditions: why this was possible."),
        "",
        f"### {next(sec)}",
        _prompt(
            "Fast mitigation? "
            + (
                f"Contained {_span(f.contain_seconds)} after detection."
                if f.contained_by
                else "Nothing in scope was contained by an act."
            )
        ),
        _prompt("Good tooling?"),
        "",
        f"### {next(sec)}",
        _prompt("Missing runbook steps."),
        _prompt("Unclear ownership."),
        _prompt("Noisy or insufficient alerts."),
        "",
        f"### {next(sec)}",
        _prompt(f"Blast radius: {len(tenants)} tenant(s), {f.affected} message(s)."),
        _prompt("Time of day."),
        "",
        f"### {next(sec)}",
        "| Action | Type (mitigate/prevent/detect) | Owner | Due date | Status |",
        "|--------|-------------------------------|-------|----------|--------|",
        *[f"| {_cell(a)} | _?_ | _?_ | _?_ | proposed |" for a in f.follow_ups],
        "",
        f"### {next(sec)}",
        f"- [ ] Runbook `{i.runbook}` updated",
        "- [ ] Regression tests added",
        f"- [ ] Monitoring/alerts updated (`{i.rule}`)",
        "- [ ] ADR added/updated",
        "",
        f"### {next(sec)}",
        f"- Incident and its timeline: `sluice incidents show {i.id}`",
        f"- Audit entries of the window: `sluice audit list --since "
        f"{f.started:%Y-%m-%dT%H:%M:%SZ} --until {_after(f.until)}`; "
        "the hash chain: `sluice audit verify`",
        f"- Attempts of the window: `sluice attempts list --since "
        f"{f.started:%Y-%m-%dT%H:%M:%SZ} --until {_after(f.until)}`",
        _prompt("Logs, trace ids, screenshots, deploy diffs."),
        "",
    ]
    return "\n".join(out)


def _loss_lines(loss: Loss) -> list[str]:
    lines = [
        f"Loss check: {loss.accepted} messages known to have been accepted (rows created in "
        f"the window in scope, and the {loss.tried} messages that attempts of the window "
        f"name, in any scope); {loss.accounted} of them are accounted for in a state now."
    ]
    if loss.missing:
        shown = ", ".join(f"`{m}`" for m in loss.missing[:20])
        more = f" and {len(loss.missing) - 20} more" if len(loss.missing) > 20 else ""
        lines.append(
            f"**LOSS: {len(loss.missing)} message(s) were tried in the window but have no row "
            f"now: {shown}{more}.**"
        )
        if loss.purges:
            lines.append(
                "Retention purges were audited since the window began ("
                + ", ".join(f"audit #{p.id}" for p in loss.purges)
                + "), but a purge removes a message's attempts with it: it does not explain "
                "these."
            )
    else:
        lines.append("No loss: every message is accounted for.")
    if loss.capped:
        lines.append(f"(Capped: only the first {MAX_LOSS_CHECK} messages were looked up.)")
    return [ln + "\n" for ln in lines]


# -- statistics ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RuleStats:
    """One rule's (or severity's) incidents over the period."""

    rule: str
    severity: str
    incidents: int
    open: int
    resolved: int
    contained: int
    mttd_seconds: float | None
    mttr_seconds: float | None
    mttc_seconds: float | None


@dataclass(frozen=True, slots=True)
class Stats:
    """Seed 002's post-incident metrics over ``since``..``until``."""

    since: datetime
    until: datetime
    overall: RuleStats
    by_rule: list[RuleStats]
    by_severity: dict[str, int]
    #: Incidents opened per week over the period (seed 002's incident frequency).
    per_week: float = 0.0
    #: True when the period held more than ``MAX_STATS`` incidents (the newest counted).
    truncated: bool = False
    incidents: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The listing shape: one item per rule, the rest beside it."""
        out: dict[str, Any] = jsonable(
            {
                "items": self.by_rule, "count": len(self.by_rule), "next_cursor": None,
                "since": self.since, "until": self.until, "overall": self.overall,
                "by_severity": self.by_severity, "per_week": self.per_week,
                "truncated": self.truncated,
            }
        )  # fmt: skip
        return out


def _mean(values: Iterable[float | None]) -> float | None:
    vs = [v for v in values if v is not None]
    return round(math.fsum(vs) / len(vs), 3) if vs else None


def _summarise(rule: str, severity: str, rows: Sequence[dict[str, Any]]) -> RuleStats:
    return RuleStats(
        rule=rule, severity=severity, incidents=len(rows),
        open=sum(1 for r in rows if r["resolve_seconds"] is None),
        resolved=sum(1 for r in rows if r["resolve_seconds"] is not None),
        contained=sum(1 for r in rows if r["contain_seconds"] is not None),
        mttd_seconds=_mean(r["detect_seconds"] for r in rows),
        mttr_seconds=_mean(r["resolve_seconds"] for r in rows),
        mttc_seconds=_mean(r["contain_seconds"] for r in rows),
    )  # fmt: skip


def _period(since: str | None, now: datetime) -> datetime:
    text = "30d" if since is None else since
    if not isinstance(text, str) or not text.strip():
        raise ValidationError("since", "must be a span like 30d or an ISO time")
    when = parse_time("since", text, now)
    assert when is not None
    if when >= now:
        raise ValidationError("since", f"{text!r} is not in the past")
    if (now - when).total_seconds() > MAX_PERIOD:
        raise ValidationError("since", f"{text!r} reaches back more than a year")
    return when


async def incident_stats(
    store: Store, since: str | None = "30d", *, clock: Clock | None = None
) -> Stats:
    """MTTD, MTTR and time to contain, overall and per rule, and counts per rule and
    severity, of the incidents opened since ``since`` (``30d``, ``12h``, an ISO time).
    ``ValidationError`` naming ``since``."""
    now = (clock or SystemClock()).now()
    start = _period(since, now)
    everything = await store.incident_list("", MAX_STATS + 1)
    listed = [i for i in everything if i.opened_at >= start]
    truncated = len(listed) > MAX_STATS
    rows: list[dict[str, Any]] = []
    for listed_one in listed[:MAX_STATS]:
        incident = await store.incident_get(listed_one.id)
        rule = _rule(incident.rule)
        before = _previous_end(incident, everything)
        started, _, _, _ = await _started(store, incident, rule, before)
        until = (incident.resolved_at or now) + timedelta(microseconds=1)
        audit, _ = await _scoped_audit(store, _scope_fields(incident.scope), started, until)
        contained = _containment(incident, audit, started)
        rows.append(
            {
                "id": incident.id, "rule": incident.rule, "severity": incident.severity,
                "detect_seconds": (incident.opened_at - started).total_seconds(),
                "contain_seconds": (
                    max(0.0, (contained.at - incident.opened_at).total_seconds())
                    if contained else None
                ),
                "resolve_seconds": (
                    (incident.resolved_at - incident.opened_at).total_seconds()
                    if incident.resolved_at else None
                ),
            }
        )  # fmt: skip
    per_rule: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        per_rule.setdefault(r["rule"], []).append(r)
    by_rule = [
        _summarise(name, rs[0]["severity"], rs)
        for name, rs in sorted(per_rule.items(), key=lambda p: (-len(p[1]), p[0]))
    ]
    by_severity: dict[str, int] = {}
    for r in rows:
        by_severity[r["severity"]] = by_severity.get(r["severity"], 0) + 1
    return Stats(
        since=start, until=now, overall=_summarise("*", "*", rows), by_rule=by_rule,
        by_severity=dict(sorted(by_severity.items())), truncated=truncated, incidents=rows,
        per_week=round(len(rows) / ((now - start).total_seconds() / (7 * 86400)), 3),
    )  # fmt: skip
