"""``sluice worker --processes N``: several worker processes on one host, one command.

One Python process drives one core at most; a host with more cores runs more worker
processes. Each is a whole worker (its own dispatcher, store connections and lease
renewals, sharing nothing but the database), exactly as if started N times by hand; this
module only starts them, passes SIGTERM/SIGINT on, and waits for all of them. When one
ends with an error the others are stopped too, so a supervisor sees one failed unit
rather than a host running short without saying so.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import signal
from collections.abc import Callable
from multiprocessing.connection import wait
from types import FrameType
from typing import Any

import typer

from sluice.config import Settings

__all__ = ["WorkerMain", "run_worker_processes"]

#: One worker process's body: ``main(settings, until_idle=...)``.
WorkerMain = Callable[..., None]


def _settings_of(settings: Settings, index: int) -> Settings:
    """Process ``index``'s settings: its own metrics port (the next ones up), if any."""
    if not settings.metrics_port:
        return settings
    return dataclasses.replace(settings, metrics_port=settings.metrics_port + index)


def _one_worker(main: WorkerMain, settings: Settings, until_idle: bool) -> None:
    """The body of one child process: ``main``, the worker ``sluice worker`` runs, its
    error said on stderr and its exit code the process's."""
    try:
        main(settings, until_idle=until_idle)
    except typer.Exit as exc:
        raise SystemExit(exc.exit_code) from None


def run_worker_processes(
    main: WorkerMain, settings: Settings, count: int, *, until_idle: bool
) -> int:
    """Run ``main`` (one whole worker, a module-level function: each process imports it)
    in ``count`` processes until they end (``until_idle``) or SIGTERM/SIGINT stops them;
    the exit code: 0 when every one ended well, else 1."""
    ctx = mp.get_context("spawn")  # a fresh interpreter each: no event loop or pool forked
    procs = [
        ctx.Process(
            target=_one_worker,
            args=(main, _settings_of(settings, i), until_idle),
            name=f"sluice-worker-{i + 1}",
        )
        for i in range(count)
    ]

    def stop_all(signum: int = signal.SIGTERM, frame: FrameType | None = None) -> None:
        for p in procs:
            if p.pid is not None and p.exitcode is None:
                os.kill(p.pid, signal.SIGTERM)  # each stops as `sluice worker` does

    previous: dict[int, Any] = {
        sig: signal.signal(sig, stop_all) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        for p in procs:
            p.start()
        running = {p.sentinel: p for p in procs}
        while running:
            for sentinel in wait(list(running)):
                ended = running.pop(sentinel)  # type: ignore[arg-type]  # wait() gives back the ints it was given
                ended.join()
                if ended.exitcode:
                    stop_all()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0 if all(p.exitcode == 0 for p in procs) else 1
