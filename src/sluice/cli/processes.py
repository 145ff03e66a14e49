"""The commands that run Sluice: ``migrate`` the schema, then a ``worker``, the HTTP API
(``serve``), the provider ``simulator``, or all of it in one process (``run``)."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Annotated, Any

import typer

from sluice import heap
from sluice.cli.options import DatabaseUrl
from sluice.cli.runtime import fail, run_async, settings_for, with_store
from sluice.config import Settings
from sluice.errors import MigrationError, SluiceError
from sluice.store import open_store

__all__ = ["migrate", "run", "run_worker", "serve", "simulator", "worker", "worker_main"]

LogLevel = Annotated[
    str | None, typer.Option(envvar="SLUICE_LOG_LEVEL", help="debug, info, warning, error.")
]
MetricsPort = Annotated[
    int | None,
    typer.Option(
        envvar="SLUICE_METRICS_PORT",
        help="Serve Prometheus metrics at http://<SLUICE_API_HOST>:PORT/metrics. [default: off]",
    ),
]


def migrate(database_url: DatabaseUrl = None) -> None:
    """Apply pending schema migrations (safe to run again; safe from many hosts at once)."""
    settings = settings_for(database_url)

    async def go() -> list[int]:
        return await with_store(settings, lambda s: s.migrate(), create=True)

    applied = run_async(go)
    if applied:
        typer.echo(f"applied migrations: {', '.join(map(str, applied))}")
    else:
        typer.echo("schema is up to date")


def worker(
    database_url: DatabaseUrl = None,
    concurrency: Annotated[
        int | None,
        typer.Option(
            envvar="SLUICE_WORKER_CONCURRENCY", help="Sends in flight at once. [default: 100]"
        ),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            envvar="SLUICE_WORKER_BATCH_SIZE", help="Most messages per claim. [default: 200]"
        ),
    ] = None,
    lease_seconds: Annotated[
        float | None,
        typer.Option(envvar="SLUICE_LEASE_SECONDS", help="How long a claim lasts. [default: 30]"),
    ] = None,
    reaper_interval: Annotated[
        float | None,
        typer.Option(
            envvar="SLUICE_REAPER_INTERVAL",
            help="Seconds between expired-lease sweeps. [default: 5]",
        ),
    ] = None,
    poll_interval: Annotated[
        float | None,
        typer.Option(envvar="SLUICE_POLL_INTERVAL", help="Fallback poll, seconds. [default: 1]"),
    ] = None,
    http_timeout: Annotated[
        float | None,
        typer.Option(
            envvar="SLUICE_HTTP_TIMEOUT", help="Provider call timeout, seconds. [default: 10]"
        ),
    ] = None,
    webhook_secret: Annotated[
        str | None,
        typer.Option(
            envvar="SLUICE_WEBHOOK_SECRET",
            help="Standard Webhooks signing secret (whsec_…); enables the webhook provider.",
        ),
    ] = None,
    until_idle: Annotated[
        bool,
        typer.Option(
            "--until-idle", envvar="SLUICE_UNTIL_IDLE", help="Exit once nothing is ready to send."
        ),
    ] = False,
    metrics_port: MetricsPort = None,
    log_level: LogLevel = None,
    processes: Annotated[
        int,
        typer.Option(
            envvar="SLUICE_WORKER_PROCESSES",
            min=1,
            help="Worker processes to run on this host, each a whole worker (with "
            "--metrics-port P, process i serves P + i - 1). [default: 1]",
        ),
    ] = 1,
) -> None:
    """Claim and deliver messages until SIGTERM/SIGINT (in-flight sends finish first)."""
    settings = settings_for(
        database_url,
        worker_concurrency=concurrency,
        worker_batch_size=batch_size,
        lease_seconds=lease_seconds,
        reaper_interval=reaper_interval,
        poll_interval=poll_interval,
        http_timeout=http_timeout,
        webhook_secret=webhook_secret,
        metrics_port=metrics_port,
        log_level=log_level,
    )
    if processes > 1:
        from sluice.cli.workers import run_worker_processes

        raise typer.Exit(
            run_worker_processes(worker_main, settings, processes, until_idle=until_idle)
        )
    worker_main(settings, until_idle=until_idle)


def worker_main(settings: Settings, *, until_idle: bool = False) -> None:
    """One worker process, start to end: logging, tracing, the dispatcher on its loop."""
    from sluice.logs import configure_logging
    from sluice.tracing import configure as configure_tracing
    from sluice.worker.assemble import run_worker_loop

    try:
        configure_logging(settings.log_level)
        configure_tracing(settings)
        stats = run_worker_loop(run_worker(settings, until_idle=until_idle))
    except SluiceError as exc:
        raise fail(exc) from None
    typer.echo(
        f"worker done: sent {stats.sent}, retried {stats.retried}, deferred {stats.deferred}, "
        f"dead-lettered {stats.dead}, released {stats.released}",
        err=True,
    )


async def run_worker(settings: Settings, *, until_idle: bool = False) -> Any:
    """Run one dispatcher with signal handling; return its stats."""
    from sluice.ops.alerts import alerting
    from sluice.ops.canary import canarying  # canaries (issue 15)
    from sluice.ops.retention import retaining
    from sluice.ops.state_metrics import metrics_server, state_metrics
    from sluice.providers import http_client
    from sluice.worker.assemble import assemble_dispatcher

    store = await open_store(settings.database_url, settings, create=False)
    try:
        async with http_client(settings) as client:
            dispatcher = await assemble_dispatcher(store, settings, client)
            heap.settle()  # a worker process: what start-up built stays (sluice.heap)
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, dispatcher.stop)
            try:
                state = state_metrics(store, settings)
                async with (
                    metrics_server(settings, state),
                    alerting(store, settings, state, dispatcher.clock),
                    retaining(store, settings, dispatcher.clock),  # retention (issue 14)
                    canarying(store, clock=dispatcher.clock),  # canaries (issue 15)
                ):
                    return await dispatcher.run(until_idle=until_idle)
            finally:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
    finally:
        await store.close()


def simulator(
    host: Annotated[
        str, typer.Option(envvar="SLUICE_SIMULATOR_HOST", help="Bind address.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="SLUICE_SIMULATOR_PORT", help="Port.")] = 8025,
    webhook_secret: Annotated[
        str | None,
        typer.Option(
            envvar="SLUICE_WEBHOOK_SECRET",
            help="Secret to verify webhook signatures; without it /webhook answers 503.",
        ),
    ] = None,
    callbacks: Annotated[
        bool,
        typer.Option(envvar="SLUICE_SIMULATOR_CALLBACKS", help="Send providers' status callbacks."),
    ] = True,
) -> None:
    """Run the provider simulator: provider APIs and a webhook receiver, faults on demand."""
    from sluice.providers.simulator import serve

    webhooks = "on" if webhook_secret else "off (no SLUICE_WEBHOOK_SECRET)"
    typer.echo(
        f"provider simulator on http://{host}:{port} (effects: /_sim/effects, requests: "
        f"/_sim/requests; webhook receiver {webhooks}; callbacks {'on' if callbacks else 'off'})",
        err=True,
    )
    try:
        serve(host, port, webhook_secret or None, callbacks=callbacks)
    except SluiceError as exc:
        raise fail(exc) from None


def run(
    database_url: DatabaseUrl = None,
    port: Annotated[
        int, typer.Option(envvar="SLUICE_SIMULATOR_PORT", help="Simulator port (0: any free).")
    ] = 8025,
    demo: Annotated[
        int, typer.Option(envvar="SLUICE_DEMO", help="Demo messages to enqueue at start.")
    ] = 300,
    demo_rate: Annotated[
        float,
        typer.Option(
            envvar="SLUICE_DEMO_RATE", help="Then this many demo messages a second (0: none)."
        ),
    ] = 2.0,
    duration: Annotated[
        float,
        typer.Option(
            envvar="SLUICE_RUN_DURATION", help="Stop after this many seconds (0: Ctrl-C)."
        ),
    ] = 0.0,
    api_port: Annotated[
        int, typer.Option(envvar="SLUICE_API_PORT", help="HTTP API port (0: any free).")
    ] = 8400,
    metrics_port: MetricsPort = None,
) -> None:
    """Everything in one process: SQLite, migrations, simulator, API, worker, a demo load."""
    from sluice.embedded import run_embedded

    settings = settings_for(database_url, metrics_port=metrics_port)
    run_async(
        lambda: run_embedded(
            settings, port=port, demo=demo, duration=duration, api_port=api_port,
            demo_rate=demo_rate,
        )
    )  # fmt: skip


def serve(
    database_url: DatabaseUrl = None,
    host: Annotated[
        str | None,
        typer.Option(envvar="SLUICE_API_HOST", help="Bind address. [default: 127.0.0.1]"),
    ] = None,
    port: Annotated[
        int | None, typer.Option(envvar="SLUICE_API_PORT", help="Port. [default: 8400]")
    ] = None,
    workers: Annotated[
        int, typer.Option(envvar="SLUICE_API_WORKERS", min=1, help="Server processes.")
    ] = 1,
    log_level: LogLevel = None,
    header_timeout: Annotated[
        float | None,
        typer.Option(
            envvar="SLUICE_API_HEADER_TIMEOUT",
            help="Seconds a client has to send its request headers (then 408). [default: 10]",
        ),
    ] = None,
    body_timeout: Annotated[
        float | None,
        typer.Option(
            envvar="SLUICE_API_BODY_TIMEOUT",
            help="Seconds a client has to send its request body (then 408). [default: 20]",
        ),
    ] = None,
    max_connections: Annotated[
        int | None,
        typer.Option(
            envvar="SLUICE_API_MAX_CONNECTIONS",
            help="Connections per server process; past it, 503. [default: 1000]",
        ),
    ] = None,
) -> None:
    """Serve the HTTP API and provider ingress (OpenAPI at /openapi.json)."""
    from sluice.api.server import run_server, server_config
    from sluice.logs import configure_logging
    from sluice.tracing import configure as configure_tracing

    settings = settings_for(
        database_url, api_host=host, api_port=port, log_level=log_level,
        api_header_timeout=header_timeout, api_body_timeout=body_timeout,
        api_max_connections=max_connections,
    )  # fmt: skip
    configure_logging(settings.log_level)
    try:
        # Here to stop at start when it cannot be; each server process configures its
        # own on its first request (sluice.tracing), from the same settings.
        configure_tracing(settings)
    except SluiceError as exc:
        raise fail(exc) from None

    async def check() -> None:
        from sluice.ingress.config import configured_ingress

        configured_ingress()  # a bad [ingress] table fails here, not on the first webhook
        pending = await with_store(settings, lambda s: s.schema_pending())
        if pending:
            raise MigrationError(f"the schema is missing migrations {pending}; run: sluice migrate")

    run_async(check)
    typer.echo(
        f"sluice API on http://{settings.api_host}:{settings.api_port} "
        f"(OpenAPI: /openapi.json, {workers} process{'es' if workers > 1 else ''})",
        err=True,
    )
    env = {
        "SLUICE_DATABASE_URL": settings.database_url,
        "SLUICE_API_BODY_TIMEOUT": repr(settings.api_body_timeout),
    }
    os.environ.update(env)  # the factory in each server process reads the same settings
    config = server_config(
        "sluice.api.app:app_from_env",
        settings,
        factory=True,
        host=settings.api_host,
        port=settings.api_port,
        workers=workers,
        log_level="warning" if settings.log_level == "info" else settings.log_level,
        access_log=False,
        loop="uvloop",
    )
    run_server(config)
