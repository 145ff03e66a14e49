"""Circuit breakers per provider, per connection and per endpoint, shared by every worker
through the store.

A provider with one upstream (Twilio, SendGrid, WhatsApp, and their aliases) has two
breakers on each send: the provider's (``p:<provider>``), which opens when the provider
itself is failing for everyone, and the connection's (``c:<tenant>:<provider>``), which
opens when one tenant's traffic to it fails. A send goes only when neither is open.

Webhooks and ``http`` actions have no single upstream: every recipient URL (every
configured action) is a server of its own, and one of them being down says nothing
about the others. Their sends have one breaker each, the endpoint's
(``e:<tenant>:<endpoint>``), so a dead endpoint defers its own messages only — never
another endpoint of the same tenant, never anyone else's.

- **closed**: everything goes; outcomes are counted in 10-second buckets. When the last
  ``window_seconds`` hold at least ``min_volume`` outcomes and the share that failed is
  at least ``failure_rate``, the breaker opens.
- **open**: nothing goes; messages are deferred until ``retry_at`` (``cooldown_seconds``
  after opening), when the breaker turns half-open.
- **half_open**: each worker lets one send at a time through as a *probe*. One failed
  probe opens the breaker again; ``probes`` successful ones (counted in the store,
  across workers) close it, and its window starts afresh.
- An operator may *force* a breaker open or closed (``sluice breakers open|close``);
  no worker changes a forced breaker until ``sluice breakers reset``.

Only provider-health outcomes count: a send that went (ok) and 5xx, timeouts and
unavailability (failed). Refused credentials, permanent rejections and throttling say
nothing about the provider's health and are not recorded.

Each worker decides from a local snapshot (``Breakers.allow`` when a message is claimed,
``Breakers.check`` again just before the provider is called; no I/O on the send path)
and records outcomes locally (``Breakers.record``); about once a second
``Breakers.sync`` adds its counts to the store, reads back the shared window and rows,
and makes the transitions that are due, each a compare-and-swap on the state written
with its audit row in one transaction, so two workers racing make one transition.
The worker that makes a transition applies it to its snapshot at once; the others hear
of it from the store (``Store.flow_listen``: NOTIFY on PostgreSQL) and apply it with
``Breakers.apply`` within milliseconds, the next sync being the fallback.
The rules themselves are the pure function ``next_state``.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import structlog

from sluice.clock import Clock, SystemClock
from sluice.config import Settings
from sluice.errors import ValidationError
from sluice.model import AuditEntry

__all__ = [
    "BreakerInfo",
    "BreakerPolicy",
    "BreakerState",
    "BreakerStatus",
    "BreakerStore",
    "Breakers",
    "Transition",
    "Verdict",
    "breaker_status",
    "connection_key",
    "endpoint_key",
    "next_state",
    "parse_key",
    "provider_key",
]


@dataclass(frozen=True, slots=True)
class BreakerInfo:
    """A circuit breaker's row: per provider (``p:<provider>``) or per connection
    (``c:<tenant>:<provider>``), shared by every worker; the store keeps it.

    ``state`` is ``closed``, ``open`` or ``half_open``; ``forced`` marks an operator's
    state that no worker changes; ``probes_ok`` counts successful probes while half-open.
    """

    key: str
    provider: str
    tenant: str
    state: str
    since: datetime
    retry_at: datetime | None
    forced: bool
    reason: str | None
    probes_ok: int
    updated_at: datetime


class BreakerStore(Protocol):
    """What ``Breakers`` needs of a store: the breaker methods of ``sluice.store.Store``,
    which every store has (the policy names them here, so it need not know the store)."""

    async def breaker_report(
        self,
        counts: Mapping[tuple[str, int], tuple[int, int]],
        probes_ok: Mapping[str, int],
        now: datetime,
    ) -> None:
        """Add outcomes to the window and successful probes to half-open breakers."""
        ...

    async def breaker_window(
        self, keys: Sequence[str] | None, since_bucket: int
    ) -> dict[str, tuple[int, int]]:
        """(ok, failed) summed over buckets ``>= since_bucket``, per key."""
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
        """Move a breaker to ``new_state`` and write ``audit`` (compare-and-swap)."""
        ...

    async def breaker_purge(self, before_bucket: int) -> int:
        """Drop window buckets older than ``before_bucket``; return how many."""
        ...


#: How long a send refused because this worker's probe is still in flight is deferred.
PROBE_BUSY_DELAY = 1.0
#: Window buckets older than the window are purged this often (by every worker).
PURGE_INTERVAL = 60.0
#: Width of one window bucket, seconds (at most the window).
BUCKET_SECONDS = 10.0


class BreakerState(enum.StrEnum):
    """Where a breaker stands."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """When breakers open and close (``SLUICE_BREAKER_*``)."""

    #: The sliding window outcomes are counted over, seconds.
    window_seconds: float = 600.0
    #: Outcomes the window must hold before the breaker may open.
    min_volume: int = 20
    #: Share of failed outcomes that opens it (``failed / (ok + failed) >= failure_rate``).
    failure_rate: float = 0.5
    #: Seconds an opened breaker stays open before it lets probes through.
    cooldown_seconds: float = 30.0
    #: Successful probes that close a half-open breaker.
    probes: int = 5
    #: Width of one window bucket, seconds.
    bucket_seconds: float = BUCKET_SECONDS
    #: A probe whose outcome is never recorded frees its slot after this long.
    probe_timeout_seconds: float = 60.0

    def __post_init__(self) -> None:
        for name in ("window_seconds", "cooldown_seconds", "bucket_seconds"):
            if not getattr(self, name) > 0:
                raise ValueError(f"BreakerPolicy.{name} must be positive")
        if self.min_volume < 1 or self.probes < 1:
            raise ValueError("BreakerPolicy.min_volume and probes must be at least 1")
        if not 0 < self.failure_rate <= 1:
            raise ValueError("BreakerPolicy.failure_rate must be in (0, 1]")

    @classmethod
    def from_settings(cls, settings: Settings) -> BreakerPolicy:
        """The policy of ``sluice.config.Settings`` (``breaker_window`` and the rest)."""
        window = settings.breaker_window
        return cls(
            window_seconds=window,
            min_volume=settings.breaker_min_volume,
            failure_rate=settings.breaker_failure_rate,
            cooldown_seconds=settings.breaker_cooldown,
            probes=settings.breaker_probes,
            bucket_seconds=min(BUCKET_SECONDS, window),
        )

    def bucket(self, at: datetime) -> int:
        """The window bucket ``at`` falls in."""
        return math.floor(at.timestamp() / self.bucket_seconds)

    def window_start(self, now: datetime) -> int:
        """The oldest bucket of the window ending at ``now`` (the current one included)."""
        return self.bucket(now) - math.ceil(self.window_seconds / self.bucket_seconds) + 1


def provider_key(provider: str) -> str:
    """The key of a provider's breaker."""
    return f"p:{provider}"


def connection_key(tenant: str, provider: str) -> str:
    """The key of a tenant's connection's breaker."""
    return f"c:{tenant}:{provider}"


def endpoint_key(tenant: str, endpoint: str) -> str:
    """The key of a tenant's endpoint's breaker (a webhook URL, an ``http`` action)."""
    return f"e:{tenant}:{endpoint}"


#: What an endpoint starts with, in an ``e:`` key (where the tenant part ends).
_ENDPOINT_STARTS = ("http://", "https://")


def parse_key(text: str) -> tuple[str, str, str]:
    """``(key, provider, tenant)`` of ``p:<provider>``, ``c:<tenant>:<provider>``,
    ``e:<tenant>:<endpoint>`` (provider ``""``: any endpoint provider) or a bare provider
    name (its provider breaker); ``ValidationError`` for anything else."""
    text = (text or "").strip()
    if text.startswith("p:") and len(text) > 2 and ":" not in text[2:]:
        return text, text[2:], ""
    if text.startswith("c:"):
        tenant, sep, provider = text[2:].rpartition(":")
        if sep and tenant and provider:
            return text, provider, tenant
    elif text.startswith("e:"):
        rest = text[2:]
        cuts = [(rest.find(":" + start), start) for start in _ENDPOINT_STARTS]
        found = [(c, start) for c, start in cuts if c > 0]
        if found:
            cut, start = min(found)
            if len(rest) > cut + 1 + len(start):  # something after the scheme
                return text, "", rest[:cut]
    elif text and ":" not in text:
        return provider_key(text), text, ""
    raise ValidationError(
        "key",
        f"{text!r} is not a breaker key: use p:<provider>, c:<tenant>:<provider>, "
        "e:<tenant>:<endpoint URL> or a provider name",
    )


@dataclass(frozen=True, slots=True)
class Verdict:
    """``Breakers.allow``'s answer for one send."""

    allowed: bool
    #: The send is a half-open breaker's probe: record its outcome with ``probe=True``.
    probe: bool = False
    #: When refused: when to try again (defer the message until then).
    retry_at: datetime | None = None
    #: The breaker that refused the send, or the one it probes.
    key: str | None = None
    reason: str = ""


#: The verdict of every send while no breaker is open or half-open (immutable, shared).
PASS = Verdict(True)


@dataclass(frozen=True, slots=True)
class Transition:
    """A state change ``next_state`` decided on."""

    state: BreakerState
    retry_at: datetime | None
    reason: str


def next_state(
    row: BreakerInfo | None,
    window: tuple[int, int],
    *,
    probe_failed: bool,
    policy: BreakerPolicy,
    now: datetime,
) -> Transition | None:
    """The transition due for a breaker, or ``None``: the rules, without I/O.

    ``row`` is the breaker as stored (``None``: never left closed), ``window`` the
    (ok, failed) outcomes of its window, ``probe_failed`` whether a probe failed since
    the row was read. A forced breaker never moves on its own.
    """
    if row is not None and row.forced:
        return None
    state = BreakerState.CLOSED if row is None else BreakerState(row.state)
    ok, failed = window
    if state is BreakerState.CLOSED:
        volume = ok + failed
        if volume >= policy.min_volume and failed / volume >= policy.failure_rate:
            return Transition(
                BreakerState.OPEN,
                now + timedelta(seconds=policy.cooldown_seconds),
                f"{failed}/{volume} failed ({failed / volume:.0%}) in {policy.window_seconds:g} s",
            )
        return None
    assert row is not None  # only a stored breaker is open or half-open
    if state is BreakerState.OPEN:
        if row.retry_at is None or now >= row.retry_at:
            return Transition(
                BreakerState.HALF_OPEN,
                None,
                f"open for {policy.cooldown_seconds:g} s; letting probes through",
            )
        return None
    if probe_failed:
        return Transition(
            BreakerState.OPEN,
            now + timedelta(seconds=policy.cooldown_seconds),
            "a probe failed while half-open",
        )
    if row.probes_ok >= policy.probes:
        return Transition(
            BreakerState.CLOSED, None, f"{row.probes_ok} probes succeeded while half-open"
        )
    return None


@dataclass(frozen=True, slots=True)
class BreakerStatus:
    """One breaker for display: its state and its window's figures."""

    key: str
    provider: str
    tenant: str
    state: BreakerState
    forced: bool
    since: datetime | None
    retry_at: datetime | None
    reason: str | None
    probes_ok: int
    ok: int
    failed: int
    #: ``failed / (ok + failed)``; ``None`` with no outcomes in the window.
    failure_rate: float | None


def breaker_status(
    key: str, row: BreakerInfo | None, window: tuple[int, int], provider: str, tenant: str
) -> BreakerStatus:
    """The display form of a breaker (``row`` ``None``: closed, never opened)."""
    ok, failed = window
    return BreakerStatus(
        key=key,
        provider=row.provider if row else provider,
        tenant=row.tenant if row else tenant,
        state=BreakerState(row.state) if row else BreakerState.CLOSED,
        forced=bool(row and row.forced),
        since=row.since if row else None,
        retry_at=row.retry_at if row else None,
        reason=row.reason if row else None,
        probes_ok=row.probes_ok if row else 0,
        ok=ok,
        failed=failed,
        failure_rate=failed / (ok + failed) if ok + failed else None,
    )


class Breakers:
    """One worker's view of the shared breakers: decides locally, syncs with the store."""

    def __init__(
        self,
        store: BreakerStore,
        policy: BreakerPolicy | None = None,
        *,
        worker_id: str,
        clock: Clock | None = None,
        logger: Any = None,
    ) -> None:
        self.store = store
        self.policy = policy or BreakerPolicy()
        self.worker_id = worker_id
        self.clock = clock or SystemClock()
        self.log = logger or structlog.get_logger("sluice.breakers").bind(worker=worker_id)
        #: The store's rows and window sums as of the last sync.
        self._rows: dict[str, BreakerInfo] = {}
        #: Whether every breaker in ``_rows`` is closed; None: not worked out since
        #: they last changed.
        self._closed: bool | None = True
        self._window: dict[str, tuple[int, int]] = {}
        #: Outcomes not yet in the store: (key, bucket) -> [ok, failed].
        self._pending: dict[tuple[str, int], list[int]] = {}
        #: Probe results not yet in the store.
        self._probes_ok: dict[str, int] = {}
        self._probe_failed: set[str] = set()
        #: This worker's probe in flight per half-open key, and when it was let through.
        self._probing: dict[str, datetime] = {}
        #: Keys this worker recorded outcomes for: key -> (provider, tenant, last record).
        self._seen: dict[str, tuple[str, str, datetime]] = {}
        #: Outcomes by (provider, tenant, endpoint, bucket) -> [ok, failed, last], until
        #: the next sync.
        self._raw: dict[tuple[str, str, str | None, int], list[Any]] = {}
        self._purged_at: datetime | None = None

    @staticmethod
    def keys(provider: str, tenant: str, endpoint: str | None = None) -> tuple[str, ...]:
        """The breaker keys a send's outcome counts toward: the endpoint's when it has one
        (webhooks, ``http`` actions), else the provider's and the connection's."""
        if endpoint is not None:
            return (endpoint_key(tenant, endpoint),)
        return provider_key(provider), connection_key(tenant, provider)

    @classmethod
    def gates(cls, provider: str, tenant: str, endpoint: str | None = None) -> tuple[str, ...]:
        """The breakers a send must pass: its ``keys``, and for an endpoint's send also
        the provider's — which its outcomes never open, but an operator may force
        (``sluice breakers open webhook``: no webhook goes out, whatever the endpoint)."""
        keys = cls.keys(provider, tenant, endpoint)
        return keys if endpoint is None else (*keys, provider_key(provider))

    # -- the send path (no I/O) ------------------------------------------------------

    def _all_closed(self) -> bool:
        """No breaker of the snapshot is open or half-open: every send passes (the
        common case, answered once per change instead of per send and breaker)."""
        if self._closed is None:
            self._closed = all(r.state == BreakerState.CLOSED for r in self._rows.values())
        return self._closed

    def _open_verdict(self, key: str, row: BreakerInfo, now: datetime) -> Verdict:
        # Forced open has no retry_at; one whose cooldown is over waits for a sync to
        # make it half-open: defer either a little, never into the past.
        soon = now + timedelta(seconds=PROBE_BUSY_DELAY)
        retry_at = (
            now + timedelta(seconds=self.policy.cooldown_seconds)
            if row.forced or row.retry_at is None
            else max(row.retry_at, soon)
        )
        why = "forced open" if row.forced else "open"
        return Verdict(
            False,
            retry_at=retry_at,
            key=key,
            reason=f"circuit breaker {key} is {why}: {row.reason or 'no reason given'}",
        )

    def check(
        self,
        provider: str,
        tenant: str,
        endpoint: str | None = None,
        *,
        probe: bool = False,
        now: datetime | None = None,
    ) -> Verdict:
        """The last look before the provider is called, without taking a probe slot: a
        send admitted earlier may not start once one of its breakers has opened (or
        turned half-open, unless this send is the probe ``allow`` let through)."""
        if self._all_closed():
            return PASS
        now = now or self.clock.now()
        for key in self.gates(provider, tenant, endpoint):
            row = self._rows.get(key)
            if row is None or row.state == BreakerState.CLOSED:
                continue
            if row.state == BreakerState.OPEN:
                return self._open_verdict(key, row, now)
            if not (probe and key in self._probing):
                return Verdict(
                    False,
                    retry_at=now + timedelta(seconds=PROBE_BUSY_DELAY),
                    key=key,
                    reason=f"circuit breaker {key} is half-open: only probes go",
                )
        return Verdict(True)

    def allow(self, provider: str, tenant: str, endpoint: str | None = None) -> Verdict:
        """May a send to ``provider`` for ``tenant`` go now? From the last snapshot."""
        if self._all_closed():
            return PASS
        now = self.clock.now()
        probing: list[str] = []
        for key in self.gates(provider, tenant, endpoint):
            row = self._rows.get(key)
            if row is None or row.state == BreakerState.CLOSED:
                continue
            if row.state == BreakerState.OPEN:
                return self._open_verdict(key, row, now)
            started = self._probing.get(key)
            timeout = timedelta(seconds=self.policy.probe_timeout_seconds)
            if started is not None and now - started < timeout:
                return Verdict(
                    False,
                    retry_at=now + timedelta(seconds=PROBE_BUSY_DELAY),
                    key=key,
                    reason=f"circuit breaker {key} is half-open and this worker's probe "
                    "is in flight",
                )
            probing.append(key)
        if not probing:
            return Verdict(True)
        for key in probing:
            self._probing[key] = now
        return Verdict(
            True,
            probe=True,
            key=probing[0],
            reason=f"probe of half-open circuit breaker {', '.join(probing)}",
        )

    def record(
        self,
        provider: str,
        tenant: str,
        ok: bool,
        *,
        probe: bool = False,
        now: datetime | None = None,
        endpoint: str | None = None,
    ) -> None:
        """Count a provider-health outcome of a send; ``probe``: ``allow`` said it was one."""
        now = now or self.clock.now()
        # The hot path (every send) only counts; keys are worked out at the next sync.
        slot = (provider, tenant, endpoint, self.policy.bucket(now))
        counts = self._raw.get(slot)
        if counts is None:
            counts = self._raw[slot] = [0, 0, now]
        counts[0 if ok else 1] += 1
        counts[2] = now
        if probe:
            self._record_probe(provider, tenant, ok, endpoint)

    def _expand(self) -> None:
        """Move the counts of ``record`` to the breaker keys they belong to."""
        raw, self._raw = self._raw, {}
        for (provider, tenant, endpoint, bucket), (ok, failed, at) in raw.items():
            keys = self.keys(provider, tenant, endpoint)
            owners = (tenant,) if endpoint is not None else ("", tenant)
            for key, key_tenant in zip(keys, owners, strict=True):
                counts = self._pending.setdefault((key, bucket), [0, 0])
                counts[0] += ok
                counts[1] += failed
                seen = self._seen.get(key)
                if seen is None or seen[2] < at:
                    self._seen[key] = (provider, key_tenant, at)

    def _record_probe(self, provider: str, tenant: str, ok: bool, endpoint: str | None) -> None:
        for key in self.keys(provider, tenant, endpoint):
            if self._probing.pop(key, None) is not None:
                if ok:
                    self._probes_ok[key] = self._probes_ok.get(key, 0) + 1
                else:
                    self._probe_failed.add(key)

    def release(self, provider: str, tenant: str, endpoint: str | None = None) -> None:
        """Free the probe slots of a probe whose outcome says nothing about health
        (refused credentials, a permanent rejection, throttling)."""
        for key in self.gates(provider, tenant, endpoint):
            self._probing.pop(key, None)

    def apply(self, row: BreakerInfo) -> None:
        """Take in a breaker's new state as another worker (or an operator) wrote it,
        without waiting for the next sync; an older state than the one held is ignored."""
        held = self._rows.get(row.key)
        if held is not None and held.updated_at > row.updated_at:
            return
        self._rows[row.key] = row
        self._closed = None
        if row.state != BreakerState.HALF_OPEN:
            self._probing.pop(row.key, None)

    # -- the sync loop ---------------------------------------------------------------

    async def sync(self, now: datetime | None = None) -> None:
        """Flush local counts, read the shared state, make the transitions that are due.

        Store errors are logged, never raised: the last snapshot stays in use and the
        counts not written are kept for the next call.
        """
        now = now or self.clock.now()
        try:
            await self._sync(now)
        except Exception as exc:  # a worker loop must not die of a database blip
            self.log.warning("breaker sync failed; using the last snapshot", error=str(exc))

    async def _sync(self, now: datetime) -> None:
        self._expand()
        await self._flush(now)
        since_bucket = self.policy.window_start(now)
        horizon = now - timedelta(seconds=self.policy.window_seconds)
        self._seen = {k: v for k, v in self._seen.items() if v[2] >= horizon}
        rows, window = await self._read(since_bucket)
        moved = False
        for key in sorted(set(rows) | set(self._seen)):
            row = rows.get(key)
            figures = window.get(key, (0, 0))
            step = next_state(
                row,
                figures,
                probe_failed=key in self._probe_failed,
                policy=self.policy,
                now=now,
            )
            if step is not None:
                # Stamped when it is made, not when the sync began: the rows and the audit
                # say when sends stopped, and a retry_at counts from the opening.
                at = self.clock.now()
                if step.retry_at is not None:
                    step = Transition(step.state, step.retry_at + (at - now), step.reason)
                await self._move(key, row, figures, step, at)
                moved = True
        self._probe_failed.clear()
        if moved:
            rows, window = await self._read(since_bucket)
        self._rows, self._window, self._closed = rows, window, None
        for key in list(self._probing):
            row = rows.get(key)
            if row is None or row.state != BreakerState.HALF_OPEN:
                del self._probing[key]
        if self._purged_at is None or (now - self._purged_at).total_seconds() >= PURGE_INTERVAL:
            self._purged_at = now
            await self.store.breaker_purge(since_bucket)

    async def _flush(self, now: datetime) -> None:
        pending, self._pending = self._pending, {}
        probes, self._probes_ok = self._probes_ok, {}
        try:
            await self.store.breaker_report(
                {k: (c[0], c[1]) for k, c in pending.items()}, probes, now
            )
        except Exception:
            # Nothing was written (one transaction): keep it for the next sync.
            for k, (ok, failed) in pending.items():
                counts = self._pending.setdefault(k, [0, 0])
                counts[0] += ok
                counts[1] += failed
            for key, n in probes.items():
                self._probes_ok[key] = self._probes_ok.get(key, 0) + n
            raise

    async def _read(
        self, since_bucket: int
    ) -> tuple[dict[str, BreakerInfo], dict[str, tuple[int, int]]]:
        rows = {r.key: r for r in await self.store.breaker_list()}
        keys = sorted(set(rows) | set(self._seen))
        return rows, await self.store.breaker_window(keys, since_bucket)

    async def _move(
        self,
        key: str,
        row: BreakerInfo | None,
        figures: tuple[int, int],
        step: Transition,
        now: datetime,
    ) -> None:
        if row is not None:
            provider, tenant = row.provider, row.tenant
        else:
            provider, tenant, _ = self._seen[key]
        before = BreakerState.CLOSED if row is None else BreakerState(row.state)
        ok, failed = figures
        detail = {
            "from": before.value,
            "to": step.state.value,
            "ok": ok,
            "failed": failed,
            "rate": round(failed / (ok + failed), 4) if ok + failed else None,
            "probes_ok": row.probes_ok if row else 0,
            "retry_at": step.retry_at.isoformat() if step.retry_at else None,
        }
        moved = await self.store.breaker_transition(
            key,
            provider,
            tenant,
            before.value,
            step.state.value,
            retry_at=step.retry_at,
            reason=step.reason,
            forced=False,
            now=now,
            audit=AuditEntry(
                at=now,
                actor=f"worker:{self.worker_id}",
                action=f"breaker.{step.state.value}",
                target=key,
                reason=step.reason,
                detail=detail,
            ),
        )
        if moved:
            # This worker stops (or resumes) at once, not after re-reading the store.
            self.apply(
                BreakerInfo(
                    key=key, provider=provider, tenant=tenant, state=step.state.value,
                    since=now, retry_at=step.retry_at, forced=False, reason=step.reason,
                    probes_ok=0, updated_at=now,
                )
            )  # fmt: skip
            self.log.warning(
                f"circuit breaker {step.state.value.replace('_', '-')}",
                key=key,
                reason=step.reason,
                ok=ok,
                failed=failed,
                retry_at=detail["retry_at"],
            )
        else:
            self.log.debug("breaker moved by another worker first", key=key)

    # -- display ---------------------------------------------------------------------

    def snapshot(self) -> list[BreakerStatus]:
        """Every breaker this worker knows of, as of its last sync, by key."""
        out = []
        for key in sorted(set(self._rows) | set(self._seen)):
            provider, tenant = self._seen[key][:2] if key in self._seen else ("", "")
            out.append(
                breaker_status(
                    key, self._rows.get(key), self._window.get(key, (0, 0)), provider, tenant
                )
            )
        return out
