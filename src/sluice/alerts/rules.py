"""Sluice's alert rules, as data: the one list both Prometheus and the built-in
evaluator read.

Each :class:`Rule` says what to watch twice, once per engine, and everything else once:

* ``expr`` is the PromQL Prometheus evaluates (``render_prometheus_rules`` writes
  ``deploy/prometheus/sluice-rules.yml`` from it). **State metrics** are exported, the same,
  by every scraped process: an expression takes the largest (``max by``, or
  ``max without (instance, job, pod)`` before a ``sum``), never the sum, or two processes
  would double every count. **Event metrics** are counted by the process where the event
  happened: an expression sums them (``sum by``).
* ``builtin`` describes the same condition as the store answers it, for an evaluator inside
  Sluice that has no Prometheus: a small tree of :class:`State`, :class:`Count`,
  :class:`Ratio`, :class:`Latency` and :class:`All`, or :class:`PrometheusOnly` (with its
  reason) where the signal is an event the store never keeps.

Severity is seed 003 §0.1 (P0 safety, P1 major outage, P2 partial degradation, P3 minor),
read beside seed 002's "Alert Priority Levels". ``tags`` are seed 003 §0.2's incident types.

**Runbook ids** are ``<seed>#<section>``: the seed's file number in ``shared/seeds/``, then
the seed's own name for the section: its number where it numbers them (``002#2`` is 002's
scenario 2, ``004#1.3``, ``003#2.2``), the runbook id where it has them (``003#RB-01``), or
the heading in lower-case words joined by ``-`` where it has neither (``001#outbox-lag``,
``000#remediation``). ``docs/alerts.md`` lists every rule with its runbook.

**Templates** (``summary``, ``description``) name the rule's ``scope`` labels as
``{label}`` and the value that fired as ``{value}`` (a number), ``{value:percent}`` (a
ratio shown as a percentage) or ``{value:duration}`` (seconds shown as a duration); each
engine renders them its own way (Prometheus: ``{{ $labels.x }}``, ``humanize``...).

**Builtin semantics**, for the evaluator. Every leaf yields a set of *groups*, one per value
of its ``by`` labels (``()``: one group, no labels), each with a number:

* :class:`State` reads a state metric (``sluice.metrics.STATE``) as one refresh of the
  store gives it; series outside ``where`` are dropped, then series are combined per group
  with ``agg``. A group with no series does not exist (does not fire).
* :class:`Count` counts the rows of a store table whose time column (:data:`ROW_TIME`) falls
  in ``(now - offset - window, now - offset]``, grouped by ``by``; a group with no rows
  counts 0 when another condition of an :class:`All` asks for it.
* :class:`Ratio` is numerator rows over denominator rows per group, only for groups with at
  least ``min_rows`` denominator rows.
* :class:`Latency` is the ``quantile`` of ``finished_at - created_at`` over the sent
  attempts of the window (a message's delivery latency, seed 002 §6), per group.
* :class:`All` fires for the groups of its first condition for which every other
  condition also holds (looked up by the shared labels; a missing :class:`Count` is 0).

The rule fires for a group once its condition has held for ``for_seconds`` (Prometheus's
``for``); the group's labels are the incident's scope.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "INCIDENT_TYPES",
    "ROW_TIME",
    "RULES",
    "All",
    "Builtin",
    "Condition",
    "Count",
    "Latency",
    "Op",
    "PrometheusOnly",
    "Ratio",
    "Rule",
    "Severity",
    "State",
    "Table",
    "Where",
]

Severity = Literal["P0", "P1", "P2", "P3"]
Op = Literal[">", ">=", "<", "<=", "==", "!="]
Table = Literal["attempts", "inbox", "audit"]
#: ``(label or column, allowed values)`` pairs; a value ending in ``*`` matches by prefix.
Where = tuple[tuple[str, tuple[str, ...]], ...]

#: The time column a :class:`Count` windows each table by, and the columns it may filter
#: and group by. ``attempts`` rows carry their message's tenant, channel and action (join
#: on ``message_id``).
ROW_TIME: dict[str, str] = {
    "attempts": "finished_at",  # outcome, provider, error_code, tenant, channel, action
    "inbox": "received_at",  # provider, kind, state
    "audit": "at",  # action, target; tenant from detail
}

#: Seed 003 §0.2, the incident types an incident is tagged with.
INCIDENT_TYPES = frozenset(
    {
        "SAFETY", "PUBLISH", "ENGAGE", "AUTH", "RATE", "BROWSER", "QUEUE", "TOOLGATE",
        "PROVIDER", "COST", "DATA", "OBS",
    }
)  # fmt: skip

# -- the builtin spec ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class State:
    """A state metric now: ``agg`` of its series in ``where``, per ``by`` group, ``op``
    ``threshold``."""

    metric: str
    op: Op
    threshold: float
    where: Where = ()
    by: tuple[str, ...] = ()
    agg: Literal["sum", "max", "min"] = "sum"


@dataclass(frozen=True, slots=True)
class Count:
    """How many rows of ``table`` in the window (``where``, per ``by``), ``op``
    ``threshold``; ``per_second`` divides the count by the window first."""

    table: Table
    window: int
    op: Op
    threshold: float
    where: Where = ()
    by: tuple[str, ...] = ()
    offset: int = 0
    per_second: bool = False


@dataclass(frozen=True, slots=True)
class Ratio:
    """Rows matching ``numerator`` over rows matching ``denominator``, both of ``table`` in
    the same window and groups, ``op`` ``threshold`` where the denominator has at least
    ``min_rows``. Set ``over`` to take the denominator from another table (same window)."""

    table: Table
    window: int
    numerator: Where
    denominator: Where
    op: Op
    threshold: float
    by: tuple[str, ...] = ()
    min_rows: int = 1
    over: Table | None = None


@dataclass(frozen=True, slots=True)
class Latency:
    """The ``quantile`` of delivery latency (creation to sent) of the attempts sent in the
    window, per ``by`` group, ``op`` ``threshold`` seconds."""

    quantile: float
    window: int
    op: Op
    threshold: float
    by: tuple[str, ...] = ("channel", "provider")


@dataclass(frozen=True, slots=True)
class All:
    """Every condition holds for the group (the groups are the first condition's)."""

    conditions: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class PrometheusOnly:
    """No built-in equivalent: the signal is an event no table keeps. ``reason`` says why."""

    reason: str


Condition = State | Count | Ratio | Latency | All
Builtin = Condition | PrometheusOnly


@dataclass(frozen=True, slots=True)
class Rule:
    """One detection: what fires, how bad it is, where on-call reads next."""

    name: str
    severity: Severity
    tags: tuple[str, ...]
    runbook: str
    summary: str
    description: str
    expr: str
    for_seconds: int
    #: The labels of a firing alert: the incident's scope (tenant, channel, provider,
    #: action, or the metric's own key such as ``worker`` or ``key``).
    scope: tuple[str, ...]
    builtin: Builtin
    #: Where the rule and its threshold come from (seed file and section), for the docs.
    seed: str
    #: The condition in words, for the docs table.
    condition: str = field(default="")


def _q(promql: str) -> str:
    """PromQL as written below, without the indentation it is written with."""
    return "\n".join(line.strip() for line in promql.strip().splitlines())


_M = 60
_H = 3600
#: Target labels a scrape adds per process: a state metric differs only in these between
#: two processes (add yours here if the scrape config adds more, then regenerate).
_PROC = "instance, job, pod"


def _quota(level: int, severity: Severity, *, op: Op = ">=", name: str = "") -> Rule:
    ratio = level / 100
    return Rule(
        name=name or f"SluiceQuotaUse{level}",
        severity=severity,
        tags=("RATE",),
        runbook="002#4",
        summary=(
            "Quota at {value:percent}: kind={kind} tenant={tenant} provider={provider} "
            "action={action}"
        ),
        description=(
            f"A quota or cap has used {'more than' if op == '>' else 'at least'} {level} % of "
            "its window; sends past it are deferred."
        ),
        expr=f"max by (kind, tenant, provider, action) (sluice_quota_use_ratio) {op} {ratio}",
        for_seconds=1 * _M,
        scope=("kind", "tenant", "provider", "action"),
        builtin=State(
            "sluice_quota_use_ratio",
            op,
            ratio,
            by=("kind", "tenant", "provider", "action"),
            agg="max",
        ),
        seed="002 §4 (alerts at 70/85/95 %; used / limit > 0.9)",
        condition=f"a quota's use ratio {op} {ratio} for 1 min",
    )


RULES: tuple[Rule, ...] = (
    # -- dead letters, queue ---------------------------------------------------------------
    Rule(
        name="SluiceDeadLetters",
        severity="P2",
        tags=("QUEUE",),
        runbook="000#remediation",
        summary="{value} dead letters on {channel}",
        description="Messages have run out of attempts; see sluice dlq list for their codes.",
        expr=_q(f"""
            sum by (channel) (max without ({_PROC}) (sluice_dead_letters)) > 0
        """),
        for_seconds=5 * _M,
        scope=("channel",),
        builtin=State("sluice_dead_letters", ">", 0, by=("channel",)),
        seed="000 Timeline (outbox_dlq_size > 0 for 5 min)",
        condition="any dead letter on a channel for 5 min",
    ),
    Rule(
        name="SluiceDeadLettersHigh",
        severity="P1",
        tags=("QUEUE",),
        runbook="002#2",
        summary="{value} dead letters",
        description="The dead-letter queue holds more than 100 messages.",
        expr=_q(f"""
            sum (max without ({_PROC}) (sluice_dead_letters)) > 100
        """),
        for_seconds=5 * _M,
        scope=(),
        builtin=State("sluice_dead_letters", ">", 100),
        seed="002 §2 (dead letter queue size > 100)",
        condition="more than 100 dead letters in all for 5 min",
    ),
    Rule(
        name="SluiceQueueDepthHigh",
        severity="P2",
        tags=("QUEUE",),
        runbook="002#1",
        summary="{value} messages queued",
        description="More than 1000 messages are queued.",
        expr=_q(f"""
            sum (max without ({_PROC}) (sluice_messages{{status="queued"}})) > 1000
        """),
        for_seconds=10 * _M,
        scope=(),
        builtin=State("sluice_messages", ">", 1000, where=(("status", ("queued",)),)),
        seed="002 §1 (queue depth queued > 1000)",
        condition="more than 1000 messages queued for 10 min",
    ),
    Rule(
        name="SluiceOutboxLag",
        severity="P2",
        tags=("QUEUE",),
        runbook="001#outbox-lag",
        summary="The oldest due message is {value:duration} old",
        description="A due message has waited more than 10 min since its creation.",
        expr=_q("""
            max (sluice_oldest_ready_age_seconds) > 600
        """),
        for_seconds=5 * _M,
        scope=(),
        builtin=State("sluice_oldest_ready_age_seconds", ">", 600, agg="max"),
        seed="001 Outbox Lag (outbox lag increasing); 002 §5",
        condition="the oldest due message older than 10 min (from creation) for 5 min",
    ),
    Rule(
        name="SluiceStuckMessages",
        severity="P3",
        tags=("QUEUE",),
        runbook="002#5",
        summary="{value} queued messages have failed 3 times or more",
        description="Messages keep retrying without reaching sent or dead.",
        expr=_q("""
            max (sluice_retrying_messages{attempts="3"}) > 0
        """),
        for_seconds=2 * _H,
        scope=(),
        builtin=State("sluice_retrying_messages", ">", 0, where=(("attempts", ("3",)),), agg="max"),
        seed="002 §5 (queued with attempt_count >= 3, older than 2 hours)",
        condition="queued messages with 3 or more failed attempts, for 2 h",
    ),
    # -- delivery --------------------------------------------------------------------------
    Rule(
        name="SluiceSuccessRateLow",
        severity="P2",
        tags=("PROVIDER",),
        runbook="002#3",
        summary="{channel}/{provider} delivers {value:percent} of attempts",
        description="Fewer than 95 % of attempts succeed (of at least 10 in 5 min).",
        expr=_q("""
            (
              sum by (channel, provider) (rate(sluice_attempts_total{outcome="sent"}[5m]))
              / sum by (channel, provider) (rate(sluice_attempts_total{outcome=~"sent|failed"}[5m]))
            ) < 0.95
            and sum by (channel, provider) (
              increase(sluice_attempts_total{outcome=~"sent|failed"}[5m])
            ) >= 10
        """),
        for_seconds=15 * _M,
        scope=("channel", "provider"),
        builtin=Ratio(
            "attempts",
            5 * _M,
            (("outcome", ("sent",)),),
            (("outcome", ("sent", "failed")),),
            "<",
            0.95,
            by=("channel", "provider"),
            min_rows=10,
        ),
        seed="002 §3 (success rate < 95 % for 15+ min)",
        condition="sent / (sent + failed) attempts below 95 % over 5 min, for 15 min, "
        "per channel and provider (10 attempts at least)",
    ),
    Rule(
        name="SluiceDeliveryLatencyP95High",
        severity="P3",
        tags=("QUEUE",),
        runbook="002#6",
        summary="p95 delivery latency of {channel}/{provider} is {value:duration}",
        description="95 % of sends take longer than 30 s from enqueue to sent.",
        expr=_q("""
            histogram_quantile(0.95,
              sum by (channel, provider, le) (rate(sluice_delivery_latency_seconds_bucket[5m]))
            ) > 30
        """),
        for_seconds=10 * _M,
        scope=("channel", "provider"),
        builtin=Latency(0.95, 5 * _M, ">", 30),
        seed="002 §6 (P95 delivery latency > 30 s)",
        condition="p95 of enqueue-to-sent over 5 min above 30 s for 10 min",
    ),
    Rule(
        name="SluiceDeliveryLatencyP99High",
        severity="P3",
        tags=("QUEUE",),
        runbook="002#6",
        summary="p99 delivery latency of {channel}/{provider} is {value:duration}",
        description="1 % of sends take longer than 60 s from enqueue to sent.",
        expr=_q("""
            histogram_quantile(0.99,
              sum by (channel, provider, le) (rate(sluice_delivery_latency_seconds_bucket[5m]))
            ) > 60
        """),
        for_seconds=10 * _M,
        scope=("channel", "provider"),
        builtin=Latency(0.99, 5 * _M, ">", 60),
        seed="002 §6 (P99 delivery latency > 60 s)",
        condition="p99 of enqueue-to-sent over 5 min above 60 s for 10 min",
    ),
    # -- quotas ----------------------------------------------------------------------------
    _quota(70, "P3"),
    _quota(85, "P3"),
    _quota(95, "P2"),
    _quota(90, "P3", op=">", name="SluiceQuotaHighUsage"),
    # -- workers ---------------------------------------------------------------------------
    Rule(
        name="SluiceNoLiveWorker",
        severity="P1",
        tags=("QUEUE",),
        runbook="002#5",
        summary="No live worker",
        description="No worker has sent a heartbeat in 15 s: nothing is being sent.",
        expr=_q("""
            max (sluice_workers_live) == 0
        """),
        for_seconds=2 * _M,
        scope=(),
        builtin=State("sluice_workers_live", "==", 0, agg="max"),
        seed="002 §5 (alerts for worker inactivity); 003 §0.1 P1 (queue stalled, runner down)",
        condition="no worker heartbeat in the last 15 s, for 2 min",
    ),
    Rule(
        name="SluiceWorkerHeartbeatStale",
        severity="P2",
        tags=("QUEUE",),
        runbook="003#RB-07",
        summary="Worker {worker} last seen {value:duration} ago",
        description="A running worker has not sent a heartbeat for over a minute.",
        expr=_q("""
            max by (worker) (sluice_worker_heartbeat_age_seconds) > 60
        """),
        for_seconds=2 * _M,
        scope=("worker",),
        builtin=State("sluice_worker_heartbeat_age_seconds", ">", 60, by=("worker",), agg="max"),
        seed="002 §5 (monitor worker health); 003 RB-07",
        condition="a worker not stopped whose heartbeat is older than 60 s, for 2 min",
    ),
    # -- connections -----------------------------------------------------------------------
    Rule(
        name="SluiceConnectionNeedsReauth",
        severity="P2",
        tags=("AUTH",),
        runbook="001#token-revocation",
        summary="{value} {provider} connections in {state}",
        description="A tenant connection needs a person to re-authorise it.",
        expr=_q("""
            max by (provider, state) (
              sluice_connections{state=~"pending_reauth|needs_reconsent"}
            ) > 0
        """),
        for_seconds=0,
        scope=("provider", "state"),
        builtin=State(
            "sluice_connections",
            ">",
            0,
            where=(("state", ("pending_reauth", "needs_reconsent")),),
            by=("provider", "state"),
            agg="max",
        ),
        seed="001 Token Revocation; 000 Root Cause",
        condition="any connection in pending_reauth or needs_reconsent",
    ),
    Rule(
        name="SluiceConnectionExpiring",
        severity="P3",
        tags=("AUTH",),
        runbook="003#RB-04",
        summary="{provider} connection of {tenant} expires in {value} days",
        description="A connection's token or granted scopes expire within 7 days.",
        expr=_q("""
            min by (tenant, provider) (sluice_connection_expiry_days) < 7
        """),
        for_seconds=0,
        scope=("tenant", "provider"),
        builtin=State(
            "sluice_connection_expiry_days", "<", 7, by=("tenant", "provider"), agg="min"
        ),
        seed="000 Root Cause (no alert on oauth_scope_expiry_days_remaining); 001",
        condition="an active connection's token or scopes expire within 7 days",
    ),
    # -- providers -------------------------------------------------------------------------
    Rule(
        name="SluiceProviderThrottled",
        severity="P3",
        tags=("RATE",),
        runbook="004#1.3",
        summary="{provider} throttles {value:percent} of attempts",
        description="More than 10 % of a provider's answers are 429 or Retry-After.",
        expr=_q("""
            sum by (provider) (rate(sluice_provider_throttled_total[5m]))
            / sum by (provider) (rate(sluice_attempts_total[5m])) > 0.1
        """),
        for_seconds=10 * _M,
        scope=("provider",),
        builtin=Ratio(
            "attempts",
            5 * _M,
            (("outcome", ("throttled",)),),
            (),
            ">",
            0.1,
            by=("provider",),
        ),
        seed="004 §1.3 (429 rate per downstream); 003 RB-05",
        condition="429 answers over 10 % of a provider's attempts over 5 min, for 10 min",
    ),
    Rule(
        name="SluiceBreakerOpen",
        severity="P2",
        tags=("PROVIDER",),
        runbook="001#provider-outage",
        summary="Breaker {key} is open",
        description="A circuit breaker has been open or half-open for 5 min.",
        expr=_q("""
            max by (key) (sluice_breaker_open) > 0
        """),
        for_seconds=5 * _M,
        scope=("key",),
        builtin=State("sluice_breaker_open", ">", 0, by=("key",), agg="max"),
        seed="002 §3 (circuit breaker), Circuit Breaker Activation; 001 Provider Outage",
        condition="a breaker open or half-open for 5 min",
    ),
    # -- ingress, inbox --------------------------------------------------------------------
    Rule(
        name="SluiceIngressSignatureRejections",
        severity="P2",
        tags=("DATA", "SAFETY"),
        runbook="004#1.1",
        summary="{value} {provider} ingress requests refused for their signature in 5 min",
        description="Ingress is refusing signed requests: a rotated secret, or forgeries.",
        expr=_q("""
            sum by (provider) (increase(sluice_ingress_rejected_total{reason="signature"}[5m])) > 10
        """),
        for_seconds=0,
        scope=("provider",),
        builtin=PrometheusOnly("a refused request is not written to the store"),
        seed="004 §1.1 (ingress 4xx spikes); 001 Webhook Replay",
        condition="more than 10 signature rejections from a provider in 5 min",
    ),
    Rule(
        name="SluiceIngressSilent",
        severity="P2",
        tags=("DATA",),
        runbook="004#1.1",
        summary="No {provider} events for 15 min",
        description="A provider that sent events in the hour before has sent none for 15 min.",
        expr=_q("""
            sum by (provider) (increase(sluice_ingress_events_total[1h] offset 15m)) > 0
            unless sum by (provider) (increase(sluice_ingress_events_total[15m])) > 0
        """),
        for_seconds=5 * _M,
        scope=("provider",),
        builtin=All(
            (
                Count("inbox", 1 * _H, ">", 0, by=("provider",), offset=15 * _M),
                Count("inbox", 15 * _M, "==", 0, by=("provider",)),
            )
        ),
        seed="004 §1.1 (queue receives drop to zero)",
        condition="a provider with events in the hour before has none for 15 min (for 5 min)",
    ),
    Rule(
        name="SluiceProjectorLag",
        severity="P2",
        tags=("QUEUE",),
        runbook="001#outbox-lag",
        summary="The oldest pending inbox event is {value:duration} old",
        description="Receipts and replies are not being applied.",
        expr=_q("""
            max (sluice_projector_lag_seconds) > 300
        """),
        for_seconds=5 * _M,
        scope=(),
        builtin=State("sluice_projector_lag_seconds", ">", 300, agg="max"),
        seed="001 Outbox Lag (projector delivery delay alarms)",
        condition="the oldest pending inbox event older than 5 min, for 5 min",
    ),
    Rule(
        name="SluiceInboxDead",
        severity="P3",
        tags=("DATA",),
        runbook="001#notification-projector-failure",
        summary="{value} dead inbox events",
        description="Inbox events ran out of attempts; sluice inbox retry puts them back.",
        expr=_q("""
            max (sluice_inbox_events{state="dead"}) > 0
        """),
        for_seconds=5 * _M,
        scope=(),
        builtin=State("sluice_inbox_events", ">", 0, where=(("state", ("dead",)),), agg="max"),
        seed="001 Notification Projector Failure",
        condition="any dead inbox event for 5 min",
    ),
    # -- loops, duplicates, tenancy --------------------------------------------------------
    Rule(
        name="SluiceDuplicatesSpike",
        severity="P3",
        tags=("ENGAGE",),
        runbook="004#1.2",
        summary="{value} duplicates from {source} in 10 min",
        description="Many duplicates refused: a client or provider is replaying.",
        expr=_q("""
            sum by (source) (increase(sluice_duplicates_total[10m])) > 100
        """),
        for_seconds=0,
        scope=("source",),
        builtin=PrometheusOnly("a refused duplicate is not written to the store"),
        seed="004 §1.2 (idempotency_duplicates_detected); 001 Webhook Replay",
        condition="more than 100 duplicates from one source in 10 min",
    ),
    Rule(
        name="SluiceAutoRepliesOutpaceInbound",
        severity="P1",
        tags=("ENGAGE", "SAFETY"),
        runbook="004#1.2",
        summary="Auto-replies at {value:percent} of inbound events",
        description="More auto-replies are sent than inbound events arrive: a reply loop?",
        expr=_q("""
            sum (increase(sluice_auto_replies_total[10m]))
            / (sum (increase(sluice_ingress_events_total{outcome="accepted"}[10m])) or vector(0))
            > 1.2
            and sum (increase(sluice_auto_replies_total[10m])) >= 10
        """),
        for_seconds=0,
        scope=(),
        builtin=Ratio(
            "attempts",
            10 * _M,
            (("outcome", ("sent",)), ("action", ("auto_reply*", "reply.*"))),
            (),
            ">",
            1.2,
            over="inbox",
            min_rows=0,
        ),
        seed="004 §1.2 (auto_reply_sent spikes without matching inbound volume); 003 RB-10",
        condition="auto-replies sent over 10 min more than 1.2 x inbound events "
        "(10 replies at least)",
    ),
    Rule(
        name="SluiceTenancyViolation",
        severity="P0",
        tags=("SAFETY",),
        runbook="003#RB-01",
        summary="Cross-tenant events refused in the last 10 min",
        description="Ingress refused events that spoke for another tenant.",
        expr=_q("""
            max (increase(sluice_tenancy_violations_total[10m])) > 0
        """),
        for_seconds=0,
        scope=(),
        builtin=Count("audit", 10 * _M, ">", 0, where=(("action", ("tenancy.violation",)),)),
        seed="003 RB-01 (cross-tenant action, P0)",
        condition="any tenancy violation in the last 10 min",
    ),
    Rule(
        name="SluiceRecipientCapTripped",
        severity="P1",
        tags=("ENGAGE", "SAFETY"),
        runbook="003#RB-10",
        summary="A recipient cap of {tenant} tripped in the last 10 min",
        description="A runaway-loop guard held messages to one recipient.",
        expr=_q("""
            sum by (tenant) (increase(sluice_recipient_cap_trips_total[10m])) > 0
        """),
        for_seconds=0,
        scope=("tenant",),
        builtin=Count(
            "audit",
            10 * _M,
            ">",
            0,
            where=(("action", ("limit.tripped",)), ("target", ("recipient(*",))),
            by=("tenant",),
        ),
        seed="003 RB-10 (runaway engagement loop)",
        condition="any recipient-cap trip in the last 10 min",
    ),
    # -- held, telemetry -------------------------------------------------------------------
    Rule(
        name="SluiceHeldTooLong",
        severity="P3",
        tags=("QUEUE",),
        runbook="003#2.2",
        summary="Messages held for {reason} for {value:duration}",
        description="Held messages have waited over an hour for a person to decide.",
        expr=_q("""
            max by (reason) (sluice_oldest_held_age_seconds) > 3600
        """),
        for_seconds=5 * _M,
        scope=("reason",),
        builtin=State("sluice_oldest_held_age_seconds", ">", 3600, by=("reason",), agg="max"),
        seed="003 §2.2 (fail closed: require approval) leaves a queue to work",
        condition="the oldest held message of a reason held more than 1 h, for 5 min",
    ),
    # -- canaries (issue 15) ----------------------------------------------------------------
    Rule(
        name="SluiceCanaryFailed",
        severity="P2",
        tags=("PROVIDER",),
        runbook="003#RB-09",
        summary="Canary {target} of {provider} failed or went missing",
        description="The golden-path canary did not come back delivered: see sluice canary list.",
        expr=_q("""
            max by (provider, target) (sluice_canary_failing) > 0
        """),
        for_seconds=0,
        scope=("provider", "target"),
        builtin=State("sluice_canary_failing", ">", 0, by=("provider", "target"), agg="max"),
        seed="003 §2.3 (run golden path canary) and its runbooks' verification steps",
        condition="a canary target's newest finished canary failed or missing",
    ),
    # -- post-send verification (issue 15) -------------------------------------------------
    Rule(
        name="SluiceNeedsConfirmGrowing",
        severity="P2",
        tags=("PUBLISH",),
        runbook="003#RB-03",
        summary="{value} sent messages on {channel}/{provider} need a person to confirm them",
        description=(
            "More than 10 sent messages got no delivered or read receipt within their "
            "verify_within (or got a failed one); confirm or fail them with sluice messages "
            "confirm|fail, and check whether the provider's receipts still arrive."
        ),
        expr=_q(f"""
            sum by (channel, provider) (
              max without ({_PROC}) (sluice_messages{{status="needs_confirm"}})
            ) > 10
        """),
        for_seconds=10 * _M,
        scope=("channel", "provider"),
        builtin=State(
            "sluice_messages",
            ">",
            10,
            where=(("status", ("needs_confirm",)),),
            by=("channel", "provider"),
        ),
        seed="003 RB-03 (verification failures: mark affected jobs as needs human confirm)",
        condition="more than 10 messages of a channel and provider in needs_confirm for 10 min",
    ),
    Rule(
        name="SluiceStateUnreadable",
        severity="P2",
        tags=("OBS",),
        runbook="003#RB-11",
        summary="Sluice's state metrics cannot be read",
        description="No process reads the store for the state metrics, or none is scraped.",
        expr=_q("""
            max (sluice_state_up) == 0 or absent(sluice_state_up)
        """),
        for_seconds=5 * _M,
        scope=(),
        builtin=PrometheusOnly("an evaluator that cannot read the store cannot record either"),
        seed="003 RB-11 (missing telemetry)",
        condition="no scraped process reads the state (or none is scraped), for 5 min",
    ),
)
