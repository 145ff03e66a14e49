"""``sluice run``: the whole system in one process, for a first look and for demos.

SQLite file (migrated), the provider simulator on loopback, one worker (with the
ingress projector), the HTTP API with an operator key made for this run (revoked when
it ends), and a small demo load across three tenants, some of it aimed at endpoints
that fail on purpose so that retries and the dead-letter queue have something to show,
then a gentle feed of a few messages a second until it stops, so that a kill holds
something and a resume delivers it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shlex
import shutil
import signal
import sys
from datetime import UTC, datetime
from typing import Any

import httpx

from sluice import heap
from sluice.clock import SystemClock
from sluice.config import Settings
from sluice.errors import ConfigError
from sluice.model import NewMessage
from sluice.store import open_store

__all__ = ["run_embedded"]

TENANTS = ("acme-demo", "northern-labs", "globex")


def _say(text: str = "") -> None:
    print(text, flush=True)  # the command's own output


def demo_messages(base_url: str, count: int, run: str) -> list[NewMessage]:
    """``count`` webhooks: most succeed, every 10th fails once, every 25th is gone (410).

    ``run`` makes the idempotency keys unique to this start, so a second ``sluice run``
    on the same file enqueues a fresh load instead of deduplicating against the first.
    """
    out = []
    for i in range(count):
        tenant = TENANTS[i % len(TENANTS)]
        if i % 25 == 24:
            path = f"/webhook/gone/{tenant}"
        elif i % 10 == 9:
            path = f"/webhook/flaky/{tenant}"
        else:
            path = f"/webhook/{tenant}/orders"
        out.append(
            NewMessage(
                tenant=tenant,
                channel="webhook",
                provider="webhook",
                action="order.created",
                recipient=base_url + path,
                payload={"order_id": f"ord_{i:05d}", "amount_cents": 1000 + i},
                priority=5 if i % 7 == 0 else 0,
                max_attempts=4,
                idempotency_key=f"demo-{run}-{i}",
                correlation_id=f"demo-{run}-{i}",
            )
        )
    return out


async def _demo_feed(store: Any, base_url: str, rate: float, run: str) -> None:
    """``rate`` webhooks a second across the tenants, all deliverable, until cancelled."""
    i = 0
    while True:
        tenant = TENANTS[i % len(TENANTS)]
        await store.enqueue_many(
            [
                NewMessage(
                    tenant=tenant, channel="webhook", provider="webhook",
                    action="order.created", recipient=f"{base_url}/webhook/{tenant}/orders",
                    payload={"order_id": f"feed_{i:06d}"}, idempotency_key=f"feed-{run}-{i}",
                )
            ]
        )  # fmt: skip
        i += 1
        await asyncio.sleep(1 / rate)


def _command() -> str:
    """The running ``sluice`` as it can be typed here (``.venv/bin/sluice`` under make)."""

    def typed(path: str) -> str:
        relative = os.path.relpath(path)
        if relative.startswith(".."):
            return path
        return relative if os.sep in relative else f".{os.sep}{relative}"

    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0) == "sluice" and os.path.isfile(argv0):
        found = shutil.which("sluice")
        if found and os.path.samefile(found, argv0):
            return "sluice"
        return shlex.quote(typed(argv0))
    return f"{shlex.quote(typed(sys.executable))} -m sluice.cli"


async def _earlier_messages(store: Any) -> int:
    report = await store.status_report(datetime.now(UTC))
    return sum(report.counts.values())


class _Api:
    """The HTTP API served in this process's own event loop."""

    def __init__(self, store: Any, settings: Settings, port: int) -> None:
        import socket

        import uvicorn

        from sluice.api import create_app
        from sluice.api.server import server_config

        class Server(uvicorn.Server):
            # The worker owns SIGINT/SIGTERM here; stopping the server is ours to do.
            @contextlib.contextmanager
            def capture_signals(self) -> Any:
                yield

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind(("127.0.0.1", port))
        except OSError as exc:
            self.sock.close()
            raise ConfigError(
                f"the API cannot listen on 127.0.0.1:{port} ({exc.strerror}); "
                "pick another with --api-port (0: any free port)"
            ) from None
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        app = create_app(settings, store=store)
        # The same limits on slow clients as `sluice serve`.
        config = server_config(app, settings, log_level="warning", access_log=False, lifespan="on")
        self.server = Server(config)
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self.server.serve(sockets=[self.sock]))
        while not self.server.started:
            if self.task.done():
                await self.task  # raises what stopped it
                raise ConfigError("the API server stopped at start")
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        self.server.should_exit = True
        if self.task is not None:
            with contextlib.suppress(Exception):
                await self.task
        self.sock.close()


async def run_embedded(
    settings: Settings,
    *,
    port: int,
    demo: int,
    duration: float,
    api_port: int = 8400,
    demo_rate: float = 0.0,
) -> None:
    """Run migrations, simulator, API, worker and demo load (``demo`` at start, then
    ``demo_rate`` a second) until Ctrl-C or ``duration``."""
    from sluice.logs import configure_logging
    from sluice.providers.simulator import SimulatorThread
    from sluice.tracing import configure as configure_tracing

    if demo < 0:
        raise ConfigError("--demo must be 0 or more")
    if not 0 <= demo_rate <= 1000:  # also refuses nan
        raise ConfigError("--demo-rate must be between 0 and 1000 messages a second")
    configure_logging("warning", "console")
    configure_tracing(settings)
    secret = settings.webhook_secret or "whsec_" + base64.b64encode(os.urandom(24)).decode()
    # The demo's failures should retry within seconds, not minutes; its webhooks go to
    # the simulator on 127.0.0.1, which the SSRF guard refuses unless told otherwise.
    settings = settings.replace(
        webhook_secret=secret, retry_base=0.5, retry_cap=5.0, allow_loopback_targets=True
    )

    store = await open_store(settings.database_url, settings)
    try:
        applied = await store.migrate()
        _say(
            f"database   {settings.database_url}  (migrations applied: {applied or 'none needed'})"
        )
        earlier = await _earlier_messages(store)
        if earlier:
            name = getattr(store, "path", settings.database_url)
            _say(f"           using existing database {name}: {earlier} messages from earlier "
                 "runs; delete it for a fresh start")  # fmt: skip
        try:
            sim = SimulatorThread(secret, port=port).start()
        except OSError as exc:
            raise ConfigError(
                f"the simulator cannot listen on 127.0.0.1:{port} ({exc.strerror}); "
                "pick another with --port (0: any free port)"
            ) from None
        try:
            _say(f"simulator  {sim.url}  (effects: {sim.url}/_sim/effects)")
            api = _Api(store, settings, api_port)
            await api.start()
            from sluice.console.sessions import TICKET_TTL, login_link
            from sluice.ops.apikeys import api_key_create, api_key_revoke

            run_tag = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
            key = await api_key_create(
                store, f"run-{run_tag}-{os.getpid()}", "operator", None, actor="sluice run"
            )
            _say(f"API        {api.url}  (OpenAPI: {api.url}/docs; operator key for this run:")
            _say(f"           {key.token} )")
            ticket = await login_link(store, key.key, "console:operator", datetime.now(UTC))
            _say(f"console    {api.url}/login/link?t={ticket}")
            _say(f"           (signs you in once, within {TICKET_TTL.seconds // 60} minutes; "
                 f"after that sign in at {api.url}/ with the key above)")  # fmt: skip
            async with httpx.AsyncClient(base_url=sim.url) as control:
                await control.post(
                    "/_sim/faults", json={"path_prefix": "/webhook/gone", "status": 410}
                )
                await control.post(
                    "/_sim/faults",
                    json={"path_prefix": "/webhook/flaky", "fail_first": 1, "error_status": 500},
                )
            cli = f"{_command()} {{}} --database-url {shlex.quote(settings.database_url)}"
            if demo:
                run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
                ids = await store.enqueue_many(demo_messages(sim.url, demo, run_id))
                _say(f"demo load  {len(ids)} webhooks enqueued for {', '.join(TENANTS)}")
                if len(ids) > 9:
                    show = cli.format(f"messages show {ids[9]}")
                    _say(f"           e.g. {show}   (fails once, then succeeds)")
            feed = None
            if demo_rate:
                _say(f"demo feed  {demo_rate:g} webhooks a second for {', '.join(TENANTS)}, "
                     "until stopped")  # fmt: skip
                tag = f"{run_tag}-{os.getpid()}"
                feed = asyncio.create_task(_demo_feed(store, sim.url, demo_rate, tag))
            _say("")
            _say("look with, in another terminal (in this directory):")
            for command in ("status", "dlq list", "kill --tenant globex --reason 'try it'",
                            "held list", "resume --tenant globex --reason ok"):  # fmt: skip
                _say(f"  {cli.format(command)}")
            _say(f"  curl {sim.url}/_sim/effects")
            _say(f"  curl -H 'Authorization: Bearer {key.token}' {api.url}/v1/status")
            _say("")
            _say("Ctrl-C stops (in-flight sends finish first)." if not duration else
                 f"stopping by itself after {duration:g}s.")  # fmt: skip
            try:
                await _work(store, settings, sim, duration)
            finally:
                if feed is not None:
                    feed.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await feed
                await api.stop()
                await api_key_revoke(store, key.key.id, actor="sluice run", reason="the run ended")
                _say(f"operator key {key.key.id} of this run revoked.")
                _say("stopped.")
        finally:
            sim.stop()
    finally:
        await store.close()


async def _work(store: Any, settings: Settings, sim: Any, duration: float) -> None:
    from sluice.ops.alerts import alerting
    from sluice.ops.canary import canarying  # canaries (issue 15)
    from sluice.ops.retention import retaining
    from sluice.ops.state_metrics import metrics_server, state_metrics
    from sluice.providers import http_client
    from sluice.worker.assemble import assemble_dispatcher

    clock = SystemClock()
    async with http_client(settings) as client:
        dispatcher = await assemble_dispatcher(store, settings, client)
        heap.settle()  # everything has started (sluice.heap)
        state = state_metrics(store, settings)
        async with (
            metrics_server(settings, state),
            alerting(store, settings, state, dispatcher.clock),
            retaining(store, settings, dispatcher.clock),  # retention (issue 14)
            canarying(store, clock=dispatcher.clock),  # canaries (issue 15)
        ):
            await _drive(dispatcher, store, sim, duration, clock)
    _say(f"[{clock.now():%H:%M:%S}] {await _progress(store, sim)}")


async def _drive(dispatcher: Any, store: Any, sim: Any, duration: float, clock: Any) -> None:
    """Run the worker, printing progress each second something moved, until Ctrl-C or
    ``duration``."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, dispatcher.stop)
    worker = asyncio.create_task(dispatcher.run())
    started = loop.time()
    last = ""
    try:
        while not worker.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(worker), 1.0)
            line = await _progress(store, sim)
            if line != last:  # only when something moved
                _say(f"[{clock.now():%H:%M:%S}] {line}")
                last = line
            if duration and loop.time() - started >= duration:
                dispatcher.stop()
        await worker
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def _progress(store: Any, sim: Any) -> str:
    report = await store.status_report(datetime.now(UTC))
    c = report.counts
    effects = sim.state.summary()
    return (
        f"queued {c.get('queued', 0)}  sending {c.get('sending', 0)}  "
        f"sent {c.get('sent', 0)}  dead {c.get('dead', 0)}  held {c.get('held', 0)}  |  "
        "simulator: "
        f"{effects.get('unique', 0)} delivered, {effects.get('duplicates', 0)} duplicates, "
        f"{effects.get('errors_injected', 0)} failures injected"
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use: sluice run")
