"""A worker's limiter: decides each claimed batch against the shared limits, respects
throttles that providers asked for, and keeps sends per provider under a concurrency
limit that adapts to the provider's health.

- Limits (``sluice.flow.limits``) are the configured ones merged with those set at run
  time, reloaded whenever the flow epoch moves (``sluice limits set`` bumps it).
- Shared state is in Redis when ``SLUICE_REDIS_URL`` is set (one script call per batch),
  else in the store. With Redis unreachable, ``SLUICE_REDIS_FALLBACK`` decides:
  ``closed`` (default) defers every limited message a few seconds, ``store`` uses the
  store's limiter, ``open`` sends without limits; each says so in the log.
- A 429 with ``Retry-After`` (or any throttle outcome) marks (tenant, target) in the
  store, the target being the provider — or, for webhooks and ``http`` actions, the one
  endpoint that answered (``webhook@https://…``): one receiver's 429 never pauses
  another. The worker that got the 429 applies the mark before any later send of its
  own starts (``throttled_until`` is checked again just before each call); the store
  signals it to every other worker (``Store.flow_listen``), and each control poll reads
  the marks as a fallback. Deferred messages spend no attempt and never hot-loop.
- What a try did not use goes back (``settle``, then ``flush_refunds``: one call per
  write-back, however many messages): everything when no request left, quota and caps
  when the provider did not take the message (``sluice.flow.limits.Use``).
- Concurrency per provider: at most the configured ``concurrency`` limit (else the
  worker's concurrency); cut by 30 % on a 429, a 5xx, a timeout or a send slower than
  ``SLUICE_LATENCY_TARGET``, at most once a second, and grown back by about one slot per
  round of successful sends.
"""

from __future__ import annotations

import asyncio
import collections
import json
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

from sluice.clock import Clock
from sluice.config import Settings
from sluice.errors import SluiceError
from sluice.flow.limits import (
    Cell,
    Check,
    Decision,
    LimitSpec,
    Outcome,
    Refund,
    Request,
    Use,
    cells_of,
    evaluate,
    merge,
    refundable,
    requests_for,
)
from sluice.model import ErrorClass, ErrorCode, Message
from sluice.model import Outcome as SendOutcome
from sluice.store.base import AuditEntry, Store, Throttle
from sluice.store.tenant_events import is_event, quota_event
from sluice.worker.retry import MIN_THROTTLE_DELAY

__all__ = ["AdaptiveConcurrency", "Limiter", "RedisUnavailable"]

#: Seconds a limited message waits when the limiter's state cannot be reached.
FALLBACK_DELAY = 5.0


class RedisUnavailable(SluiceError):
    """Redis could not be reached for the limiter."""


class _RedisBackend:
    def __init__(self, url: str, prefix: str) -> None:
        import redis.asyncio as aioredis

        self.client = aioredis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        source = resources.files("sluice.flow").joinpath("limits.lua").read_text()
        self.script = self.client.register_script(source)
        self.prefix = prefix

    async def apply(
        self, requests: Sequence[Request], now: float | None = None, refunds: Sequence[Refund] = ()
    ) -> Outcome:
        import redis.exceptions

        payload = {
            "r": [{"c": [_lua_check(c) for c in r.checks]} for r in requests],
            "g": [{"c": _lua_check(g.check), "at": g.taken_at, "n": g.count} for g in refunds],
        }
        try:
            raw = await self.script(
                args=[json.dumps(payload), self.prefix, "" if now is None else repr(now)]
            )
        except (redis.exceptions.RedisError, OSError) as exc:
            # Unreachable, or answering with an error (a read-only replica after a
            # failover, out of memory): either way the fallback decides.
            raise RedisUnavailable(f"Redis unreachable: {type(exc).__name__}: {exc}") from exc
        answer = json.loads(raw)
        out = Outcome(float(answer["now"]))
        decisions = answer["d"] if isinstance(answer["d"], list) else []
        for req, (ok, retry_at, failed) in zip(requests, decisions, strict=True):
            if ok:
                out.decisions.append(Decision(req.message_id, True))
                continue
            check = req.checks[int(failed) - 1]
            if check.hold:
                reason = f"limit: {check.label} reached; release or cancel to decide"
                out.decisions.append(Decision(req.message_id, False, hold=reason, reason=reason))
            else:
                out.decisions.append(
                    Decision(req.message_id, False, retry_at=float(retry_at), reason=check.label)
                )
        events = answer["e"] if isinstance(answer["e"], list) else []
        labels = {c.key: c.label for r in requests for c in r.checks}
        out.events = [(labels.get(k, k), k, float(t)) for k, t in events]
        trips = answer.get("x") if isinstance(answer.get("x"), list) else []
        out.trips = [(labels.get(k, k), k, requests[int(i) - 1].message_id) for k, i in trips]
        return out

    async def close(self) -> None:
        await self.client.aclose()


def _lua_check(c: Check) -> dict[str, Any]:
    """A check as ``limits.lua`` reads it."""
    out: dict[str, Any] = {
        "k": c.key,
        "t": {"bucket": "b", "count": "n", "cooldown": "c"}[c.kind],
        "rate": c.rate,
        "burst": c.burst,
        "limit": c.limit,
        "low": c.low_limit,
        "urgent": c.urgent,
        "w": c.window,
        "cd": c.cooldown,
        "q": c.quota,
        "h": c.hold,
    }
    if c.anchor is not None:
        out["a"] = c.anchor
    if c.marker:
        out["m"] = c.marker
    return out


class _StoreBackend:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def apply(
        self, requests: Sequence[Request], now: float | None = None, refunds: Sequence[Refund] = ()
    ) -> Outcome:
        keys = cells_of(requests, refunds)

        def run(state: dict[str, Cell], store_now: float) -> Outcome:
            return evaluate(state, requests, store_now if now is None else now, refunds)

        result: Outcome = await self.store.flow_state_apply(keys, run)
        return result


@dataclass(frozen=True, slots=True)
class _Taken:
    """What the limits gave one admitted message, kept until its try is settled."""

    backend: str
    at: float
    checks: tuple[Check, ...]
    since: float


class AdaptiveConcurrency:
    """Sends in flight per provider under a limit that adapts (AIMD)."""

    def __init__(self, ceiling: int, latency_target: float) -> None:
        self.ceiling = ceiling
        self.limit = float(ceiling)
        self.in_flight = 0
        self.latency_target = latency_target
        self._last_cut = 0.0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def try_acquire(self) -> bool:
        """Take a slot if one is free and nobody is queued (no await, no future)."""
        if self.in_flight < max(1, int(self.limit)) and not self._waiters:
            self.in_flight += 1
            return True
        return False

    async def acquire(self) -> None:
        if self.try_acquire():
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.in_flight -= 1  # the slot was handed over as we were cancelled
                self._wake()
            else:
                self._waiters.remove(waiter)
            raise

    async def release(self, outcome: SendOutcome | None, latency: float) -> None:
        self.release_now(outcome, latency)

    def release_now(self, outcome: SendOutcome | None, latency: float) -> None:
        self.in_flight -= 1
        self._adapt(outcome, latency)
        self._wake()

    def _wake(self) -> None:
        """Hand free slots to the oldest waiters (the slot is taken on their behalf)."""
        while self._waiters and self.in_flight < max(1, int(self.limit)):
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.in_flight += 1
                waiter.set_result(None)

    def _adapt(self, outcome: SendOutcome | None, latency: float) -> None:
        congested = latency > self.latency_target
        if outcome is not None and outcome.code is not None:
            code = outcome.code
            congested = congested or code.error_class is ErrorClass.THROTTLE
            congested = congested or code in (ErrorCode.PROVIDER_UNAVAILABLE, ErrorCode.TIMEOUT)
        now = time.monotonic()
        if congested:
            if now - self._last_cut >= 1.0:
                self.limit = max(1.0, self.limit * 0.7)
                self._last_cut = now
        elif outcome is not None and outcome.ok:
            self.limit = min(float(self.ceiling), self.limit + 1.0 / max(1.0, self.limit))


class Limiter:
    """Limits, throttles and per-provider concurrency for one worker."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        configured: Sequence[LimitSpec],
        *,
        clock: Clock,
        logger: Any,
        worker_id: str,
        shared_clock: Clock | None = None,
    ) -> None:
        """``shared_clock`` is the time limits are judged by. By default that is the
        clock of whatever keeps their state — Redis's ``TIME``, PostgreSQL's
        ``clock_timestamp()``, this host's for SQLite — the one clock every worker
        shares, so that hosts whose clocks disagree still agree on a bucket or a
        window. Tests pass a ``FrozenClock`` to put the limits at any moment."""
        self.store = store
        self.settings = settings
        self.configured = list(configured)
        self.specs: list[LimitSpec] = merge(self.configured, [])
        self.clock = clock
        self.shared_clock = shared_clock
        self.log = logger
        self.worker_id = worker_id
        #: (tenant, target) -> until: nothing goes there before.
        self.throttles: dict[tuple[str, str], datetime] = {}
        #: Keys marked since ``refresh_throttles`` began reading the store's marks, and
        #: keys whose mark the store could not be told of (kept until they run out).
        self._marked_since_sync: set[tuple[str, str]] = set()
        self._unshared: set[tuple[str, str]] = set()
        #: What a message's throttle is keyed on: its provider, or its provider and
        #: endpoint (the dispatcher sets this; it knows which providers have endpoints).
        self.target_of: Callable[[Message], str] = lambda m: m.provider
        self._store_backend = _StoreBackend(store)
        self._redis = (
            _RedisBackend(settings.redis_url, settings.redis_prefix + "limit:")
            if settings.redis_url
            else None
        )
        self._redis_down_logged = 0.0
        self._concurrency: dict[str, AdaptiveConcurrency] = {}
        self.rng = random.Random()
        #: (message id, claim) -> what admission gave it, until ``settle``.
        self._taken: dict[tuple[str, int], _Taken] = {}
        #: Backend ("redis", "store") -> (check, taken at) -> uses to give back at
        #: ``flush_refunds``: what one batch took comes back as one entry, not one a
        #: message, so a refund call stays small however many messages it covers.
        self._refunds: dict[str, collections.Counter[tuple[Check, float]]] = {}

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.close()

    # -- keeping current ------------------------------------------------------------

    async def reload(self, version: int) -> None:
        """Merge the run-time limits of the store over the configured ones."""
        runtime = []
        for row in await self.store.limit_list():
            raw = {
                **row.spec,
                "kind": row.kind,
                "tenant": row.tenant,
                "provider": row.provider,
                "action": row.action,
            }
            runtime.append(LimitSpec.parse(raw, f"run-time limit {row.kind}", source="runtime"))
        self.specs = merge(self.configured, runtime)
        for provider, gate in self._concurrency.items():
            gate.ceiling = self._ceiling(provider)
            gate.limit = min(gate.limit, float(gate.ceiling))
        await self.refresh_throttles(version)

    def _ceiling(self, provider: str) -> int:
        """The provider's own concurrency cap, else an all-providers one, else the
        worker's concurrency."""
        caps = {s.provider: int(s.max or 0) for s in self.specs if s.kind == "concurrency"}
        return caps.get(provider) or caps.get("") or self.settings.worker_concurrency

    async def refresh_throttles(self, version: int = 0) -> None:
        """Take the store's marks (every control poll, and at each epoch move — ``sluice
        throttles clear`` moves it): they replace this worker's, but for marks set while
        they were read and marks the store could not be told of. So a mark an operator
        cleared is gone here before this worker acknowledges, even if its signal was lost."""
        self._marked_since_sync = set()
        now = self.clock.now()
        marks = {(t.tenant, t.provider): t.until for t in await self.store.throttle_list(now)}
        for key in self._marked_since_sync | self._unshared:
            until = self.throttles.get(key)
            if until is not None and until > now:
                marks[key] = max(marks.get(key, until), until)
        self._unshared = {k for k in self._unshared if k in marks}
        self.throttles = marks

    def note_throttle(self, throttle: Throttle) -> None:
        """Apply a mark another worker set (a flow signal), at once."""
        key = (throttle.tenant, throttle.provider)
        held = self.throttles.get(key)
        if held is None or held < throttle.until:
            self.throttles[key] = throttle.until
            self._marked_since_sync.add(key)

    def forget_throttle(self, throttle: Throttle) -> None:
        """An operator cleared this mark (a flow signal): sends there may start at once."""
        self.throttles.pop((throttle.tenant, throttle.provider), None)

    def throttled_until(self, msg: Message, now: datetime) -> datetime | None:
        """Until when ``msg``'s target asked us to hold off, if it still does."""
        until = self.throttles.get((msg.tenant, self.target_of(msg)))
        return until if until is not None and until > now else None

    # -- deciding a batch -------------------------------------------------------------

    async def admit(
        self, batch: Sequence[Message]
    ) -> tuple[list[Message], list[tuple[Message, datetime, str]], list[tuple[Message, str]]]:
        """Split ``batch`` into messages to send now, to defer (until when, why) and to
        hold (why). No attempt is spent on the last two."""
        now = self.clock.now()
        go: list[Message] = []
        defer: list[tuple[Message, datetime, str]] = []
        hold: list[tuple[Message, str]] = []
        candidates = []
        for msg in batch:
            if is_event(msg.provider):  # tenants' events spend none of their limits
                go.append(msg)
                continue
            until = self.throttled_until(msg, now)
            if until is not None:
                defer.append(
                    (msg, self.after_throttle(until), f"throttled by {msg.provider} until {until}")
                )
            else:
                candidates.append(msg)
        requests = requests_for(self.specs, candidates)
        if not requests:
            return go + candidates, defer, hold
        limited = {r.message_id for r in requests}
        go += [m for m in candidates if m.id not in limited]
        by_id = {m.id: m for m in candidates}
        outcome, backend = await self._apply(requests)
        if outcome is None:  # fail closed
            for r in requests:
                delay = FALLBACK_DELAY * (1 + self.rng.random())
                defer.append(
                    (by_id[r.message_id], now + timedelta(seconds=delay), "limiter unavailable")
                )
            return go, defer, hold
        checks = {r.message_id: r.checks for r in requests}
        for d in outcome.decisions:
            msg = by_id[d.message_id]
            if d.ok:
                go.append(msg)
                self._keep(msg, backend, outcome.now, checks[msg.id])
            elif d.hold is not None:
                hold.append((msg, d.hold))
            else:
                at = datetime.fromtimestamp(d.retry_at or now.timestamp(), UTC)
                # A little spread, so that what one window or slot frees does not all
                # come due in the same instant.
                wait = max(0.0, (at - now).total_seconds())
                at += timedelta(seconds=self.rng.uniform(0, min(1.0, 0.05 * wait)))
                defer.append((msg, max(at, now), d.reason))
        for label, key, fraction in outcome.events:
            await self._quota_event(label, key, fraction, now)
        for label, key, message_id in outcome.trips:
            await self._cap_tripped(label, key, by_id[message_id], now)
        return go, defer, hold

    def _shared_now(self) -> float | None:
        """The time to judge limits by, when it is not the shared state's own."""
        return None if self.shared_clock is None else self.shared_clock.now().timestamp()

    async def _apply(self, requests: Sequence[Request]) -> tuple[Outcome | None, str | None]:
        """Decide ``requests`` where the state lives; and which place that was (None:
        nowhere, the fallback decided)."""
        if self._redis is None:
            return await self._store_backend.apply(requests, self._shared_now()), "store"
        try:
            return await self._redis.apply(requests, self._shared_now()), "redis"
        except RedisUnavailable as exc:
            mode = self.settings.redis_fallback
            if time.monotonic() - self._redis_down_logged > 10.0:
                self._redis_down_logged = time.monotonic()
                self.log.error(
                    "Redis unreachable for limits; falling back",
                    fallback=mode,
                    effect={
                        "closed": "limited messages are deferred (fail closed)",
                        "store": "limits are kept in the database meanwhile",
                        "open": "limited messages are sent WITHOUT limits",
                    }[mode],
                    error=str(exc),
                )
            if mode == "store":
                return await self._store_backend.apply(requests, self._shared_now()), "store"
            if mode == "open":
                return Outcome(decisions=[Decision(r.message_id, True) for r in requests]), None
            return None, None

    # -- giving back what a try did not use ---------------------------------------------

    def _keep(self, msg: Message, backend: str | None, at: float, checks: Sequence[Check]) -> None:
        """Remember what admission gave ``msg`` that a try may give back."""
        mine = tuple(c for c in checks if refundable(c, Use.NOTHING))
        if backend is None or not mine:
            return
        if len(self._taken) > 4 * self.settings.worker_concurrency:
            # Every admitted message is settled once its try ends, within its lease; what
            # is older than that was never settled (a caller that only admits) and would
            # only grow. Forgetting it merely leaves its use spent.
            horizon = time.monotonic() - 2 * self.settings.lease_seconds
            self._taken = {k: t for k, t in self._taken.items() if t.since > horizon}
        self._taken[(msg.id, msg.claim_seq)] = _Taken(backend, at, mine, time.monotonic())

    def settle(self, messages: Iterable[Message], use: Use) -> None:
        """A try at each of ``messages`` ended having used ``use`` (see ``Use``): what it
        did not use goes back at the next ``flush_refunds``. Each admitted message is
        settled once, when its try ends; a message settled again, or never admitted,
        gives back nothing."""
        for msg in messages:
            taken = self._taken.pop((msg.id, msg.claim_seq), None)
            if taken is None or use is Use.MESSAGE:
                continue
            back = [(c, taken.at) for c in taken.checks if refundable(c, use)]
            if back:
                self._refunds.setdefault(taken.backend, collections.Counter()).update(back)

    async def flush_refunds(self) -> None:
        """Give back what ``settle`` set aside: one call per place the state lives,
        however many messages. A refund that cannot be made is dropped and logged (its
        use stays spent: the limits err on the safe side)."""
        pending, self._refunds = self._refunds, {}
        for backend, counts in pending.items():
            refunds = [Refund(check, at, n) for (check, at), n in counts.items()]
            try:
                if backend == "redis" and self._redis is not None:
                    await self._redis.apply([], self._shared_now(), refunds)
                else:
                    await self._store_backend.apply([], self._shared_now(), refunds)
            except Exception as exc:  # never in the way of the outcomes written after it
                self.log.warning(
                    "could not give back unused limits; they stay spent",
                    uses=sum(counts.values()),
                    backend=backend,
                    error=str(exc),
                )

    async def _quota_event(self, label: str, key: str, fraction: float, now: datetime) -> None:
        pct = round(fraction * 100)
        self.log.warning("quota threshold crossed", limit=label, used_pct=pct, key=key)
        try:
            await self.store.audit_append(
                AuditEntry(
                    at=now,
                    actor=f"worker:{self.worker_id}",
                    action="quota.threshold",
                    target=label,
                    reason=f"{pct}% of the quota used",
                    detail={"key": key, "threshold": fraction},
                )
            )
        except SluiceError as exc:
            self.log.error("could not record the quota event", error=str(exc))
        await quota_event(self.store, key, label, fraction, now)  # to the tenant (issue 14)

    async def _cap_tripped(self, label: str, key: str, msg: Message, now: datetime) -> None:
        """A recipient cap held its first message of the window: a runaway loop (RB-10)
        caught. Said once per cap, recipient and window — a warning and an audit row
        naming both — where each further message held only gets an info line."""
        self.log.warning(
            "recipient cap reached; messages held",
            limit=label,
            tenant=msg.tenant,
            action=msg.action,
            recipient=msg.recipient,
            message_id=msg.id,
            correlation_id=msg.correlation_id,
            runbook="RB-10",
        )
        try:
            await self.store.audit_append(
                AuditEntry(
                    at=now,
                    actor=f"worker:{self.worker_id}",
                    action="limit.tripped",
                    target=label,
                    reason=f"{label} reached for {msg.recipient}: held for an operator",
                    detail={
                        "key": key,
                        "tenant": msg.tenant,
                        "action": msg.action,
                        "recipient": msg.recipient,
                        "first_held": msg.id,
                    },
                )
            )
        except SluiceError as exc:
            self.log.error("could not record the recipient cap trip", error=str(exc))

    # -- after a send -----------------------------------------------------------------

    def after_throttle(self, until: datetime) -> datetime:
        """When a message held off until ``until`` is due: a little after, spread so that
        what a throttle held back does not all come due in the same instant."""
        return until + timedelta(seconds=self.rng.uniform(0, 0.5))

    async def throttled(self, msg: Message, outcome: SendOutcome) -> None:
        """The target said slow down: this worker holds off at once (before any later
        send starts), every other worker as soon as the store signals it."""
        # At least MIN_THROTTLE_DELAY: "Retry-After: 0" (or a date already past) from a
        # receiver that is refusing us must still pause it, not invite the next call.
        wait = outcome.retry_after if outcome.retry_after is not None else MIN_THROTTLE_DELAY
        wait = min(max(wait, MIN_THROTTLE_DELAY), 3600.0)
        now = self.clock.now()
        until = now + timedelta(seconds=wait)
        target = self.target_of(msg)
        key = (msg.tenant, target)
        if self.throttles.get(key, now) >= until:
            return
        self.throttles[key] = until
        self._marked_since_sync.add(key)
        why = f"{outcome.code}: {outcome.provider_status or ''} Retry-After {wait:g}s"
        try:
            await self.store.throttle_set(msg.tenant, target, until, why.strip(), now)
        except SluiceError as exc:
            self._unshared.add(key)
            self.log.warning("could not share the throttle", error=str(exc))

    def concurrency(self, provider: str) -> AdaptiveConcurrency:
        gate = self._concurrency.get(provider)
        if gate is None:
            gate = AdaptiveConcurrency(self._ceiling(provider), self.settings.latency_target)
            self._concurrency[provider] = gate
        return gate
