"""The dispatcher: claim → send → record, concurrently, with leases and a reaper.

One ``Dispatcher`` runs in one process on one asyncio loop:

- the *claim loop* leases at most as many messages as there are free send slots, so
  every claimed message starts at once and none waits out its lease in memory;
- each message is sent on its own task through its provider (one shared HTTP pool);
- outcomes go to a buffer that the *flusher* writes back in batches, every write
  guarded by the claim so a stale worker cannot overwrite a newer outcome;
- the *reaper* returns messages whose lease expired (a worker died or froze);
- the *heartbeat* tells the store this worker is alive.

It wakes on the store's notifications (LISTEN/NOTIFY on PostgreSQL, the file's data
version on SQLite) and polls as a fallback. ``stop()`` (SIGTERM/SIGINT) stops
claiming, lets in-flight sends finish, writes their outcomes, and releases claimed
messages that never started.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog

from sluice import metrics, tracing
from sluice.clock import Clock, StoreClock, SystemClock
from sluice.config import Settings
from sluice.connections import Connection, ConnectionState, hold_reason
from sluice.errors import SluiceError
from sluice.expiry import expired_reason
from sluice.flow.breakers import BreakerPolicy, Breakers
from sluice.flow.controls import (
    CONTROL_PREFIX,
    FENCE_SECONDS,
    Control,
    Mode,
    control_hold_reason,
)
from sluice.flow.limits import Use, use_of
from sluice.model import (
    Attempt,
    AttemptOutcome,
    Completion,
    ErrorClass,
    ErrorCode,
    Message,
    Outcome,
    Status,
)
from sluice.providers.base import Credentials, Provider
from sluice.store.base import FlowSignal, Store
from sluice.store.tenant_events import connection_event
from sluice.worker import expiry
from sluice.worker.controls import ControlWatch, ScopeKey, scope_key
from sluice.worker.endpoints import EndpointWatch
from sluice.worker.gate import ConnectionGate, Connections, Ticket
from sluice.worker.hygiene import RecipientScreen
from sluice.worker.limits import Limiter
from sluice.worker.retry import Decision, RetryPolicy

if TYPE_CHECKING:
    from sluice.ingress.projector import Projector

__all__ = ["Dispatcher", "WorkerStats", "new_worker_id"]


#: Poll intervals while traffic is flowing (see ``_claim_loop``): looks come every
#: HOT_POLL_FIRST for HOT_POLL_STEADY after the last work, then each look that finds
#: nothing doubles the wait up to HOT_POLL. Messages committed one after another (each
#: NOTIFY but the first coalesced away) wait at most 1 ms, even when one commit comes a
#: little late (doubling at once put such a message 4, then 8 ms behind); a worker whose
#: traffic thins out makes about eight looks in the first 8 ms of each pause, then a few
#: more, ever further apart; an idle one sleeps on LISTEN. (Looks every 1 ms were tried
#: once and dropped while each claim on a new database still read the whole table (see
#: ``PostgresStore.SIZED``); planned for the table, they cut the bench's p99 at 1,000
#: single enqueues a second from 5.6-6.1 ms to 4.1-4.7, back to back from 4.1 to 2.8-3.4.)
HOT_POLL_FIRST = 0.001
HOT_POLL_STEADY = 0.008
HOT_POLL = 0.01
#: Due times of messages this worker put back for later (retries, deferrals by limits,
#: throttles and breakers) that it keeps, earliest first, so that it looks again when
#: they come due rather than at the next poll; and how late after one it looks (the
#: stored time is rounded to the microsecond, the limiter's clock may be another's).
DUE_TIMES = 256
DUE_SLACK = 0.002
#: A send starts only if its lease outlasts the HTTP timeout by this much (at most; a
#: tenth of what the lease leaves beyond the timeout when that is less).
LEASE_MARGIN = 1.0
#: Seconds a stopping worker keeps trying to write outcomes before it logs them instead.
FINAL_FLUSH_SECONDS = 15.0
#: Seconds a message waits when this worker cannot send it (no key to open its
#: credentials, no secret to sign it): long enough not to spin, short enough for another
#: worker, or this one once fixed, to take it soon.
WORKER_PROBLEM_DELAY = 30.0


def _control_reason(mode: Mode, control: Control | None) -> str:
    if control is not None:
        return control_hold_reason(control)
    return f"{CONTROL_PREFIX}{mode.value} (default mode, SLUICE_DEFAULT_MODE): approve to send"


def _unknown_scope(outcome: Outcome) -> str:
    """The missing scope as far as a refusal that names none tells it: "unknown", and
    what the provider said (never a status code passed off as a scope name)."""
    said = outcome.provider_status or str(outcome.code)
    code = outcome.provider_code
    if code and code not in said:
        said = f"{said}, code {code}"
    return f"unknown (provider refused: {said})"


def _with_note(note: str | None, detail: str | None) -> str | None:
    """An attempt's detail, with why the message was given up on in front of it."""
    if note is None:
        return detail or None
    return f"{note}: {detail}" if detail else note


def _about(msg: Message) -> dict[str, Any]:
    """What every log line about a message carries: its id, tenant and correlation id
    (the caller's, or the API request's ``X-Request-Id``), so one grep finds them all."""
    return {"message_id": msg.id, "tenant": msg.tenant, "correlation_id": msg.correlation_id}


def _evidence(c: Completion) -> dict[str, Any]:
    """What a completion says, for a log line when it cannot be written."""
    a = c.attempt
    return {
        "message_id": c.message_id,
        "claim_seq": c.claim_seq,
        "verdict": c.status.value,
        "outcome": a.outcome.value if a else None,
        "error_code": a.error_code if a else None,
        "provider_status": a.provider_status if a else None,
        "provider_message_id": c.provider_message_id,
        "started_at": a.started_at.isoformat() if a else None,
    }


def new_worker_id() -> str:
    """``host:pid:random``: unique per process, readable in ``sluice status``."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass(slots=True)
class WorkerStats:
    """Counters of one dispatcher since it started."""

    claimed: int = 0
    sent: int = 0
    retried: int = 0
    deferred: int = 0
    dead: int = 0
    stale: int = 0
    released: int = 0
    rescued: int = 0
    held: int = 0
    shadowed: int = 0
    paused: int = 0
    failover: int = 0
    suppressed: int = 0  # recipient hygiene (issue 14)
    by_code: dict[str, int] = field(default_factory=dict)


class Dispatcher:
    """Delivers queued messages from ``store`` through ``providers``."""

    def __init__(
        self,
        store: Store,
        providers: Mapping[str, Provider],
        settings: Settings,
        *,
        clock: Clock | None = None,
        retry: RetryPolicy | None = None,
        worker_id: str | None = None,
        logger: Any = None,
        gate: ConnectionGate | None = None,
        controls: ControlWatch | None = None,
        limiter: Limiter | None = None,
        breakers: Breakers | None = None,
        routes: Mapping[str, Sequence[str]] | None = None,
        projector: Projector | None = None,
    ) -> None:
        self.store = store
        #: Applies what ingress stored (receipts, inbound events), beside the sends.
        self.projector = projector
        self.providers = dict(providers)
        self.settings = settings
        self.clock = clock or SystemClock()
        self.retry = retry or RetryPolicy(
            settings.retry_base,
            settings.retry_cap,
            max_deferrals=settings.max_deferrals,
            max_defer_age=settings.max_defer_age,
        )
        self.worker_id = worker_id or new_worker_id()
        self.log = logger or structlog.get_logger("sluice.worker").bind(worker=self.worker_id)
        self.stats = WorkerStats()
        self.gate = gate
        self.controls = controls or ControlWatch(
            store, settings, worker_id=self.worker_id, clock=self.clock, logger=self.log
        )
        self.limiter = limiter or Limiter(
            store, settings, [], clock=self.clock, logger=self.log, worker_id=self.worker_id
        )
        self.controls.on_reload.append(self.limiter.reload)
        self.controls.on_poll.append(self.limiter.refresh_throttles)
        self.breakers = breakers or Breakers(
            store,
            BreakerPolicy.from_settings(settings),
            worker_id=self.worker_id,
            clock=self.clock,
            logger=self.log,
        )
        self.controls.on_poll.append(self._sync_breakers)
        #: Endpoint health (issue 14): endpoints failing too long are disabled, held.
        self.endpoint_watch = EndpointWatch(
            store, settings, clock=self.clock, logger=self.log, worker_id=self.worker_id
        )
        #: Providers whose upstream differs per message (webhooks, ``http`` actions):
        #: their breakers and throttles are per endpoint, not per provider.
        self._endpoints: dict[str, Callable[[Message], str | None]] = {
            name: fn for name, p in self.providers.items()
            if callable(fn := getattr(p, "endpoint", None))
        }  # fmt: skip
        self.limiter.target_of = self._target
        #: Failover: per channel, the providers to try in order when a breaker is open.
        self.routes = {k: list(v) for k, v in (routes or {}).items()}
        #: Messages whose send is a half-open breaker's probe (id -> original provider).
        self._probes: dict[str, str] = {}
        self._breakers_synced = 0.0
        #: The claims this worker holds, from claim until their outcome is written or they
        #: are released: message id -> (claim number, monotonic time of the claim). The
        #: heartbeat renews their leases; a send starts only while its lease is sure.
        self._claims: dict[str, tuple[int, float]] = {}
        #: Monotonic times: when the last heartbeat that renewed every lease began, when
        #: a heartbeat last succeeded, and since when this worker is fenced (None: not).
        self._renewed_at = time.monotonic()
        self._beat_ok_at = time.monotonic()
        self._fenced_since: float | None = None
        self._in_flight = 0
        self._slot_free = asyncio.Event()
        self._buffer: list[Completion] = []
        #: What this worker counted for the metrics since the last write-back.
        self.tally = metrics.Tally(settings.metrics)
        self._buffer_ready = asyncio.Event()
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._unstarted: list[tuple[str, int]] = []
        self._flush_lock = asyncio.Lock()
        self._last_work = 0.0
        #: The claim loop's next wait while hot (see ``HOT_POLL_FIRST``).
        self._hot_poll = HOT_POLL_FIRST
        #: Monotonic times at which messages this worker put back come due (``DUE_TIMES``).
        self._due: list[float] = []
        #: reason -> (when ``_defer`` last logged it, messages deferred for it since).
        self._problems_said: dict[str, tuple[float, int]] = {}
        # -- recipient hygiene (issue 14): suppression lists, the WhatsApp window --
        self.hygiene = RecipientScreen(
            store, settings, {n: getattr(p, "name", n) for n, p in self.providers.items()},
            worker_id=self.worker_id, tally=self.tally, logger=self.log,
        )  # fmt: skip

    def _idle(self) -> bool:
        return self._in_flight == 0 and not self._buffer and not self._flush_lock.locked()

    # -- control -----------------------------------------------------------------

    def stop(self) -> None:
        """Ask the dispatcher to finish in-flight work and return from ``run``."""
        self._stopping.set()
        self._slot_free.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def run(self, *, until_idle: bool = False) -> WorkerStats:
        """Run until ``stop()`` (or, with ``until_idle``, until nothing is left to do)."""
        self.log.info(
            "worker started",
            concurrency=self.settings.worker_concurrency,
            lease_seconds=self.settings.lease_seconds,
            providers=sorted(self.providers),
        )
        await self._beat()
        # Throttles and breaker moves of other workers, applied the moment they are heard.
        unlisten = self.store.flow_listen(self._on_flow)
        # Never claim before the controls are known and acknowledged.
        await self.controls.start()
        flusher = asyncio.create_task(self._flush_loop(), name="sluice-flush")
        background = [
            asyncio.create_task(self._reaper_loop(), name="sluice-reaper"),
            asyncio.create_task(self._beat_loop(), name="sluice-heartbeat"),
            asyncio.create_task(self.controls.run(self._stopping), name="sluice-controls"),
        ]
        if self.projector is not None:
            background.append(
                asyncio.create_task(self.projector.run(self._stopping), name="sluice-projector")
            )
        try:
            await self._claim_loop(until_idle)
            if until_idle and self.projector is not None:
                await self.projector.drain()
        finally:
            unlisten()
            self._stopping.set()
            await self._drain()
            for task in background:
                task.cancel()
            for task in background:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            # Never cancel the flusher: a write cut off mid-way would lose its batch
            # from memory, and those messages would go out again after their lease.
            self._buffer_ready.set()
            with contextlib.suppress(Exception):
                await flusher
            await self._flush(final=True)
            await self._release_unstarted()
            await self.endpoint_watch.sync(force=True)
            with contextlib.suppress(Exception):
                await self.limiter.close()
            await self._beat()
            with contextlib.suppress(SluiceError):
                await self.store.worker_stop(self.worker_id, self.clock.now())
            self.log.info("worker stopped", **self._stats_dict())
        return self.stats

    # -- claiming ----------------------------------------------------------------

    async def _claim_loop(self, until_idle: bool) -> None:
        s = self.settings
        concurrency = s.worker_concurrency
        # Claim when at least this many slots are free, so batches stay worth a round trip.
        low_water = max(1, min(s.worker_batch_size, concurrency) // 4)
        error_delay = 0.1
        while not self.stopping:
            free = concurrency - self._in_flight
            if free < low_water:
                self._slot_free.clear()
                await self._slot_free.wait()
                continue
            if self._fenced():
                # Cut off from the store: claim nothing (the claim would fail anyway, and
                # what is claimed after a reconnect must meet the controls of now).
                await self._sleep(0.1)
                continue
            claimed_at = time.monotonic()
            known: Connections | None = None
            try:
                if self.gate is not None:  # the batch's connections come with it
                    batch, found = await self.store.message_claim_with_connections(
                        self.worker_id,
                        min(free, s.worker_batch_size),
                        s.lease_seconds,
                        self.clock.now(),
                    )
                    # Keyed by the pairs as claimed: a failover below may move a
                    # message to a provider whose connection was not read with it.
                    known = dict.fromkeys((m.tenant, m.provider) for m in batch)
                    known.update(((c.tenant, c.provider), c) for c in found)
                else:
                    batch = await self.store.message_claim(
                        self.worker_id,
                        min(free, s.worker_batch_size),
                        s.lease_seconds,
                        self.clock.now(),
                    )
            except SluiceError as exc:
                self.log.warning("claim failed; retrying", error=str(exc), delay=error_delay)
                await self._sleep(error_delay)
                error_delay = min(error_delay * 2, 5.0)
                continue
            error_delay = 0.1
            for msg in batch:
                self._claims[msg.id] = (msg.claim_seq, claimed_at)
            if batch:
                self._last_work = time.monotonic()
                self._hot_poll = HOT_POLL_FIRST
                self.stats.claimed += len(batch)
                try:
                    batch = await self._limit(batch)
                except Exception as exc:  # a limiter failure must not stop the worker
                    self.log.error("could not apply limits; batch released", error=str(exc))
                    await self._give_back(batch)
                    await self._sleep(error_delay)
                    error_delay = min(error_delay * 2, 5.0)
                    continue
                connections: Connections = {}
                if self.gate is not None:
                    try:
                        connections = await self.gate.load(batch, known)
                    except SluiceError as exc:
                        self.log.warning("could not load connections", error=str(exc))
                        await self._give_back(batch)
                        await self._sleep(error_delay)
                        error_delay = min(error_delay * 2, 5.0)
                        continue
                if not await self._screen(batch):  # recipient hygiene (issue 14)
                    await self._sleep(error_delay)
                    error_delay = min(error_delay * 2, 5.0)
                    continue
                self._start(batch, connections)
                if len(batch) < low_water:
                    # Caught up: let the sends just started reach their provider calls
                    # before the next claim's own work (a third of a millisecond of CPU,
                    # more when the worker was idle) holds them back. Not in a backlog,
                    # where the next claim going out first keeps the database busy.
                    await asyncio.sleep(0)
                continue
            if until_idle and self._idle():
                return
            if self._in_flight and until_idle:
                # Work is still running; look again soon in case it retries.
                await self._sleep(0.05)
                continue
            # Producers send at most one NOTIFY per channel per notify_interval, so while
            # traffic flows most messages arrive without one. For one interval after any
            # wake-up or claim, look again every HOT_POLL_FIRST until HOT_POLL_STEADY has
            # passed, then ever less often up to HOT_POLL: a message whose notification
            # was coalesced away waits 1 ms while messages follow each other, at most
            # HOT_POLL when they thin out, and an idle worker still sleeps on LISTEN (or
            # the fallback poll) without querying.
            # A message this worker put back for later is looked for when it comes due:
            # nothing notifies then, and a worker gone cold would find it only at its
            # next poll (a limited tenant held below its rate, a retry a second late).
            since_work = time.monotonic() - self._last_work
            hot = since_work < s.notify_interval
            wait = self._hot_poll if hot else s.poll_interval
            if self._due:
                wait = min(wait, self._until_due(claimed_at))
            if await self.store.wait_for_work(wait):
                self._last_work = time.monotonic()
                self._hot_poll = HOT_POLL_FIRST
            elif hot and since_work >= HOT_POLL_STEADY:
                self._hot_poll = min(HOT_POLL, self._hot_poll * 2)

    def _until_due(self, looked: float) -> float:
        """Seconds until the next put-back message comes due that the claim begun at
        ``looked`` (monotonic) could not have seen; due times that claim covered are
        forgotten."""
        due = self._due
        del due[: bisect.bisect_right(due, looked)]
        if not due:
            return float("inf")
        return max(0.0, due[0] - time.monotonic()) + DUE_SLACK

    def _note_due(self, written: list[Completion]) -> None:
        """Remember when the messages just written back as queued for later come due."""
        later = [c.run_at for c in written if c.run_at is not None and c.status is Status.QUEUED]
        if not later:
            return
        now, mono = self.clock.now(), time.monotonic()
        due = [t for t in (mono + (r - now).total_seconds() for r in later) if t > mono]
        if due:
            self._due = sorted(self._due + due)[:DUE_TIMES]

    async def _screen(self, batch: list[Message]) -> bool:
        """Recipient hygiene (issue 14), before any call: messages to suppressed
        recipients and free-form WhatsApp text outside the window end here, unsent, and
        leave ``batch``; what the limits gave them goes back. False (the whole batch given
        back) when the store cannot be asked."""
        try:
            go, stopped = await self.hygiene.screen(batch, self.clock.now())
        except SluiceError as exc:
            self.log.warning("could not screen recipients; batch released", error=str(exc))
            await self._give_back(batch)
            return False
        if stopped:
            done = {c.message_id for c in stopped}
            gone = [m for m in batch if m.id in done]
            for msg in gone:
                self._unprobe(msg)
            self.limiter.settle(gone, Use.NOTHING)
            self.stats.suppressed += sum(c.status is Status.SUPPRESSED for c in stopped)
            self.stats.dead += sum(c.status is Status.DEAD for c in stopped)
            self._buffer.extend(stopped)
            self._buffer_ready.set()
            batch[:] = go
        return True

    async def _limit(self, batch: list[Message]) -> list[Message]:
        """Apply rate limits, quotas, caps and throttles to the live part of ``batch``;
        return what may go now (messages under other modes pass through to be held,
        shadowed or put back by ``_allowed``)."""
        now = self.clock.now()
        # Anything but "send" must rest on the controls in force now, not on a snapshot
        # that may predate a resume which released these very messages.
        if not all(self._sendable(msg, now) for msg in batch) and await self.controls.refresh():
            now = self.clock.now()
        live, other = [], []
        await self.endpoint_watch.confirm((m.tenant, self._endpoint(m)) for m in batch)
        for msg in batch:
            if not self._sendable(msg, now):
                other.append(msg)
                continue
            disabled = self.endpoint_watch.hold(msg.tenant, self._endpoint(msg))
            if disabled is not None:
                self._hold(msg, disabled)
                continue
            blocked = self._route(msg)
            if blocked is None:
                live.append(msg)
            else:
                self.stats.deferred += 1
                _deferred(self.tally, msg, "breaker")
                self._put_back(msg, blocked)
        go, defer, hold = await self.limiter.admit(live)
        for msg, run_at, why in defer:
            self.stats.deferred += 1
            _deferred(self.tally, msg, metrics.defer_kind(why))
            self._put_back(msg, run_at)
        if defer:
            self.log.debug("deferred by limits", count=len(defer), first=defer[0][2])
        for msg, why in hold:
            self._hold(msg, why)
        for msg, _, _ in defer:
            self._unprobe(msg)
        for msg, _ in hold:
            self._unprobe(msg)
        return go + other

    def _sendable(self, msg: Message, now: datetime, provider: str | None = None) -> bool:
        """Do the controls let ``msg`` go now (through ``provider``, when routed)?"""
        mode, _ = self.controls.decide(scope_key(msg, provider), now)
        return mode is Mode.LIVE or (mode is Mode.APPROVAL and msg.approved_by is not None)

    async def _give_back(self, batch: list[Message]) -> None:
        """Nothing of ``batch`` was sent: release it at once, attempts refunded, probe
        slots freed and limits given back (instead of leaving it to the lease and
        burning an attempt)."""
        for msg in batch:
            self._unprobe(msg)
        self.limiter.settle(batch, Use.NOTHING)
        await self.limiter.flush_refunds()
        self._unstarted.extend((m.id, m.claim_seq) for m in batch)
        await self._release_unstarted()

    # -- endpoints, throttles and breakers -------------------------------------------

    def _endpoint(self, msg: Message, provider: str | None = None) -> str | None:
        """The endpoint ``msg`` goes to through ``provider`` (its own by default), when
        that provider's upstream differs per message; else ``None``."""
        fn = self._endpoints.get(provider or msg.provider)
        return fn(msg) if fn is not None else None

    def _target(self, msg: Message) -> str:
        """What a throttle of ``msg`` is keyed on: ``provider``, or ``provider@endpoint``."""
        endpoint = self._endpoint(msg)
        return msg.provider if endpoint is None else f"{msg.provider}@{endpoint}"

    def _on_flow(self, signal: FlowSignal) -> None:
        if signal.throttle is not None:
            self.limiter.note_throttle(signal.throttle)
        if signal.breaker is not None:
            self.breakers.apply(signal.breaker)
        if signal.throttle_cleared is not None:  # issue 14: sluice throttles clear
            self.limiter.forget_throttle(signal.throttle_cleared)

    def _expired(self, msg: Message, now: datetime) -> bool:
        """Issue 14: past its expiry, a message ends ``expired`` unsent (never late)."""
        if not expiry.expire_claimed(self.tally, msg, now):
            return False
        self._unsent(msg, Status.EXPIRED, hold_reason=expired_reason(msg))
        return True

    def _held_off(self, msg: Message, now: datetime) -> bool:
        """The last look before the call (no I/O): a throttle or an open breaker that
        arrived after ``msg`` was admitted puts it back, unsent, no attempt spent (an
        endpoint disabled meanwhile holds it)."""
        disabled = self.endpoint_watch.hold(msg.tenant, self._endpoint(msg))
        if disabled is not None:
            self._hold(msg, disabled)
            return True
        until = self.limiter.throttled_until(msg, now)
        if until is not None:
            run_at = self.limiter.after_throttle(until)
        else:
            verdict = self.breakers.check(
                msg.provider, msg.tenant, self._endpoint(msg), probe=msg.id in self._probes, now=now
            )
            if verdict.allowed:
                return False
            run_at = verdict.retry_at or now + timedelta(seconds=1)
        self.stats.deferred += 1
        _deferred(self.tally, msg, "throttle" if until is not None else "breaker")
        self._put_back(msg, run_at)
        return True

    def _route(self, msg: Message) -> datetime | None:
        """Pass ``msg`` through the circuit breakers: None to send (perhaps through the
        next provider of its channel's route, which ``msg.provider`` then names), or when
        to try again when every way is open. Nothing is spent either way."""
        verdict = self.breakers.allow(msg.provider, msg.tenant, self._endpoint(msg))
        if verdict.allowed:
            if verdict.probe:
                self._probes[msg.id] = msg.provider
            return None
        route = self.routes.get(msg.channel, [])
        now = self.clock.now()
        for alt in route:
            if alt == msg.provider or alt not in self.providers:
                continue
            # Only to a provider the controls let this message use as it is: a paused,
            # shadowed or killed alternative is no way out (and would loop or strand it).
            if not self._sendable(msg, now, alt):
                continue
            other = self.breakers.allow(alt, msg.tenant, self._endpoint(msg, alt))
            if other.allowed:
                self.log.info(
                    "failover", **_about(msg), provider=msg.provider, to=alt,
                    reason=verdict.reason,
                )  # fmt: skip
                self.stats.failover += 1
                if other.probe:
                    self._probes[msg.id] = alt
                msg.provider = alt
                return None
        return verdict.retry_at or self.clock.now() + timedelta(seconds=1)

    def _unprobe(self, msg: Message) -> None:
        if self._probes.pop(msg.id, None) is not None:
            self.breakers.release(msg.provider, msg.tenant, self._endpoint(msg))

    async def _sync_breakers(self, version: int) -> None:
        if time.monotonic() - self._breakers_synced >= 1.0:
            self._breakers_synced = time.monotonic()
            await self.breakers.sync()
            await self.endpoint_watch.sync()

    def _start(self, batch: list[Message], connections: Connections | None = None) -> None:
        for msg in batch:
            self._in_flight += 1
            task = asyncio.create_task(self._deliver(msg, connections or {}))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _deliver(self, msg: Message, connections: Connections) -> None:
        # What this try used of what the limits gave it: every way out before the
        # provider call (stopping, controls, the gate, a lease not sure, the last look)
        # used nothing, and all of it goes back when the try is settled below.
        use = Use.NOTHING
        trace = tracing.attempt_off()
        try:
            if self.stopping:
                # Claimed but not started: hand it straight back, attempt refunded.
                self._unstarted.append((msg.id, msg.claim_seq))
                return
            key = scope_key(msg)
            if not self._allowed(msg, key):
                return
            ticket = Ticket()
            if self.gate is not None:
                ticket = await self.gate.admit(msg, connections, self.clock.now())
                if ticket.hold is not None:
                    self._hold(msg, ticket.hold)
                    return
                if ticket.defer is not None:
                    self._defer(msg, ticket.defer, "connection")
                    return
            worker_problem = getattr(self.providers.get(msg.provider), "worker_problem", None)
            cannot = worker_problem(ticket.credentials) if worker_problem is not None else None
            if cannot is not None:
                self._defer(msg, cannot, "worker")
                return
            concurrency = self.limiter.concurrency(msg.provider)
            if not concurrency.try_acquire():
                await concurrency.acquire()
            outcome: Outcome | None = None
            t0 = time.perf_counter()
            try:
                # The binding check: immediately before the provider call, with no await
                # in between, registered so the next control change fences on this send.
                started = self.clock.now()
                if (
                    not self._lease_sure(msg)
                    or self._expired(msg, started)
                    or not self._allowed(msg, key, started)
                    or self._held_off(msg, started)
                ):
                    return
                token = self.controls.admit(key)
                try:
                    trace = tracing.attempt(msg, self.worker_id)
                    t0 = time.perf_counter()
                    use = Use.REQUEST  # from here on a request may reach the provider
                    outcome = await self._send(msg, ticket.credentials, trace)
                    use = use_of(outcome)
                finally:
                    self.controls.done(token)
            finally:
                latency = time.perf_counter() - t0
                concurrency.release_now(outcome, latency if outcome is not None else 0.0)
                if outcome is not None:
                    self.tally.observe(metrics.PROVIDER_LATENCY, latency, msg.provider, msg.channel)
            latency_ms = latency * 1000.0
            finished = self.clock.now()
            self._breaker_record(msg, outcome, finished)
            if outcome.code is ErrorCode.RATE_LIMITED or (
                outcome.code is not None and outcome.retry_after is not None
            ):
                # The provider asked for a pause: every worker respects it.
                self.tally.inc(metrics.PROVIDER_THROTTLED, msg.provider)
                await self.limiter.throttled(msg, outcome)
            decision = self.retry.decide(msg, outcome, finished)
            if outcome.code is ErrorCode.RECIPIENT_UNSUBSCRIBED:  # recipient hygiene (issue 14)
                decision = await self.hygiene.unsubscribed(msg, outcome, finished)
            reason = None
            if (
                outcome.code is not None
                and outcome.code.error_class is ErrorClass.AUTH
                and ticket.connection is not None
            ):
                decision, reason = await self._auth_failure(msg, outcome, ticket.connection)
            self._record(msg, outcome, decision, started, finished, latency_ms, reason, trace)
        finally:
            trace.end()
            # Set aside before the outcome is written (the flush gives limits back
            # first), so a retry is never judged against its own earlier try.
            self.limiter.settle((msg,), use)
            self._unprobe(msg)  # a probe that never reached the provider frees its slot
            self._in_flight -= 1
            self._slot_free.set()

    def _fenced(self, now: float | None = None) -> bool:
        """Cut off from the store too long to be sure of anything: start no send. (A
        heartbeat may hang rather than fail, on a cut link: the time decides, and the
        fence stays until a heartbeat succeeds and the controls have been reloaded.)"""
        if self._fenced_since is not None:
            return True
        if (now or time.monotonic()) - self._beat_ok_at <= FENCE_SECONDS:
            return False
        self._fenced_since = self._beat_ok_at + FENCE_SECONDS
        self.log.error(
            "cut off from the store: starting no send until it answers again",
            seconds=round(time.monotonic() - self._beat_ok_at, 1),
        )
        return True

    def _lease_sure(self, msg: Message) -> bool:
        """May ``msg``'s send start? Only while this worker holds its claim and the lease
        outlasts the call: from the claim, or the last renewal, whichever came later.
        Otherwise it goes back unsent, no attempt spent (a claim taken back meanwhile
        is simply dropped: the worker that took it owns it now)."""
        held = self._claims.get(msg.id)
        if held is None or held[0] != msg.claim_seq:
            self.log.warning("claim lost before the send; not sent", **_about(msg))
            return False
        now = time.monotonic()
        lease, timeout = self.settings.lease_seconds, self.settings.http_timeout
        valid = max(held[1], self._renewed_at) + lease
        margin = min(LEASE_MARGIN, 0.1 * (lease - timeout))
        if not self._fenced(now) and now + timeout + margin <= valid:
            return True
        why = (
            "cut off from the store: the lease could not be renewed"
            if self._fenced(now)
            else f"its lease ends in {valid - now:.1f} s, before a {timeout:g} s call could"
        )
        self._unstarted_deferral(msg, f"put back unsent: {why}")
        return False

    def _unstarted_deferral(self, msg: Message, why: str) -> None:
        """Put ``msg`` back without calling anyone, and say so: an attempt row (outcome
        ``deferred``, no attempt spent) and one more deferral on the message, bounded
        like the provider's own throttles (it used to cycle without a trace)."""
        now = self.clock.now()
        spent = self.retry.deferral_spent(msg, now)
        attempt = Attempt(
            message_id=msg.id,
            attempt_no=msg.claim_seq,
            worker_id=self.worker_id,
            provider=msg.provider,
            started_at=now,
            finished_at=now,
            outcome=AttemptOutcome.DEFERRED,
            detail=_with_note(spent, why),
            latency_ms=0.0,
        )
        _attempted(self.tally, msg, attempt)
        if spent is None:
            self.stats.deferred += 1
            _deferred(self.tally, msg, "lease")
        else:
            self.stats.dead += 1
            _dead(self.tally, msg, "DEFERRED_TOO_LONG")
            self.log.warning("message given up", **_about(msg), reason=spent)
        self._buffer.append(
            Completion(
                message_id=msg.id,
                claim_seq=msg.claim_seq,
                worker_id=self.worker_id,
                status=Status.QUEUED if spent is None else Status.DEAD,
                attempt=attempt,
                run_at=now if spent is None else None,
                refund_attempt=True,
                deferred=True,
            )
        )
        self._buffer_ready.set()

    def _breaker_record(self, msg: Message, outcome: Outcome, now: datetime) -> None:
        """Count provider health: a send that went through, or a failure that is the
        provider's (5xx, timeout, unreachable). Refusals about the message, its
        credentials or its pace say nothing about the provider's health."""
        probe = self._probes.pop(msg.id, None) is not None
        endpoint = self._endpoint(msg)
        if endpoint is not None:
            self.endpoint_watch.outcome(msg.tenant, endpoint, msg.provider, outcome, now)
        if outcome.ok:
            self.breakers.record(
                msg.provider, msg.tenant, True, probe=probe, now=now, endpoint=endpoint
            )
        elif outcome.code is not None and (
            outcome.code.error_class is ErrorClass.TRANSIENT
            or outcome.code is ErrorCode.PROVIDER_UNAVAILABLE
        ):
            self.breakers.record(
                msg.provider, msg.tenant, False, probe=probe, now=now, endpoint=endpoint
            )
        elif probe:
            self.breakers.release(msg.provider, msg.tenant, endpoint)

    def _allowed(self, msg: Message, key: ScopeKey, now: datetime | None = None) -> bool:
        """Apply the controls to ``msg``: True to send; otherwise it was held, put back,
        or shadowed, and its outcome is buffered."""
        mode, control = self.controls.decide(key, now or self.clock.now())
        if mode is Mode.LIVE or (mode is Mode.APPROVAL and msg.approved_by):
            return True
        if mode is Mode.PAUSED:
            # Claimed before the pause landed: back to the queue as it was; the claim
            # query skips it until the pause is lifted.
            self.stats.paused += 1
            _deferred(self.tally, msg, "control")
            self._put_back(msg, self.clock.now())
        elif mode is Mode.SHADOW:
            self._shadow(msg, control)
        else:  # killed, or approval for a message nobody approved
            self._hold(msg, _control_reason(mode, control))
        return False

    def _unsent(
        self,
        msg: Message,
        status: Status,
        *,
        run_at: datetime | None = None,
        hold_reason: str | None = None,
        attempt: Attempt | None = None,
    ) -> None:
        """Buffer the outcome of a message no provider was called for: its attempt is
        refunded (``attempt``, if any, only records what happened instead)."""
        self._buffer.append(
            Completion(
                message_id=msg.id,
                claim_seq=msg.claim_seq,
                worker_id=self.worker_id,
                status=status,
                attempt=attempt,
                run_at=run_at,
                refund_attempt=True,
                hold_reason=hold_reason,
            )
        )
        self._buffer_ready.set()

    def _put_back(self, msg: Message, run_at: datetime) -> None:
        self._unsent(msg, Status.QUEUED, run_at=run_at)

    def _shadow(self, msg: Message, control: Control | None) -> None:
        """Record what would have been sent, and call nothing."""
        self.stats.shadowed += 1
        now = self.clock.now()
        why = f"shadow mode ({control.scope if control else 'default'}): not sent"
        attempt = Attempt(
            message_id=msg.id,
            attempt_no=msg.claim_seq,
            worker_id=self.worker_id,
            provider=msg.provider,
            started_at=now,
            finished_at=now,
            outcome=AttemptOutcome.SHADOWED,
            detail=f"{why}; would have sent {msg.action} to {msg.recipient} via {msg.provider}",
            latency_ms=0.0,
        )
        _attempted(self.tally, msg, attempt)
        self._unsent(msg, Status.SHADOWED, attempt=attempt)

    def _hold(self, msg: Message, reason: str) -> None:
        """Held before any provider call: no attempt is recorded and none is spent."""
        self.stats.held += 1
        self.log.info("message held", **_about(msg), provider=msg.provider, reason=reason)
        _held(self.tally, msg, reason)
        self._unsent(msg, Status.HELD, hold_reason=reason)

    def _defer(self, msg: Message, why: str, kind: str) -> None:
        """This worker cannot send it (its own configuration, or the connection gate says
        not now: ``kind``); another may. No attempt."""
        self.stats.deferred += 1
        _deferred(self.tally, msg, kind)
        # Said once per reason and delay: a backlog of thousands deferred for the same
        # missing setting is one problem for the operator, not thousands of lines.
        now = time.monotonic()
        said = self._problems_said.get(why)
        if said is None or now - said[0] >= WORKER_PROBLEM_DELAY:
            self.log.error(
                "this worker cannot send these messages; deferred for another worker",
                **_about(msg),
                provider=msg.provider,
                reason=why,
                retry_in=WORKER_PROBLEM_DELAY,
                deferred_since_last_said=said[1] if said is not None else 0,
            )
            self._problems_said[why] = (now, 0)
        else:
            self._problems_said[why] = (said[0], said[1] + 1)
        self._put_back(msg, self.clock.now() + timedelta(seconds=WORKER_PROBLEM_DELAY))

    async def _auth_failure(
        self, msg: Message, outcome: Outcome, conn: Connection
    ) -> tuple[Decision, str | None]:
        """The provider refused the credentials: the connection, not the message, is at
        fault. Mark the connection, hold its queued messages, hold this one; no attempt
        is spent and nothing reaches the dead-letter queue.

        The verdict applies only to the credential version this send used, on a connection
        still active: a late 401 must not undo a re-consent that landed meanwhile, nor
        overwrite an operator's revoke.
        """
        if outcome.code is ErrorCode.SCOPE_MISSING:
            state = ConnectionState.NEEDS_RECONSENT
            provider = self.providers.get(msg.provider)
            scopes_for = getattr(provider, "scopes_for", None)
            implied = list(scopes_for(msg)) if scopes_for is not None else []
            # What is known: the scopes the send needed. A message that declares none and
            # an action that implies none leave only the provider's refusal to go on.
            missing = sorted(set(msg.scopes) | set(implied)) or [_unknown_scope(outcome)]
        else:
            state = ConnectionState.PENDING_REAUTH
            missing = []
        why = f"{outcome.code}: {outcome.detail or outcome.provider_status or 'refused'}"[:300]
        held_decision = Decision(Status.HELD, refund_attempt=True, error_class=ErrorClass.AUTH)
        try:
            changed, held = await self.store.connection_set_state(
                msg.tenant, msg.provider, state, why, missing, self.clock.now(),
                f"worker:{self.worker_id}", expected_version=conn.credential_version,
            )  # fmt: skip
            if changed:
                self.log.warning(
                    "connection needs the operator",
                    tenant=msg.tenant,
                    provider=msg.provider,
                    state=state.value,
                    reason=why,
                    held=len(held),
                )
                await connection_event(
                    self.store,
                    msg.tenant,
                    msg.provider,
                    state.value,
                    why,
                    self.clock.now(),
                    missing,
                )  # the tenant is told (issue 14)
                return held_decision, hold_reason(f"{state.value}: {why}")
            now_conn: Connection = await self.store.connection_get(msg.tenant, msg.provider)
        except SluiceError as exc:
            self.log.error("could not mark the connection", error=str(exc))
            return held_decision, hold_reason(f"{state.value}: {why}")
        if now_conn.state is ConnectionState.ACTIVE:
            # Re-consented while this send was out: try again at once with the new version.
            retry = Decision(Status.QUEUED, self.clock.now(), True, ErrorClass.AUTH)
            return retry, None
        current = f"{now_conn.state.value}: {now_conn.state_reason or 'no reason given'}"
        return held_decision, hold_reason(current)

    async def _send(
        self,
        msg: Message,
        credentials: Credentials | None = None,
        trace: tracing.AttemptTrace | None = None,
    ) -> Outcome:
        provider = self.providers.get(msg.provider)
        if provider is None:
            return Outcome.failure(
                ErrorCode.UNKNOWN_PROVIDER,
                f"no provider named {msg.provider!r} is configured on worker {self.worker_id} "
                f"(configured: {', '.join(sorted(self.providers)) or 'none'})",
            )
        try:
            with (trace or tracing.attempt_off()).provider_call(msg.provider) as call:
                outcome = await provider.send(msg, credentials)
                call.answered(outcome)
            return outcome
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an adapter bug must not kill the worker or lose the message
            self.log.exception("provider raised", provider=msg.provider, **_about(msg))
            return Outcome.failure(ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}")

    def _record(
        self,
        msg: Message,
        outcome: Outcome,
        decision: Decision,
        started: Any,
        finished: Any,
        latency_ms: float,
        hold: str | None = None,
        trace: tracing.AttemptTrace | None = None,
    ) -> None:
        if outcome.ok:
            attempt_outcome = AttemptOutcome.SENT
            self.stats.sent += 1
        elif decision.status is Status.HELD:
            attempt_outcome = AttemptOutcome.FAILED
            self.stats.held += 1
        elif decision.refund_attempt and decision.status is not Status.DEAD:
            attempt_outcome = AttemptOutcome.THROTTLED
            self.stats.deferred += 1
        elif decision.refund_attempt:  # a throttle answer past the deferral bound
            attempt_outcome = AttemptOutcome.THROTTLED
            self.stats.dead += 1
        else:
            attempt_outcome = AttemptOutcome.FAILED
            if decision.status is Status.DEAD:
                self.stats.dead += 1
            elif decision.status is Status.SUPPRESSED:  # recipient hygiene (issue 14)
                self.stats.suppressed += 1
            else:
                self.stats.retried += 1
        if outcome.code is not None:
            self.stats.by_code[outcome.code] = self.stats.by_code.get(outcome.code, 0) + 1
            self.log.info(
                "attempt failed",
                **_about(msg),
                provider=msg.provider,
                code=str(outcome.code),
                error_class=str(decision.error_class),
                next=str(decision.status),
                provider_status=outcome.provider_status,
            )
        attempt = Attempt(
            message_id=msg.id,
            attempt_no=msg.claim_seq,
            worker_id=self.worker_id,
            provider=msg.provider,
            started_at=started,
            finished_at=finished,
            outcome=attempt_outcome,
            error_code=str(outcome.code) if outcome.code else None,
            error_class=str(decision.error_class) if decision.error_class else None,
            provider_status=outcome.provider_status,
            provider_code=outcome.provider_code,
            detail=_with_note(decision.note, outcome.detail),
            latency_ms=round(latency_ms, 3),
        )
        if decision.note is not None:
            self.log.warning("message given up", **_about(msg), reason=decision.note)
        _attempted(self.tally, msg, attempt)
        if trace is not None:
            trace.recorded(
                attempt.outcome.value, error_code=attempt.error_code,
                next_status=decision.status.value, detail=attempt.detail,
            )  # fmt: skip
        if outcome.ok:
            _sent(self.tally, msg, finished)
        elif decision.status is Status.DEAD:
            _dead(self.tally, msg, attempt.error_code or "")
        elif decision.status is Status.HELD:
            _held(self.tally, msg, hold or "auth")
        elif decision.refund_attempt:
            _deferred(self.tally, msg, "throttle")
        self._buffer.append(
            Completion(
                message_id=msg.id,
                claim_seq=msg.claim_seq,
                worker_id=self.worker_id,
                status=decision.status,
                attempt=attempt,
                run_at=decision.run_at,
                refund_attempt=decision.refund_attempt,
                provider_message_id=outcome.provider_message_id,
                hold_reason=hold,
                deferred=decision.deferred,
            )
        )
        self._buffer_ready.set()

    # -- writing back ------------------------------------------------------------

    async def _flush_loop(self) -> None:
        while not (self.stopping and self._idle()):
            await self._buffer_ready.wait()
            if self.settings.flush_interval and len(self._buffer) < self.settings.worker_batch_size:
                # Let a few more outcomes join this write; one round trip per batch.
                await asyncio.sleep(self.settings.flush_interval)
                # Sends started while this slept go first: the write can wait a moment,
                # a provider call held behind its CPU is latency the sender sees.
                await asyncio.sleep(0)
            await self._flush()

    async def _flush(self, *, final: bool = False) -> None:
        """Write buffered outcomes back. A failed write is tried again, for as long as the
        worker runs: an outcome is evidence of what the provider answered, and dropping
        it would leave a real delivery recorded only as ``lease_expired``. A write that
        lands after the lease ran out is stored as not applied, but true. Only a
        stopping worker gives up, after ``FINAL_FLUSH_SECONDS``, and then logs each
        outcome it could not write."""
        async with self._flush_lock:
            self.tally.flush()
            self._buffer_ready.clear()
            # Limits the finished tries did not use go back before their outcomes are
            # written: once written, a retry can be claimed and judged.
            await self.limiter.flush_refunds()
            if not self._buffer:
                return
            batch, self._buffer = self._buffer, []
            delay = 0.1
            give_up = time.monotonic() + FINAL_FLUSH_SECONDS
            while True:
                try:
                    applied = await self.store.message_complete_many(
                        self.worker_id, batch, self.clock.now()
                    )
                    break
                except SluiceError as exc:
                    if (final or self.stopping) and time.monotonic() > give_up:
                        for c in batch:
                            self._claims.pop(c.message_id, None)
                            self.log.error("outcome not written; recorded here", **_evidence(c))
                        return
                    self.log.warning("write-back failed; retrying", error=str(exc), delay=delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
            for c in batch:
                self._claims.pop(c.message_id, None)
            self._note_due(batch)
            stale = len(batch) - len(applied)
            if stale:
                self.stats.stale += stale
                self.log.warning(
                    "outcomes arrived after the lease expired; recorded, not applied",
                    count=stale,
                )

    async def _drain(self) -> None:
        """Wait for in-flight sends (each bounded by the HTTP timeout) to finish."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _release_unstarted(self) -> None:
        if not self._unstarted:
            return
        claims, self._unstarted = self._unstarted, []
        for mid, _ in claims:  # released, or left to expire: no longer renewed either way
            self._claims.pop(mid, None)
        try:
            released = await self.store.message_release(self.worker_id, claims, self.clock.now())
            self.stats.released += len(released)
            self.log.info("released unstarted messages", count=len(released))
        except SluiceError as exc:
            self.log.error(
                "could not release unstarted messages; their lease will return them",
                count=len(claims),
                error=str(exc),
            )

    # -- maintenance -------------------------------------------------------------

    async def _reaper_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reaper_interval)
            try:
                result = await self.store.message_rescue_expired(self.clock.now())
            except SluiceError as exc:
                self.log.warning("reaper failed", error=str(exc))
                continue
            if result.requeued or result.dead:
                self.stats.rescued += len(result.requeued) + len(result.dead)
                self.log.warning(
                    "leases expired; messages returned",
                    requeued=len(result.requeued),
                    dead_lettered=len(result.dead),
                )
                if result.requeued:
                    self.store.wake()

    async def _beat_loop(self) -> None:
        # Often enough that a lease is renewed several times before it could run out.
        every = min(5.0, self.settings.lease_seconds / 4)
        while True:
            await asyncio.sleep(every)
            await self._beat()

    async def _beat(self) -> None:
        """The heartbeat: read the store's time, say this worker is alive, and renew the
        leases of every claim it holds. While beats fail for FENCE_SECONDS the worker
        fences itself (no claim, no send); the first beat that succeeds again loads the
        controls in force before the fence is lifted."""
        began = time.monotonic()
        claims = [(mid, seq) for mid, (seq, _) in self._claims.items()]
        try:
            if isinstance(self.clock, StoreClock):
                await self.clock.sync()
            await self.store.worker_heartbeat(
                self.worker_id,
                socket.gethostname(),
                os.getpid(),
                len(self._claims),
                self.stats.sent,
                self.clock.now(),
            )
            renewed = set(
                await self.store.message_renew(
                    self.worker_id, claims, self.settings.lease_seconds, self.clock.now()
                )
            )
            if self._fenced():  # cut off until now: load the controls of now first
                await self.controls.refresh()
        except SluiceError as exc:
            self.log.warning("heartbeat failed", error=str(exc))
            self._fenced()  # says so, the first time the failures reach the fence
            return
        for mid, seq in claims:
            if mid not in renewed and self._claims.get(mid, (None,))[0] == seq:
                # Written back meanwhile, or taken back: either way not ours to renew.
                self._claims.pop(mid, None)
        if self._fenced_since is not None:
            self.log.warning(
                "reconnected to the store; controls reloaded, sending again",
                fenced_seconds=round(time.monotonic() - self._fenced_since, 1),
            )
            self._fenced_since = None
        # The leases count from when the renewal was asked for; the store was reachable
        # when it answered.
        self._renewed_at = began
        self._beat_ok_at = time.monotonic()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    def _stats_dict(self) -> dict[str, Any]:
        s = self.stats
        return {
            "claimed": s.claimed,
            "sent": s.sent,
            "retried": s.retried,
            "deferred": s.deferred,
            "dead": s.dead,
            "stale": s.stale,
            "released": s.released,
            "rescued": s.rescued,
            "held": s.held,
            "shadowed": s.shadowed,
            "paused": s.paused,
            "failover": s.failover,
            "suppressed": s.suppressed,
        }


# -- metrics (see sluice/metrics.py) ---------------------------------------------------


def _tenant(msg: Message) -> str:
    # canaries (issue 15): a canary's counts are Sluice's own, never its tenant's
    return metrics.message_tenant_label(msg.tenant, msg.action)


def _attempted(t: metrics.Tally, msg: Message, attempt: Attempt) -> None:
    tenant, outcome = _tenant(msg), attempt.outcome.value
    t.inc(metrics.ATTEMPTS, tenant, msg.channel, msg.provider, outcome, attempt.error_code or "")
    if (
        msg.attempts == 1
        and msg.created_at is not None
        and attempt.outcome is not AttemptOutcome.DEFERRED
    ):
        age = (attempt.started_at - msg.created_at).total_seconds()
        t.observe(metrics.FIRST_ATTEMPT_LATENCY, max(0.0, age), msg.channel, msg.provider)


def _sent(t: metrics.Tally, msg: Message, at: datetime) -> None:
    if msg.created_at is not None:
        age = (at - msg.created_at).total_seconds()
        t.observe(metrics.DELIVERY_LATENCY, max(0.0, age), msg.channel, msg.provider)
    if msg.action.startswith(("auto_reply", "reply.")):
        t.inc(metrics.AUTO_REPLIES, metrics.tenant_label(msg.tenant), msg.channel)


def _deferred(t: metrics.Tally, msg: Message, reason: str) -> None:
    tenant = _tenant(msg)
    t.inc(metrics.DEFERRED, tenant, msg.channel, msg.provider, reason)


def _held(t: metrics.Tally, msg: Message, reason: str) -> None:
    kind = metrics.hold_kind(reason) if reason != "auth" else "auth"
    tenant = _tenant(msg)
    t.inc(metrics.HELD, tenant, msg.channel, msg.provider, kind)
    if kind == "recipient_cap":
        t.inc(metrics.RECIPIENT_CAP_TRIPS, tenant, msg.provider)


def _dead(t: metrics.Tally, msg: Message, code: str) -> None:
    tenant = _tenant(msg)
    t.inc(metrics.DEAD_LETTERED, tenant, msg.channel, msg.provider, code)
