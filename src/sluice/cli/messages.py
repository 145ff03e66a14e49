"""Messages: ``send`` one from the shell, ``messages list`` them (by correlation id,
tenant, status…), ``messages show`` one with its attempts."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer

from sluice.addressing import addressing_in_effect
from sluice.cli.options import (
    ActionOpt,
    Channel,
    Cursor,
    DatabaseUrl,
    ErrorCodeOpt,
    IdsOut,
    JsonOutput,
    Provider,
    Tenant,
)
from sluice.cli.runtime import (
    echo_json,
    echo_table,
    fail,
    on_store,
    run_async,
    settings_for,
    with_store,
)
from sluice.errors import ValidationError
from sluice.model import NewMessage
from sluice.store import MessageFilter

__all__ = ["messages_app", "send"]

messages_app = typer.Typer(help="Inspect messages.", no_args_is_help=True)


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
    ttl: Annotated[
        str | None,
        typer.Option(
            envvar="SLUICE_TTL",
            help="Not sent within this (90s, 15m, 2h, 1d), it ends expired, never sent late "
            "[default: the [expiry] of sluice.toml].",
        ),
    ] = None,
    verify_within: Annotated[
        str | None,
        typer.Option(
            envvar="SLUICE_VERIFY_WITHIN",
            help="No delivered or read receipt within this after sending (90s, 10m, 2h), "
            "it moves to needs_confirm for a person to confirm or fail.",
        ),
    ] = None,
    database_url: DatabaseUrl = None,
    as_json: JsonOutput = False,
) -> None:
    """Enqueue one message from the shell; prints its id."""
    from sluice.expiry import check_ttl

    async def go() -> list[str]:
        settings = settings_for(database_url)
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
            ttl=None if ttl is None else check_ttl(ttl, "ttl"),
            verify_within=None
            if verify_within is None
            else check_ttl(verify_within, "verify_within"),
        )
        # Before touching the database: bad input changes nothing.
        msg.validate(addressing=addressing_in_effect(settings))
        return await with_store(settings, lambda s: s.enqueue_many([msg]))

    ids: Any = run_async(go)
    if as_json:
        echo_json({"id": ids[0]})
    else:
        typer.echo(ids[0])


CreatedSince = Annotated[
    str | None,
    typer.Option(
        "--since",
        envvar="SLUICE_SINCE",
        help="Created at or after: ISO time or a span back (15m, 2h, 7d).",
    ),
]
CreatedUntil = Annotated[
    str | None,
    typer.Option(
        "--until",
        envvar="SLUICE_UNTIL",
        help="Created before: ISO time or a span back (15m, 2h, 7d).",
    ),
]
UpdatedSince = Annotated[
    str | None,
    typer.Option(
        "--updated-since",
        envvar="SLUICE_UPDATED_SINCE",
        help="Last changed at or after: ISO time or a span back (15m, 2h, 7d).",
    ),
]
UpdatedUntil = Annotated[
    str | None,
    typer.Option(
        "--updated-until",
        envvar="SLUICE_UPDATED_UNTIL",
        help="Last changed before: ISO time or a span back (15m, 2h, 7d).",
    ),
]


@messages_app.command("list")
def messages_list(
    correlation_id: Annotated[
        str | None,
        typer.Option(
            envvar="SLUICE_CORRELATION_ID",
            help="Only this correlation id (an API request's X-Request-Id when none was given).",
        ),
    ] = None,
    tenant: Tenant = None,
    channel: Channel = None,
    provider: Provider = None,
    action: ActionOpt = None,
    error_code: ErrorCodeOpt = None,
    status: Annotated[
        str | None,
        typer.Option(envvar="SLUICE_STATUS", help="Only this status: queued, sent, dead…"),
    ] = None,
    since: CreatedSince = None,
    until: CreatedUntil = None,
    updated_since: UpdatedSince = None,
    updated_until: UpdatedUntil = None,
    limit: Annotated[
        int, typer.Option(envvar="SLUICE_LIMIT", help="Most messages on this page (1-10000).")
    ] = 50,
    cursor: Cursor = None,
    ids_only: IdsOut = False,
    database_url: DatabaseUrl = None,
    as_json: JsonOutput = False,
) -> None:
    """Messages newest first: id, tenant, channel, provider, status, attempts, correlation;
    a page at a time (--cursor: the next_cursor printed). With --ids, only the ids, one a
    line: `sluice messages list --status dead --ids | sluice dlq retry -`."""
    from sluice.ops.listings import message_page, parse_time

    if ids_only and as_json:
        raise fail(ValidationError("--ids", "cannot be combined with --json"))
    now = datetime.now(UTC)
    try:  # checked before the store is opened: bad input touches nothing
        flt = MessageFilter(
            tenant=tenant, channel=channel, provider=provider, action=action,
            error_code=error_code, correlation_id=correlation_id,
            since=parse_time("since", since, now), until=parse_time("until", until, now),
            updated_since=parse_time("updated_since", updated_since, now),
            updated_until=parse_time("updated_until", updated_until, now),
        )  # fmt: skip
    except ValidationError as exc:
        raise fail(exc) from None
    settings = settings_for(database_url)
    page = on_store(settings, lambda s: message_page(s, flt, status, cursor, limit))
    if as_json:
        echo_json(page.as_dict())
        return
    if ids_only:
        for m in page.items:
            typer.echo(m.id)
        return
    echo_table(
        ["ID", "TENANT", "CHANNEL", "PROVIDER", "STATUS", "TRIES", "CORRELATION", "CREATED"],
        [[m.id, m.tenant, m.channel, m.provider, m.status.value, m.attempts,
          m.correlation_id or "", m.created_at and m.created_at.isoformat(timespec="seconds")]
         for m in page.items],
    )  # fmt: skip
    if page.next_cursor is not None:
        typer.echo(f"\nmore: --cursor {page.next_cursor}")


@messages_app.command("show")
def messages_show(
    message_id: Annotated[str, typer.Argument(help="The message id.")],
    database_url: DatabaseUrl = None,
    as_json: JsonOutput = False,
) -> None:
    """One message with every attempt made at it."""
    from sluice import ops

    settings = settings_for(database_url)
    msg, attempts = on_store(settings, lambda s: ops.message_show(s, message_id))
    if as_json:
        echo_json({"message": msg, "attempts": attempts})
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
        echo_table(
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
