"""Every metric Sluice exports, defined once: name, type, labels, help.

Two kinds live here:

* **Event metrics** (counters and histograms) are counted by the process where the event
  happens — the worker that sent, the API that refused a duplicate, the ingress that took
  an event in — and summed across processes by Prometheus (``sum by (...)``).
* **State metrics** (``STATE``) are read from the store by whichever process is scraped
  (``sluice.ops.state_metrics``), so they are true across every worker and host; they
  are listed here so that one table says what exists, and ``docs/metrics.md`` says which
  runbook signal each one answers (a test keeps the two in step).

Tenant labels: every ``tenant`` label goes through :func:`tenant_label`, which keeps at
most ``SLUICE_METRICS_TENANTS`` distinct tenants per process (``all`` by default, ``off``
for none, or a number: the first that many tenants a process counts); the rest are
counted under ``_other``, so a fleet of 100,000 tenants cannot explode the series count.
This module imports nothing of Sluice's: any layer may count.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Histogram

__all__ = [
    "ATTEMPTS",
    "AUTO_REPLIES",
    "CANARY_ACTION",
    "CANARY_LABEL",
    "CANARY_RUNS",
    "CONTROL_ACK",
    "DEAD_LETTERED",
    "DEFERRED",
    "DELIVERY_LATENCY",
    "DUPLICATES",
    "ENQUEUED",
    "EVENT_METRICS",
    "EXPIRED",
    "FIRST_ATTEMPT_LATENCY",
    "HELD",
    "INGRESS_EVENTS",
    "INGRESS_REJECTED",
    "INGRESS_REQUESTS",
    "NEEDS_CONFIRM",
    "OAUTH_REFRESHES",
    "PROVIDER_LATENCY",
    "PROVIDER_THROTTLED",
    "PURGED",
    "RECIPIENT_CAP_TRIPS",
    "RELEASED",
    "STATE",
    "SUPPRESSED",
    "SUPPRESSIONS_ADDED",
    "StateMetric",
    "Tally",
    "configure_tenants",
    "defer_kind",
    "hold_kind",
    "message_tenant_label",
    "of",
    "parse_tenant_budget",
    "tenant_label",
]

#: Latency buckets from a fast webhook (5 ms) to a send queued behind a long backlog.
_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600)
_CALL = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

ENQUEUED = Counter(
    "sluice_messages_enqueued_total",
    "Messages written to the outbox (Python enqueue, Store.enqueue_many, POST /v1/messages).",
    ["tenant", "channel", "provider"],
)
ATTEMPTS = Counter(
    "sluice_attempts_total",
    "Attempts written back, by outcome (sent, failed, throttled, deferred, shadowed) and "
    "error code ('' when sent).",
    ["tenant", "channel", "provider", "outcome", "code"],
)
DEFERRED = Counter(
    "sluice_deferred_total",
    "Sends put off without spending an attempt, by reason: throttle (the provider's 429 or "
    "Retry-After), limit (rate or cap), quota, breaker, control (paused), connection "
    "(the gate), worker (this worker cannot send it), lease (too little lease left).",
    ["tenant", "channel", "provider", "reason"],
)
HELD = Counter(
    "sluice_held_total",
    "Messages moved to held, by reason: control (killed or awaiting approval), connection "
    "(revoked, re-auth), recipient_cap (runaway loop guard), auth (credentials refused), "
    "endpoint (its endpoint is disabled).",
    ["tenant", "channel", "provider", "reason"],
)
RELEASED = Counter(
    "sluice_released_total",
    "Held or dead messages an operator put back in the queue, by reason: control (a "
    "resume), approval, held_release, dlq_retry; and waiting retries made due at once "
    "(retry_now).",
    ["reason"],
)
DEAD_LETTERED = Counter(
    "sluice_dead_lettered_total",
    "Messages moved to dead, by error code.",
    ["tenant", "channel", "provider", "code"],
)
DUPLICATES = Counter(
    "sluice_duplicates_total",
    "Duplicates recognised and not acted on twice, by where: enqueue (idempotency key), "
    "api (Idempotency-Key replay), ingress (provider event seen before).",
    ["source", "tenant"],
)
PROVIDER_THROTTLED = Counter(
    "sluice_provider_throttled_total",
    "Provider answers asking Sluice to slow down (429, or a Retry-After).",
    ["provider"],
)
PROVIDER_LATENCY = Histogram(
    "sluice_provider_call_seconds",
    "Duration of provider calls, whatever they answered.",
    ["provider", "channel"],
    buckets=_CALL,
)
FIRST_ATTEMPT_LATENCY = Histogram(
    "sluice_first_attempt_latency_seconds",
    "From a message's creation to the start of its first attempt.",
    ["channel", "provider"],
    buckets=_LATENCY,
)
DELIVERY_LATENCY = Histogram(
    "sluice_delivery_latency_seconds",
    "From a message's creation to the provider accepting it (sent).",
    ["channel", "provider"],
    buckets=_LATENCY,
)
OAUTH_REFRESHES = Counter(
    "sluice_oauth_refreshes_total",
    "Token refreshes of tenant connections, by result: ok, transient (tried again later), "
    "refused (the connection goes to pending_reauth or needs_reconsent).",
    ["provider", "result"],
)
CONTROL_ACK = Histogram(
    "sluice_control_ack_seconds",
    "From this worker seeing a control change to acknowledging it (its admitted sends in "
    "the scope finished).",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30),
)
INGRESS_REQUESTS = Counter(
    "sluice_ingress_requests_total",
    "Requests to /v1/ingress, by provider and HTTP status.",
    ["provider", "status"],
)
INGRESS_EVENTS = Counter(
    "sluice_ingress_events_total",
    "Provider events taken in by ingress, by outcome (accepted, duplicate).",
    ["provider", "outcome"],
)
INGRESS_REJECTED = Counter(
    "sluice_ingress_rejected_total",
    "Ingress requests refused, by reason (signature, payload, unknown_provider, verify_token).",
    ["provider", "reason"],
)
AUTO_REPLIES = Counter(
    "sluice_auto_replies_total",
    "Messages sent whose action is an automatic reply (action starting 'auto_reply' or "
    "'reply.'), to compare with inbound events.",
    ["tenant", "channel"],
)
RECIPIENT_CAP_TRIPS = Counter(
    "sluice_recipient_cap_trips_total",
    "Messages held because a recipient cap tripped (a runaway loop guard).",
    ["tenant", "provider"],
)
EXPIRED = Counter(
    "sluice_messages_expired_total",
    "Messages that ended expired: not sent by their expires_at, so never sent late; where "
    "it was seen: before_send (claimed, dropped just before the provider call) or sweep "
    "(queued, parked or held past it).",
    ["tenant", "channel", "provider", "where"],
)
# -- recipient hygiene (issue 14) --
SUPPRESSED = Counter(
    "sluice_suppressed_total",
    "Messages ended 'suppressed', never sent: by reason, list (the recipient was on the "
    "tenant's suppression list before the call) or unsubscribed (the provider answered "
    "that the recipient opted out; they are suppressed from then on).",
    ["tenant", "channel", "provider", "reason"],
)
SUPPRESSIONS_ADDED = Counter(
    "sluice_suppressions_added_total",
    "Recipients newly suppressed, by medium and reason (stop, opt_out, bounce, spamreport, "
    "unsubscribe, group_unsubscribe, provider_error, operator).",
    ["channel", "reason"],
)
# -- retention (issue 14) ----------------------------------------------------------
PURGED = Counter(
    "sluice_purged_total",
    "Final messages removed (with their attempts and receipts) by retention or sluice "
    "purge, by status.",
    ["status"],
)
# -- post-send verification (issue 15) --
NEEDS_CONFIRM = Counter(
    "sluice_messages_needs_confirm",
    "Sent messages moved to needs_confirm (post-send verification): why is timeout (no "
    "delivered or read receipt within verify_within) or receipt (a failed one came).",
    ["tenant", "channel", "provider", "why"],
)

# -- canaries (issue 15) --
CANARY_RUNS = Counter(
    "sluice_canary_runs_total",
    "Golden-path canaries finished, by provider, target and outcome (ok, failed, missing).",
    ["provider", "target", "outcome"],
)

#: Every event metric, for the docs test and for readers.
EVENT_METRICS = (
    ENQUEUED,
    ATTEMPTS,
    DEFERRED,
    HELD,
    RELEASED,
    DEAD_LETTERED,
    DUPLICATES,
    PROVIDER_THROTTLED,
    PROVIDER_LATENCY,
    FIRST_ATTEMPT_LATENCY,
    DELIVERY_LATENCY,
    OAUTH_REFRESHES,
    CONTROL_ACK,
    INGRESS_REQUESTS,
    INGRESS_EVENTS,
    INGRESS_REJECTED,
    AUTO_REPLIES,
    RECIPIENT_CAP_TRIPS,
    EXPIRED,
    SUPPRESSED,
    SUPPRESSIONS_ADDED,
    PURGED,
    CANARY_RUNS,  # canaries (issue 15)
    NEEDS_CONFIRM,
)


@dataclass(frozen=True, slots=True)
class StateMetric:
    """A gauge read from the store (see ``sluice.ops.state_metrics``)."""

    name: str
    help: str
    labels: tuple[str, ...] = ()
    kind: str = "gauge"  # or "counter": a count the store only ever adds to


STATE: tuple[StateMetric, ...] = (
    StateMetric(
        "sluice_messages",
        "Messages by status (queued, sending, held, dead, needs_confirm), channel and "
        "provider, now.",
        ("status", "channel", "provider"),
    ),
    StateMetric(
        "sluice_dead_letters",
        "Dead-lettered messages by channel and error code, now.",
        ("channel", "code"),
    ),
    StateMetric(
        "sluice_oldest_ready_age_seconds",
        "Age, from creation, of the oldest queued message that is due (0 when none): a "
        "message deferred for hours is not fresh.",
    ),
    StateMetric(
        "sluice_oldest_ready_wait_seconds",
        "How long the oldest due queued message has been due (since its run_at).",
    ),
    StateMetric(
        "sluice_retrying_messages",
        "Queued messages that have failed at least this many times before (stuck retries).",
        ("attempts",),
    ),
    StateMetric("sluice_held_messages", "Held messages by reason, now.", ("reason",)),
    StateMetric(
        "sluice_oldest_held_age_seconds",
        "How long the longest-held message of each reason has been held.",
        ("reason",),
    ),
    StateMetric(
        "sluice_quota_use_ratio",
        "Share of each quota or cap used in its current window (0 to 1).",
        ("kind", "tenant", "provider", "action"),
    ),
    StateMetric(
        "sluice_breaker_open",
        "1 while a breaker is open or half-open, by key (provider, tenant:provider or "
        "e:tenant:URL) and state.",
        ("key", "state"),
    ),
    StateMetric(
        "sluice_throttles_active",
        "Throttles in force (a provider asked to slow down), by key.",
        ("key",),
    ),
    StateMetric(
        "sluice_connections",
        "Tenant connections by provider and state (active, pending_reauth, needs_reconsent, "
        "revoked, disabled).",
        ("provider", "state"),
    ),
    StateMetric(
        "sluice_connection_expiry_days",
        "Days until a connection's token or granted scopes expire.",
        ("tenant", "provider"),
    ),
    StateMetric("sluice_inbox_events", "Ingress events kept in the inbox, by state.", ("state",)),
    StateMetric(
        "sluice_projector_lag_seconds",
        "Age of the oldest pending inbox event (receipts and replies not yet applied).",
    ),
    StateMetric("sluice_workers_live", "Workers that sent a heartbeat in the last 15 s."),
    StateMetric(
        "sluice_worker_heartbeat_age_seconds",
        "Seconds since each running worker's last heartbeat.",
        ("worker",),
    ),
    StateMetric(
        "sluice_tenancy_violations_total",
        "Ingress events refused because they spoke for another tenant (audit log).",
        kind="counter",
    ),
    StateMetric(
        "sluice_suppressions",
        "Recipients on suppression lists, by medium (recipient hygiene).",
        ("channel",),
    ),
    StateMetric(  # canaries (issue 15)
        "sluice_canary_failing",
        "1 while a canary target's newest finished canary is failed or missing, 0 when ok.",
        ("provider", "target"),
    ),
    StateMetric("sluice_state_up", "1 when the last read of the store for these worked."),
    StateMetric(
        "sluice_state_refresh_seconds",
        "How long the last read of these state metrics from the store took.",
    ),
)

# -- tenant labels -----------------------------------------------------------------

OTHER = "_other"
_lock = threading.Lock()
_seen: set[str] = set()
_budget: int | None = None


def parse_tenant_budget(spec: str) -> int | None:
    """``SLUICE_METRICS_TENANTS``: ``all`` (every tenant its own label), ``off`` (none), or
    how many tenants a process labels by name. ``ValueError`` saying what is accepted."""
    raw = spec.strip().lower()
    if raw == "all":
        return None
    if raw == "off":
        return 0
    if raw.isdigit():
        return int(raw)
    raise ValueError(
        f"SLUICE_METRICS_TENANTS must be 'all', 'off' or a number of tenants, not {spec!r}"
    )


def configure_tenants(spec: str) -> None:
    """Set the tenant label budget of this process (the settings call this at start)."""
    global _budget
    budget = parse_tenant_budget(spec)
    with _lock:
        _budget = budget
        _seen.clear()


#: The action that marks a golden-path canary (issue 15; ``sluice.store.canaries``) and
#: the tenant label its counts go under: Sluice's own check, never a tenant's figures.
CANARY_ACTION = "sluice.canary"
CANARY_LABEL = "_canary"


def message_tenant_label(tenant: str, action: str) -> str:
    """The ``tenant`` label of a message's counts: :func:`tenant_label`, except that a
    canary (``CANARY_ACTION``) counts under ``_canary``."""
    return CANARY_LABEL if action == CANARY_ACTION else tenant_label(tenant)


def tenant_label(tenant: str) -> str:
    """The label value for ``tenant``: itself while the per-process budget allows,
    ``_other`` after (the first tenants this process counts keep their own series)."""
    budget = _budget
    if budget is None or tenant in _seen:
        return tenant
    with _lock:
        if len(_seen) < budget:
            _seen.add(tenant)
            return tenant
    return OTHER


# -- the hot path ---------------------------------------------------------------------

_children: dict[tuple[object, tuple[str, ...]], Any] = {}


def of(metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, kept: a worker counts several times per message, and
    prometheus-client's ``labels`` costs several times the increment itself (1.7 µs
    against 0.3 µs measured; the label values are bounded by :func:`tenant_label`)."""
    key = (metric, labels)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*labels)
    return child


class Tally:
    """What a worker counts between two write-backs, added to the metrics in one go.

    A worker counts several things per message (the attempt, two or three latencies); each
    prometheus-client increment takes a lock, and per message that came to 7 % of the
    no-op drain. Here a count is a dict addition and an observation a ``bisect`` into a
    list of bucket counts; ``flush`` (after each write-back) adds them to the metrics, a
    few increments per label set instead of several per message.
    """

    def __init__(self, enabled: bool = True) -> None:
        #: False (``SLUICE_METRICS=false``): count nothing, for measuring the cost.
        self.enabled = enabled
        self._counts: dict[tuple[Any, tuple[str, ...]], float] = {}
        #: (bucket upper bounds, counts per bucket, [sum]) per histogram and label set.
        self._observed: dict[
            tuple[Any, tuple[str, ...]], tuple[Sequence[float], list[float], list[float]]
        ] = {}

    def inc(self, metric: Any, *labels: str) -> None:
        if not self.enabled:
            return
        key = (metric, labels)
        self._counts[key] = self._counts.get(key, 0.0) + 1.0

    def observe(self, metric: Any, value: float, *labels: str) -> None:
        if not self.enabled:
            return
        key = (metric, labels)
        entry = self._observed.get(key)
        if entry is None:
            bounds = of(metric, *labels)._upper_bounds
            entry = self._observed[key] = (bounds, [0.0] * len(bounds), [0.0])
        bounds, counts, total = entry
        counts[bisect.bisect_left(bounds, value)] += 1.0
        total[0] += value

    def flush(self) -> None:
        counts, self._counts = self._counts, {}
        for (metric, labels), n in counts.items():
            of(metric, *labels).inc(n)
        observed, self._observed = self._observed, {}
        for (metric, labels), (_, buckets, total) in observed.items():
            # prometheus-client's Histogram child keeps one value per bucket and a sum
            # (what its own ``observe`` increments); pinned in pyproject.toml.
            child = of(metric, *labels)
            for i, n in enumerate(buckets):
                if n:
                    child._buckets[i].inc(n)
            child._sum.inc(total[0])


# -- reasons as label values -----------------------------------------------------------


def hold_kind(reason: str) -> str:
    """The ``reason`` label of a hold, from its ``hold_reason`` text: ``approval``,
    ``control`` (killed), ``connection``, ``recipient_cap``, ``limit``, ``endpoint`` (a
    disabled endpoint) or ``other``."""
    if reason.startswith("control:approval"):
        return "approval"
    if reason.startswith("control:"):
        return "control"
    if reason.startswith("connection:"):
        return "connection"
    if reason.startswith("limit: recipient_cap"):
        return "recipient_cap"
    if reason.startswith("limit:"):
        return "limit"
    if reason.startswith("endpoint disabled:"):
        return "endpoint"
    return "other"


def defer_kind(reason: str) -> str:
    """The ``reason`` label of a limiter deferral, from the limiter's reason text."""
    if reason.startswith("throttled"):
        return "throttle"
    if reason.startswith("quota"):
        return "quota"
    return "limit"
