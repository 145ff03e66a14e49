"""Benchmark harness: run every selected part ``--repeat`` times, report medians.

Each part is a function ``(Options) -> dict`` of figures. Repetitions are interleaved
(rep 1 of every part, then rep 2, ...) so slow drift of the machine hits all systems alike.
A part raising ``NotImplementedError`` is shown as "n/a"; any other failure is printed and
the run goes on with the other parts (that part's later repetitions are skipped).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.metadata
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import ingress, sluice_bench, targets
from bench.pg import fresh_db
from bench.sysload import ForeignCpu, wait_quiet

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_OUT = BENCH_DIR / "results" / "latest.json"
SLUICE_DB = "sluice_bench"
#: Warn when unrelated processes took more than this share of the CPU during a repetition.
BUSY_SHARE = 0.05


@dataclass(frozen=True)
class Options:
    n: int
    repeat: int
    latency_samples: int
    http_n: int
    procrastinate_concurrency: int
    celery_concurrency: int
    celery_pool: str
    timeout: float
    wait_quiet: float
    ingress_rates: tuple[int, ...] = (500, 1_000, 1_500, 2_000)
    ingress_seconds: float = 5.0
    ingress_processes: tuple[int, ...] = (1,)
    growth_rows: int = 1_000_000
    memory_seconds: float = 600.0
    quick: bool = False


@dataclass(frozen=True)
class Part:
    key: str  # name used by --only
    system: str
    store: str
    run: Callable[[Options], dict[str, Any]]
    required: tuple[str, ...]
    #: Left out of a ``--quick`` run unless ``--only`` names it.
    slow: bool = False
    #: Run in the first repetition only: it repeats its own measurements inside (the
    #: growth part times 100 claims per case), and three runs of it would take the
    #: default run past 15 minutes.
    once: bool = False


@dataclass
class Outcome:
    status: str = "pending"  # ok | n/a | error | partial | skipped
    runs: list[dict[str, Any]] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    #: Share of the machine's CPU used by unrelated processes during each repetition.
    foreign_cpu: list[float] = field(default_factory=list)
    #: The unrelated processes that used the most CPU seconds, per repetition.
    foreign_top: list[list[tuple[str, float]]] = field(default_factory=list)
    #: The 1-minute load average at the end of each repetition (2 cores on the dev box).
    load: list[float] = field(default_factory=list)
    error: str | None = None

    def median(self) -> dict[str, Any]:
        if not self.runs:
            return {}
        keys = [k for k in self.runs[0] if all(k in r for r in self.runs)]
        out: dict[str, Any] = {}
        for k in keys:
            vals = [r[k] for r in self.runs]
            if all(isinstance(v, int | float) and not isinstance(v, bool) for v in vals):
                out[k] = statistics.median(vals)
            elif all(v == vals[0] for v in vals):
                out[k] = vals[0]
        return out


# --- parts ---------------------------------------------------------------------------


def _sluice_pg(o: Options) -> dict[str, Any]:
    with fresh_db(SLUICE_DB) as url:
        return sluice_bench.sluice_drain(url, o.n)


def _sluice_pg_nometrics(o: Options) -> dict[str, Any]:
    with fresh_db(SLUICE_DB) as url:
        return sluice_bench.sluice_drain(url, o.n, metrics=False)


def _sluice_sqlite(o: Options) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp:
        return sluice_bench.sluice_drain(f"sqlite:///{tmp}/bench.db", o.n)


def _procrastinate(o: Options) -> dict[str, Any]:
    from bench import peers_procrastinate

    return peers_procrastinate.run(o.n, concurrency=o.procrastinate_concurrency, timeout=o.timeout)


def _celery(o: Options) -> dict[str, Any]:
    from bench import peers_celery

    return peers_celery.run(
        o.n, concurrency=o.celery_concurrency, pool=o.celery_pool, timeout=o.timeout
    )


def _latency(o: Options) -> dict[str, Any]:
    with fresh_db(SLUICE_DB) as url:
        return sluice_bench.sluice_idle_latency(url, o.latency_samples)


def _http(o: Options) -> dict[str, Any]:
    return sluice_bench.sluice_http(o.http_n)


def _ingress(o: Options) -> dict[str, Any]:
    return ingress.run(o.ingress_rates, o.ingress_seconds, o.ingress_processes)


def _growth(o: Options) -> dict[str, Any]:
    from bench import growth

    return growth.run(o.n, o.growth_rows)


def _memory(o: Options) -> dict[str, Any]:
    from bench import memory

    return memory.run(o.memory_seconds)


def _sluice_pg_2(o: Options) -> dict[str, Any]:
    with fresh_db(SLUICE_DB) as url:
        return sluice_bench.sluice_drain(url, o.n, processes=2)


def _loop_pg(o: Options, processes: int = 1) -> dict[str, Any]:
    from bench import loop

    with fresh_db(f"{SLUICE_DB}_loop") as url:
        return loop.loop_drain(url, o.n, batch=sluice_bench.DRAIN_BATCH, processes=processes)


def _loop_pg_2(o: Options) -> dict[str, Any]:
    return _loop_pg(o, processes=2)


DRAIN_KEYS = ("enqueue_batch_per_s", "enqueue_single_per_s", "drain_per_s")
GROWTH_KEYS = (
    "growth_history_drain_ratio",
    "growth_backlog_drain_ratio",
    "growth_history_claim_p99_ratio",
    "growth_backlog_claim_p99_ratio",
)
MEMORY_KEYS = ("memory_rss_1min_mb", "memory_rss_end_mb", "memory_rss_ratio")

PARTS: tuple[Part, ...] = (
    Part("sluice-pg", "Sluice", "PostgreSQL", _sluice_pg, DRAIN_KEYS),
    Part("sluice-sqlite", "Sluice", "SQLite", _sluice_sqlite, DRAIN_KEYS),
    Part(
        "sluice-pg-nometrics",
        "Sluice, no event metrics",
        "PostgreSQL",
        _sluice_pg_nometrics,
        DRAIN_KEYS,
    ),
    Part("procrastinate", "procrastinate", "PostgreSQL", _procrastinate, DRAIN_KEYS, slow=True),
    Part("celery", "Celery", "Redis broker", _celery, DRAIN_KEYS, slow=True),
    Part("latency", "Sluice idle latency", "PostgreSQL", _latency, ("p50_ms", "p99_ms")),
    Part("http", "Sluice HTTP webhooks", "—", _http, ("per_s",)),
    Part("ingress", "Sluice ingress", "PostgreSQL", _ingress, ("p99_ms", "per_s")),
    Part("growth", "Sluice growth", "PostgreSQL", _growth, GROWTH_KEYS, slow=True, once=True),
    Part("memory", "Sluice worker memory", "PostgreSQL", _memory, MEMORY_KEYS),
    Part("loop-pg", "bare SKIP LOCKED loop", "PostgreSQL", _loop_pg, ("drain_per_s",)),
    Part("sluice-pg-2", "Sluice, 2 worker processes", "PostgreSQL", _sluice_pg_2, DRAIN_KEYS),
    Part(
        "loop-pg-2",
        "bare SKIP LOCKED loop, 2 processes",
        "PostgreSQL",
        _loop_pg_2,
        ("drain_per_s",),
    ),
)
PART_KEYS = tuple(p.key for p in PARTS)
#: Parts that run only when asked for (--memory, or by name in --only): they take long.
OPT_IN = ("memory",)


# --- running -------------------------------------------------------------------------


class PartTimeout(BaseException):
    """A part exceeded --timeout (a BaseException, so ``except Exception`` can't eat it)."""


@contextlib.contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """Raise PartTimeout in the main thread after ``seconds`` (SIGALRM)."""

    def on_alarm(signum: int, frame: Any) -> None:
        raise PartTimeout(f"part exceeded --timeout {seconds:g}s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _extra_time(part: Part, o: Options) -> float:
    """The memory part runs for --memory-seconds on top of what --timeout allows."""
    return o.memory_seconds if part.key == "memory" else 0.0


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _check_figures(part: Part, figures: Any) -> dict[str, Any]:
    if not isinstance(figures, dict):
        raise TypeError(f"{part.key} returned {type(figures).__name__}, expected dict")
    missing = [k for k in part.required if k not in figures]
    if missing:
        raise KeyError(f"{part.key} result lacks keys {missing} (got {sorted(figures)})")
    for k in part.required:
        v = figures[k]
        if v is not None and not isinstance(v, int | float):
            raise TypeError(f"{part.key}: {k}={v!r} is not a number")
    return figures


#: More figures than this in one repetition (the ingress part has ~90) are logged as the
#: part's required ones only; all of them are in the JSON.
BRIEF_MAX = 12


def _brief(figures: dict[str, Any], required: tuple[str, ...] = ()) -> str:
    numeric = {
        k: v for k, v in figures.items() if isinstance(v, int | float) and not isinstance(v, bool)
    }
    more = ""
    if len(numeric) > BRIEF_MAX and required:
        more = f" (+{len(numeric) - len(required)} more figures in the JSON)"
        numeric = {k: v for k, v in numeric.items() if k in required}
    shown = [f"{k}={v:,.1f}" if isinstance(v, float) else f"{k}={v:,}" for k, v in numeric.items()]
    return " ".join(shown) + more


def run_parts(parts: list[Part], o: Options) -> dict[str, Outcome]:
    outcomes = {p.key: Outcome() for p in parts}
    for rep in range(1, o.repeat + 1):
        for part in parts:
            out = outcomes[part.key]
            if out.status in ("n/a", "error", "partial") or (part.once and out.runs):
                continue
            if o.wait_quiet > 0:
                waited, share = wait_quiet(o.wait_quiet, BUSY_SHARE)
                if waited >= 1:
                    _log(
                        f"[rep {rep}/{o.repeat}] waited {waited:.0f}s for other processes to "
                        f"quieten (now {share:.0%} of the CPU)"
                    )
            _log(f"[rep {rep}/{o.repeat}] {part.key} ...")
            t0 = time.perf_counter()
            foreign = ForeignCpu()
            try:
                with foreign, _deadline(o.timeout + _extra_time(part, o)):
                    figures = _check_figures(part, part.run(o))
            except NotImplementedError as exc:
                out.status, out.error = "n/a", str(exc) or "not implemented"
                _log(f"[rep {rep}/{o.repeat}] {part.key}: n/a ({out.error})")
                continue
            except (Exception, PartTimeout) as exc:
                out.status = "partial" if out.runs else "error"
                out.error = f"{type(exc).__name__}: {exc}"
                _log(f"[rep {rep}/{o.repeat}] {part.key}: FAILED\n{traceback.format_exc()}")
                continue
            elapsed = time.perf_counter() - t0
            out.runs.append(figures)
            share = foreign.seconds / (elapsed * (os.cpu_count() or 1))
            out.seconds.append(elapsed)
            out.foreign_cpu.append(share)
            out.foreign_top.append(foreign.top())
            out.load.append(os.getloadavg()[0])
            out.status = "ok"
            busy = ""
            if share > BUSY_SHARE:
                busy = ": " + ", ".join(f"{name} {sec:.1f}s" for name, sec in foreign.top())
            brief = _brief(figures, part.required)
            _log(
                f"[rep {rep}/{o.repeat}] {part.key}: {brief} ({elapsed:.1f}s, load "
                f"{out.load[-1]:.2f}, other processes used {share:.0%} of the CPU{busy})"
            )
    return outcomes


# --- reporting -----------------------------------------------------------------------

#: Sluice's drain against the bare loop's (issue 17): (name, numerator part, denominator
#: part, the ratio it should reach). Each is taken per repetition, so both sides of a
#: ratio ran minutes apart at most, and the median of those is reported.
DRAIN_RATIOS = (
    ("Sluice drain / loop drain, 1 process", "sluice-pg", "loop-pg", 0.5),
    ("Sluice drain / loop drain, 2 processes", "sluice-pg-2", "loop-pg-2", 0.5),
    ("Sluice drain, 2 processes / 1 process", "sluice-pg-2", "sluice-pg", 1.6),
    ("loop drain, 2 processes / 1 process", "loop-pg-2", "loop-pg", None),
)


def drain_ratios(outcomes: dict[str, Outcome]) -> list[dict[str, Any]]:
    """The ratios of ``DRAIN_RATIOS`` whose two parts both ran."""
    out = []
    for name, top, bottom, goal in DRAIN_RATIOS:
        a, b = outcomes.get(top), outcomes.get(bottom)
        if a is None or b is None or not a.runs or not b.runs:
            continue
        each = [x["drain_per_s"] / y["drain_per_s"] for x, y in zip(a.runs, b.runs, strict=False)]
        out.append({"ratio": name, "median": statistics.median(each), "runs": each, "goal": goal})
    return out


def _num(v: Any, fmt: str = ",.0f") -> str:
    if v is None:
        return "—"
    return format(v, fmt)


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def build_report(
    parts: list[Part], outcomes: dict[str, Outcome], o: Options
) -> tuple[str, list[dict[str, Any]]]:
    """Markdown tables (figures, then every target of ``bench.targets``) + the checks."""
    med = {k: out.median() for k, out in outcomes.items()}
    by_key = {p.key: p for p in parts}

    def fig(key: str, name: str) -> Any:
        return med.get(key, {}).get(name)

    def cell(key: str, name: str, fmt: str = ",.0f") -> str:
        out = outcomes.get(key)
        if out is None:
            return "not run"
        if out.status == "n/a":
            return "n/a"
        if not out.runs:
            return "error"
        text = _num(fig(key, name), fmt)
        if len(out.runs) < o.repeat:
            text += f" ({len(out.runs)}/{o.repeat} runs)"
        return text

    pq_drain = fig("procrastinate", "drain_per_s")
    pq_conc = o.procrastinate_concurrency
    rows = []
    order = [
        ("sluice-pg", "Sluice", "PostgreSQL"),
        ("sluice-sqlite", "Sluice", "SQLite"),
        ("sluice-pg-nometrics", "Sluice, no event metrics", "PostgreSQL"),
        ("procrastinate", "procrastinate", f"PostgreSQL, concurrency {pq_conc}"),
        ("celery", "Celery", f"Redis broker, {o.celery_pool} x{o.celery_concurrency}"),
    ]
    for key, system, store in order:
        if key not in by_key:
            continue
        drain = fig(key, "drain_per_s")
        ratio = drain / pq_drain if isinstance(drain, int | float) and pq_drain else None
        rows.append(
            [
                system,
                store,
                f"{o.n:,}",
                cell(key, "enqueue_batch_per_s"),
                cell(key, "enqueue_single_per_s"),
                cell(key, "drain_per_s"),
                "n/a" if ratio is None else f"{ratio:.2f}x",
            ]
        )
    if "sluice-pg" in by_key:
        rows.append(
            [
                "bare psycopg (reference)",
                "PostgreSQL, same table shape",
                "",
                cell("sluice-pg", "bare_copy_per_s") + " (one COPY)",
                cell("sluice-pg", "bare_insert_per_s") + " (INSERT + commit)",
                "",
                "",
            ]
        )
    tables = []
    if rows:
        header = ["system", "store", "N", "enqueue msgs/s (batch)", "enqueue msgs/s (single)"]
        header += ["drain msgs/s", "ratio vs procrastinate (drain)"]
        tables.append(_table(header, rows))

    rows2 = []
    if "latency" in by_key:
        for name, label in (
            ("p50_ms", "idle latency p50"),
            ("p99_ms", "idle latency p99"),
            ("back_to_back_p50_ms", "back-to-back latency p50"),
            ("back_to_back_p99_ms", "back-to-back latency p99"),
        ):
            rows2.append(
                [
                    f"Sluice {label} (PostgreSQL, {o.latency_samples:,} samples)",
                    cell("latency", name, ",.2f") + " ms",
                ]
            )
        rows2.append(
            [
                "back to back: single enqueues a second (one producer, each committed "
                "once the last was delivered)",
                cell("latency", "back_to_back_per_s", ",.0f") + "/s",
            ]
        )
        rate = f"{sluice_bench.PACED_RATE:,.0f}/s"
        for name, label in (("paced_p50_ms", "p50"), ("paced_p99_ms", "p99")):
            rows2.append(
                [
                    f"Sluice latency {label}, single enqueues paced at {rate} "
                    f"({sluice_bench.PACED_PRODUCERS} producers, "
                    f"{sluice_bench.PACED_SECONDS:g} s; achieved "
                    + cell("latency", "paced_per_s", ",.0f")
                    + "/s)",
                    cell("latency", name, ",.2f") + " ms",
                ]
            )
    if "http" in by_key:
        rows2.append([f"Sluice HTTP webhooks/s (N = {o.http_n:,})", cell("http", "per_s") + "/s"])
        rows2.append(
            [
                "bare client loop, same library, concurrency and signing (reference)",
                cell("http", "bare_per_s") + "/s",
            ]
        )
        rows2.append(
            ["simulator CPU share during Sluice's delivery", cell("http", "sim_cpu_share", ".0%")]
        )
    if rows2:
        tables.append(_table(["metric", "measured"], rows2))
    if "ingress" in by_key and outcomes["ingress"].runs:
        tables.append(_ingress_table(med.get("ingress", {}), o))
    if "growth" in by_key and outcomes["growth"].runs:
        from bench import growth

        tables.append(growth.table(med["growth"]))
    if "memory" in by_key and outcomes["memory"].runs:
        from bench import memory

        tables.append(memory.table(med["memory"]))
    checks = targets.evaluate(med)
    tables.append(
        "Targets\n\n"
        + _table(
            ["target", "measured", "bound", "result"],
            [[c["target"], c["shown"], c["bound"], c["result"]] for c in checks],
        )
    )
    return "\n\n".join(tables), checks


def _ingress_table(m: dict[str, Any], o: Options) -> str:
    """One row per (server, processes, target rate); Sluice's ratios against the bare app."""

    def f(key: str, fmt: str) -> str:
        return _num(m.get(key), fmt)

    rows = []
    for procs in o.ingress_processes:
        for rate in sorted({*o.ingress_rates, ingress.TARGET_RATE}):
            for server, label in (("bare", "bare Starlette"), ("sluice", "Sluice")):
                k = f"{server}_p{procs}_r{rate}"
                ratio = server == "sluice"
                rows.append(
                    [
                        label,
                        str(procs),
                        f"{rate:,}",
                        f(f"{k}_per_s", ",.0f"),
                        f(f"{k}_p50_ms", ",.2f"),
                        f(f"{k}_p99_ms", ",.2f"),
                        f(f"{k}_max_ms", ",.1f"),
                        f(f"{k}_errors", ",.0f"),
                        f(f"{k}_cpu_ms_per_req", ".3f"),
                        f(f"{k}_server_cpu_ms_per_req", ".3f"),
                        f(f"{k}_db_cpu_ms_per_req", ".3f"),
                        f(f"{k}_p99_vs_bare", ".1f") + "x" if ratio else "—",
                        f(f"{k}_per_s_vs_bare", ".2f") + "x" if ratio else "—",
                    ]
                )
    return _table(
        [
            "ingress server",
            "processes",
            "target req/s",
            "achieved req/s",
            "p50 ms",
            "p99 ms",
            "max ms",
            "non-2xx",
            "CPU ms/req",
            "of which server",
            "of which PostgreSQL",
            "p99 vs bare",
            "req/s vs bare",
        ],
        rows,
    )


def _versions() -> dict[str, Any]:
    v: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }
    for dist in ("sluice", "procrastinate", "celery", "kombu", "redis", "psycopg"):
        try:
            v[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            v[dist] = None
    try:
        import psycopg

        from bench.pg import ADMIN_DSN

        with psycopg.connect(ADMIN_DSN, connect_timeout=5) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            v["postgresql"] = row[0] if row else None
    except Exception as exc:
        v["postgresql"] = f"unavailable: {exc}"
    try:
        import redis

        from bench.peers_celery import BROKER_URL

        v["redis_server"] = redis.Redis.from_url(BROKER_URL).info("server")["redis_version"]
    except Exception as exc:
        v["redis_server"] = f"unavailable: {exc}"
    try:
        v["git_commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=BENCH_DIR,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.strip()
    except Exception:
        v["git_commit"] = None
    return v


# --- CLI -----------------------------------------------------------------------------


def _parse_only(text: str) -> list[str]:
    keys = [k.strip() for k in text.split(",") if k.strip()]
    bad = [k for k in keys if k not in PART_KEYS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown part(s) {bad}; choose from {PART_KEYS}")
    return keys


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("expected positive integers")
    return values


#: Defaults of a full run, and of ``--quick`` (development: small N, one repetition,
#: short ingress, no slow parts unless ``--only`` names them). An option given on the
#: command line wins over both.
FULL = {
    "n": 20_000,
    "repeat": 3,
    "latency_samples": 200,
    "http_n": 5000,
    "ingress_rates": (500, 1_000, 1_500, 2_000),
    "ingress_seconds": 5.0,
    "ingress_processes": (1,),
    "wait_quiet": 10.0,
}
QUICK = {
    "n": 4_000,
    "repeat": 1,
    "latency_samples": 50,
    "http_n": 1_000,
    "ingress_rates": (1_000, 2_000),
    "ingress_seconds": 2.0,
    "ingress_processes": (1,),
    "wait_quiet": 5.0,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Sluice vs procrastinate vs Celery and bare references, side by side, "
        "medians of --repeat runs, every target with PASS/MISS.",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="development run: N 4000, 1 repetition, 50 latency samples, 1000 webhooks, "
        "ingress 2 s at 1000,2000 req/s with 1 process, slow parts (peers) only if --only "
        "names them",
    )
    p.add_argument("--n", type=int, help="messages per drain run (default 20000)")
    p.add_argument("--repeat", type=int, help="repetitions; median is reported (default 3)")
    p.add_argument(
        "--only",
        type=_parse_only,
        help="comma-separated parts: "
        + ",".join(PART_KEYS)
        + " (default: all but "
        + ",".join(OPT_IN)
        + ")",
    )
    p.add_argument("--latency-samples", type=int, help="idle-latency samples (default 200)")
    p.add_argument("--http-n", type=int, help="webhooks for the HTTP part (default 5000)")
    p.add_argument("--procrastinate-concurrency", type=int, default=10)
    p.add_argument("--celery-concurrency", type=int, default=2)
    p.add_argument("--celery-pool", default="prefork", choices=["prefork", "solo", "threads"])
    p.add_argument(
        "--ingress-rates",
        type=_ints,
        help="target request rates of the ingress part (default 500,1000,1500,2000; "
        "1000 is always included)",
    )
    p.add_argument("--ingress-seconds", type=float, help="seconds per ingress rate (default 5)")
    p.add_argument(
        "--ingress-processes",
        type=_ints,
        help="sluice serve --workers values to try (default 1; 1,2 adds ~45 s a repetition)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        help="seconds one repetition of one part may take (default 600)",
    )
    p.add_argument(
        "--wait-quiet",
        type=float,
        help="before each repetition, wait up to this many seconds until unrelated processes "
        f"use < {BUSY_SHARE * 100:.0f}%% of the CPU (0 = don't wait; default 10)",
    )
    p.add_argument(
        "--growth-rows",
        type=int,
        default=1_000_000,
        help="sent history / ready backlog rows of the growth part (default 1000000)",
    )
    p.add_argument(
        "--memory", action="store_true", help="also run the memory part (--memory-seconds long)"
    )
    p.add_argument(
        "--memory-seconds",
        type=float,
        default=600.0,
        help="how long the memory part's worker drains (default 600; shorter to develop)",
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    args = p.parse_args(argv)
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.only is None:
        args.only = [
            part.key for part in PARTS
            if not (args.quick and part.slow) and part.key not in OPT_IN
        ]  # fmt: skip
    if args.memory and "memory" not in args.only:
        args.only.append("memory")
    if args.n < 1 or args.repeat < 1:
        p.error("--n and --repeat must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    o = Options(
        n=args.n,
        repeat=args.repeat,
        latency_samples=args.latency_samples,
        http_n=args.http_n,
        procrastinate_concurrency=args.procrastinate_concurrency,
        celery_concurrency=args.celery_concurrency,
        celery_pool=args.celery_pool,
        timeout=args.timeout,
        wait_quiet=args.wait_quiet,
        ingress_rates=args.ingress_rates,
        ingress_seconds=args.ingress_seconds,
        ingress_processes=args.ingress_processes,
        growth_rows=args.growth_rows,
        memory_seconds=args.memory_seconds,
        quick=args.quick,
    )
    parts = [p for p in PARTS if p.key in args.only]
    started = dt.datetime.now(dt.UTC)
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    outcomes = run_parts(parts, o)
    total_s = time.perf_counter() - t0
    report, checks = build_report(parts, outcomes, o)
    versions = _versions()

    print()
    print(
        f"N = {o.n:,}, median of {o.repeat} run(s), same machine ({versions['cpus']} CPUs), "
        f"one run; total {total_s:.0f} s; load average {load_before[0]:.2f} before, "
        f"{os.getloadavg()[0]:.2f} after"
    )
    print()
    print(report)
    print()
    shares = [x for out in outcomes.values() for x in out.foreign_cpu]
    busy = [x for x in shares if x > BUSY_SHARE]
    if busy:
        print(
            f"WARNING: other processes used more than {BUSY_SHARE:.0%} of the CPU during "
            f"{len(busy)} of {len(shares)} repetitions (up to {max(busy):.0%}); "
            "figures are pessimistic and noisy."
        )
        print()
    ratios = drain_ratios(outcomes)
    for r in ratios:
        goal = "" if r["goal"] is None else f" (goal ≥ {r['goal']:g})"
        each = ", ".join(f"{x:.2f}" for x in r["runs"])
        print(f"{r['ratio']}: {r['median']:.2f}{goal}; per repetition {each}")
    if ratios:
        print()
    problems = {k: v.error for k, v in outcomes.items() if v.status in ("error", "partial")}
    if problems:
        print("Failed parts:")
        for k, err in problems.items():
            print(f"- {k}: {(err or '').splitlines()[0]}")
        print()

    result = {
        "started_at": started.isoformat(timespec="seconds"),
        "duration_s": total_s,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "options": vars(o),
        "versions": versions,
        "parts": {
            p.key: {
                "system": p.system,
                "store": p.store,
                "status": outcomes[p.key].status,
                "error": outcomes[p.key].error,
                "median": outcomes[p.key].median(),
                "runs": outcomes[p.key].runs,
                "run_seconds": outcomes[p.key].seconds,
                "foreign_cpu_share": outcomes[p.key].foreign_cpu,
                "foreign_cpu_top": outcomes[p.key].foreign_top,
                "load_average": outcomes[p.key].load,
            }
            for p in parts
        },
        "targets": checks,
        "drain_ratios": ratios,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"results written to {args.out}")
    return 1 if problems else 0
