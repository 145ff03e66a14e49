"""The built-in alert evaluator: Sluice's rules (``sluice.alerts.rules``) judged from the
store, so that an embedded Sluice with no Prometheus still notices, opens incidents and
tells someone.

One process at a time evaluates: every worker runs an ``Evaluator``, and the one that holds
the store's ``alerts`` lead (an advisory lock on PostgreSQL, a file lock beside SQLite)
does the work every ``SLUICE_ALERTS_INTERVAL`` seconds (15). State rules read the state
metrics from the store (the same numbers ``/metrics`` shows); rate rules count
``sluice_attempts``, inbox and audit rows over their window, so whichever process leads
reaches the same answer.

A rule fires for a group once its condition has held for the rule's ``for`` (kept in
memory: a new leader starts counting afresh); the store then opens one incident per
(rule, scope) or updates the open one, and resolves it once the condition has been clear
for ``SLUICE_ALERTS_CLEAR_FOR`` seconds (300). Each incident transition (opened, resolved)
is announced through ``sluice.ops.notify``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import re
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog

from sluice.alerts.rules import (
    RULES,
    All,
    Condition,
    Count,
    Latency,
    PrometheusOnly,
    Ratio,
    Rule,
    State,
    Where,
)
from sluice.clock import Clock, SystemClock
from sluice.config import Settings
from sluice.errors import SluiceError
from sluice.ops.state_metrics import StateMetrics
from sluice.store.base import Firing, Store, scope_key

__all__ = ["Evaluator", "Judgement", "alerting"]

log = structlog.get_logger("sluice.alerts")

#: A group: the values of a condition's ``by`` labels, as sorted (label, value) pairs.
Group = tuple[tuple[str, str], ...]

_OPS = {
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}


_AGG: dict[str, Callable[[list[float]], float]] = {
    "sum": lambda vs: float(sum(vs)),
    "max": lambda vs: float(max(vs)),
    "min": lambda vs: float(min(vs)),
}


@dataclass(frozen=True, slots=True)
class Judgement:
    """What one round found: per rule, the groups whose condition holds and their value."""

    at: datetime
    holding: dict[str, dict[Group, float]]


class _Round:
    """What one evaluation reads, each at most once: the state and the windows."""

    def __init__(self, store: Store, state: StateMetrics, now: datetime) -> None:
        self.store, self.state, self.now = store, state, now
        self._samples: dict[str, list[tuple[dict[str, str], float]]] | None = None
        self._tallies: dict[tuple[str, int, int], list[tuple[dict[str, str], int]]] = {}
        self._latencies: dict[int, list[tuple[dict[str, str], float]]] = {}

    async def samples(self, metric: str) -> list[tuple[dict[str, str], float]]:
        if self._samples is None:
            self._samples = await self.state.samples(self.now)
        return self._samples.get(metric, [])

    async def tally(self, table: str, window: int, offset: int) -> list[tuple[dict[str, str], int]]:
        key = (table, window, offset)
        if key not in self._tallies:
            until = self.now - timedelta(seconds=offset)
            since = until - timedelta(seconds=window)
            self._tallies[key] = await self.store.tally(table, since, until)
        return self._tallies[key]

    async def latencies(self, window: int) -> list[tuple[dict[str, str], float]]:
        if window not in self._latencies:
            since = self.now - timedelta(seconds=window)
            self._latencies[window] = await self.store.sent_latencies(since, self.now)
        return self._latencies[window]


def _matches(labels: Mapping[str, str], where: Where) -> bool:
    for name, allowed in where:
        value = labels.get(name, "")
        if not any(value.startswith(a[:-1]) if a.endswith("*") else value == a for a in allowed):
            return False
    return True


def _group(labels: Mapping[str, str], by: Sequence[str]) -> Group:
    return tuple(sorted((name, labels.get(name, "")) for name in by))


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


async def _values(cond: Condition, r: _Round) -> dict[Group, float]:
    """The condition's number for every group that has one (threshold not applied)."""
    if isinstance(cond, State):
        per: dict[Group, list[float]] = {}
        for labels, value in await r.samples(cond.metric):
            if _matches(labels, cond.where):
                per.setdefault(_group(labels, cond.by), []).append(value)
        return {g: _AGG[cond.agg](vs) for g, vs in per.items()}
    if isinstance(cond, Count):
        counts: dict[Group, float] = {}
        for labels, n in await r.tally(cond.table, cond.window, cond.offset):
            if _matches(labels, cond.where):
                g = _group(labels, cond.by)
                counts[g] = counts.get(g, 0.0) + n
        if cond.per_second:
            counts = {g: n / cond.window for g, n in counts.items()}
        return counts
    if isinstance(cond, Ratio):
        num: dict[Group, float] = {}
        den: dict[Group, float] = {}
        for labels, n in await r.tally(cond.table, cond.window, 0):
            g = _group(labels, cond.by)
            if _matches(labels, cond.numerator):
                num[g] = num.get(g, 0.0) + n
            if cond.over is None and _matches(labels, cond.denominator):
                den[g] = den.get(g, 0.0) + n
        if cond.over is not None:
            for labels, n in await r.tally(cond.over, cond.window, 0):
                if _matches(labels, cond.denominator):
                    g = _group(labels, cond.by)
                    den[g] = den.get(g, 0.0) + n
        return {g: num.get(g, 0.0) / d for g, d in den.items() if d >= cond.min_rows}
    if isinstance(cond, Latency):
        per_group: dict[Group, list[float]] = {}
        for labels, seconds in await r.latencies(cond.window):
            per_group.setdefault(_group(labels, cond.by), []).append(seconds)
        return {g: _quantile(vs, cond.quantile) for g, vs in per_group.items()}
    raise TypeError(f"not a leaf condition: {cond!r}")


def _holds(cond: Condition, value: float) -> bool:
    assert not isinstance(cond, All)
    return bool(_OPS[cond.op](value, cond.threshold))


async def holding(cond: Condition, r: _Round) -> dict[Group, float]:
    """The groups for which ``cond`` holds now, with the first condition's value."""
    if not isinstance(cond, All):
        return {g: v for g, v in (await _values(cond, r)).items() if _holds(cond, v)}
    first, *rest = cond.conditions
    out = await holding(first, r)
    for other in rest:
        if isinstance(other, All):
            raise TypeError("All inside All is not supported")
        values = await _values(other, r)
        by = getattr(other, "by", ())
        kept = {}
        for g, v in out.items():
            key = tuple(p for p in g if p[0] in by)
            other_value = values.get(key, 0.0 if isinstance(other, Count) else math.nan)
            if not math.isnan(other_value) and _holds(other, other_value):
                kept[g] = v
        out = kept
    return out


class Evaluator:
    """Judges ``rules`` every ``settings.alerts_interval`` seconds while it leads."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        state: StateMetrics,
        *,
        rules: Sequence[Rule] = RULES,
        clock: Clock | None = None,
        notify: Any = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.state = state
        self.rules = [r for r in rules if not isinstance(r.builtin, PrometheusOnly)]
        self.clock = clock or SystemClock()
        #: Called after each round with the store (sends what incidents announce).
        self.notify = notify
        #: (rule, group) -> since when its condition has held, for ``for``.
        self._since: dict[tuple[str, Group], datetime] = {}

    async def evaluate(self, now: datetime | None = None) -> Judgement:
        """One round: judge every rule, open, update and resolve incidents."""
        now = now or self.clock.now()
        r = _Round(self.store, self.state, now)
        found: dict[str, dict[Group, float]] = {}
        for rule in self.rules:
            assert not isinstance(rule.builtin, PrometheusOnly)
            try:
                groups = await holding(rule.builtin, r)
            except SluiceError:
                raise
            except Exception:  # one bad rule must not blind the others
                log.exception("rule could not be judged", rule=rule.name)
                continue
            found[rule.name] = groups
            for g, value in groups.items():
                since = self._since.setdefault((rule.name, g), now)
                if (now - since).total_seconds() >= rule.for_seconds:
                    await self.store.incident_fire(_firing(rule, g, value), now)
            for key in [k for k in self._since if k[0] == rule.name and k[1] not in groups]:
                del self._since[key]
            keys = [scope_key(_scope(rule, g)) for g in groups]
            await self.store.incident_clear(rule.name, keys, now, self.settings.alerts_clear_for)
        if self.settings.alerts_escalate_after:
            await self.store.incident_escalate(now, self.settings.alerts_escalate_after)
        if self.notify is not None:
            await self.notify(self.store, now)
        return Judgement(now, found)

    async def run(self, stopping: asyncio.Event) -> None:
        """Evaluate while leading, until ``stopping`` is set; try to lead meanwhile."""
        lead = None
        try:
            while not stopping.is_set():
                try:
                    if lead is None:
                        lead = await self.store.try_lead("alerts")
                        if lead is not None:
                            log.info("alert evaluator leading", rules=len(self.rules))
                    if lead is not None:
                        await self.evaluate()
                except SluiceError as exc:
                    log.warning("alert evaluation failed; trying again", error=str(exc))
                    if lead is not None:
                        await lead.release()
                        lead = None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), self.settings.alerts_interval)
        finally:
            if lead is not None:
                await lead.release()


def _scope(rule: Rule, group: Group) -> dict[str, str]:
    """The incident's scope: the rule's scope labels the group has values for."""
    labels = dict(group)
    return {name: labels[name] for name in rule.scope if labels.get(name)}


def _firing(rule: Rule, group: Group, value: float) -> Firing:
    scope = _scope(rule, group)
    return Firing(
        rule=rule.name,
        scope=scope,
        severity=rule.severity,
        types=rule.tags,
        runbook=rule.runbook,
        summary=_render(rule.summary, scope, value),
        value=value,
    )


def _render(template: str, scope: Mapping[str, str], value: float) -> str:
    """A rule's summary with its scope labels and value filled in (see the templates
    section of ``sluice.alerts.rules``)."""
    out = template.replace("{value:percent}", f"{value * 100:.1f} %")
    out = out.replace("{value:duration}", _duration(value)).replace("{value}", f"{value:g}")
    for name in _names(template):
        out = out.replace("{" + name + "}", scope.get(name, "any"))
    return out


def _names(template: str) -> Iterable[str]:
    return re.findall(r"\{(\w+)\}", template)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86_400:.1f} days"


@contextlib.asynccontextmanager
async def alerting(
    store: Store, settings: Settings, state: StateMetrics, clock: Clock | None = None
) -> AsyncIterator[Evaluator | None]:
    """Run the built-in evaluator (with the ``[alerts]`` targets of the ``sluice.toml``
    in effect) beside a worker for the duration of the block; nothing when
    ``SLUICE_ALERTS_INTERVAL`` is 0. ``ConfigError`` for a bad ``[alerts]`` table."""
    if not settings.alerts_interval:
        yield None
        return
    from sluice.ops.notify import alert_settings, send_notifications

    targets, durations = alert_settings()
    rules = [
        dataclasses.replace(r, for_seconds=durations.get(r.name, r.for_seconds)) for r in RULES
    ]

    async def notify(store: Store, now: datetime) -> None:
        await send_notifications(store, targets, now)

    evaluator = Evaluator(store, settings, state, rules=rules, clock=clock, notify=notify)
    stopping = asyncio.Event()
    task = asyncio.create_task(evaluator.run(stopping), name="sluice-alerts")
    try:
        yield evaluator
    finally:
        stopping.set()
        with contextlib.suppress(Exception):
            await task
