"""The ``Store`` protocol and the plain types its methods take and return.

Methods are named noun-first (``message_claim``, ``dlq_groups``) and every one is
covered by the contract suite in ``tests/contract``, run against each implementation.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from sluice.connections import Connection, ConnectionState

# AuditEntry and BreakerInfo live below the store (flow and the store both use them) and
# are re-exported here, where every caller has always found them.
from sluice.flow.breakers import BreakerInfo
from sluice.flow.controls import Control, Mode, Scope
from sluice.flow.hygiene import Suppression
from sluice.model import Attempt, AuditEntry, Completion, Message, NewMessage
from sluice.store.canaries import CanaryRun  # canaries (issue 15)
from sluice.store.endpoints import EndpointInfo, EndpointReport, TenantEvents

if TYPE_CHECKING:
    from sluice.flow.limits import Cell

__all__ = [
    "BREAKDOWN_BY",
    "Activity",  # issue 16
    "Annotation",  # issue 15
    "ApiKey",
    "AttemptFilter",
    "AuditEntry",
    "AuditFilter",
    "Breakdown",
    "BreakerInfo",
    "ConsoleSession",
    "DlqGroup",
    "Firing",
    "FlowListener",
    "FlowSignal",
    "FlowStateFn",
    "IdemClaim",
    "IdemResponder",
    "InboxItem",
    "Incident",
    "IncidentEvent",
    "Lead",
    "LimitRow",
    "MessageFilter",
    "Observation",
    "OpRequest",
    "PurgeExport",
    "PurgeRule",
    "Purged",
    "Receipt",
    "RefreshCallback",
    "RefreshOutcome",
    "RescueResult",
    "StatusReport",
    "Store",
    "Suppression",
    "Throttle",
    "WorkerInfo",
    "scope_key",
]


@dataclass(frozen=True, slots=True)
class MessageFilter:
    """Which messages an operator command applies to. ``None`` matches anything."""

    tenant: str | None = None
    channel: str | None = None
    error_code: str | None = None
    since: datetime | None = None
    limit: int | None = None
    provider: str | None = None
    action: str | None = None
    #: Text the hold reason contains (held messages).
    reason: str | None = None
    #: The caller's correlation id (an API request's ``X-Request-Id`` when none was given).
    correlation_id: str | None = None
    # -- listings (issue 14): ``since`` above is inclusive, these bounds exclusive;
    # ``message_list`` applies all three, ``message_breakdown`` ``until`` (created time).
    until: datetime | None = None
    updated_since: datetime | None = None
    updated_until: datetime | None = None


# -- listings (issue 14): attempts by filter, messages counted per group ----------------


@dataclass(frozen=True, slots=True)
class AttemptFilter:
    """Which attempts ``attempt_search`` returns; ``None`` matches anything. The window
    is on ``finished_at``: ``since`` inclusive, ``until`` exclusive."""

    message_id: str | None = None
    worker_id: str | None = None
    provider: str | None = None
    outcome: str | None = None
    error_code: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    #: Only attempts older than this id (the cursor of the next page, newest first).
    before_id: int | None = None


#: What ``message_breakdown`` may group by ("": everything in one group).
BREAKDOWN_BY = ("", "tenant", "channel", "provider", "action", "hold_reason")


@dataclass(frozen=True, slots=True)
class Breakdown:
    """Messages of one group in one status (``message_breakdown``)."""

    group: str
    status: str
    count: int
    #: Of these, how many have an error recorded (failed at least once).
    errored: int
    oldest_created_at: datetime | None
    #: The oldest last change (for held messages: held since, at the latest).
    oldest_updated_at: datetime | None
    #: The oldest ``run_at`` of those queued and ready (``run_at <= now``).
    oldest_ready_at: datetime | None


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Which audit entries ``audit_list`` returns. ``None`` matches anything.

    ``since`` is inclusive and ``until`` exclusive; ``action`` is a prefix of the audit
    action (``control.`` matches ``control.set`` and ``control.clear``); ``actor`` is
    exact. The scope fields match what the writers record, wherever they record it:

    - ``tenant``: ``detail.scope.tenant`` (controls), ``detail.tenant`` (limits, limit
      trips, API keys, message cancels), ``detail.filter.tenant`` (bulk DLQ and held
      acts), ``detail.message_tenant`` / ``connection_tenant`` / ``source_tenant``
      (tenancy violations: either side), the target ``<tenant>/<provider>`` of
      ``connection.*`` entries, the breaker keys ``c:<tenant>:…`` and ``e:<tenant>:…``
      of ``breaker.*`` entries, and the quota key ``q:<tenant>|…`` of
      ``quota.threshold`` entries;
    - ``channel``: ``detail.scope.channel``, ``detail.filter.channel``;
    - ``provider``: ``detail.scope.provider``, ``detail.provider``,
      ``detail.filter.provider``, the target ``<tenant>/<provider>`` of
      ``connection.*`` entries and the breaker keys ``p:<provider>`` and
      ``c:<tenant>:<provider>``;
    - ``scope_action`` (a message's action type, not the audit action):
      ``detail.scope.action``, ``detail.action``, ``detail.filter.action``.

    An entry that records none of them (``keys.rotate``, ``inbox.retry``) matches no
    scope filter; an entry about every tenant (a global kill) matches only when no
    tenant is asked for.
    """

    since: datetime | None = None
    until: datetime | None = None
    actor: str | None = None
    action: str | None = None
    tenant: str | None = None
    channel: str | None = None
    provider: str | None = None
    scope_action: str | None = None
    #: Only entries older than this id (the cursor of the next page, newest first).
    before_id: int | None = None

    def params(self) -> dict[str, Any]:
        """The filter as parameters of the ``audit_select`` query (times left to the driver)."""
        return {
            "actor": self.actor,
            "action": self.action,
            "tenant": self.tenant,
            "channel": self.channel,
            "provider": self.provider,
            "scope_action": self.scope_action,
            "before_id": self.before_id,
        }


@dataclass(frozen=True, slots=True)
class DlqGroup:
    """Dead-lettered messages of one channel and error code."""

    channel: str
    error_code: str
    count: int
    first_at: datetime
    last_at: datetime


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A worker process as last seen by the store."""

    id: str
    host: str
    pid: int
    started_at: datetime
    last_seen_at: datetime
    stopped_at: datetime | None
    in_flight: int
    sent_total: int
    #: The flow epoch (controls and limits) this worker has applied, and when.
    flow_version: int = 0
    flow_acked_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Observation:
    """What the state metrics read from the store in one refresh (``Store.observe``)."""

    #: (status, channel, provider, count) for queued, sending, held and dead.
    messages: list[tuple[str, str, str, int]]
    #: (channel, error code, count) of dead letters.
    dead: list[tuple[str, str, int]]
    #: Creation and due time of the oldest due queued message (None when none is due).
    oldest_ready_created: datetime | None
    oldest_ready_due: datetime | None
    #: Queued messages that have had at least 1 and at least 3 tries.
    retrying: dict[int, int]
    #: Held messages by reason kind (``sluice.metrics.hold_kind``): (count, held since).
    held: dict[str, tuple[int, datetime]]
    #: (provider, state, count) of tenant connections.
    connections: list[tuple[str, str, int]]
    #: (tenant, provider, expires at) of active connections with a known expiry.
    expiring: list[tuple[str, str, datetime]]
    #: Inbox events pending, dead or rejected; and the oldest pending one's arrival.
    inbox: dict[str, int]
    inbox_oldest_pending: datetime | None
    #: Ingress events refused for speaking for another tenant, ever (audit log).
    tenancy_violations: int


class Lead(Protocol):
    """Held leadership (``Store.try_lead``)."""

    async def release(self) -> None: ...


def scope_key(scope: Mapping[str, str]) -> str:
    """An incident scope in one canonical string: ``tenant=acme provider=twilio`` ('' for
    all); one open incident per (rule, this)."""
    return " ".join(f"{k}={scope[k]}" for k in sorted(scope) if scope[k])


@dataclass(frozen=True, slots=True)
class Firing:
    """One rule firing for one scope, as the evaluator hands it to the store."""

    rule: str
    scope: dict[str, str]
    severity: str
    types: tuple[str, ...]
    runbook: str
    summary: str
    value: float

    @property
    def scope_key(self) -> str:
        """The scope in one canonical string: ``tenant=acme provider=twilio`` ('' for all)."""
        return scope_key(self.scope)


@dataclass(frozen=True, slots=True)
class IncidentEvent:
    """One entry of an incident's timeline."""

    id: int
    incident_id: str
    at: datetime
    kind: str  # fired, peak, acknowledged, note, resolved, notified
    actor: str
    detail: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Incident:
    """A rule that fired for a scope, from opening to resolution (``sluice incidents``)."""

    id: str
    rule: str
    scope_key: str
    scope: dict[str, str]
    severity: str
    types: list[str]
    runbook: str
    summary: str
    state: str  # open, acknowledged, resolved
    opened_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    resolved_at: datetime | None
    resolved_by: str | None
    value: float
    peak: float
    clear_since: datetime | None
    notified: str
    updated_at: datetime
    #: When it was escalated (open and unacknowledged too long), if it was.
    escalated_at: datetime | None = None
    events: list[IncidentEvent] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class StatusReport:
    """What ``sluice status`` shows."""

    counts: dict[str, int]
    oldest_ready_age_seconds: float | None
    dead: list[DlqGroup]
    workers: list[WorkerInfo]


@dataclass(frozen=True, slots=True)
class Activity:
    """What happened minute by minute over the last ``minutes`` minutes
    (``Store.activity``): each list holds one count per minute, oldest first; the last
    is the minute that ends now (the console's rates and charts)."""

    minutes: int
    #: Messages created (``created_at``) in each minute.
    enqueued: list[int]
    #: Attempts finished in each minute, by how they ended: ``sent``; ``failed`` (failed
    #: or lease expired); ``deferred`` (throttled or put back unstarted).
    sent: list[int]
    failed: list[int]
    deferred: list[int]


@dataclass(frozen=True, slots=True)
class RescueResult:
    """Messages whose lease expired: put back in the queue, or dead when out of attempts."""

    requeued: list[str] = field(default_factory=list)
    dead: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class RefreshOutcome:
    """What a ``connection_refresh`` callback asks the store to write, still under the lock.

    Either new credentials — ``ciphertext`` sealed by the caller's ``SecretBox`` (the
    store never sees a secret), ``key_id``, the token's ``expires_at`` and, when the token
    endpoint reported them, the granted ``scopes`` — or a ``state`` to move the connection
    to (``pending_reauth`` after ``invalid_grant``), whose queued messages are then held.
    ``reason`` and ``detail`` go to the audit row and must not contain secrets.
    """

    ciphertext: bytes | None = None
    key_id: str | None = None
    expires_at: datetime | None = None
    scopes: tuple[str, ...] | None = None
    state: ConnectionState | None = None
    reason: str = ""
    detail: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.ciphertext is None) == (self.state is None):
            raise ValueError("a RefreshOutcome carries new credentials or a new state, not both")
        if self.ciphertext is not None and not self.key_id:
            raise ValueError("new credentials need the key_id that sealed them")
        if self.state is ConnectionState.ACTIVE:
            raise ValueError("a failed refresh cannot make a connection active")

    def audit_entry(
        self, current: Connection, now: datetime, actor: str, *, held: int = 0
    ) -> AuditEntry:
        """The audit row for this outcome over ``current`` (the row as it was read)."""
        target = f"{current.tenant}/{current.provider}"
        if self.state is None:
            return AuditEntry(
                at=now,
                actor=actor,
                action="connection.refresh",
                target=target,
                reason=self.reason or "access token refreshed",
                detail={
                    **self.detail,
                    "from_version": current.credential_version,
                    "to_version": current.credential_version + 1,
                    "expires_at": self.expires_at.isoformat() if self.expires_at else None,
                    "scopes": None if self.scopes is None else list(self.scopes),
                },
            )
        return AuditEntry(
            at=now,
            actor=actor,
            action=f"connection.{self.state.value}",
            target=target,
            reason=self.reason,
            detail={**self.detail, "cause": "token refresh", "held": held},
        )


#: Called by ``connection_refresh`` with the connection as stored, re-read under the lock;
#: returns what to write, or ``None`` to write nothing (someone else already refreshed,
#: the connection is no longer active, or the token endpoint failed transiently).
RefreshCallback = Callable[[Connection], Awaitable[RefreshOutcome | None]]

#: ``idem_enqueue``: the messages as stored -> (status code, response text) to record.
IdemResponder = Callable[[list[Message]], tuple[int, str]]


@dataclass(frozen=True, slots=True)
class Throttle:
    """A provider asked us to slow down: nothing for (tenant, provider) before ``until``."""

    tenant: str
    provider: str
    until: datetime
    reason: str | None
    set_at: datetime


@dataclass(frozen=True, slots=True)
class LimitRow:
    """A limit set at run time: its scope, its fields (``spec``), who, why and when."""

    kind: str
    tenant: str
    provider: str
    action: str
    spec: dict[str, Any]
    actor: str
    reason: str
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An HTTP API key as stored: the secret itself is never kept, only its SHA-256.

    ``role`` is ``tenant`` (enqueue and read the one ``tenant``'s messages) or
    ``operator`` (every tenant, controls, dead-letter, connections).
    """

    id: str
    name: str
    role: str
    tenant: str | None
    secret_hash: str
    created_by: str
    created_at: datetime
    revoked_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class IdemClaim:
    """What ``idem_begin`` found for an ``Idempotency-Key``.

    ``state``: ``new`` (this request owns the key now), ``replay`` (finished before:
    answer with ``status_code``/``response``), ``mismatch`` (the key was used for a
    different request), ``busy`` (the first request with this key is still running).
    """

    state: str
    status_code: int | None = None
    response: str | None = None

    @classmethod
    def of_row(cls, row: Sequence[Any] | None, fingerprint: str) -> IdemClaim:
        """Read a store's answer: ``("new", …)`` when the key was taken, else the row
        found (state, fingerprint, status_code, response); None when a release raced."""
        if row is None:
            return cls("busy")
        state, stored, status_code, response = row
        if state == "new":
            return cls("new")
        if stored != fingerprint:
            return cls("mismatch")
        if state == "running":
            return cls("busy")
        return cls("replay", status_code, response)


@dataclass(frozen=True, slots=True)
class InboxItem:
    """One provider event taken in by ingress: durable before the provider got its 2xx.

    ``state`` is ``pending`` (the projector will apply it), ``done`` (``result`` says
    what it did), ``dead`` (retries spent; ``last_error`` says why; an operator
    retries it with ``sluice inbox retry``) or ``rejected`` (it named a message its
    source may not speak for; ``last_error`` says why; kept as evidence, never applied).

    ``source_tenant`` is the tenant the credential that verified the request speaks for,
    ``None`` for one that speaks for every tenant. Events are deduplicated on
    (``provider``, ``source_tenant``, ``event_id``).
    """

    id: int
    provider: str
    event_id: str
    kind: str
    status: str | None
    message_id: str | None
    provider_message_id: str | None
    occurred_at: datetime | None
    error_code: str | None
    detail: str | None
    address: str | None
    data: dict[str, Any]
    received_at: datetime
    state: str = "pending"
    attempts: int = 0
    last_error: str | None = None
    result: str | None = None
    source_tenant: str | None = None


@dataclass(frozen=True, slots=True)
class Receipt:
    """A delivery receipt applied to a message (``GET /v1/messages/{id}`` shows them)."""

    message_id: str
    provider: str
    status: str
    occurred_at: datetime | None
    received_at: datetime
    error_code: str | None = None
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class FlowSignal:
    """A change every worker must apply at once, not at its next poll: a provider asked
    for a pause (``throttle``), or a circuit breaker moved (``breaker``)."""

    throttle: Throttle | None = None
    breaker: BreakerInfo | None = None
    #: An operator removed this throttle (``sluice throttles clear``): forget it now.
    throttle_cleared: Throttle | None = None


#: Called with each ``FlowSignal`` (on the event loop; it must not block or raise).
FlowListener = Callable[[FlowSignal], None]


#: Called by ``flow_state_apply`` with the locked cells (``key -> Cell``; a cell with a
#: negative stamp did not exist) and the store's clock in Unix seconds; updates the cells
#: in place and returns its result.
FlowStateFn = Callable[[dict[str, "Cell"], float], Any]


# -- retention (issue 14) ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PurgeRule:
    """Which final messages retention removes: those of each status in ``before`` last
    changed (``updated_at``) before its time; of one tenant when ``tenant`` is set."""

    before: Mapping[str, datetime]
    tenant: str | None = None


@dataclass(frozen=True, slots=True)
class Purged:
    """A removed message with its attempts and receipts: one line of a retention export."""

    message: Message
    attempts: list[Attempt]
    receipts: list[Receipt]


#: Called by ``message_purge`` with a batch before it commits; it must have written the
#: batch durably when it returns, and raises to remove nothing.
PurgeExport = Callable[[Sequence[Purged]], None]


def limit_audit(action: str, row: LimitRow) -> AuditEntry:
    """The audit row of ``limit.set`` / ``limit.clear``."""
    scope = " ".join(
        f"{n}={v}" for n, v in (("tenant", row.tenant), ("provider", row.provider),
                                ("action", row.action)) if v
    )  # fmt: skip
    return AuditEntry(
        at=row.updated_at,
        actor=row.actor,
        action=action,
        target=f"{row.kind}({scope or 'all'})",
        reason=row.reason,
        detail={"kind": row.kind, "tenant": row.tenant, "provider": row.provider,
                "action": row.action, "spec": row.spec},
    )  # fmt: skip


# -- annotations (issue 15) -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Annotation:
    """A marker an operator records: a deploy, a config change, a note (``sluice
    annotate``); evidence archives and postmortems show those in an incident's window.
    ``at`` is when the marked thing happened; ``tenant`` '' concerns everything."""

    at: datetime
    actor: str
    kind: str
    text: str
    tenant: str = ""
    detail: dict[str, Any] = field(default_factory=dict)
    #: Given by the store (None before it is added).
    id: int | None = None


# -- console sessions (issue 16) -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    """A browser signed in to the web console (``kind`` 'session') or a one-time login
    link not yet opened ('ticket'). The store keeps only ``token_hash``, the SHA-256 of
    the cookie or link token; ``csrf`` is the token its forms must carry."""

    token_hash: str
    kind: str
    key_id: str
    actor: str
    csrf: str
    created_at: datetime
    seen_at: datetime
    expires_at: datetime


# -- the two-person rule (issue 14) --------------------------------------------------


@dataclass(frozen=True, slots=True)
class OpRequest:
    """An operator act a two-person rule held back, waiting for another operator
    (``sluice requests``; ``sluice.ops.requests``)."""

    id: str
    act: str
    #: The act's arguments, as approval replays them.
    args: dict[str, Any]
    scope: str  # global, tenant
    tenant: str
    #: What the act's dry run counted when it was filed (None: it counts nothing).
    affected: int | None
    requester: str
    reason: str | None
    created_at: datetime
    expires_at: datetime
    state: str  # pending, approved, denied, expired
    decided_by: str | None = None
    decided_at: datetime | None = None
    decision: str | None = None
    result: Any = None


class Store(Protocol):
    """Everything Sluice keeps, behind one interface with one contract suite."""

    dialect: str

    async def open(self) -> Store:
        """Connect (idempotent); raise ``StoreUnavailable`` if the database is out of reach."""
        ...

    def wake(self) -> None:
        """Wake a worker of this process waiting in ``wait_for_work``."""
        ...

    async def migrate(self) -> list[int]:
        """Apply pending migrations; return the versions applied (none: up to date)."""
        ...

    async def schema_pending(self) -> list[int]:
        """Versions not yet applied."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...

    async def enqueue_many(self, messages: Sequence[NewMessage]) -> list[str]:
        """Store messages in one transaction; return their ids in order (see outbox).

        Every message is validated first (``NewMessage.validate``, destinations checked
        against the store's settings); one bad message stores none."""
        ...

    async def message_claim(
        self, worker_id: str, limit: int, lease_seconds: float, now: datetime
    ) -> list[Message]:
        """Lease up to ``limit`` ready messages, highest priority then oldest first."""
        ...

    async def message_claim_with_connections(
        self, worker_id: str, limit: int, lease_seconds: float, now: datetime
    ) -> tuple[list[Message], list[Connection]]:
        """``message_claim``, and ``connection_find`` of the claimed messages' (tenant,
        provider) pairs: what a worker needs before its first send, in one round trip
        where the database allows (PostgreSQL pipelines the two)."""
        ...

    async def message_complete_many(
        self, worker_id: str, completions: Sequence[Completion], now: datetime
    ) -> set[str]:
        """Write outcomes and attempts; return the ids whose claim was still current."""
        ...

    async def message_release(
        self, worker_id: str, claims: Sequence[tuple[str, int]], now: datetime
    ) -> list[str]:
        """Give back claimed messages that were never started (their attempt is refunded)."""
        ...

    async def message_renew(
        self, worker_id: str, claims: Sequence[tuple[str, int]], lease_seconds: float, now: datetime
    ) -> list[str]:
        """Extend the leases of a live worker's claims (id, claim number) to ``now +
        lease_seconds`` (never shorter); the ids still held by it. A claim taken back
        meanwhile is not renewed."""
        ...

    async def message_rescue_expired(self, now: datetime, limit: int = 1000) -> RescueResult:
        """Return messages whose lease expired to the queue, recording ``lease_expired``."""
        ...

    async def message_get(self, message_id: str) -> Message:
        """One message; ``NotFound`` if there is none."""
        ...

    async def attempt_list(self, message_id: str) -> list[Attempt]:
        """Every attempt of a message, oldest first."""
        ...

    async def status_report(self, now: datetime) -> StatusReport:
        """Counts by status, oldest ready age, dead letters by channel and code, workers."""
        ...

    def snapshot(self) -> AbstractAsyncContextManager[None]:
        """``async with store.snapshot():`` every read the current task makes on this
        store inside the block sees the database as of one moment (one read-only
        transaction), so figures read one after another agree with each other: what an
        operator's screen shows at once. A write inside the block is refused
        (``StoreError``); tasks started inside it read as usual; nested, it is the same
        snapshot."""
        ...

    async def observe(self, now: datetime) -> Observation:
        """The state the metrics export, read in a few indexed queries that see one
        snapshot: figures of one observation always agree with each other."""
        ...

    async def tally(
        self, table: str, since: datetime, until: datetime
    ) -> list[tuple[dict[str, str], int]]:
        """Rows of ``table`` (``attempts``, ``inbox``, ``audit``) timed in (since, until],
        counted per combination of the labels a rule may filter or group on: attempts by
        tenant, channel, provider, action, outcome, error_code; inbox events by provider,
        kind, state; audit rows by action, target and the tenant their detail names
        ("" when none)."""
        ...

    async def sent_latencies(
        self, since: datetime, until: datetime, limit: int = 20_000
    ) -> list[tuple[dict[str, str], float]]:
        """Creation-to-sent seconds of the newest ``limit`` sent attempts in the window,
        with their tenant, channel and provider."""
        ...

    async def activity(self, now: datetime, minutes: int = 60) -> Activity:
        """Messages created and attempts finished per minute over the ``minutes`` (1 to
        1440) before ``now``, each read through an index: the attempts' ``finished_at``,
        and the messages' primary key (ids are time-ordered, so the window is a key
        range; a message whose id is more than ``_params.ID_SLACK`` older than its creation is
        not counted). ``ValidationError`` for another ``minutes``."""
        ...

    async def try_lead(self, name: str) -> Lead | None:
        """Become the one holder of ``name`` among every process on this store (an
        advisory lock on PostgreSQL, a file lock beside the SQLite file), or None when
        another holds it. The lead lasts until released or the process ends."""
        ...

    async def incident_fire(self, firing: Firing, now: datetime) -> tuple[Incident, bool]:
        """Record that ``firing`` holds now: open an incident for its (rule, scope), or
        update the one open (value, peak, no longer clearing). True when it opened."""
        ...

    async def incident_clear(
        self, rule: str, firing: Sequence[str], now: datetime, clear_for: float
    ) -> list[str]:
        """Open incidents of ``rule`` whose scope key is not in ``firing`` start (or go
        on) counting clear time; those clear for ``clear_for`` seconds resolve. Returns
        the ids resolved."""
        ...

    async def incident_escalate(self, now: datetime, after: float) -> list[str]:
        """Open incidents nobody acknowledged within ``after`` seconds: escalated, once,
        on their timeline. Returns their ids."""
        ...

    async def incident_list(self, state: str = "active", limit: int = 100) -> list[Incident]:
        """Incidents, newest first: ``active`` (not resolved), ``open``,
        ``acknowledged``, ``resolved`` or ``''`` for all."""
        ...

    async def incident_get(self, incident_id: str) -> Incident:
        """One incident with its timeline; ``NotFound`` if there is none."""
        ...

    async def incident_act(
        self, incident_id: str, act: str, *, actor: str, text: str, now: datetime
    ) -> Incident:
        """An operator's act: ``ack``, ``resolve`` or ``note`` (``text`` is the reason or
        the note), on the timeline and audited. ``NotFound``; ``ValidationError`` when
        the incident is not in a state the act applies to."""
        ...

    async def incident_log(
        self, incident_id: str, kind: str, actor: str, detail: Mapping[str, Any], now: datetime
    ) -> None:
        """Add an entry to an incident's timeline (``control``: a control was set or
        cleared in its scope); the act it records is audited where it happened."""
        ...

    async def incident_unnotified(self) -> list[Incident]:
        """Incidents with a transition (opened, escalated, resolved) whose notifications
        are not yet in the outbox."""
        ...

    async def incident_notified(self, incident_id: str, transition: str, now: datetime) -> None:
        """Their notifications for ``transition`` are in the outbox."""
        ...

    async def dlq_groups(self, flt: MessageFilter) -> list[DlqGroup]:
        """Dead letters grouped by channel and error code, largest group first."""
        ...

    async def message_select(self, status: str, flt: MessageFilter) -> list[str]:
        """Ids of messages in ``status`` matching ``flt``, oldest change first."""
        ...

    async def message_requeue(
        self, ids: Sequence[str], from_status: str, now: datetime, audit: AuditEntry
    ) -> list[str]:
        """Put messages back in the queue with fresh attempts; audit the act."""
        ...

    async def message_cancel(
        self, ids: Sequence[str], from_status: str, now: datetime, audit: AuditEntry
    ) -> list[str]:
        """Cancel messages for good; audit the act."""
        ...

    async def message_approve(
        self, ids: Sequence[str], from_status: str, now: datetime, audit: AuditEntry
    ) -> list[str]:
        """Put held messages back in the queue approved by ``audit.actor``: they pass an
        approval control once (every other control still applies); audit the act."""
        ...

    # -- acting on what waits (issue 14): retry-now, throttles clear --------------

    async def message_waiting(
        self, flt: MessageFilter, now: datetime, ids: Sequence[str] | None = None
    ) -> list[str]:
        """Ids of queued messages waiting out a retry backoff or a deferral (tried or
        put back before, due after ``now``, not parked by a pause) that match ``flt``
        (and are among ``ids`` when given), soonest due first, at most ``flt.limit``."""
        ...

    async def message_retry_now(
        self, ids: Sequence[str], now: datetime, audit: AuditEntry
    ) -> list[str]:
        """Make those of ``ids`` still waiting as ``message_waiting`` says due at ``now``
        (attempts and deferrals kept); audit the act; the ids moved."""
        ...

    async def throttle_clear(
        self, keys: Sequence[tuple[str, str]], now: datetime, audit: AuditEntry
    ) -> list[Throttle]:
        """Remove the throttles of these (tenant, target) keys, bump the flow epoch and
        write ``audit`` (with what was removed) in one transaction; every ``flow_listen``
        listener hears of each removal (``FlowSignal.throttle_cleared``). The removed."""
        ...

    # -- message expiry (issue 14) ------------------------------------------------

    async def message_expire_past(
        self, now: datetime, limit: int = 1000
    ) -> list[tuple[str, str, str, str]]:
        """Move up to ``limit`` messages waiting (queued, parked or held) past their
        ``expires_at`` to ``expired`` (final; ``hold_reason`` says why); their (id, tenant,
        channel, provider)."""
        ...

    # -- post-send verification (issue 15) -----------------------------------------

    async def message_verify_due(
        self, now: datetime, limit: int = 1000
    ) -> list[tuple[str, str, str, str]]:
        """Move up to ``limit`` sent messages past their ``verify_by`` (no positive receipt
        in time) to ``needs_confirm`` (code ``NOT_CONFIRMED``); their (id, tenant,
        channel, provider)."""
        ...

    async def message_confirm(
        self, ids: Sequence[str], from_status: str, now: datetime, audit: AuditEntry
    ) -> list[str]:
        """A person says these arrived: those of ``ids`` in ``from_status`` become
        ``delivered`` (their error cleared); ``audit`` written with them. The moved ids."""
        ...

    async def message_fail(
        self, ids: Sequence[str], from_status: str, now: datetime, audit: AuditEntry
    ) -> list[str]:
        """A person says these did not arrive: those of ``ids`` in ``from_status`` become
        ``dead`` with code ``NOT_CONFIRMED`` (``dlq retry`` sends them again); ``audit``
        written with them. The moved ids."""
        ...

    # -- limits ------------------------------------------------------------------

    async def flow_state_apply(self, keys: Sequence[str], fn: FlowStateFn) -> Any:
        """Run ``fn`` over the limiter cells ``keys``, locked for this call across every
        worker and host, and write back the cells it changed; return its result."""
        ...

    async def flow_state_purge(self, now: datetime) -> int:
        """Delete limiter cells past their expiry; return how many."""
        ...

    async def throttle_set(
        self, tenant: str, provider: str, until: datetime, reason: str, now: datetime
    ) -> None:
        """Nothing for (tenant, provider) before ``until`` (a later mark never shortens);
        every ``flow_listen`` listener hears of it. ``provider`` may name an endpoint
        (``webhook@https://…``): a receiver's 429 pauses that receiver only."""
        ...

    def flow_listen(self, listener: FlowListener) -> Callable[[], None]:
        """Call ``listener`` with every throttle and breaker change that any process
        sharing this store commits, as soon as it is known: PostgreSQL sends a NOTIFY
        with each change; SQLite calls this process's listeners at once and looks for
        other processes' changes every ``FLOW_POLL`` seconds. Returns the function that
        stops the calls. Workers still poll, so a missed signal only costs latency."""
        ...

    async def throttle_list(self, now: datetime) -> list[Throttle]:
        """Throttles still in force."""
        ...

    async def limit_list(self) -> list[LimitRow]:
        """Limits set at run time."""
        ...

    async def limit_set(self, row: LimitRow) -> None:
        """Set a run-time limit (replacing one of the same scope), bump the flow epoch and
        audit ``limit.set`` in one transaction."""
        ...

    async def limit_clear(
        self, kind: str, tenant: str, provider: str, action: str, *, actor: str, reason: str,
        now: datetime,
    ) -> bool:  # fmt: skip
        """Remove a run-time limit (the configured one, if any, applies again); audited."""
        ...

    # -- controls ----------------------------------------------------------------

    async def flow_version(self) -> int:
        """The flow epoch: bumped by every change of controls or limits."""
        ...

    async def clock_now(self) -> datetime:
        """The store's current time, aware (UTC): the one clock every worker's leases,
        deadlines and windows are read by (``sluice.clock.StoreClock``). PostgreSQL:
        the server's ``clock_timestamp()``; SQLite: this host's clock, which every
        process sharing the file shares."""
        ...

    async def control_list(self) -> list[Control]:
        """Every control, expired or not, by scope."""
        ...

    async def control_set(
        self,
        scope: Scope,
        mode: Mode,
        *,
        actor: str,
        reason: str,
        expires_at: datetime | None,
        now: datetime,
    ) -> Control:
        """Set the mode of ``scope`` (replacing its control, if any), bump the flow epoch
        and audit ``control.set`` — in one transaction."""
        ...

    async def control_clear(
        self, scope: Scope, *, actor: str, reason: str, release: bool, now: datetime
    ) -> tuple[Control | None, list[str]]:
        """Remove the control of exactly ``scope`` (``None`` if there was none); with
        ``release``, put back in the queue the messages controls held within ``scope``.
        Bumps the epoch and audits ``control.clear`` when something changed."""
        ...

    async def control_expire(self, now: datetime, actor: str) -> list[Control]:
        """Remove controls past their expiry, release what they held, audit each as
        ``control.expired`` and bump the epoch (auto-revert)."""
        ...

    async def control_hold_queued(self, now: datetime, limit: int = 1000) -> list[str]:
        """Move queued messages under a live kill to ``held`` (up to ``limit`` per kill)."""
        ...

    async def control_park_queued(self, now: datetime, limit: int = 10_000) -> int:
        """Take queued messages under a live pause out of the ready set (up to ``limit``
        per pause) and return how many: claims then never scan them. The pause's end
        (``control_clear``, ``control_expire``, ``control_set`` to another mode) puts
        them back in the same transaction."""
        ...

    async def audit_append(self, entry: AuditEntry) -> AuditEntry:
        """Append to the audit log, chaining the hash of the previous entry."""
        ...

    async def audit_append_changed(
        self, entry: AuditEntry, initial: Mapping[str, Any] | None = None
    ) -> AuditEntry | None:
        """Append ``entry`` unless the newest entry with its ``action`` and ``target``
        has the same ``detail``: a state recorded only when it changes. ``initial`` is
        the detail in effect before any such entry (``None``: the first is a change).

        Decided and written under the audit log's lock, so processes starting together
        append one entry, not one each. Returns the entry appended, or ``None``."""
        ...

    async def audit_list(
        self, limit: int = 100, flt: AuditFilter | None = None
    ) -> list[AuditEntry]:
        """The newest audit entries ``flt`` selects (all by default), newest first."""
        ...

    async def audit_walk(self, after_id: int, limit: int) -> list[AuditEntry]:
        """Up to ``limit`` audit entries with ids above ``after_id``, oldest first: the
        whole log a page at a time, for checking the hash chain."""
        ...

    async def connection_insert(self, conn: Connection, audit: AuditEntry) -> Connection:
        """Store a new connection (``ValidationError`` if the tenant has one for that
        provider) and release messages held for want of it; audited."""
        ...

    async def connection_list(
        self, tenant: str | None = None, provider: str | None = None
    ) -> list[Connection]:
        """Connections, optionally of one tenant and/or provider."""
        ...

    async def connection_find(self, pairs: Sequence[tuple[str, str]]) -> list[Connection]:
        """The connections of these (tenant, provider) pairs, in one query."""
        ...

    async def connection_get(self, tenant: str, provider: str) -> Connection:
        """A tenant's connection to a provider; ``NotFound`` if there is none."""
        ...

    async def connection_set_state(
        self,
        tenant: str,
        provider: str,
        state: ConnectionState,
        reason: str,
        missing_scopes: Sequence[str],
        now: datetime,
        actor: str,
        expected_version: int | None = None,
    ) -> tuple[bool, list[str]]:
        """Change state (audited when it changed) and hold the connection's queued
        messages. With ``expected_version`` only an active connection still at that
        credential version changes. Returns (changed, held ids)."""
        ...

    async def connection_rotate(
        self,
        tenant: str,
        provider: str,
        *,
        ciphertext: bytes | None,
        key_id: str | None,
        scopes: Sequence[str] | None,
        expires_at: datetime | None,
        now: datetime,
        audit: AuditEntry,
    ) -> tuple[Connection, list[str]]:
        """Re-consent: active again, version + 1, held messages released; audited."""
        ...

    async def connection_store_secret(
        self,
        connection_id: str,
        ciphertext: bytes,
        key_id: str,
        expires_at: datetime | None,
        now: datetime,
        expected_version: int,
    ) -> bool:
        """Replace the ciphertext if the credential version is still ``expected_version``."""
        ...

    async def connection_record_check(
        self,
        connection_id: str,
        ok: bool,
        error: str | None,
        expires_at: datetime | None,
        now: datetime,
    ) -> None:
        """Record the result of ``sluice connections check``."""
        ...

    async def connection_refresh(
        self,
        tenant: str,
        provider: str,
        refresh: RefreshCallback,
        now: datetime,
        *,
        actor: str,
    ) -> Connection:
        """Refresh a connection's credentials, one refresher at a time; return it as stored.

        ``refresh`` runs with the row re-read under a per-connection lock, so it can see
        that another worker refreshed meanwhile and return ``None``. PostgreSQL holds the
        row lock (``SELECT … FOR UPDATE``) across ``refresh`` — single-flight across
        processes and hosts. SQLite takes a per-store ``asyncio.Lock`` (single-flight in
        the process) and writes with a compare-and-swap on ``credential_version``: two
        processes on one file may both call the token endpoint, and the later write is
        dropped in favour of the first (the write lock is never held across HTTP).
        New credentials bump ``credential_version`` and are audited as
        ``connection.refresh``; a new state is audited as ``connection.<state>`` and holds
        the connection's queued messages. ``NotFound`` if there is no such connection.
        """
        ...

    # -- breakers ----------------------------------------------------------------

    async def breaker_report(
        self,
        counts: Mapping[tuple[str, int], tuple[int, int]],
        probes_ok: Mapping[str, int],
        now: datetime,
    ) -> None:
        """Add outcomes to the breaker window and successful probes to half-open breakers.

        ``counts`` maps (key, bucket) to (ok, failed), added to what the bucket holds;
        ``probes_ok`` maps a key to successful probes, added to ``probes_ok`` of its row
        only while it is ``half_open``. One transaction.
        """
        ...

    async def breaker_window(
        self, keys: Sequence[str] | None, since_bucket: int
    ) -> dict[str, tuple[int, int]]:
        """(ok, failed) summed over buckets ``>= since_bucket``, per key with any; of
        ``keys`` only, or of every key (``None``)."""
        ...

    async def breaker_list(self) -> list[BreakerInfo]:
        """Every breaker row, by key."""
        ...

    async def breaker_transition(
        self,
        key: str,
        provider: str,
        tenant: str,
        expected_state: str | None,
        new_state: str,
        *,
        retry_at: datetime | None,
        reason: str,
        forced: bool,
        now: datetime,
        audit: AuditEntry,
    ) -> bool:
        """Move a breaker to ``new_state`` (``since`` = ``now``, ``probes_ok`` = 0) and
        write ``audit``, in one transaction; True if it moved.

        Compare-and-swap: with ``expected_state`` only a row in that state and not
        forced moves (a missing row counts as ``closed``, and is created), so of two
        workers racing one moves it and writes the audit row. ``None`` (an operator's
        act) moves it whatever its state. Entering ``closed`` clears the key's window,
        so failures from before the breaker opened cannot reopen it at once. A move is
        signalled to every ``flow_listen`` listener.
        """
        ...

    async def breaker_purge(self, before_bucket: int) -> int:
        """Drop window buckets older than ``before_bucket``; return how many."""
        ...

    async def worker_heartbeat(
        self, worker_id: str, host: str, pid: int, in_flight: int, sent_total: int, now: datetime
    ) -> None:
        """Record that a worker is alive."""
        ...

    async def worker_stop(self, worker_id: str, now: datetime) -> None:
        """Record that a worker stopped cleanly."""
        ...

    async def worker_ack(self, worker_id: str, version: int, now: datetime) -> None:
        """Record that a worker applies flow epoch ``version`` to every send it starts."""
        ...

    async def worker_list(self, since: datetime) -> list[WorkerInfo]:
        """Workers running, or stopped after ``since``."""
        ...

    async def wait_for_work(self, timeout: float) -> bool:
        """Sleep until new work may be ready or ``timeout`` passes; True if woken early."""
        ...

    # -- the HTTP API: listing, keys, idempotency --------------------------------

    async def message_list(
        self, flt: MessageFilter, status: str | None, before_id: str | None, limit: int
    ) -> list[Message]:
        """Newest first (ids are time-ordered); only ids below ``before_id`` (the cursor)."""
        ...

    # -- listings (issue 14) -------------------------------------------------------

    async def attempt_search(
        self, flt: AttemptFilter, limit: int
    ) -> tuple[list[Attempt], int | None]:
        """Attempts matching ``flt``, newest first, at most ``limit``; and the cursor of
        the next page (``AttemptFilter.before_id``), None on the last.
        ``ValidationError`` when ``flt.message_id`` is not a message id."""
        ...

    async def message_breakdown(
        self, by: str, flt: MessageFilter, status: str | None, now: datetime
    ) -> list[Breakdown]:
        """Messages matching ``flt`` (and ``status``) counted per group of ``by`` (one of
        ``BREAKDOWN_BY``) and status, with their oldest times; ``ValidationError`` for
        another ``by``."""
        ...

    async def api_key_insert(self, key: ApiKey, audit: AuditEntry) -> None:
        """Store a new key (audited); ``ValidationError`` if the id or name is taken."""
        ...

    async def api_key_get(self, key_id: str) -> ApiKey:
        """The key with ``key_id``, revoked or not; ``NotFound`` otherwise."""
        ...

    async def api_key_list(self) -> list[ApiKey]:
        """Every key, oldest first."""
        ...

    async def api_key_revoke(self, key_id: str, now: datetime, audit: AuditEntry) -> ApiKey:
        """Revoke (idempotent; audited the first time); ``NotFound`` if there is no such key."""
        ...

    async def idem_begin(
        self,
        scope: str,
        key: str,
        fingerprint: str,
        now: datetime,
        lock_seconds: float,
        window_seconds: float,
    ) -> IdemClaim:
        """Claim ``key`` for one request; see ``IdemClaim`` for the answers.

        A record older than ``window_seconds`` is forgotten (the key is new again); a
        running claim older than ``lock_seconds`` is taken over (its request died).
        """
        ...

    async def idem_finish(
        self, scope: str, key: str, status_code: int, response: str, now: datetime
    ) -> None:
        """Record the final response of the request that owns ``key``."""
        ...

    async def idem_enqueue(
        self,
        scope: str,
        key: str,
        messages: Sequence[NewMessage],
        respond: IdemResponder,
    ) -> tuple[int, str] | None:
        """Store ``messages`` and finish the running claim of ``key`` with the response
        ``respond`` makes of them as stored — in one transaction.

        So a request that fails on the way leaves neither behind: no messages without
        the key's record of them (which a retry would enqueue again), no record without
        its messages. ``respond`` gets the stored messages in order (an earlier message
        where a message idempotency key matched one) and gives the status and the
        response text to record; it runs inside the transaction and must not do I/O.

        Returns what was recorded; ``None``, with nothing stored, when ``key`` no longer
        has a running claim (another request took it over after its lock). Raises as
        ``enqueue_many`` does, storing nothing.
        """
        ...

    async def idem_release(self, scope: str, key: str) -> None:
        """Forget a running claim (the request failed in a way a retry may fix)."""
        ...

    async def idem_purge(self, now: datetime, window_seconds: float) -> int:
        """Delete records older than the window; how many."""
        ...

    # -- ingress: inbox, projector, receipts --------------------------------------

    async def inbox_put(self, items: Sequence[InboxItem], now: datetime) -> list[bool]:
        """Store events durably, deduplicated on (provider, source_tenant, event_id); True
        per new one."""
        ...

    async def inbox_claim(
        self, worker_id: str, limit: int, lease_seconds: float, now: datetime
    ) -> list[InboxItem]:
        """Lease pending events that are due, oldest first; ``attempts`` is bumped."""
        ...

    async def inbox_finish(
        self,
        item_id: int,
        attempt: int,
        result: str,
        now: datetime,
        receipt: Receipt | None = None,
    ) -> str:
        """Mark an event done with ``result`` — applying ``receipt`` in the same
        transaction when given. With a receipt the answer is ``applied`` (the message
        moved on), ``stale`` (recorded; the message is already further along or final),
        ``unmatched`` (no such message) or ``not_ready`` (the message is not ``sent``
        yet: nothing changed, not done).

        ``attempt`` is the claim's ``attempts``: only that claim may finish the event.
        When the lease ran out and another projector claimed it since, nothing is
        written and the answer is ``lost``."""
        ...

    async def inbox_retry(
        self, item_id: int, attempt: int, run_at: datetime, error: str, now: datetime
    ) -> bool:
        """Give a leased event back, due again at ``run_at``; False if the claim was lost."""
        ...

    async def inbox_dead(self, item_id: int, attempt: int, error: str, now: datetime) -> bool:
        """Retries are spent: the event waits for an operator; False if the claim was lost."""
        ...

    async def inbox_reject(
        self, item_id: int, attempt: int, reason: str, now: datetime, audit: AuditEntry
    ) -> bool:
        """Refuse a leased event for good (state ``rejected``, ``reason`` kept) and write
        ``audit`` in the same transaction; False (and nothing written) if the claim was lost."""
        ...

    async def inbox_list(
        self, state: str | None, provider: str | None, limit: int, before_id: int | None = None
    ) -> list[InboxItem]:
        """Events, newest first; only ids below ``before_id`` (the cursor)."""
        ...

    async def inbox_requeue(
        self, ids: Sequence[int] | None, now: datetime, audit: AuditEntry
    ) -> list[int]:
        """Dead events (all when ``ids`` is None) back to pending, audited; their ids."""
        ...

    async def inbox_counts(self) -> dict[str, int]:
        """Events per state."""
        ...

    async def inbox_purge(self, before: datetime) -> int:
        """Delete done events received before ``before`` (the dedupe window); how many."""
        ...

    async def receipt_list(self, message_id: str) -> list[Receipt]:
        """A message's receipts in the order they were applied."""
        ...

    # -- endpoint health and tenants' events (issue 14; types in store/endpoints.py) -

    async def endpoint_report(
        self, reports: Sequence[EndpointReport], now: datetime, window_seconds: float
    ) -> None:
        """Add workers' outcomes per endpoint: a report ending on a failure starts or
        continues the failing streak, one ending on a success ends it (a disabled endpoint
        stays disabled); the failure-rate window restarts once ``window_seconds`` old."""
        ...

    async def endpoint_list(
        self,
        tenant: str | None = None,
        state: str | None = None,
        failing_before: datetime | None = None,
    ) -> list[EndpointInfo]:
        """Endpoints by tenant and endpoint; ``failing_before``: failing since then or before."""
        ...

    async def endpoint_get(self, endpoint_id: str) -> EndpointInfo:
        """One endpoint; ``NotFound`` if there is none with that id."""
        ...

    async def endpoint_move(
        self,
        endpoint_id: str,
        expected: str | None,
        state: str,
        reason: str | None,
        now: datetime,
        audit: AuditEntry,
    ) -> EndpointInfo | None:
        """Set the endpoint's state (``disabled`` keeps ``reason``; any other ends the
        streak), if it is in ``expected`` (None: any); audited. None if it was not."""
        ...

    async def tenant_events_get(self, tenant: str) -> TenantEvents | None:
        """Where ``tenant``'s operational events go, if it said."""
        ...

    async def tenant_events_list(self) -> list[TenantEvents]:
        """Every tenant with an events URL."""
        ...

    async def tenant_events_set(
        self, tenant: str, url: str | None, now: datetime, audit: AuditEntry
    ) -> None:
        """Set (or, with None, clear) ``tenant``'s events URL; audited."""
        ...

    async def tenant_events_dead_seen(
        self, tenant: str, expected: datetime | None, until: datetime
    ) -> bool:
        """Move the ``message.dead`` digest's mark from ``expected`` to ``until`` (a
        compare-and-set: of workers racing, one moves it); False if it was not at
        ``expected`` or would go backwards."""

    # -- the two-person rule (issue 14) ----------------------------------------------

    async def request_file(self, req: OpRequest, audit: AuditEntry) -> OpRequest:
        """Record a pending request and ``audit`` in one transaction; ``Conflict`` when
        ``req.id`` is taken."""
        ...

    async def request_get(self, request_id: str) -> OpRequest:
        """One request; ``NotFound`` if there is none."""
        ...

    async def request_list(
        self, state: str | None, limit: int, before: str | None = None
    ) -> list[OpRequest]:
        """Requests in ``state`` (any if None), newest first, older than the request
        ``before`` (a page cursor)."""
        ...

    async def request_decide(
        self, request_id: str, state: str, *, actor: str, decision: str | None,
        now: datetime, audit: AuditEntry,
    ) -> bool:  # fmt: skip
        """Move a pending, unexpired request to ``state`` (approved or denied) with
        ``audit``, in one transaction; False (nothing written) if it was not pending."""
        ...

    async def request_result(self, request_id: str, result: Any) -> None:
        """Keep what the approved act returned (or the error it raised)."""
        ...

    async def request_expire(self, now: datetime) -> list[str]:
        """Pending requests past their ``expires_at`` become expired; their ids."""

    # -- recipient hygiene (issue 14): suppressions, the WhatsApp window -----------
    # Keys are (tenant, medium, recipient), the recipient normalised
    # (sluice.flow.hygiene.normalise).

    async def suppression_put(self, s: Suppression, audit: AuditEntry) -> bool:
        """Suppress a recipient, with ``audit`` in the same transaction; False (nothing
        written) when they already are: the first entry and its reason are kept."""
        ...

    async def suppression_delete(
        self, tenant: str, channel: str, recipient: str, audit: AuditEntry
    ) -> Suppression | None:
        """Lift a suppression, audited; the entry removed, or None (nothing written)."""
        ...

    async def suppression_list(
        self,
        tenant: str | None,
        channel: str | None,
        recipient: str | None,
        after: tuple[str, str, str] | None,
        limit: int,
    ) -> list[Suppression]:
        """By (tenant, channel, recipient), those past the key ``after`` (the cursor)."""
        ...

    async def suppression_find(
        self, keys: Sequence[tuple[str, str, str]]
    ) -> set[tuple[str, str, str]]:
        """Which of ``keys`` are suppressed (one query for a claimed batch)."""
        ...

    async def suppression_counts(self) -> dict[str, int]:
        """Suppressed recipients per medium, every tenant (the state metrics)."""
        ...

    async def contact_seen(self, tenant: str, channel: str, recipient: str, at: datetime) -> None:
        """The recipient wrote to the tenant at ``at`` (the latest time is kept)."""
        ...

    async def contact_find(
        self, keys: Sequence[tuple[str, str, str]]
    ) -> dict[tuple[str, str, str], datetime]:
        """When each of ``keys`` last wrote (absent: never, as far as ingress saw)."""

    # -- annotations (issue 15) --------------------------------------------------

    async def annotation_add(self, annotation: Annotation, audit: AuditEntry) -> Annotation:
        """Record an annotation and ``audit`` in one transaction; it, with its id."""
        ...

    async def annotation_list(
        self,
        since: datetime | None = None,
        until: datetime | None = None,
        *,
        tenant: str | None = None,
        kind: str | None = None,
        before_id: int | None = None,
        limit: int = 100,
    ) -> list[Annotation]:
        """Annotations whose ``at`` is in [since, until), newest first (then by id);
        ``tenant`` and ``kind`` exact; only those after ``before_id`` in that order (the
        cursor of the next, older page)."""
        ...

    # -- console sessions (issue 16) ------------------------------------------

    async def console_session_insert(self, session: ConsoleSession) -> None:
        """Keep ``session`` (a new token hash; a duplicate is ``Conflict``-free by
        construction: tokens have 256 random bits)."""
        ...

    async def console_session_get(self, token_hash: str) -> ConsoleSession:
        """The session or ticket with ``token_hash`` (expired ones too; the caller
        checks); ``NotFound`` if there is none."""
        ...

    async def console_session_touch(self, token_hash: str, seen_at: datetime) -> None:
        """Record that the session was used at ``seen_at`` (tickets are left alone)."""
        ...

    async def console_session_take(self, token_hash: str) -> ConsoleSession | None:
        """Delete the session or ticket with ``token_hash`` and return it (None if there
        was none): logging out, and using a one-time link exactly once."""
        ...

    async def console_session_purge(self, now: datetime) -> int:
        """Delete every session and ticket expired at ``now``; how many."""
        ...

    # -- retention (issue 14) ----------------------------------------------------

    async def message_purge_count(self, rule: PurgeRule) -> dict[str, int]:
        """How many messages ``rule`` matches now, per status (statuses with none left out)."""
        ...

    async def message_purge(
        self, rule: PurgeRule, limit: int, export: PurgeExport | None = None
    ) -> dict[str, int]:
        """Delete up to ``limit`` messages ``rule`` matches, with their attempts and
        receipts, in one transaction; how many per status. A message that is not final
        (``sluice.retention.NON_FINAL``) is never deleted (``ValidationError`` for a rule
        naming one). ``export`` gets the batch before the commit; if it raises, nothing
        is deleted. On PostgreSQL rows another transaction has locked are skipped."""
        ...

    # -- canaries (issue 15; the type in store/canaries.py) ----------------------

    async def canary_record(self, run: CanaryRun) -> None:
        """Write ``run`` (a new one, or the outcome of one already written: its message
        id, receipt time, outcome and error are updated)."""
        ...

    async def canary_list(self, provider: str | None, limit: int) -> list[CanaryRun]:
        """The newest ``limit`` canaries (of ``provider``), newest first."""
        ...

    async def canary_latest(self, *, finished: bool = False) -> list[CanaryRun]:
        """Each target's newest canary, by target; with ``finished``, its newest that is
        no longer pending."""
        ...
