"""How much CPU did *other* work on the machine use while a part ran? (Linux /proc.)

Other processes on a 2-core box skew every figure, so each repetition records the CPU
seconds consumed by processes that are neither this process, its descendants, nor the
servers under test (postgres, redis-server). Processes that start and exit entirely
inside the window are missed, so this is a lower bound, good enough to flag a noisy run.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path

SERVERS = ("postgres", "redis-server")
#: PostgreSQL backends serving databases with this prefix are ours; other client backends
#: (someone else's tests on the same server) count as foreign.
OUR_DB_PREFIX = "sluice_bench"
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _pg_backend_db(pid: str) -> str | None:
    """Database of a PostgreSQL client backend (from its process title), else None."""
    try:
        title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return None
    parts = title.split()
    if not parts or parts[0] != "postgres:":
        return None
    # Debian names the cluster first: "postgres: 15/main: <user> <db> <host>(<port>) <state>";
    # background processes have no database: "postgres: 15/main: walwriter".
    rest = parts[2:] if len(parts) > 1 and parts[1].endswith(":") else parts[1:]
    if len(rest) >= 3 and ("(" in rest[2] or rest[2] == "[local]"):
        return rest[1]
    return None


def _snapshot() -> dict[int, tuple[int, str, float]]:
    """pid -> (ppid, comm, cpu seconds); comm of foreign PostgreSQL backends is "pg-other"."""
    procs: dict[int, tuple[int, str, float]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            raw = (d / "stat").read_text()
        except OSError:
            continue
        comm = raw[raw.index("(") + 1 : raw.rindex(")")]
        rest = raw[raw.rindex(")") + 2 :].split()
        ppid = int(rest[1])
        cpu = (int(rest[11]) + int(rest[12])) / _TICKS  # utime + stime
        if comm == "postgres":
            db = _pg_backend_db(d.name)
            if db is not None and not db.startswith(OUR_DB_PREFIX):
                comm = "pg-other"
        procs[int(d.name)] = (ppid, comm, cpu)
    return procs


def _foreign(procs: dict[int, tuple[int, str, float]]) -> dict[int, tuple[str, float]]:
    me = os.getpid()
    ours = {me}
    changed = True
    while changed:
        changed = False
        for pid, (ppid, _, _) in procs.items():
            if ppid in ours and pid not in ours:
                ours.add(pid)
                changed = True
    return {
        pid: (comm, cpu)
        for pid, (_, comm, cpu) in procs.items()
        if pid not in ours and not comm.startswith(SERVERS)
    }


class ForeignCpu:
    """``with ForeignCpu() as f: ...`` then ``f.seconds``: other processes' CPU time.

    /proc is sampled every ``interval`` seconds from a background thread, so foreign
    processes living longer than that are caught even if they exit inside the window.
    """

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.seconds = 0.0
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._names: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self, initial: bool = False) -> None:
        for pid, (comm, cpu) in _foreign(_snapshot()).items():
            self._names[pid] = comm
            if pid not in self._first:
                self._first[pid] = cpu if initial else 0.0
            self._last[pid] = cpu

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(OSError, ValueError, IndexError):
                self._sample()

    def __enter__(self) -> ForeignCpu:
        try:
            self._sample(initial=True)
        except (OSError, ValueError, IndexError):
            return self  # no /proc: report 0
        self._thread = threading.Thread(target=self._loop, name="foreign-cpu", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        with contextlib.suppress(OSError, ValueError, IndexError):
            self._sample()
        self.seconds = sum(max(0.0, self._last[p] - self._first[p]) for p in self._last)

    def top(self, k: int = 3) -> list[tuple[str, float]]:
        """The ``k`` foreign process names that used the most CPU seconds (summed by name)."""
        by_name: dict[str, float] = {}
        for pid, last in self._last.items():
            name = self._names.get(pid, "?")
            by_name[name] = by_name.get(name, 0.0) + max(0.0, last - self._first[pid])
        ranked = sorted(by_name.items(), key=lambda kv: -kv[1])
        return [(n, round(s, 2)) for n, s in ranked[:k] if s > 0]


def foreign_share(seconds: float) -> float:
    """Share of all CPUs used by foreign processes over a ``seconds`` window."""
    with ForeignCpu() as f:
        time.sleep(seconds)
    return f.seconds / (seconds * (os.cpu_count() or 1))


def wait_quiet(limit: float, threshold: float, probe: float = 0.5) -> tuple[float, float]:
    """Wait (at most ``limit`` s) until foreign processes use < ``threshold`` of the CPU.

    Returns (seconds waited, last measured share).
    """
    t0 = time.monotonic()
    share = foreign_share(probe)
    while share >= threshold and time.monotonic() - t0 < limit:
        share = foreign_share(probe)
    return time.monotonic() - t0, share
