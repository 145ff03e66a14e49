"""Every target the bench checks, as one declarative list.

A target reads the medians of one run (``{part: {figure: value}}``), computes one number
from them (a figure, or a ratio of two figures measured in the same run) and compares it
with a bound. A part added to the bench gets its targets by adding entries here; a
target whose figures are missing (the part was not selected, failed, or does not
produce that key yet) is reported "not run" rather than dropped, so the table always
shows every goal.

Issue 17's goals are ratios against references measured in the same repetition
(a bare ``FOR UPDATE SKIP LOCKED`` loop, a bare one-row INSERT, one COPY, a bare HTTP
client loop, a bare Starlette app): on a shared, noisy box a ratio of two figures taken
side by side means something where an absolute rate does not.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["TARGETS", "Target", "evaluate", "figure", "ratio"]

#: The medians of one run: part key -> figure name -> value.
Medians = Mapping[str, Mapping[str, Any]]
#: Where one figure comes from: (part key, figure name).
Source = tuple[str, str]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


@dataclass(frozen=True)
class Measure:
    """How a target's number is computed from the medians, and how it is shown."""

    sources: tuple[Source, ...]
    compute: Callable[[list[float]], float]
    show: Callable[[float, list[float]], str]

    def value(self, medians: Medians) -> tuple[float | None, list[float] | None]:
        """(the number, the figures it came from); (None, None) when one is missing."""
        got = [_number(medians.get(part, {}).get(name)) for part, name in self.sources]
        if any(v is None for v in got):
            return None, None
        values = [v for v in got if v is not None]
        try:
            return self.compute(values), values
        except ZeroDivisionError:
            return None, None


def figure(part: str, name: str, unit: str = "", fmt: str = ",.0f") -> Measure:
    """One figure as it was measured."""
    return Measure(
        ((part, name),),
        lambda v: v[0],
        lambda x, _: f"{format(x, fmt)}{unit}",
    )


def ratio(num: Source, den: Source, unit: str = "/s", fmt: str = ",.0f") -> Measure:
    """``num / den``, both taken in the same run; shown with the two figures."""
    return Measure(
        (num, den),
        lambda v: v[0] / v[1],
        lambda x, v: f"{x:.2f}x ({format(v[0], fmt)} / {format(v[1], fmt)}{unit})",
    )


@dataclass(frozen=True)
class Target:
    name: str
    measure: Measure
    op: str  # ">=" or "<="
    bound: float
    unit: str = "x"

    def check(self, medians: Medians) -> dict[str, Any]:
        """One row of the Targets table: measured, bound, PASS / MISS / not run."""
        value, inputs = self.measure.value(medians)
        bound = f"{self.op.replace('>=', '≥').replace('<=', '≤')} {self.bound:,g}{self.unit}"
        if value is None or inputs is None:
            return {
                "target": self.name,
                "measured": None,
                "shown": "not run",
                "bound": bound,
                "result": "not run",
                "parts": sorted({p for p, _ in self.measure.sources}),
            }
        ok = value >= self.bound if self.op == ">=" else value <= self.bound
        return {
            "target": self.name,
            "measured": value,
            "inputs": dict(zip([f"{p}.{n}" for p, n in self.measure.sources], inputs, strict=True)),
            "shown": self.measure.show(value, inputs),
            "bound": bound,
            "result": "PASS" if ok else "MISS",
        }


def evaluate(medians: Medians, targets: tuple[Target, ...] | None = None) -> list[dict[str, Any]]:
    """Every target checked against one run's medians, in the list's order."""
    return [t.check(medians) for t in (TARGETS if targets is None else targets)]


# Part keys of issue 17's references and parts (bench/harness.py PARTS).
SKIP_LOCKED = "loop-pg"
TWO_PROCESSES = "sluice-pg-2"
SKIP_LOCKED_2 = "loop-pg-2"
GROWTH = "growth"
MEMORY = "memory"

TARGETS: tuple[Target, ...] = (
    # Sluice's standing goals.
    Target(
        "PostgreSQL drain, msgs/s", figure("sluice-pg", "drain_per_s", "/s"), ">=", 10_000, "/s"
    ),
    Target(
        "PostgreSQL drain vs procrastinate (concurrency 10)",
        ratio(("sluice-pg", "drain_per_s"), ("procrastinate", "drain_per_s")),
        ">=",
        10,
    ),
    Target("SQLite drain, msgs/s", figure("sluice-sqlite", "drain_per_s", "/s"), ">=", 5_000, "/s"),
    Target("idle latency p50", figure("latency", "p50_ms", " ms", ".2f"), "<=", 5, " ms"),
    Target(
        "ingress p99 to 2xx at 1,000 req/s, 1 process",
        figure("ingress", "sluice_p1_r1000_p99_ms", " ms", ".2f"),
        "<=",
        25,
        " ms",
    ),
    # Issue 17.
    Target(
        "drain, 1 worker process vs bare SKIP LOCKED loop",
        ratio(("sluice-pg", "drain_per_s"), (SKIP_LOCKED, "drain_per_s")),
        ">=",
        0.5,
    ),
    Target(
        "drain, 2 worker processes vs 1",
        ratio((TWO_PROCESSES, "drain_per_s"), ("sluice-pg", "drain_per_s")),
        ">=",
        1.6,
    ),
    Target(
        "drain, 2 worker processes vs 2-process SKIP LOCKED loop",
        ratio((TWO_PROCESSES, "drain_per_s"), (SKIP_LOCKED_2, "drain_per_s")),
        ">=",
        0.5,
    ),
    Target(
        "enqueue, single (sluice.enqueue + commit) vs bare INSERT + commit",
        ratio(("sluice-pg", "enqueue_single_per_s"), ("sluice-pg", "bare_insert_per_s")),
        ">=",
        0.8,
    ),
    Target(
        "enqueue, batch (Store.enqueue_many) vs one COPY",
        ratio(("sluice-pg", "enqueue_batch_per_s"), ("sluice-pg", "bare_copy_per_s")),
        ">=",
        0.5,
    ),
    Target(
        "HTTP webhook delivery vs bare client loop",
        ratio(("http", "per_s"), ("http", "bare_per_s")),
        ">=",
        0.7,
    ),
    Target(
        "latency back to back, p99 (single enqueues up to 1,000/s)",
        figure("latency", "back_to_back_p99_ms", " ms", ".2f"),
        "<=",
        5,
        " ms",
    ),
    Target(
        "latency p99, single enqueues paced at 1,000/s",
        figure("latency", "paced_p99_ms", " ms", ".2f"),
        "<=",
        5,
        " ms",
    ),
    Target("idle latency p99", figure("latency", "p99_ms", " ms", ".2f"), "<=", 3, " ms"),
    Target(
        "ingress p99 to 2xx at 2,000 req/s, 1 process",
        figure("ingress", "sluice_p1_r2000_p99_ms", " ms", ".2f"),
        "<=",
        10,
        " ms",
    ),
    Target(
        "ingress CPU per request vs bare Starlette, 2,000 req/s, 1 process",
        ratio(
            ("ingress", "sluice_p1_r2000_cpu_ms_per_req"),
            ("ingress", "bare_p1_r2000_cpu_ms_per_req"),
            " ms",
            ".3f",
        ),
        "<=",
        3,
    ),
    Target(
        "drain with 1,000,000 sent in the table vs small table",
        ratio((GROWTH, "growth_history_drain_per_s"), (GROWTH, "growth_small_drain_per_s")),
        ">=",
        0.8,
    ),
    Target(
        "claim p99 with 1,000,000 sent in the table vs small table",
        ratio(
            (GROWTH, "growth_history_claim_query_p99_ms"),
            (GROWTH, "growth_small_claim_query_p99_ms"),
            " ms",
            ".2f",
        ),
        "<=",
        1.2,
    ),
    Target(
        "drain with a 1,000,000 ready backlog vs small table",
        ratio((GROWTH, "growth_backlog_drain_per_s"), (GROWTH, "growth_small_drain_per_s")),
        ">=",
        0.8,
    ),
    Target(
        "claim p99 with a 1,000,000 ready backlog vs small table",
        ratio(
            (GROWTH, "growth_backlog_claim_query_p99_ms"),
            (GROWTH, "growth_small_claim_query_p99_ms"),
            " ms",
            ".2f",
        ),
        "<=",
        1.2,
    ),
    Target(
        "worker RSS after 10 min vs after 1 min",
        ratio((MEMORY, "memory_rss_end_mb"), (MEMORY, "memory_rss_1min_mb"), " MB", ",.1f"),
        "<=",
        1.1,
    ),
)
