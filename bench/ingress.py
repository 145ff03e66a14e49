"""Ingress part of the benchmark: signed Standard Webhooks into ``sluice serve``.

``sluice serve`` runs in its own process(es) on a fresh PostgreSQL database with one
``kind = "webhook"`` ingress source; no worker runs, so each event just lands in the
inbox (the write the 2xx waits for). A generator in another process posts pre-signed
requests, each with its own ``webhook-id``, at a fixed target rate (open loop: request
*k* is due at ``k / rate`` whatever earlier answers took), and records for each the
time from when it was due to its 2xx. Timing from the due time, not from when the
client got round to sending it, keeps a stalled server from hiding its own queue
(coordinated omission); the time from the actual send is kept as well
(``*_p99_send_ms``), and the difference shows any backlog in the client.

The reference is a bare app under the same uvicorn settings (uvloop, httptools, no
access log, same process count) that reads the body and answers 200 without verifying,
parsing or storing anything: what any Python ASGI webhook receiver costs at least.
Peers (procrastinate, Celery) have no webhook ingress to compare with.

Figures per (server, processes, rate), as flat keys for the harness's medians:
``{sluice|bare}_p{processes}_r{rate}_{per_s|p50_ms|p99_ms|max_ms|errors|p99_send_ms|
cpu_ms_per_req}``. ``cpu_ms_per_req`` is the CPU time of the server's processes plus
the PostgreSQL backends of the bench database, per request (``server_cpu_ms_per_req``
and ``db_cpu_ms_per_req`` apart). The headline keys
``p99_ms`` and ``per_s`` are Sluice's, one process, at 1,000 requests/s.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import json
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg

from bench.pg import fresh_db

__all__ = ["RATES", "SECONDS", "baseline_app", "run"]

#: Target request rates, each held for ``SECONDS``; 1,000/s is always measured (it has
#: a target of its own), 2,000/s has issue 17's.
RATES = (500, 1_000, 1_500, 2_000)
SECONDS = 5.0
#: Server process counts tried (``sluice serve --workers``).
PROCESSES = (1, 2)
#: Connections the generator keeps open (aiohttp's connector limit): far more than the
#: requests in flight when the server keeps up (rate x latency, ~15 at 1,500/s and 10 ms).
CONNECTIONS = 100
#: Unmeasured traffic first: opens connections, fills the server's pool and caches.
WARMUP_RATE, WARMUP_SECONDS = 200, 1.0
TARGET_RATE = 1_000
DB = "sluice_bench"
SOURCE = "bench"
ROOT = Path(__file__).resolve().parent.parent
_TICKS = os.sysconf("SC_CLK_TCK")


# --- the bare reference app -------------------------------------------------------


def baseline_app() -> Any:
    """A Starlette app that takes ``POST /v1/ingress/{name}``, reads the body and
    answers 200 with the same JSON shape as Sluice, doing nothing else."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def receive(request: Request) -> JSONResponse:
        await request.body()
        return JSONResponse({"received": 1, "duplicates": 0})

    return Starlette(routes=[Route("/v1/ingress/{name}", receive, methods=["POST"])])


# --- the generator (its own process) ------------------------------------------------


def _requests(secret: str, prefix: str, n: int) -> list[tuple[bytes, dict[str, str]]]:
    """``n`` signed requests as a provider would send them, each a distinct event."""
    from standardwebhooks.webhooks import Webhook

    signer = Webhook(secret)
    now = datetime.now(UTC)
    stamp = str(int(now.timestamp()))
    out = []
    for i in range(n):
        event_id = f"{prefix}-{i}"
        body = json.dumps(
            {"type": "order.created", "timestamp": now.isoformat(), "data": {"order": i}}
        )
        headers = {
            "content-type": "application/json",
            "webhook-id": event_id,
            "webhook-timestamp": stamp,
            "webhook-signature": signer.sign(event_id, now, body),
        }
        out.append((body.encode(), headers))
    return out


def _pct(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence."""
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def generate(url: str, secret: str, prefix: str, rate: float, seconds: float) -> dict[str, Any]:
    """Post ``rate * seconds`` signed webhooks at ``rate`` per second (open loop)."""
    import aiohttp
    import uvloop

    requests = _requests(secret, prefix, round(rate * seconds))
    n = len(requests)
    due = [0.0] * n
    sent = [0.0] * n
    done = [0.0] * n
    status = [0] * n  # 0: no answer (connection error or timeout)

    async def one(session: aiohttp.ClientSession, gate: asyncio.Semaphore, k: int) -> None:
        body, headers = requests[k]
        async with gate:
            sent[k] = time.perf_counter()
            try:
                async with session.post(url, data=body, headers=headers) as r:
                    await r.read()
                    status[k] = r.status
            except (aiohttp.ClientError, TimeoutError):
                pass
            done[k] = time.perf_counter()

    async def main() -> None:
        connector = aiohttp.TCPConnector(limit=CONNECTIONS)
        timeout = aiohttp.ClientTimeout(total=30)
        gate = asyncio.Semaphore(CONNECTIONS)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            tasks = []
            start = time.perf_counter() + 0.05
            for k in range(n):
                due[k] = start + k / rate
            k = 0
            while k < n:
                now = time.perf_counter()
                # Everything due by now goes out at once, so a late wake-up of this loop
                # does not lower the rate; the lateness is in the due-time latency.
                while k < n and due[k] <= now:
                    tasks.append(asyncio.ensure_future(one(session, gate, k)))
                    k += 1
                if k < n:
                    await asyncio.sleep(max(0.0, due[k] - time.perf_counter()))
            await asyncio.gather(*tasks)

    # The generator's own full collections (its 10,000 tasks and their responses) paused
    # it for 15-60 ms, and every answer that arrived meanwhile was timed that much late.
    gc.collect()
    gc.disable()
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main())
    finally:
        gc.enable()
    ok = [k for k in range(n) if 200 <= status[k] < 300]
    from_due = sorted((done[k] - due[k]) * 1000 for k in ok)
    from_send = sorted((done[k] - sent[k]) * 1000 for k in ok)
    span = max(done) - due[0]
    return {
        "sent": n,
        "ok": len(ok),
        "errors": n - len(ok),
        "per_s": len(ok) / span,
        "p50_ms": _pct(from_due, 0.50),
        "p99_ms": _pct(from_due, 0.99),
        "max_ms": from_due[-1] if from_due else float("nan"),
        "p99_send_ms": _pct(from_send, 0.99),
        "statuses": sorted({s for s in status if not 200 <= s < 300}),
    }


# --- servers ------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds) of a process, None once it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = raw[raw.rindex(")") + 2 :].split()
    return int(rest[1]), (int(rest[11]) + int(rest[12])) / _TICKS


def _cpu_seconds(root: int) -> tuple[float, float]:
    """CPU seconds of ``root`` and its descendants, and of the bench database's backends."""
    procs: dict[int, tuple[int, float]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and (st := _stat(int(d.name))) is not None:
            procs[int(d.name)] = st
    ours = {root}
    grew = True
    while grew:
        grew = False
        for pid, (ppid, _) in procs.items():
            if ppid in ours and pid not in ours:
                ours.add(pid)
                grew = True
    server = database = 0.0
    for pid, (_, cpu) in procs.items():
        if pid in ours:
            server += cpu
        elif _pg_database(pid) == DB:
            database += cpu
    return server, database


def _pg_database(pid: int) -> str | None:
    """The database a PostgreSQL backend serves, from its process title
    ``postgres: [<cluster>:] <user> <database> <host>(<port>) <state>``."""
    try:
        title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").split()
    except OSError:
        return None
    if not title or title[0] != b"postgres:":
        return None
    words = title[2:] if len(title) > 1 and title[1].endswith(b":") else title[1:]
    return words[1].decode(errors="replace") if len(words) >= 3 else None


@contextlib.contextmanager
def _server(argv: list[str], env: dict[str, str], log: Path) -> Iterator[tuple[str, int]]:
    """A server process until the block ends; yields (base URL, pid)."""
    port = _free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*argv, "--port", str(port)],
            env={**os.environ, **env},
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.post(f"{base}/v1/ingress/none", timeout=1).status_code < 500:
                        break
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{argv} did not start: {log.read_text()[-2000:]}")
                time.sleep(0.05)
            yield base, proc.pid
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def _measure(
    pool: ProcessPoolExecutor,
    base: str,
    pid: int,
    secret: str,
    label: str,
    rates: Sequence[int],
    seconds: float,
) -> dict[str, Any]:
    url = f"{base}/v1/ingress/{SOURCE}"
    warm = pool.submit(generate, url, secret, f"{label}-warm", WARMUP_RATE, WARMUP_SECONDS)
    got = warm.result()
    figures: dict[str, Any] = {"_ok": got["ok"], "_sent": got["sent"]}
    for rate in rates:
        time.sleep(0.5)
        server, database = _cpu_seconds(pid)
        got = pool.submit(generate, url, secret, f"{label}-r{rate}", rate, seconds).result()
        server_after, database_after = _cpu_seconds(pid)
        server, database = server_after - server, database_after - database
        figures["_ok"] += got["ok"]
        figures["_sent"] += got["sent"]
        key = f"{label}_r{rate}"
        for name in ("per_s", "p50_ms", "p99_ms", "max_ms", "errors", "p99_send_ms"):
            figures[f"{key}_{name}"] = got[name]
        figures[f"{key}_cpu_ms_per_req"] = (server + database) * 1000 / got["sent"]
        figures[f"{key}_server_cpu_ms_per_req"] = server * 1000 / got["sent"]
        figures[f"{key}_db_cpu_ms_per_req"] = database * 1000 / got["sent"]
        if got["statuses"]:
            figures[f"{key}_bad_statuses"] = ",".join(map(str, got["statuses"]))
    return figures


def _inbox_rows(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM sluice_inbox").fetchone()
    return int(row[0]) if row else 0


def run(
    rates: Sequence[int] = RATES,
    seconds: float = SECONDS,
    processes: Sequence[int] = PROCESSES,
) -> dict[str, Any]:
    """Measure the bare app and Sluice at every rate, for each server process count."""
    if TARGET_RATE not in rates:
        rates = sorted({*rates, TARGET_RATE})
    secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    out: dict[str, Any] = {}
    quiet = {"SLUICE_LOG_LEVEL": "warning"}
    with (
        tempfile.TemporaryDirectory(prefix="sluice-bench-ingress-") as tmp,
        ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool,
    ):
        config = Path(tmp) / "sluice.toml"
        config.write_text(
            f'[ingress.{SOURCE}]\nkind = "webhook"\nsecrets = ["{secret}"]\ntenant = "bench"\n'
        )
        for procs in processes:
            bare = [sys.executable, "-m", "uvicorn", "bench.ingress:baseline_app", "--factory",
                    "--host", "127.0.0.1", "--workers", str(procs), "--loop", "uvloop",
                    "--http", "httptools", "--no-access-log", "--log-level", "warning"]  # fmt: skip
            with _server(bare, quiet, Path(tmp) / f"bare-{procs}.log") as (base, pid):
                figures = _measure(pool, base, pid, secret, f"bare_p{procs}", rates, seconds)
            del figures["_ok"], figures["_sent"]
            out.update(figures)

            with fresh_db(DB) as url:
                migrated = subprocess.run(
                    [sys.executable, "-m", "sluice.cli", "migrate"],
                    env={**os.environ, "SLUICE_DATABASE_URL": url},
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if migrated.returncode != 0:
                    raise RuntimeError(f"sluice migrate failed: {migrated.stderr}")
                env = {**quiet, "SLUICE_DATABASE_URL": url, "SLUICE_CONFIG": str(config)}
                serve = [sys.executable, "-m", "sluice.cli", "serve", "--workers", str(procs)]
                with _server(serve, env, Path(tmp) / f"sluice-{procs}.log") as (base, pid):
                    figures = _measure(pool, base, pid, secret, f"sluice_p{procs}", rates, seconds)
                stored = _inbox_rows(url)
            # Every 2xx promised a stored event; a request that got no answer may be stored.
            answered, sent = figures.pop("_ok"), figures.pop("_sent")
            if not answered <= stored <= sent:
                raise RuntimeError(
                    f"{sent} events posted, {answered} answered 2xx, but the inbox has {stored}"
                )
            out.update(figures)
            out[f"sluice_p{procs}_stored"] = stored
    for procs in processes:
        for rate in rates:
            s, b = f"sluice_p{procs}_r{rate}", f"bare_p{procs}_r{rate}"
            out[f"{s}_p99_vs_bare"] = out[f"{s}_p99_ms"] / out[f"{b}_p99_ms"]
            out[f"{s}_per_s_vs_bare"] = out[f"{s}_per_s"] / out[f"{b}_per_s"]
    head = f"sluice_p{1 if 1 in processes else processes[0]}_r{TARGET_RATE}"
    out["p99_ms"] = out[f"{head}_p99_ms"]
    out["per_s"] = out[f"{head}_per_s"]
    return out
