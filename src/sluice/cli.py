"""The ``sluice`` command. Every flag has an environment variable, shown in ``--help``.

Exit codes: 0 done; 1 the system failed (database down, …); 2 bad input or
configuration (the message names what is wrong, and nothing was changed).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, TypeVar

import typer

from sluice.addressing import addressing_in_effect
from sluice.config import Settings, load_settings
from sluice.errors import (
    ConfigError,
    Conflict,
    IdempotencyConflict,
    MigrationError,
    NotFound,
    SluiceError,
    ValidationError,
)
from sluice.model import NewMessage
from sluice.ops.render import age, json_text, jsonable, table
from sluice.store import MessageFilter, Store, open_store

T = TypeVar("T")

app = typer.Typer(
    name="sluice",
    help="Sluice delivers outbound side effects durably, under the operator's hand.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
dlq_app = typer.Typer(help="The dead-letter queue: list, retry, cancel.", no_args_is_help=True)
messages_app = typer.Typer(help="Inspect messages.", no_args_is_help=True)
connections_app = typer.Typer(
    help="Tenant connections: credentials (encrypted), scopes, state.", no_args_is_help=True
)
keys_app = typer.Typer(help="The key that encrypts credentials at rest.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")
app.add_typer(messages_app, name="messages")
app.add_typer(connections_app, name="connections")
app.add_typer(keys_app, name="keys")

# -- shared options ---------------------------------------------------------------

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="SLUICE_DATABASE_URL",
        help="sqlite:///file.db or postgresql://user@host:port/db [default: sqlite:///sluice.db]",
    ),
]
JsonOutput = Annotated[
    bool, typer.Option("--json", envvar="SLUICE_JSON", help="Print JSON for programs.")
]
Tenant = Annotated[
    str | None, typer.Option("--tenant", envvar="SLUICE_TENANT", help="Only this tenant.")
]
Channel = Annotated[
    str | None, typer.Option("--channel", envvar="SLUICE_CHANNEL", help="Only this channel.")
]
ErrorCodeOpt = Annotated[
    str | None,
    typer.Option("--error-code", envvar="SLUICE_ERROR_CODE", help="Only this error code."),
]
Since = Annotated[
    str | None,
    typer.Option(
        "--since",
        envvar="SLUICE_SINCE",
        help="Only messages dead-lettered since: ISO time or a span (15m, 2h, 7d).",
    ),
]
Limit = Annotated[
    int | None,
    typer.Option("--limit", envvar="SLUICE_LIMIT", help="At most this many messages."),
]
DryRun = Annotated[
    bool,
    typer.Option(
        "--dry-run", envvar="SLUICE_DRY_RUN", help="Show what would change; change nothing."
    ),
]
Actor = Annotated[
    str | None,
    typer.Option(
        "--actor", envvar="SLUICE_ACTOR", help="Who is acting (audit log) [default: cli:<user>]."
    ),
]
Reason = Annotated[
    str | None, typer.Option("--reason", envvar="SLUICE_REASON", help="Why (for the audit log).")
]


def _default_actor() -> str:
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no user name in some containers
        return "cli"


def _settings(database_url: str | None = None, **overrides: Any) -> Settings:
    try:
        return load_settings(database_url=database_url, **overrides)
    except SluiceError as exc:
        raise _fail(exc) from None


def _fail(exc: BaseException) -> typer.Exit:
    bad_input = (ValidationError, ConfigError, IdempotencyConflict, NotFound, Conflict)
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(2 if isinstance(exc, bad_input) else 1)


def _run(fn: Callable[[], Awaitable[T]]) -> T:
    try:
        return asyncio.run(fn())  # type: ignore[arg-type]  # a coroutine is awaited
    except SluiceError as exc:
        raise _fail(exc) from None


async def _with_store(
    settings: Settings, fn: Callable[[Store], Awaitable[T]], *, create: bool = False
) -> T:
    # Only `migrate` may create a SQLite file: a mistyped path elsewhere is an error,
    # not a new empty database.
    store = await open_store(settings.database_url, settings, create=create)
    try:
        return await fn(store)
    finally:
        await store.close()


def _print_json(value: Any) -> None:
    typer.echo(json_text(value))


# -- commands ---------------------------------------------------------------------


@app.command()
def migrate(database_url: DatabaseUrl = None) -> None:
    """Apply pending schema migrations (safe to run again; safe from many hosts at once)."""
    settings = _settings(database_url)

    async def go() -> list[int]:
        return await _with_store(settings, lambda s: s.migrate(), create=True)

    applied = _run(go)
    if applied:
        typer.echo(f"applied migrations: {', '.join(map(str, applied))}")
    else:
        typer.echo("schema is up to date")


@app.command()
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
    log_level: Annotated[
        str | None, typer.Option(envvar="SLUICE_LOG_LEVEL", help="debug, info, warning, error.")
    ] = None,
) -> None:
    """Claim and deliver messages until SIGTERM/SIGINT (in-flight sends finish first)."""
    from sluice.logs import configure_logging

    try:
        settings = _settings(
            database_url,
            worker_concurrency=concurrency,
            worker_batch_size=batch_size,
            lease_seconds=lease_seconds,
            reaper_interval=reaper_interval,
            poll_interval=poll_interval,
            http_timeout=http_timeout,
            webhook_secret=webhook_secret,
            log_level=log_level,
        )
        configure_logging(settings.log_level)
    except SluiceError as exc:
        raise _fail(exc) from None
    stats = _run(lambda: run_worker(settings, until_idle=until_idle))
    typer.echo(
        f"worker done: sent {stats.sent}, retried {stats.retried}, deferred {stats.deferred}, "
        f"dead-lettered {stats.dead}, released {stats.released}",
        err=True,
    )


async def run_worker(settings: Settings, *, until_idle: bool = False) -> Any:
    """Run one dispatcher with signal handling; return its stats."""
    from sluice.providers import http_client
    from sluice.worker.assemble import assemble_dispatcher

    store = await open_store(settings.database_url, settings, create=False)
    try:
        async with http_client(settings) as client:
            dispatcher = await assemble_dispatcher(store, settings, client)
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, dispatcher.stop)
            try:
                return await dispatcher.run(until_idle=until_idle)
            finally:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
    finally:
        await store.close()


def _secret_box(settings: Settings) -> Any:
    from sluice.worker.assemble import secret_box

    return secret_box(settings)


def _parse_run_at(text: str | None) -> datetime | None:
    if text is None:
        return None
    text = text.strip()
    if text.startswith("+"):
        units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
        number, unit = text[1:-1], text[-1]
        if unit in units and number.isdigit():
            return datetime.now(UTC) + timedelta(seconds=int(number) * units[unit])
        raise ValidationError("run_at", f"{text!r} is not a delay like +30s, +15m, +2h")
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValidationError("run_at", f"{text!r} is not an ISO 8601 time") from None
    if when.tzinfo is None:
        raise ValidationError("run_at", "needs a timezone, e.g. 2026-01-01T09:00:00Z")
    return when


def _parse_payload(text: str) -> dict[str, Any]:
    if text.startswith("@"):
        try:
            with open(text[1:]) as f:
                text = f.read()
        except OSError as exc:
            raise ValidationError("payload", f"cannot read {text[1:]}: {exc.strerror}") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationError("payload", f"is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValidationError("payload", "must be a JSON object")
    return value


@app.command()
def send(
    tenant: Annotated[str, typer.Option(envvar="SLUICE_TENANT", help="Tenant the message is for.")],
    channel: Annotated[
        str, typer.Option(envvar="SLUICE_CHANNEL", help="Channel: webhook, sms, email, …")
    ],
    recipient: Annotated[
        str, typer.Option(envvar="SLUICE_RECIPIENT", help="URL, phone number, address, …")
    ],
    provider: Annotated[
        str, typer.Option(envvar="SLUICE_PROVIDER", help="Provider adapter to send with.")
    ] = "webhook",
    payload: Annotated[
        str, typer.Option(envvar="SLUICE_PAYLOAD", help="JSON object, or @file.json.")
    ] = "{}",
    action: Annotated[
        str, typer.Option(envvar="SLUICE_ACTION", help="Action type, e.g. order.created.")
    ] = "send",
    priority: Annotated[
        int, typer.Option(envvar="SLUICE_PRIORITY", help="Higher goes first (-1000..1000).")
    ] = 0,
    run_at: Annotated[
        str | None,
        typer.Option(envvar="SLUICE_RUN_AT", help="Not before: ISO time or +30s/+15m/+2h."),
    ] = None,
    max_attempts: Annotated[
        int, typer.Option(envvar="SLUICE_MAX_ATTEMPTS", help="Attempts before dead-letter.")
    ] = 5,
    idempotency_key: Annotated[
        str | None,
        typer.Option(envvar="SLUICE_IDEMPOTENCY_KEY", help="Same key, same message (per tenant)."),
    ] = None,
    correlation_id: Annotated[
        str | None, typer.Option(envvar="SLUICE_CORRELATION_ID", help="Your trace id.")
    ] = None,
    scope: Annotated[
        list[str] | None,
        typer.Option("--scope", envvar="SLUICE_SCOPES", help="Required scope (repeatable)."),
    ] = None,
    database_url: DatabaseUrl = None,
    as_json: JsonOutput = False,
) -> None:
    """Enqueue one message from the shell; prints its id."""

    async def go() -> list[str]:
        settings = _settings(database_url)
        msg = NewMessage(
            tenant=tenant,
            channel=channel,
            provider=provider,
            recipient=recipient,
            payload=_parse_payload(payload),
            action=action,
            priority=priority,
            run_at=_parse_run_at(run_at),
            max_attempts=max_attempts,
            idempotency_key=idempotency_key,
            correlation_id=correlation_id,
            scopes=scope or [],
        )
        # Before touching the database: bad input changes nothing.
        msg.validate(addressing=addressing_in_effect(settings))
        return await _with_store(settings, lambda s: s.enqueue_many([msg]))

    ids: Any = _run(go)
    if as_json:
        _print_json({"id": ids[0]})
    else:
        typer.echo(ids[0])


@app.command()
def status(database_url: DatabaseUrl = None, as_json: JsonOutput = False) -> None:
    """Counts by status, age of the oldest ready message, dead letters, workers."""
    from sluice import ops

    settings = _settings(database_url)

    async def gather(store: Store) -> tuple[Any, Any, Any]:
        report = await ops.status(store)
        controls = await ops.control_list(store)
        breakers = [b for b in await ops.breakers_list(store, settings) if b.state != "closed"]
        return report, controls, breakers

    report, controls, breakers = _run(lambda: _with_store(settings, gather))
    if as_json:
        document = jsonable(report)
        document["default_mode"] = settings.default_mode
        document["controls"] = [c.as_dict() for c in controls]
        document["breakers_not_closed"] = jsonable(breakers)
        _print_json(document)
        return
    if settings.default_mode != "live" or controls:
        typer.echo(f"default mode: {settings.default_mode}")
    for c in controls:
        until = f" until {c.expires_at.isoformat(timespec='seconds')}" if c.expires_at else ""
        typer.echo(f"CONTROL {c.mode.value.upper()} {c.scope}{until} — {c.actor}: {c.reason}")
    for b in breakers:
        typer.echo(f"BREAKER {b.key} {b.state.value} since {b.since} — {b.reason or ''}")
    if controls or breakers:
        typer.echo("")
    order = ["queued", "sending", "held", "sent", "delivered", "dead", "cancelled", "shadowed"]
    keys = order + sorted(k for k in report.counts if k not in order)
    typer.echo(table(["status", "count"], [[k, report.counts.get(k, 0)] for k in keys]))
    typer.echo(f"\noldest ready message waiting: {age(report.oldest_ready_age_seconds)}")
    dead_total = sum(g.count for g in report.dead)
    typer.echo(f"dead letters: {dead_total}")
    if report.dead:
        typer.echo(
            table(
                ["channel", "error_code", "count", "last"],
                [[g.channel, g.error_code, g.count, g.last_at.isoformat()] for g in report.dead],
            )
        )
    now = datetime.now(UTC)
    live = [w for w in report.workers if w.stopped_at is None]
    typer.echo(f"\nworkers: {len(live)} running")
    if report.workers:
        typer.echo(
            table(
                ["worker", "state", "last seen", "in flight", "sent", "controls epoch"],
                [
                    [
                        w.id,
                        "stopped" if w.stopped_at else "running",
                        age((now - w.last_seen_at).total_seconds()) + " ago",
                        w.in_flight,
                        w.sent_total,
                        w.flow_version,
                    ]
                    for w in report.workers
                ],
            )
        )


@messages_app.command("show")
def messages_show(
    message_id: Annotated[str, typer.Argument(help="The message id.")],
    database_url: DatabaseUrl = None,
    as_json: JsonOutput = False,
) -> None:
    """One message with every attempt made at it."""
    from sluice import ops

    settings = _settings(database_url)
    msg, attempts = _run(lambda: _with_store(settings, lambda s: ops.message_show(s, message_id)))
    if as_json:
        _print_json({"message": msg, "attempts": attempts})
        return
    fields = [
        ("id", msg.id),
        ("hold_reason", msg.hold_reason), ("tenant", msg.tenant), ("channel", msg.channel),
        ("provider", msg.provider), ("action", msg.action), ("recipient", msg.recipient),
        ("status", msg.status.value), ("priority", msg.priority),
        ("attempts", f"{msg.attempts}/{msg.max_attempts}"),
        ("deferrals", f"{msg.deferrals} since {msg.deferred_since:%Y-%m-%d %H:%M:%S}"
         if msg.deferred_since else None), ("run_at", msg.run_at),
        ("created_at", msg.created_at), ("updated_at", msg.updated_at),
        ("idempotency_key", msg.idempotency_key), ("correlation_id", msg.correlation_id),
        ("scopes", ", ".join(msg.scopes) or None), ("last_error_code", msg.last_error_code),
        ("last_error", msg.last_error), ("provider_message_id", msg.provider_message_id),
        ("payload", json.dumps(msg.payload, sort_keys=True)),
    ]  # fmt: skip
    for name, value in fields:
        if value is not None:
            typer.echo(f"{name + ':':<21}{value}")
    typer.echo(f"\nattempts ({len(attempts)}):")
    if attempts:
        typer.echo(
            table(
                ["#", "outcome", "code", "provider status", "latency ms", "worker", "started"],
                [
                    [
                        a.attempt_no,
                        a.outcome.value + ("" if a.applied else " (late)"),
                        a.error_code,
                        a.provider_status,
                        a.latency_ms,
                        a.worker_id,
                        a.started_at.isoformat(),
                    ]
                    for a in attempts
                ],
            )
        )


def _filter(
    tenant: str | None,
    channel: str | None,
    error_code: str | None,
    since: str | None,
    limit: int | None,
) -> MessageFilter:
    from sluice.ops.actions import parse_since

    if limit is not None and limit < 1:
        raise ValidationError("limit", "must be at least 1")
    return MessageFilter(
        tenant=tenant,
        channel=channel,
        error_code=error_code,
        since=parse_since(since, datetime.now(UTC)) if since else None,
        limit=limit,
    )


@dlq_app.command("list")
def dlq_list(
    tenant: Tenant = None,
    channel: Channel = None,
    database_url: DatabaseUrl = None,
    as_json: JsonOutput = False,
) -> None:
    """Dead letters grouped by channel and error code, largest group first."""
    from sluice import ops

    settings = _settings(database_url)
    flt = MessageFilter(tenant=tenant, channel=channel)
    groups = _run(lambda: _with_store(settings, lambda s: ops.dlq_list(s, flt)))
    if as_json:
        _print_json({"groups": groups, "total": sum(g.count for g in groups)})
        return
    if not groups:
        typer.echo("the dead-letter queue is empty")
        return
    typer.echo(
        table(
            ["channel", "error_code", "count", "first", "last"],
            [
                [g.channel, g.error_code, g.count, g.first_at.isoformat(), g.last_at.isoformat()]
                for g in groups
            ],
        )
    )
    typer.echo(f"\ntotal: {sum(g.count for g in groups)}")


def _dlq_move(
    verb: str,
    tenant: str | None,
    channel: str | None,
    error_code: str | None,
    since: str | None,
    limit: int | None,
    dry_run: bool,
    actor: str | None,
    reason: str | None,
    database_url: str | None,
    as_json: bool,
) -> None:
    from sluice import ops

    async def go() -> Any:
        settings = _settings(database_url)
        flt = _filter(tenant, channel, error_code, since, limit)
        fn = ops.dlq_retry if verb == "retry" else ops.dlq_cancel
        who = actor or _default_actor()
        return await _with_store(
            settings, lambda s: fn(s, flt, dry_run=dry_run, actor=who, reason=reason)
        )

    result = _run(go)
    if as_json:
        _print_json(result)
        return
    done = "requeued" if verb == "retry" else "cancelled"
    if result.dry_run:
        typer.echo(f"dry run: {result.matched} dead letters would be {done}")
        for mid in result.ids[:20]:
            typer.echo(f"  {mid}")
        if result.matched > 20:
            typer.echo(f"  … and {result.matched - 20} more")
    else:
        typer.echo(f"{result.changed} of {result.matched} dead letters {done}")


@dlq_app.command("retry")
def dlq_retry(
    error_code: ErrorCodeOpt = None,
    channel: Channel = None,
    tenant: Tenant = None,
    since: Since = None,
    limit: Limit = None,
    dry_run: DryRun = False,
    actor: Actor = None,
    reason: Reason = None,
    database_url: DatabaseUrl = None,
    as_json: JsonOutput = False,
) -> None:
    """Put dead letters back in the queue with fresh attempts (oldest first)."""
    _dlq_move(
        "retry",
        tenant,
        channel,
        error_code,
        since,
        limit,
        dry_run,
        actor,
        reason,
        database_url,
        as_json,
    )


@dlq_app.command("cancel")
def dlq_cancel(
    error_code: ErrorCodeOpt = None,
    channel: Channel = None,
    tenant: Tenant = None,
    since: Since = None,
    limit: Limit = None,
    dry_run: DryRun = False,
    actor: Actor = None,
    reason: Reason = None,
    database_url: DatabaseUrl = None,
    as_json: JsonOutput = False,
) -> None:
    """Cancel dead letters for good; they stay visible with status cancelled."""
    _dlq_move(
        "cancel",
        tenant,
        channel,
        error_code,
        since,
        limit,
        dry_run,
        actor,
        reason,
        database_url,
        as_json,
    )


@app.command()
def simulator(
    host: Annotated[
        str, typer.Option(envvar="SLUICE_SIMULATOR_HOST", help="Bind address.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="SLUICE_SIMULATOR_PORT", help="Port.")] = 8025,
    webhook_secret: Annotated[
        str | None,
        typer.Option(envvar="SLUICE_WEBHOOK_SECRET", help="Secret to verify webhook signatures."),
    ] = None,
) -> None:
    """Run the provider simulator: receives webhooks, verifies, records, injects faults."""
    from sluice.providers.simulator import serve

    if not webhook_secret:
        raise _fail(ConfigError("the simulator needs SLUICE_WEBHOOK_SECRET (or --webhook-secret)"))
    typer.echo(f"provider simulator on http://{host}:{port} (effects: /_sim/effects)", err=True)
    serve(host, port, webhook_secret)


@app.command()
def run(
    database_url: DatabaseUrl = None,
    port: Annotated[
        int, typer.Option(envvar="SLUICE_SIMULATOR_PORT", help="Simulator port (0: any free).")
    ] = 8025,
    demo: Annotated[
        int, typer.Option(envvar="SLUICE_DEMO", help="Demo messages to enqueue at start.")
    ] = 300,
    duration: Annotated[
        float,
        typer.Option(
            envvar="SLUICE_RUN_DURATION", help="Stop after this many seconds (0: Ctrl-C)."
        ),
    ] = 0.0,
    api_port: Annotated[
        int, typer.Option(envvar="SLUICE_API_PORT", help="HTTP API port (0: any free).")
    ] = 8400,
) -> None:
    """Everything in one process: SQLite, migrations, simulator, API, worker, a demo load."""
    from sluice.embedded import run_embedded

    try:
        settings = _settings(database_url)
    except SluiceError as exc:
        raise _fail(exc) from None
    _run(lambda: run_embedded(settings, port=port, demo=demo, duration=duration, api_port=api_port))


@app.command()
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
    log_level: Annotated[
        str | None, typer.Option(envvar="SLUICE_LOG_LEVEL", help="debug, info, warning, error.")
    ] = None,
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

    settings = _settings(
        database_url, api_host=host, api_port=port, log_level=log_level,
        api_header_timeout=header_timeout, api_body_timeout=body_timeout,
        api_max_connections=max_connections,
    )  # fmt: skip
    configure_logging(settings.log_level)

    async def check() -> None:
        from sluice.ingress.config import configured_ingress

        configured_ingress()  # a bad [ingress] table fails here, not on the first webhook
        store = await open_store(settings.database_url, settings, create=False)
        try:
            pending = await store.schema_pending()
        finally:
            await store.close()
        if pending:
            raise MigrationError(f"the schema is missing migrations {pending}; run: sluice migrate")

    _run(check)
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


# -- API keys ---------------------------------------------------------------------

apikeys_app = typer.Typer(
    help="HTTP API keys: create (the secret is shown once), list, revoke.",
    no_args_is_help=True,
)
app.add_typer(apikeys_app, name="apikeys")


@apikeys_app.command("create")
def apikeys_create(
    name: Annotated[str, typer.Argument(help="A name for the key (unique; audit logs show it).")],
    role: Annotated[
        str, typer.Option(help="tenant (one tenant's messages) or operator (everything).")
    ] = "tenant",
    tenant: Annotated[str | None, typer.Option(help="The tenant of a tenant key.")] = None,
    actor: Actor = None,
    database_url: DatabaseUrl = None,
    as_json: JsonOutput = False,
) -> None:
    """Make an API key and print it once: only its hash is stored."""
    from sluice.ops.apikeys import api_key_create

    settings = _settings(database_url)
    made = _run(
        lambda: _with_store(
            settings,
            lambda store: api_key_create(
                store, name, role, tenant, actor=actor or _default_actor()
            ),
        )
    )
    if as_json:
        _print_json({**jsonable(_key_view(made.key)), "token": made.token})
        return
    typer.echo(made.token)
    typer.echo(
        f"key {made.key.id} ({made.key.role}{' of ' + made.key.tenant if made.key.tenant else ''})"
        ": store the token now, it is not shown again",
        err=True,
    )


def _key_view(key: Any) -> dict[str, Any]:
    return {k: getattr(key, k) for k in ("id", "name", "role", "tenant", "created_by",
                                          "created_at", "revoked_at")}  # fmt: skip


@apikeys_app.command("list")
def apikeys_list(database_url: DatabaseUrl = None, as_json: JsonOutput = False) -> None:
    """Every key (never the secrets), with who made it and whether it is revoked."""
    from sluice.ops.apikeys import api_key_list

    settings = _settings(database_url)
    keys = _run(lambda: _with_store(settings, api_key_list))
    if as_json:
        _print_json([_key_view(k) for k in keys])
        return

    def when(at: datetime | None) -> str:
        return at.isoformat(timespec="seconds") if at else "-"

    rows = [[k.id, k.name, k.role, k.tenant or "-", when(k.created_at), when(k.revoked_at)]
            for k in keys]  # fmt: skip
    typer.echo(table(["ID", "NAME", "ROLE", "TENANT", "CREATED", "REVOKED"], rows))


@apikeys_app.command("revoke")
def apikeys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (or the whole sk_… token).")],
    actor: Actor = None,
    reason: Reason = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Revoke a key: refused at once by new servers, within 5 s by running ones."""
    from sluice.ops.apikeys import api_key_revoke

    settings = _settings(database_url)
    key = _run(
        lambda: _with_store(
            settings,
            lambda store: api_key_revoke(
                store, key_id, actor=actor or _default_actor(), reason=reason
            ),
        )
    )
    typer.echo(f"revoked {key.id} ({key.name})")


# -- ingress inbox ----------------------------------------------------------------

inbox_app = typer.Typer(
    help="Provider events taken in by ingress: list them, retry the ones the projector gave up on.",
    no_args_is_help=True,
)
app.add_typer(inbox_app, name="inbox")


@inbox_app.command("list")
def inbox_list(
    state: Annotated[
        str | None,
        typer.Option(
            help="pending, done, dead (what waits for you) or rejected (refused: tenancy)."
        ),
    ] = None,
    provider: Provider = None,
    limit: Annotated[int, typer.Option(help="Most events to show.")] = 50,
    database_url: DatabaseUrl = None,
    as_json: JsonOutput = False,
) -> None:
    """Events newest first: provider, event id, kind, state, attempts, last error."""
    from sluice.ops.inbox import inbox_list as list_events

    settings = _settings(database_url)
    items = _run(lambda: _with_store(settings, lambda s: list_events(s, state, provider, limit)))
    if as_json:
        _print_json(items)
        return
    rows = [[i.id, i.provider, i.event_id[:40], i.kind, i.status or "-", i.state, i.attempts,
             (i.result or i.last_error or "")[:60]] for i in items]  # fmt: skip
    headers = ["ID", "PROVIDER", "EVENT", "KIND", "STATUS", "STATE", "TRIES", "RESULT / ERROR"]
    typer.echo(table(headers, rows))


@inbox_app.command("retry")
def inbox_retry(
    ids: Annotated[
        list[int] | None, typer.Argument(help="Dead event ids; all dead events if none.")
    ] = None,
    actor: Actor = None,
    reason: Reason = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Give dead events back to the projector (audited)."""
    from sluice.ops.inbox import inbox_retry as retry_events

    settings = _settings(database_url)
    moved = _run(
        lambda: _with_store(
            settings,
            lambda s: retry_events(s, ids or None, actor=actor or _default_actor(), reason=reason),
        )
    )
    typer.echo(f"requeued {len(moved)} event(s)")


# -- connections ------------------------------------------------------------------

CredentialOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--credential",
        help="key=value (repeatable). Prefer --credentials-file: arguments show up in ps.",
    ),
]
CredentialsFile = Annotated[
    str | None,
    typer.Option(
        "--credentials-file",
        envvar="SLUICE_CREDENTIALS_FILE",
        help="JSON object of credentials; - reads standard input.",
    ),
]
ScopeOpt = Annotated[list[str] | None, typer.Option("--scope", help="Granted scope (repeatable).")]
ExpiresOpt = Annotated[
    str | None,
    typer.Option("--expires-at", envvar="SLUICE_EXPIRES_AT", help="Token expiry, ISO time."),
]
SecretKey = Annotated[
    str | None,
    typer.Option(
        "--secret-key",
        envvar="SLUICE_SECRET_KEY",
        help="Key encrypting credentials (base64, 32 bytes).",
        show_default=False,
    ),
]


def _read_credentials(pairs: list[str] | None, path: str | None) -> dict[str, str] | None:
    if pairs is None and path is None:
        return None
    out: dict[str, str] = {}
    if path is not None:
        try:
            text = sys.stdin.read() if path == "-" else open(path).read()  # noqa: SIM115
        except OSError as exc:
            raise ValidationError("credentials", f"cannot read {path}: {exc.strerror}") from None
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValidationError("credentials", f"{path} is not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise ValidationError("credentials", f"{path} must hold a JSON object")
        out.update({str(k): str(v) for k, v in value.items()})
    for n, pair in enumerate(pairs or [], start=1):
        key, sep, value = pair.partition("=")
        if not sep or not key:
            # Never echo it: a typo like "auth_token:tok-123" is still a secret.
            raise ValidationError(
                "credentials", f"--credential number {n} is not key=value (value not shown)"
            )
        out[key] = value
    return out


def _parse_time(text: str | None, field: str) -> datetime | None:
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValidationError(field, f"{text!r} is not an ISO 8601 time") from None
    if when.tzinfo is None:
        raise ValidationError(field, "needs a timezone, e.g. 2026-12-01T00:00:00Z")
    return when


def _box(settings: Settings) -> Any:
    box = _secret_box(settings)
    if box is None:
        raise ConfigError(
            "SLUICE_SECRET_KEY is not set: credentials are encrypted at rest and there is no "
            "plaintext fallback; generate a key with: sluice keys generate"
        )
    return box


def _print_connection(c: dict[str, Any]) -> None:
    for key in ("id", "tenant", "provider", "state", "state_reason", "state_changed_at",
                "scopes", "missing_scopes", "credential_version", "expires_at",
                "last_check_at", "last_check_ok_at", "last_check_error"):  # fmt: skip
        value = c.get(key)
        if isinstance(value, list):
            value = ", ".join(value) or "-"
        typer.echo(f"{key + ':':<20}{value if value is not None else '-'}")


@connections_app.command("add")
def connections_add(
    tenant: Annotated[str, typer.Option(envvar="SLUICE_TENANT", help="Tenant it belongs to.")],
    provider: Annotated[str, typer.Option(envvar="SLUICE_PROVIDER", help="Provider it is for.")],
    credential: CredentialOpt = None,
    credentials_file: CredentialsFile = None,
    scope: ScopeOpt = None,
    expires_at: ExpiresOpt = None,
    secret_key: SecretKey = None,
    actor: Actor = None,
    reason: Reason = None,
    database_url: DatabaseUrl = None,
    as_json: JsonOutput = False,
) -> None:
    """Add a tenant's connection to a provider; the credentials are encrypted at rest."""
    from sluice.ops.connections import connection_add

    async def go() -> Any:
        settings = _settings(database_url, secret_key=secret_key)
        secrets = _read_credentials(credential, credentials_file) or {}
        when = _parse_time(expires_at, "expires_at")
        box = _box(settings)
        return await _with_store(
            settings,
            lambda s: connection_add(
                s, box, tenant=tenant, provider=provider, secrets=secrets, scopes=scope or [],
                expires_at=when, actor=actor or _default_actor(), reason=reason,
            ),
        )  # fmt: skip

    conn = _run(go)
    if as_json:
        _print_json(conn.public())
    else:
        typer.echo(f"connection {conn.id} added for {tenant}/{provider} (state active)")


@connections_app.command("list")
def connections_list(
    tenant: Tenant = None, database_url: DatabaseUrl = None, as_json: JsonOutput = False
) -> None:
    """Every connection with its state and scopes (never its secrets)."""

    async def go() -> Any:
        settings = _settings(database_url)
        return await _with_store(settings, lambda s: s.connection_list(tenant))

    conns = _run(go)
    if as_json:
        _print_json([c.public() for c in conns])
        return
    if not conns:
        typer.echo("no connections")
        return
    typer.echo(
        table(
            ["tenant", "provider", "state", "version", "scopes", "last check ok", "reason"],
            [
                [
                    c.tenant, c.provider, c.state.value, c.credential_version,
                    ", ".join(c.scopes) or "-",
                    c.last_check_ok_at.isoformat() if c.last_check_ok_at else "never",
                    c.state_reason or "",
                ]
                for c in conns
            ],
        )
    )  # fmt: skip


@connections_app.command("show")
def connections_show(
    tenant: Annotated[str, typer.Option(envvar="SLUICE_TENANT", help="Tenant.")],
    provider: Annotated[str, typer.Option(envvar="SLUICE_PROVIDER", help="Provider.")],
    database_url: DatabaseUrl = None,
    as_json: JsonOutput = False,
) -> None:
    """One connection: state and why, scopes, version, last check (never its secrets)."""

    async def go() -> Any:
        settings = _settings(database_url)
        return await _with_store(settings, lambda s: s.connection_get(tenant, provider))

    conn = _run(go)
    if as_json:
        _print_json(conn.public())
    else:
        _print_connection(conn.public())


@connections_app.command("rotate")
def connections_rotate(
    tenant: Annotated[str, typer.Option(envvar="SLUICE_TENANT", help="Tenant.")],
    provider: Annotated[str, typer.Option(envvar="SLUICE_PROVIDER", help="Provider.")],
    credential: CredentialOpt = None,
    credentials_file: CredentialsFile = None,
    scope: ScopeOpt = None,
    expires_at: ExpiresOpt = None,
    secret_key: SecretKey = None,
    actor: Actor = None,
    reason: Reason = None,
    database_url: DatabaseUrl = None,
    as_json: JsonOutput = False,
) -> None:
    """Re-consent: new credentials and/or scopes; releases the held messages, oldest first."""
    from sluice.ops.connections import connection_rotate

    async def go() -> Any:
        settings = _settings(database_url, secret_key=secret_key)
        secrets = _read_credentials(credential, credentials_file)
        when = _parse_time(expires_at, "expires_at")
        box = _secret_box(settings)
        return await _with_store(
            settings,
            lambda s: connection_rotate(
                s, box, tenant=tenant, provider=provider, secrets=secrets, scopes=scope,
                expires_at=when, actor=actor or _default_actor(), reason=reason,
            ),
        )  # fmt: skip

    conn, released = _run(go)
    if as_json:
        _print_json({"connection": conn.public(), "released": len(released)})
    else:
        typer.echo(
            f"{tenant}/{provider} is active at credential version {conn.credential_version}; "
            f"{len(released)} held messages released"
        )


@connections_app.command("revoke")
def connections_revoke(
    tenant: Annotated[str, typer.Option(envvar="SLUICE_TENANT", help="Tenant.")],
    provider: Annotated[str, typer.Option(envvar="SLUICE_PROVIDER", help="Provider.")],
    reason: Annotated[str, typer.Option(envvar="SLUICE_REASON", help="Why (required).")],
    actor: Actor = None,
    database_url: DatabaseUrl = None,
    as_json: JsonOutput = False,
) -> None:
    """Stop using a connection now; its messages are held until re-consent."""
    from sluice.ops.connections import connection_revoke

    async def go() -> Any:
        settings = _settings(database_url)
        return await _with_store(
            settings,
            lambda s: connection_revoke(
                s, tenant=tenant, provider=provider, actor=actor or _default_actor(), reason=reason
            ),
        )

    held = _run(go)
    if as_json:
        _print_json({"held": len(held)})
    else:
        typer.echo(f"{tenant}/{provider} revoked; {len(held)} queued messages held")


@connections_app.command("check")
def connections_check(
    tenant: Tenant = None,
    provider: Annotated[
        str | None, typer.Option(envvar="SLUICE_PROVIDER", help="Only this provider.")
    ] = None,
    secret_key: SecretKey = None,
    database_url: DatabaseUrl = None,
    as_json: JsonOutput = False,
) -> None:
    """Call each provider's cheapest authenticated endpoint: credentials valid, scopes
    still granted, days until the token expires. Exit 1 if any check fails."""
    from sluice.ops.connections import connection_check
    from sluice.providers import build_providers, http_client

    async def go() -> list[Any]:
        settings = _settings(database_url, secret_key=secret_key)
        box = _box(settings)

        async def each(store: Store) -> list[Any]:
            reports: list[Any] = []
            async with http_client(settings) as client:
                impls = build_providers(settings, client)
                for conn in await store.connection_list(tenant, provider):
                    impl = impls.get(conn.provider)
                    if impl is None or not hasattr(impl, "check"):
                        reports.append(None)
                        continue
                    reports.append(await connection_check(store, box, impl, conn))
            return reports

        return await _with_store(settings, each)

    reports = [r for r in _run(go) if r is not None]
    if as_json:
        _print_json(reports)
    else:
        if not reports:
            typer.echo("no connections to check")
        for r in reports:
            c = r.connection
            days = "-" if r.days_until_expiry is None else f"{r.days_until_expiry:.1f}"
            mark = "ok  " if r.ok else "FAIL"
            typer.echo(f"{mark} {c['tenant']}/{c['provider']}: {r.detail}; expires in {days} days")
    if any(not r.ok for r in reports):
        raise typer.Exit(1)


@keys_app.command("generate")
def keys_generate() -> None:
    """Print a new random key for SLUICE_SECRET_KEY."""
    from sluice.secrets import generate_key

    typer.echo(generate_key())


@keys_app.command("rotate")
def keys_rotate(
    secret_key: SecretKey = None,
    secret_key_previous: Annotated[
        str | None,
        typer.Option(
            "--secret-key-previous",
            envvar="SLUICE_SECRET_KEY_PREVIOUS",
            help="The old key.",
            show_default=False,
        ),
    ] = None,
    actor: Actor = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Re-encrypt every credential under SLUICE_SECRET_KEY (old key in ..._PREVIOUS)."""
    from sluice.ops.connections import keys_rotate as rotate

    async def go() -> int:
        settings = _settings(
            database_url, secret_key=secret_key, secret_key_previous=secret_key_previous
        )
        box = _box(settings)
        return await _with_store(
            settings, lambda s: rotate(s, box, actor=actor or _default_actor())
        )

    n = _run(go)
    typer.echo(f"{n} credentials re-encrypted; the previous key is no longer needed")


# -- controls and held messages ---------------------------------------------------

controls_app = typer.Typer(
    help="Controls: set, clear and list the mode of a scope (see also kill, pause, resume).",
    no_args_is_help=True,
)
held_app = typer.Typer(
    help="Held messages (see also approve, release, cancel).", no_args_is_help=True
)
app.add_typer(controls_app, name="controls")
app.add_typer(held_app, name="held")

Provider = Annotated[
    str | None, typer.Option("--provider", envvar="SLUICE_PROVIDER", help="Only this provider.")
]
ActionOpt = Annotated[
    str | None,
    typer.Option("--action", envvar="SLUICE_ACTION", help="Only this action type."),
]
NeedReason = Annotated[
    str,
    typer.Option("--reason", envvar="SLUICE_REASON", help="Why (required; goes to the audit log)."),
]
Expires = Annotated[
    str | None,
    typer.Option(
        "--expires",
        envvar="SLUICE_EXPIRES",
        help="Revert by itself after this long: 90s, 15m, 2h, 1d [default: never].",
    ),
]
AckTimeout = Annotated[
    float,
    typer.Option(
        "--timeout",
        envvar="SLUICE_ACK_TIMEOUT",
        help="Seconds to wait for every live worker to acknowledge.",
    ),
]
NoWait = Annotated[
    bool,
    typer.Option("--no-wait", help="Return without waiting for the workers' acknowledgement."),
]
KeepHeld = Annotated[
    bool,
    typer.Option("--keep-held", help="Leave the messages the control held in held."),
]
HoldReasonOpt = Annotated[
    str | None,
    typer.Option(
        "--reason-contains",
        envvar="SLUICE_REASON_CONTAINS",
        help="Only holds whose reason has this.",
    ),
]
Ids = Annotated[list[str] | None, typer.Argument(help="Message ids (instead of filters).")]


def _scope(
    tenant: str | None, channel: str | None, provider: str | None, action: str | None
) -> Any:
    from sluice.flow.controls import Scope

    try:
        return Scope.of(tenant, channel, provider, action)
    except SluiceError as exc:
        raise _fail(exc) from None


def _print_change(change: Any, verb: str, as_json: bool) -> None:
    if as_json:
        _print_json(change.as_dict())
    else:
        control = change.control
        if control is not None and verb == "set":
            until = f" until {control.expires_at.isoformat()}" if control.expires_at else ""
            typer.echo(f"{control.scope}: {control.mode.value}{until} (epoch {control.version})")
        elif verb == "clear":
            was = f" (was {control.mode.value})" if control is not None else ""
            typer.echo(f"control cleared{was}; {len(change.released)} held messages released")
        if change.ack is not None:
            typer.echo(change.ack.summary())
    if change.ack is not None and not change.ack.complete:
        raise typer.Exit(1)


def _set_mode(
    mode: str,
    tenant: str | None,
    channel: str | None,
    provider: str | None,
    action: str | None,
    reason: str,
    expires: str | None,
    actor: str | None,
    timeout: float,
    no_wait: bool,
    database_url: str | None,
    as_json: bool,
) -> None:
    from sluice.ops import controls as ops

    scope = _scope(tenant, channel, provider, action)

    async def go() -> Any:
        settings = _settings(database_url)
        seconds = ops.parse_duration(expires) if expires else None
        return await _with_store(
            settings,
            lambda s: ops.control_set(
                s,
                scope,
                mode,
                actor=actor or _default_actor(),
                reason=reason,
                expires_in=seconds,
                wait=not no_wait,
                timeout=timeout,
            ),
        )

    _print_change(_run(go), "set", as_json)


@app.command()
def kill(
    tenant: Tenant = None,
    channel: Channel = None,
    provider: Provider = None,
    action: ActionOpt = None,
    reason: NeedReason = "",
    expires: Expires = None,
    actor: Actor = None,
    timeout: AckTimeout = 10.0,
    no_wait: NoWait = False,
    database_url: DatabaseUrl = None,
    as_json: JsonOutput = False,
) -> None:
    """Kill switch: nothing in the scope leaves; its messages are held. No scope = global.

    Returns once every live worker has acknowledged (exit 1 naming any that did not).
    """
    _set_mode("killed", tenant, channel, provider, action, reason, expires, actor, timeout,
              no_wait, database_url, as_json)  # fmt: skip


@app.command()
def pause(
    tenant: Tenant = None,
    channel: Channel = None,
    provider: Provider = None,
    action: ActionOpt = None,
    reason: NeedReason = "",
    expires: Expires = None,
    actor: Actor = None,
    timeout: AckTimeout = 10.0,
    no_wait: NoWait = False,
    database_url: DatabaseUrl = None,
    as_json: JsonOutput = False,
) -> None:
    """Pause a scope: its messages stay queued, nothing is claimed. No scope = global."""
    _set_mode("paused", tenant, channel, provider, action, reason, expires, actor, timeout,
              no_wait, database_url, as_json)  # fmt: skip


def _clear(
    tenant: str | None,
    channel: str | None,
    provider: str | None,
    action: str | None,
    reason: str,
    keep_held: bool,
    actor: str | None,
    timeout: float,
    no_wait: bool,
    database_url: str | None,
    as_json: bool,
) -> None:
    from sluice.ops import controls as ops

    scope = _scope(tenant, channel, provider, action)

    async def go() -> Any:
        settings = _settings(database_url)
        return await _with_store(
            settings,
            lambda s: ops.control_clear(
                s,
                scope,
                actor=actor or _default_actor(),
                reason=reason,
                release=not keep_held,
                wait=not no_wait,
                timeout=timeout,
            ),
        )

    _print_change(_run(go), "clear", as_json)


@app.command()
def resume(
    tenant: Tenant = None,
    channel: Channel = None,
    provider: Provider = None,
    action: ActionOpt = None,
    reason: NeedReason = "",
    keep_held: KeepHeld = False,
    actor: Actor = None,
    timeout: AckTimeout = 10.0,
    no_wait: NoWait = False,
    database_url: DatabaseUrl = None,
    as_json: JsonOutput = False,
) -> None:
    """Lift the control on exactly this scope and release the messages controls held in it."""
    _clear(tenant, channel, provider, action, reason, keep_held, actor, timeout, no_wait,
           database_url, as_json)  # fmt: skip


@controls_app.command("set")
def controls_set(
    mode: Annotated[str, typer.Argument(help="live, paused, shadow, approval or killed.")],
    tenant: Tenant = None,
    channel: Channel = None,
    provider: Provider = None,
    action: ActionOpt = None,
    reason: NeedReason = "",
    expires: Expires = None,
    actor: Actor = None,
    timeout: AckTimeout = 10.0,
    no_wait: NoWait = False,
    database_url: DatabaseUrl = None,
    as_json: JsonOutput = False,
) -> None:
    """Set the mode of a scope (most restrictive wins where scopes overlap)."""
    _set_mode(mode, tenant, channel, provider, action, reason, expires, actor, timeout,
              no_wait, database_url, as_json)  # fmt: skip


@controls_app.command("clear")
def controls_clear(
    tenant: Tenant = None,
    channel: Channel = None,
    provider: Provider = None,
    action: ActionOpt = None,
    reason: NeedReason = "",
    keep_held: KeepHeld = False,
    actor: Actor = None,
    timeout: AckTimeout = 10.0,
    no_wait: NoWait = False,
    database_url: DatabaseUrl = None,
    as_json: JsonOutput = False,
) -> None:
    """Remove the control of exactly this scope (the same as resume)."""
    _clear(tenant, channel, provider, action, reason, keep_held, actor, timeout, no_wait,
           database_url, as_json)  # fmt: skip


@controls_app.command("list")
def controls_list(database_url: DatabaseUrl = None, as_json: JsonOutput = False) -> None:
    """Controls in force, and the default mode of everything else."""
    from sluice.ops import controls as ops

    settings = _settings(database_url)
    controls = _run(lambda: _with_store(settings, ops.control_list))
    if as_json:
        _print_json(
            {"default_mode": settings.default_mode, "controls": [c.as_dict() for c in controls]}
        )
        return
    typer.echo(f"default mode: {settings.default_mode}")
    if not controls:
        typer.echo("no controls set")
        return
    typer.echo(
        table(
            ["scope", "mode", "since", "expires", "actor", "reason"],
            [
                [
                    str(c.scope),
                    c.mode.value,
                    c.created_at.isoformat(timespec="seconds"),
                    c.expires_at.isoformat(timespec="seconds") if c.expires_at else "never",
                    c.actor,
                    c.reason,
                ]
                for c in controls
            ],
        )
    )


def _held_filter(
    tenant: str | None,
    channel: str | None,
    provider: str | None,
    action: str | None,
    error_code: str | None,
    contains: str | None,
    since: str | None,
    limit: int | None,
) -> MessageFilter:
    base = _filter(tenant, channel, error_code, since, limit)
    return MessageFilter(
        tenant=base.tenant,
        channel=base.channel,
        error_code=base.error_code,
        since=base.since,
        limit=base.limit,
        provider=provider,
        action=action,
        reason=contains,
    )


@held_app.command("list")
def held_list(
    tenant: Tenant = None,
    channel: Channel = None,
    provider: Provider = None,
    action: ActionOpt = None,
    error_code: ErrorCodeOpt = None,
    contains: HoldReasonOpt = None,
    since: Since = None,
    limit: Limit = None,
    database_url: DatabaseUrl = None,
    as_json: JsonOutput = False,
) -> None:
    """Held messages, oldest first, with why each is held."""
    from sluice.ops import controls as ops

    async def go() -> Any:
        settings = _settings(database_url)
        flt = _held_filter(tenant, channel, provider, action, error_code, contains, since, limit)
        return await _with_store(settings, lambda s: ops.held_list(s, flt))

    held = _run(go)
    if as_json:
        _print_json({"held": held, "count": len(held)})
        return
    if not held:
        typer.echo("no held messages")
        return
    typer.echo(
        table(
            ["id", "tenant", "channel", "provider", "action", "held since", "reason"],
            [
                [
                    m.id,
                    m.tenant,
                    m.channel,
                    m.provider,
                    m.action,
                    m.updated_at.isoformat(timespec="seconds") if m.updated_at else "",
                    m.hold_reason,
                ]
                for m in held
            ],
        )
    )


def _held_move(
    verb: str,
    ids: list[str] | None,
    tenant: str | None,
    channel: str | None,
    provider: str | None,
    action: str | None,
    error_code: str | None,
    contains: str | None,
    since: str | None,
    limit: int | None,
    dry_run: bool,
    actor: str | None,
    reason: str | None,
    database_url: str | None,
    as_json: bool,
) -> None:
    from sluice.ops import controls as ops

    filtered = any(v is not None for v in (tenant, channel, provider, action, error_code,
                                           contains, since))  # fmt: skip
    if not ids and not filtered:
        raise _fail(
            ValidationError(
                "filter",
                f"name the messages to {verb}: ids, or at least one filter (--tenant, "
                "--channel, --provider, --action, --error-code, --reason-contains, --since)",
            )
        )

    async def go() -> Any:
        settings = _settings(database_url)
        flt = _held_filter(tenant, channel, provider, action, error_code, contains, since, limit)
        fn = {"approve": ops.held_approve, "release": ops.held_release,
              "cancel": ops.held_cancel}[verb]  # fmt: skip
        who = actor or _default_actor()
        return await _with_store(
            settings,
            lambda s: fn(s, flt, ids or None, dry_run=dry_run, actor=who, reason=reason),
        )

    result = _run(go)
    if as_json:
        _print_json(result)
        return
    done = {"approve": "approved", "release": "released", "cancel": "cancelled"}[verb]
    if result.dry_run:
        typer.echo(f"dry run: {result.matched} held messages would be {done}")
        for mid in result.ids[:20]:
            typer.echo(f"  {mid}")
        if result.matched > 20:
            typer.echo(f"  … and {result.matched - 20} more")
    else:
        typer.echo(f"{result.changed} of {result.matched} held messages {done}")


def _held_command(verb: str, doc: str) -> None:
    def command(
        ids: Ids = None,
        tenant: Tenant = None,
        channel: Channel = None,
        provider: Provider = None,
        action: ActionOpt = None,
        error_code: ErrorCodeOpt = None,
        contains: HoldReasonOpt = None,
        since: Since = None,
        limit: Limit = None,
        dry_run: DryRun = False,
        actor: Actor = None,
        reason: Reason = None,
        database_url: DatabaseUrl = None,
        as_json: JsonOutput = False,
    ) -> None:
        _held_move(verb, ids, tenant, channel, provider, action, error_code, contains, since,
                   limit, dry_run, actor, reason, database_url, as_json)  # fmt: skip

    command.__doc__ = doc
    app.command(verb)(command)


_held_command(
    "approve",
    "Approve held messages: each passes an approval control once and goes to the queue.",
)
_held_command(
    "release",
    "Put held messages back in the queue (controls still apply to them).",
)
_held_command("cancel", "Cancel held messages for good; they stay visible as cancelled.")


# -- limits -----------------------------------------------------------------------

limits_app = typer.Typer(
    help="Rate limits, quotas, recipient caps and concurrency: list (with quota use), "
    "set and clear at run time.",
    no_args_is_help=True,
)
app.add_typer(limits_app, name="limits")


@limits_app.command("list")
def limits_list(database_url: DatabaseUrl = None, as_json: JsonOutput = False) -> None:
    """Limits in force (sluice.toml, overridden by run-time ones), quotas with their use."""
    from sluice.flow.limits import configured_flow
    from sluice.ops.limits import limit_list

    settings = _settings(database_url)
    try:
        configured, _ = configured_flow()
    except SluiceError as exc:
        raise _fail(exc) from None
    views = _run(lambda: _with_store(settings, lambda s: limit_list(s, configured, settings)))
    if as_json:
        _print_json({"limits": [v.as_dict() for v in views]})
        return
    if not views:
        typer.echo("no limits configured")
        return
    rows = []
    for v in views:
        s = v.spec
        if s.kind == "rate":
            what = f"{s.rate}/s, burst {s.burst}"
        elif s.kind == "quota":
            resets = f"resets {s.reset} UTC" if s.anchor is not None else "rolling"
            what = (
                f"{s.limit} per {s.window}s ({resets}), urgent ≥ {s.urgent_priority}, "
                f"reserve {s.reserve:.0%}"
            )
        elif s.kind == "recipient":
            what = f"max {s.max} per {s.window}s, cooldown {s.cooldown or 0}s"
        elif s.kind == "action":
            what = f"max {s.max} per {s.window}s"
        else:
            what = f"max {s.max} in flight per worker"
        use = "" if v.used is None else f"{v.used} used, {v.remaining} left"
        rows.append([s.label(), what, use, s.source])
    typer.echo(table(["limit", "setting", "use", "source"], rows))


@limits_app.command("set")
def limits_set(
    kind: Annotated[str, typer.Argument(help="rate, quota, recipient, action or concurrency.")],
    tenant: Tenant = None,
    provider: Provider = None,
    action: ActionOpt = None,
    rate: Annotated[float | None, typer.Option(help="rate: tokens per second.")] = None,
    burst: Annotated[float | None, typer.Option(help="rate: bucket size.")] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", help="quota: messages per window.")
    ] = None,
    window: Annotated[str | None, typer.Option(help="quota/recipient/action: 1d, 1h…")] = None,
    urgent_priority: Annotated[
        int | None, typer.Option(help="quota: priority that may use the reserve.")
    ] = None,
    reserve: Annotated[float | None, typer.Option(help="quota: fraction kept for urgent.")] = None,
    reset: Annotated[
        str | None,
        typer.Option(help="quota: rolling (default), or the provider's reset time HH:MM UTC."),
    ] = None,
    max_: Annotated[
        int | None, typer.Option("--max", help="recipient/action/concurrency: the cap.")
    ] = None,
    cooldown: Annotated[str | None, typer.Option(help="recipient: gap between two.")] = None,
    reason: NeedReason = "",
    actor: Actor = None,
    database_url: DatabaseUrl = None,
    as_json: JsonOutput = False,
) -> None:
    """Set a limit at run time (audited; every worker applies it on its next poll)."""
    from sluice.ops.limits import limit_set

    raw: dict[str, Any] = {"kind": kind, "tenant": tenant or "", "provider": provider or "",
                           "action": action or ""}  # fmt: skip
    for name, value in (("rate", rate), ("burst", burst), ("limit", limit), ("window", window),
                        ("urgent_priority", urgent_priority), ("reserve", reserve),
                        ("reset", reset), ("max", max_), ("cooldown", cooldown)):  # fmt: skip
        if value is not None:
            raw[name] = value
    settings = _settings(database_url)
    who = actor or _default_actor()
    spec = _run(
        lambda: _with_store(settings, lambda s: limit_set(s, raw, actor=who, reason=reason))
    )
    if as_json:
        _print_json(spec.as_dict())
    else:
        typer.echo(f"{spec.label()} set; workers apply it within SLUICE_CONTROL_POLL")


@limits_app.command("clear")
def limits_clear(
    kind: Annotated[str, typer.Argument(help="rate, quota, recipient, action or concurrency.")],
    tenant: Tenant = None,
    provider: Provider = None,
    action: ActionOpt = None,
    reason: NeedReason = "",
    actor: Actor = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Remove a run-time limit (a limit of sluice.toml for the same scope applies again)."""
    from sluice.ops.limits import limit_clear

    settings = _settings(database_url)
    who = actor or _default_actor()
    _run(
        lambda: _with_store(
            settings,
            lambda s: limit_clear(
                s,
                kind,
                tenant=tenant or "",
                provider=provider or "",
                action=action or "",
                actor=who,
                reason=reason,
            ),
        )
    )
    typer.echo("run-time limit cleared")


# -- breakers ---------------------------------------------------------------------

breakers_app = typer.Typer(
    help="Circuit breakers per provider (p:<provider>), per connection "
    "(c:<tenant>:<provider>) and per webhook / http endpoint (e:<tenant>:<URL>): "
    "list, force open or closed, reset.",
    no_args_is_help=True,
)
app.add_typer(breakers_app, name="breakers")

BreakerKey = Annotated[
    str,
    typer.Argument(
        help="p:<provider>, c:<tenant>:<provider>, e:<tenant>:<endpoint URL>, "
        "or a provider name (p:<name>)."
    ),
]
BreakerReason = Annotated[
    str, typer.Option("--reason", envvar="SLUICE_REASON", help="Why (required; audit log).")
]


@breakers_app.command("list")
def breakers_list(database_url: DatabaseUrl = None, as_json: JsonOutput = False) -> None:
    """Every breaker: state, since, retry at, forced, reason, and its window's figures."""
    from sluice.ops.breakers import breakers_list as list_breakers

    async def go() -> Any:
        settings = _settings(database_url)
        return await _with_store(settings, lambda s: list_breakers(s, settings))

    found = _run(go)
    if as_json:
        _print_json(found)
        return
    if not found:
        typer.echo("no breakers: every provider and connection is closed with no outcomes")
        return
    typer.echo(
        table(
            ["key", "state", "ok", "failed", "rate", "since", "retry at", "reason"],
            [
                [
                    b.key,
                    b.state.value + (" (forced)" if b.forced else ""),
                    b.ok,
                    b.failed,
                    "-" if b.failure_rate is None else f"{b.failure_rate:.0%}",
                    b.since.isoformat(timespec="seconds") if b.since else "-",
                    b.retry_at.isoformat(timespec="seconds") if b.retry_at else "-",
                    b.reason or "",
                ]
                for b in found
            ],
        )
    )


def _breaker_act(
    verb: str,
    key: str,
    reason: str,
    actor: str | None,
    database_url: str | None,
    as_json: bool,
) -> None:
    from sluice.ops.breakers import breaker_force, breaker_reset

    async def go() -> Any:
        settings = _settings(database_url)
        who = actor or _default_actor()

        async def act(store: Store) -> Any:
            if verb == "reset":
                return await breaker_reset(store, key, actor=who, reason=reason)
            return await breaker_force(store, key, verb, actor=who, reason=reason)

        return await _with_store(settings, act)

    row = _run(go)
    if as_json:
        _print_json(row)
    elif verb == "reset":
        typer.echo(f"breaker {row.key} reset: closed, back to automatic")
    else:
        typer.echo(
            f"breaker {row.key} forced {row.state}; workers leave it so until: "
            f"sluice breakers reset {row.key}"
        )


@breakers_app.command("open")
def breakers_open(
    key: BreakerKey,
    reason: BreakerReason,
    actor: Actor = None,
    database_url: DatabaseUrl = None,
    as_json: JsonOutput = False,
) -> None:
    """Force a breaker open: nothing goes through it (messages wait) until reset."""
    _breaker_act("open", key, reason, actor, database_url, as_json)


@breakers_app.command("close")
def breakers_close(
    key: BreakerKey,
    reason: BreakerReason,
    actor: Actor = None,
    database_url: DatabaseUrl = None,
    as_json: JsonOutput = False,
) -> None:
    """Force a breaker closed: everything goes through it, whatever fails, until reset."""
    _breaker_act("closed", key, reason, actor, database_url, as_json)


@breakers_app.command("reset")
def breakers_reset(
    key: BreakerKey,
    reason: BreakerReason,
    actor: Actor = None,
    database_url: DatabaseUrl = None,
    as_json: JsonOutput = False,
) -> None:
    """Hand a breaker back to the workers: closed, automatic, its window emptied."""
    _breaker_act("reset", key, reason, actor, database_url, as_json)


def main() -> None:
    """Entry point of the ``sluice`` script."""
    from sluice.logs import quiet_pool_warnings

    quiet_pool_warnings()  # commands that set up no logging would print them bare
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
