"""What the simulator's Twilio status callbacks cost a drain through it.

``python -m bench.simulator_callbacks`` (``--n``, default 2,000; ``--repeat``, 3;
``--modes``, ``on,off``).

``sluice simulator`` runs in its own process, a bare receiver for the status callbacks
in another. In this process a worker (assembled as ``sluice worker`` assembles it, real
``twilio`` adapter, default concurrency, SQLite store) drains ``--n`` SMS for three
tenants through the simulator's Twilio API. Mode ``on`` sets
``SLUICE_STATUS_CALLBACK_URL`` to the receiver, so the simulator posts one ``delivered``
callback per message while the worker drains; ``off`` sets none. Per mode it prints the
drain time (worker start until nothing is ready and every outcome is written), the rate,
and the time until every callback was in at the receiver or counted failed by the simulator
(and the most that failed in one repetition). Each repetition starts from a new
database and a reset simulator; modes alternate within a repetition.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import multiprocessing as mp
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import httpx

from bench.sluice_bench import _Quiet
from sluice import heap
from sluice.config import Settings
from sluice.model import NewMessage
from sluice.ops.connections import connection_add
from sluice.providers import http_client
from sluice.secrets import SecretBox, generate_key
from sluice.store import create_store
from sluice.worker.assemble import assemble_dispatcher

ACCOUNT, TOKEN = "AC" + "b" * 32, "bench-token"
TENANTS = ("acme", "northern", "globex")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _receiver(port: int) -> None:
    """A bare callback receiver: counts POSTs, answers 200; ``GET /count`` reads it."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    seen = {"n": 0}

    async def post(request: Request) -> Response:
        await request.body()
        seen["n"] += 1
        return Response(status_code=200)

    async def count(request: Request) -> Response:
        return JSONResponse(seen)

    async def reset(request: Request) -> Response:
        seen["n"] = 0
        return JSONResponse(seen)

    app = Starlette(
        routes=[
            Route("/cb", post, methods=["POST"]),
            Route("/count", count, methods=["GET"]),
            Route("/count", reset, methods=["DELETE"]),
        ]
    )
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def _wait_up(url: str) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            httpx.get(url, timeout=1).raise_for_status()
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not come up") from None
            time.sleep(0.05)


async def _drain(sim: str, callback: str | None, n: int) -> float:
    """Enqueue ``n`` SMS, drain them with one worker; the drain's seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        key = generate_key()
        settings = Settings(
            database_url=url,
            secret_key=key,
            twilio_base_url=f"{sim}/twilio",
            status_callback_url=callback,
            log_level="warning",
        )
        store = create_store(url, settings)
        await store.open()  # type: ignore[attr-defined]
        try:
            await store.migrate()
            for tenant in TENANTS:
                await connection_add(
                    store, SecretBox(key), tenant=tenant, provider="twilio",
                    secrets={"account_sid": ACCOUNT, "auth_token": TOKEN, "from": "+15550100"},
                    scopes=[], actor="bench",
                )  # fmt: skip
            await store.enqueue_many(
                [
                    NewMessage(
                        tenant=TENANTS[i % 3],
                        channel="sms",
                        provider="twilio",
                        recipient=f"+1555{i:07d}",
                        payload={"body": f"bench {i}"},
                    )
                    for i in range(n)
                ]
            )
            async with http_client(settings) as client:
                d = await assemble_dispatcher(store, settings, client, logger=_Quiet())
                heap.settle()  # as `sluice worker` does once started
                t = time.perf_counter()
                stats = await d.run(until_idle=True)
                seconds = time.perf_counter() - t
            if stats.sent != n:
                raise RuntimeError(f"drain incomplete: sent {stats.sent} of {n}")
            return seconds
        finally:
            await store.close()


def run_mode(sim: str, receiver: str, mode: str, n: int) -> dict[str, Any]:
    httpx.delete(f"{sim}/_sim/effects", timeout=10).raise_for_status()
    httpx.delete(f"{receiver}/count", timeout=10).raise_for_status()
    callback = f"{receiver}/cb" if mode == "on" else None
    started = time.perf_counter()
    seconds = asyncio.run(_drain(sim, callback, n))
    effects = httpx.get(f"{sim}/_sim/effects", timeout=10).json()
    if effects["unique"] != n:
        raise RuntimeError(f"the simulator recorded {effects['unique']} of {n}")
    callbacks_done, received, failed = None, 0, 0
    if mode == "on":
        # Every callback is either in at the receiver or counted failed by the simulator.
        deadline = time.monotonic() + 300
        while True:
            counters = httpx.get(f"{sim}/_sim/effects?by_provider=1", timeout=10).json()
            failed = counters["by_provider"]["twilio"]["callbacks_failed"]
            received = httpx.get(f"{receiver}/count", timeout=10).json()["n"]
            if received + failed >= n:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"callbacks: {received} in, {failed} failed, of {n}")
            time.sleep(0.05)
        callbacks_done = time.perf_counter() - started
    return {
        "seconds": seconds,
        "per_s": n / seconds,
        "callbacks_s": callbacks_done,
        "callbacks_failed": failed,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.simulator_callbacks", description=__doc__)
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--modes", default="on,off")
    args = p.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or set(modes) - {"on", "off"}:
        p.error("--modes takes on, off or both")
    secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    sim_port, rx_port = _free_port(), _free_port()
    sim = subprocess.Popen(
        [sys.executable, "-m", "sluice.cli", "simulator", "--port", str(sim_port)],
        env={**os.environ, "SLUICE_WEBHOOK_SECRET": secret},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    rx = mp.get_context("spawn").Process(target=_receiver, args=(rx_port,), daemon=True)
    rx.start()
    sim_url, rx_url = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{rx_port}"
    results: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    try:
        _wait_up(f"{sim_url}/_sim/health")
        _wait_up(f"{rx_url}/count")
        httpx.post(
            f"{sim_url}/_sim/credentials",
            json={"provider": "twilio", "account_sid": ACCOUNT, "auth_token": TOKEN},
            timeout=10,
        ).raise_for_status()
        for r in range(args.repeat):
            order = modes if r % 2 == 0 else modes[::-1]
            for mode in order:
                got = run_mode(sim_url, rx_url, mode, args.n)
                results[mode].append(got)
                print(
                    f"  repetition {r + 1}, callbacks {mode}: drain {got['seconds']:.2f} s, "
                    f"callbacks failed {got['callbacks_failed']}",
                    flush=True,
                )
    finally:
        sim.terminate()
        sim.wait(10)
        rx.terminate()
        rx.join(10)
    print(f"\n{args.n:,} SMS through the simulator's Twilio API, median of {args.repeat}:")
    print("| callbacks | drain s | msgs/s | every callback in or failed, s | failed |")
    print("|---|---:|---:|---:|---:|")
    for mode in modes:
        rows = results[mode]
        seconds = statistics.median(r["seconds"] for r in rows)
        cb = [r["callbacks_s"] for r in rows if r["callbacks_s"] is not None]
        cb_text = f"{statistics.median(cb):.2f}" if cb else "—"
        failed = max(r["callbacks_failed"] for r in rows) if cb else "—"
        print(f"| {mode} | {seconds:.2f} | {args.n / seconds:,.0f} | {cb_text} | {failed} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
