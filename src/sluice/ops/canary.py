"""Canaries (issue 15): the golden path checked end to end, on a schedule and on demand.

A canary is one marked message (action ``sluice.canary``) sent through the ordinary
outbox to a test recipient the operator configures per provider, then watched until its
delivery receipt comes back through ingress and the projector. Its outcome is ``ok``
(delivered or read), ``failed`` (an error from the provider, a bounce, a hold: the
reason is kept) or ``missing`` (no receipt within the target's timeout). Each run is a
row of ``sluice_canaries``; a failed or missing one opens an incident of the rule
``SluiceCanaryFailed`` (runbook ``003#RB-09``, provider outage) through the same store
machinery as the alert evaluator, which resolves it once the target's newest canary is
ok again.

    [canary]
    tenant = "_sluice"     # who canaries send as (a reserved tenant, outside tenants' figures)
    interval = "5m"        # how often each target runs; SLUICE_CANARY_INTERVAL overrides, 0 = off
    timeout = "2m"         # how long to wait for the delivery receipt
    targets = [
      { provider = "twilio", recipient = "+15005550006" },
      { provider = "sendgrid", recipient = "canary@example.com", interval = "15m" },
      # a tenant's own connection: the canary is sent as that tenant (still marked)
      { provider = "twilio", recipient = "+15005550006", tenant = "acme", name = "acme-sms" },
    ]

Scheduled canaries run beside every worker (``canarying``), but only the worker holding
the store's ``canary`` lead sends, and a target is due only when its newest row is older
than its interval, so a change of leader does not send twice. ``sluice canary run`` and
``POST /v1/canary/run`` run them on demand (the verification step of seed 003 §2.3's
recovery), audited as ``canary.run``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import tomllib
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import structlog

from sluice import metrics
from sluice.addressing import BUILTIN_PROVIDERS, provider_kinds
from sluice.clock import Clock, SystemClock
from sluice.config import config_file
from sluice.errors import ConfigError, SluiceError, ValidationError
from sluice.flow.controls import OPERATOR_TENANT
from sluice.model import Message, NewMessage, Status
from sluice.ops.actions import require_actor
from sluice.retention import parse_span
from sluice.store.base import AuditEntry, Firing, Store
from sluice.store.canaries import CANARY_ACTION, CanaryRun

__all__ = [
    "CANARY_ACTION",
    "CANARY_ACTOR",
    "CANARY_RULE",
    "Canaries",
    "CanaryConfig",
    "CanaryTarget",
    "all_ok",
    "canary_config",
    "canary_list",
    "canary_run",
    "canarying",
    "run_target",
]

log = structlog.get_logger("sluice.canary")

#: The actor of scheduled canaries in their rows and the audit log.
CANARY_ACTOR = "sluice:canary"
#: The alert rule a failed or missing canary opens an incident of.
CANARY_RULE = "SluiceCanaryFailed"
#: The longest an on-demand run may wait for its receipts.
MAX_WAIT = 600.0
_DEFAULT_INTERVAL = 300.0
_DEFAULT_TIMEOUT = 120.0
_FIELDS = ("name", "provider", "recipient", "channel", "tenant", "interval", "timeout", "payload")
#: Statuses after which nothing more will happen to a canary's message.
_OK = frozenset({Status.DELIVERED, Status.READ})
_FAILED = frozenset(
    {
        Status.BOUNCED, Status.DEAD, Status.EXPIRED, Status.CANCELLED, Status.SUPPRESSED,
        Status.SHADOWED, Status.HELD,
    }
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class CanaryTarget:
    """One test recipient of one provider (and, optionally, one tenant's connection)."""

    name: str
    provider: str
    channel: str
    recipient: str
    tenant: str
    #: Seconds between scheduled runs (0: on demand only).
    interval: float
    #: Seconds to wait for the delivery receipt.
    timeout: float
    payload: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CanaryConfig:
    """The ``[canary]`` of ``sluice.toml``."""

    targets: tuple[CanaryTarget, ...] = ()

    def of(self, provider: str | None) -> list[CanaryTarget]:
        """The targets of ``provider`` (all without one); ``ValidationError`` naming
        ``provider`` when none is configured for it."""
        if provider is None:
            return list(self.targets)
        chosen = [t for t in self.targets if t.provider == provider]
        if not chosen:
            known = sorted({t.provider for t in self.targets}) or ["none configured"]
            raise ValidationError(
                "provider", f"no [canary] target for {provider!r} (targets: {', '.join(known)})"
            )
        return chosen


def _span(value: Any, where: str, *, zero: bool = False) -> float:
    """``"5m"`` or a number of seconds; ``ConfigError`` naming ``where`` otherwise."""
    if isinstance(value, str):
        if zero and value.strip().lower() in ("0", "off"):
            return 0.0
        try:
            return parse_span(value, where)
        except ValidationError as exc:
            raise ConfigError(str(exc)) from None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and not zero)
        or value > 365 * 86_400
    ):
        least = "0" if zero else "more than 0"
        raise ConfigError(f"{where} must be a span like 90s or 5m (or seconds, {least} to a year)")
    return float(value)


def _text(entry: Mapping[str, Any], key: str, where: str, default: str = "") -> str:
    value = entry.get(key, default)
    if not isinstance(value, str) or "\x00" in value or value != value.strip():
        raise ConfigError(f"{where}.{key} must be a string without surrounding spaces")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise ConfigError(f"{where}.{key} must be valid text") from None
    return value


def canary_config(
    env: Mapping[str, str] | None = None, config_path: str | Path | None = None
) -> CanaryConfig:
    """The ``[canary]`` of the ``sluice.toml`` in effect (no targets without one), with
    ``SLUICE_CANARY_INTERVAL`` over its interval; ``ConfigError`` naming the field."""
    env = os.environ if env is None else env
    path = config_file(env, config_path)
    document: dict[str, Any] = {}
    if path is not None:
        try:
            document = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: cannot be read: {exc}") from None
    table = document.get("canary", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [canary] must be a table")
    unknown = set(table) - {"tenant", "interval", "timeout", "targets"}
    if unknown:
        raise ConfigError(f"[canary]: unknown field(s) {sorted(unknown)}")
    tenant = _text(table, "tenant", "[canary]", OPERATOR_TENANT)
    if not tenant.startswith("_") or len(tenant) > 128:
        raise ConfigError(
            f"[canary].tenant must be a reserved tenant starting with '_' (like "
            f"{OPERATOR_TENANT}), not {tenant!r}: canaries stay out of tenants' figures"
        )
    interval = _span(table.get("interval", _DEFAULT_INTERVAL), "[canary].interval", zero=True)
    if env.get("SLUICE_CANARY_INTERVAL"):
        interval = _span(env["SLUICE_CANARY_INTERVAL"], "SLUICE_CANARY_INTERVAL", zero=True)
    timeout = _span(table.get("timeout", _DEFAULT_TIMEOUT), "[canary].timeout")
    raw = table.get("targets", [])
    if not isinstance(raw, list):
        raise ConfigError("[canary].targets must be a list of tables")
    try:
        kinds = provider_kinds(document)
    except SluiceError as exc:
        raise ConfigError(str(exc)) from None
    targets: list[CanaryTarget] = []
    for i, entry in enumerate(raw):
        where = f"[canary].targets[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} must be a table")
        extra = set(entry) - set(_FIELDS)
        if extra:
            raise ConfigError(f"{where}: unknown field(s) {sorted(extra)}")
        provider = _text(entry, "provider", where)
        if provider not in kinds:
            raise ConfigError(
                f"{where}.provider: {provider!r} is not a provider "
                f"(known: {', '.join(sorted(kinds))})"
            )
        recipient = _text(entry, "recipient", where)
        if not recipient or len(recipient) > 2048:
            raise ConfigError(f"{where}.recipient is required (the test recipient)")
        media = BUILTIN_PROVIDERS.get(kinds[provider])
        channel = _text(entry, "channel", where, media[0] if media else "")
        if not channel:
            raise ConfigError(f"{where}.channel is required for provider {provider!r}")
        if media and channel not in media:
            raise ConfigError(f"{where}.channel: {provider!r} sends {', '.join(media)}")
        own = _text(entry, "tenant", where, tenant)
        if not own or len(own) > 128:
            raise ConfigError(f"{where}.tenant must be a tenant name")
        name = _text(entry, "name", where, provider if own == tenant else f"{provider}:{own}")
        if not name or any(t.name == name for t in targets):
            raise ConfigError(f"{where}.name: {name!r} is used twice; give each target a name")
        payload = entry.get("payload", {})
        if not isinstance(payload, dict):
            raise ConfigError(f"{where}.payload must be a table")
        targets.append(
            CanaryTarget(
                name=name, provider=provider, channel=channel, recipient=recipient, tenant=own,
                interval=_span(entry["interval"], f"{where}.interval", zero=True)
                if "interval" in entry else interval,
                timeout=_span(entry["timeout"], f"{where}.timeout")
                if "timeout" in entry else timeout,
                payload=payload,
            )
        )  # fmt: skip
    return CanaryConfig(tuple(targets))


def _message(target: CanaryTarget, run_id: str) -> NewMessage:
    text = f"Sluice canary {run_id}"
    payload = dict(target.payload) or {
        "body": text, "text": text, "subject": text, "canary": run_id,
    }  # fmt: skip
    return NewMessage(
        tenant=target.tenant,
        channel=target.channel,
        provider=target.provider,
        recipient=target.recipient,
        action=CANARY_ACTION,
        payload=payload,
        priority=1000,
        # One retry for a blip; never sent after the canary stopped waiting for it.
        max_attempts=2,
        ttl=target.timeout,
        idempotency_key=f"canary:{run_id}",
        correlation_id=f"canary:{run_id}",
    )


def _verdict(msg: Message) -> tuple[str, str | None] | None:
    """What ``msg`` says about its canary: ``(outcome, error)``, or None to keep waiting."""
    if msg.status in _OK:
        return "ok", None
    if msg.status in _FAILED:
        if msg.status is Status.HELD:
            return "failed", f"held: {msg.hold_reason or 'no reason given'}"
        why = f"{msg.last_error_code}: {msg.last_error}" if msg.last_error_code else ""
        return "failed", f"{msg.status.value}" + (f" ({why})" if why else "")
    return None


def _timed_out(msg: Message | None, timeout: float) -> tuple[str, str]:
    if msg is not None and msg.last_error_code:
        return "failed", f"{msg.status.value} ({msg.last_error_code}: {msg.last_error})"
    if msg is not None and msg.status is Status.SENT:
        return "missing", f"sent, but no delivery receipt within {timeout:g}s"
    state = msg.status.value if msg is not None else "not found"
    return "missing", f"not sent within {timeout:g}s ({state}): is a worker running?"


async def run_target(
    store: Store,
    target: CanaryTarget,
    *,
    actor: str = CANARY_ACTOR,
    clock: Clock | None = None,
    wait: float | None = None,
    poll: float = 0.2,
) -> CanaryRun:
    """Send one canary of ``target``, wait up to ``wait`` (its timeout by default) for
    the outcome, record it, count it, and open an incident when it is not ok."""
    clock = clock or SystemClock()
    timeout = target.timeout if wait is None else wait
    run_id = str(uuid.uuid4())
    started = clock.now()
    run = CanaryRun(
        id=run_id, target=target.name, provider=target.provider, tenant=target.tenant,
        recipient=target.recipient, message_id=None, sent_at=started, outcome="pending",
        actor=actor,
    )  # fmt: skip
    await store.canary_record(run)
    msg: Message | None = None
    message_id: str | None = None
    try:
        (message_id,) = await store.enqueue_many([_message(target, run_id)])
    except SluiceError as exc:
        verdict: tuple[str, str | None] = ("failed", f"not enqueued: {exc}")
    else:
        run = _replace(run, message_id=message_id)
        await store.canary_record(run)
        verdict, msg = await _watch(store, message_id, timeout, poll)
    outcome, error = verdict
    receipt_at = None
    if outcome == "ok" and message_id is not None:
        receipts = await store.receipt_list(message_id)
        receipt_at = receipts[-1].received_at if receipts else (msg.updated_at if msg else None)
    run = _replace(run, outcome=outcome, error=error, receipt_at=receipt_at)
    await store.canary_record(run)
    metrics.of(metrics.CANARY_RUNS, target.provider, target.name, outcome).inc()
    log.info(
        "canary", target=target.name, provider=target.provider, outcome=outcome,
        error=error, message_id=message_id,
    )  # fmt: skip
    if outcome != "ok":
        await store.incident_fire(_firing(run), clock.now())
    return run


async def _watch(
    store: Store, message_id: str, timeout: float, poll: float
) -> tuple[tuple[str, str | None], Message]:
    """Read the canary's message until it has a verdict or ``timeout`` seconds pass."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        msg = await store.message_get(message_id)
        verdict = _verdict(msg)
        if verdict is not None:
            return verdict, msg
        left = deadline - loop.time()
        if left <= 0:
            return _timed_out(msg, timeout), msg
        await asyncio.sleep(min(poll, left))


def _replace(run: CanaryRun, **changes: Any) -> CanaryRun:
    from dataclasses import replace

    return replace(run, **changes)


def _firing(run: CanaryRun) -> Firing:
    from sluice.alerts.rules import RULES

    rule = next(r for r in RULES if r.name == CANARY_RULE)
    scope = {"provider": run.provider, "target": run.target}
    return Firing(
        rule=rule.name,
        scope=scope,
        severity=rule.severity,
        types=rule.tags,
        runbook=rule.runbook,
        summary=f"Canary {run.target} ({run.provider}) {run.outcome}: {run.error}",
        value=1.0,
    )


# -- operator acts -------------------------------------------------------------------


async def canary_run(
    store: Store,
    config: CanaryConfig,
    *,
    actor: str,
    provider: str | None = None,
    wait: float | None = None,
    reason: str | None = None,
    clock: Clock | None = None,
    poll: float = 0.2,
) -> list[CanaryRun]:
    """Run the canaries of ``provider`` (every target without one) now, side by side,
    each waiting ``wait`` seconds at most (its timeout by default); audited as
    ``canary.run`` with each outcome."""
    require_actor(actor)
    if wait is not None and (
        isinstance(wait, bool)
        or not isinstance(wait, int | float)
        or not math.isfinite(wait)
        or not 0 < wait <= MAX_WAIT
    ):
        raise ValidationError("wait", f"must be more than 0 and at most {MAX_WAIT:g} seconds")
    targets = config.of(provider)
    if not targets:
        raise ValidationError("provider", "no [canary] targets are configured in sluice.toml")
    clock = clock or SystemClock()
    runs = await asyncio.gather(
        *(run_target(store, t, actor=actor, clock=clock, wait=wait, poll=poll) for t in targets)
    )
    await store.audit_append(
        AuditEntry(
            at=clock.now(), actor=actor, action="canary.run", target=provider or "*",
            reason=reason,
            detail={"runs": [
                {"id": r.id, "target": r.target, "outcome": r.outcome, "error": r.error}
                for r in runs
            ]},
        )
    )  # fmt: skip
    return list(runs)


async def canary_list(
    store: Store, provider: str | None = None, limit: int = 50
) -> list[CanaryRun]:
    """The newest canaries (of ``provider``), newest first."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
        raise ValidationError("limit", "must be between 1 and 1000")
    return await store.canary_list(provider, limit)


# -- the schedule ----------------------------------------------------------------------


class Canaries:
    """Runs every due target while this process holds the store's ``canary`` lead."""

    def __init__(
        self,
        store: Store,
        config: CanaryConfig,
        *,
        clock: Clock | None = None,
        tick: float = 5.0,
        poll: float = 0.5,
    ) -> None:
        self.store = store
        self.targets = [t for t in config.targets if t.interval > 0]
        self.clock = clock or SystemClock()
        self.tick = tick
        self.poll = poll
        self._running: dict[str, asyncio.Task[CanaryRun]] = {}
        #: The targets this process has started canaries of, in order.
        self.started: list[str] = []

    async def due(self, now: datetime) -> list[CanaryTarget]:
        """Targets whose newest canary is older than their interval (or that have none);
        a pending one left by a worker that stopped is recorded as missing first."""
        latest = {r.target: r for r in await self.store.canary_latest()}
        out = []
        for t in self.targets:
            last = latest.get(t.name)
            if (
                last is not None
                and last.outcome == "pending"
                and t.name not in self._running
                and now - last.sent_at > timedelta(seconds=2 * t.timeout + 30)
            ):
                stale = _replace(last, outcome="missing", error="its worker stopped waiting")
                await self.store.canary_record(stale)
                await self.store.incident_fire(_firing(stale), now)
            if t.name in self._running:
                continue
            if last is None or now - last.sent_at >= timedelta(seconds=t.interval):
                out.append(t)
        return out

    async def round(self) -> list[str]:
        """Start the due targets' canaries; the names started."""
        for name in [n for n, task in self._running.items() if task.done()]:
            task = self._running.pop(name)
            if not task.cancelled() and task.exception() is not None:
                # The store failed mid-run: its row stays pending, and is called missing
                # once it is overdue (``due``); the next round tries again.
                log.warning("canary not finished", target=name, error=str(task.exception()))
        started = []
        for t in await self.due(self.clock.now()):
            self._running[t.name] = asyncio.create_task(
                run_target(self.store, t, clock=self.clock, poll=self.poll),
                name=f"sluice-canary-{t.name}",
            )
            started.append(t.name)
        self.started.extend(started)
        return started

    async def run(self, stopping: asyncio.Event) -> None:
        """Lead and run rounds until ``stopping`` is set."""
        lead = None
        try:
            while not stopping.is_set():
                try:
                    if lead is None:
                        lead = await self.store.try_lead("canary")
                    if lead is not None:
                        await self.round()
                except SluiceError as exc:
                    log.warning("canary round failed; trying again", error=str(exc))
                    if lead is not None:
                        await lead.release()
                        lead = None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), self.tick)
        finally:
            for task in self._running.values():
                task.cancel()
            for task in self._running.values():
                with contextlib.suppress(BaseException):
                    await task
            if lead is not None:
                await lead.release()


@contextlib.asynccontextmanager
async def canarying(
    store: Store, config: CanaryConfig | None = None, clock: Clock | None = None, **kw: Any
) -> AsyncIterator[Canaries | None]:
    """Run scheduled canaries beside a worker for the block; nothing when no target has
    an interval. ``ConfigError`` for a bad ``[canary]``."""
    config = canary_config() if config is None else config
    canaries = Canaries(store, config, clock=clock, **kw)
    if not canaries.targets:
        yield None
        return
    stopping = asyncio.Event()
    task = asyncio.create_task(canaries.run(stopping), name="sluice-canaries")
    try:
        yield canaries
    finally:
        stopping.set()
        with contextlib.suppress(Exception):
            await task


def all_ok(runs: Sequence[CanaryRun]) -> bool:
    """True when every run is ok."""
    return all(r.outcome == "ok" for r in runs)
