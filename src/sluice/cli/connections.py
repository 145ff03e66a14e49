"""``connections``: a tenant's credentials for a provider (encrypted at rest), its scopes
and state; ``keys``: the key that encrypts them."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Annotated, Any

import typer

from sluice.cli.options import Actor, DatabaseUrl, JsonOutput, Reason, Tenant
from sluice.cli.requests import gated, unless_filed
from sluice.cli.runtime import (
    actor_or_default,
    echo_json,
    echo_table,
    on_store,
    run_async,
    settings_for,
    with_store,
)
from sluice.config import Settings
from sluice.errors import ConfigError, ValidationError
from sluice.ops.render import listing
from sluice.store import Store

__all__ = ["connections_app", "keys_app"]

connections_app = typer.Typer(
    help="Tenant connections: credentials (encrypted), scopes, state.", no_args_is_help=True
)
keys_app = typer.Typer(help="The key that encrypts credentials at rest.", no_args_is_help=True)

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
TheTenant = Annotated[str, typer.Option(envvar="SLUICE_TENANT", help="Tenant.")]
TheProvider = Annotated[str, typer.Option(envvar="SLUICE_PROVIDER", help="Provider.")]


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


def _secret_box(settings: Settings) -> Any:
    from sluice.worker.assemble import secret_box

    return secret_box(settings)


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
        settings = settings_for(database_url, secret_key=secret_key)
        secrets = _read_credentials(credential, credentials_file) or {}
        when = _parse_time(expires_at, "expires_at")
        box = _box(settings)
        return await with_store(
            settings,
            lambda s: connection_add(
                s, box, tenant=tenant, provider=provider, secrets=secrets, scopes=scope or [],
                expires_at=when, actor=actor_or_default(actor), reason=reason,
            ),
        )  # fmt: skip

    conn = run_async(go)
    if as_json:
        echo_json(conn.public())
    else:
        typer.echo(f"connection {conn.id} added for {tenant}/{provider} (state active)")


@connections_app.command("list")
def connections_list(
    tenant: Tenant = None, database_url: DatabaseUrl = None, as_json: JsonOutput = False
) -> None:
    """Every connection with its state and scopes (never its secrets)."""

    settings = settings_for(database_url)
    conns = on_store(settings, lambda s: s.connection_list(tenant))
    if as_json:
        echo_json(listing([c.public() for c in conns]))
        return
    if not conns:
        typer.echo("no connections")
        return
    echo_table(
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
    )  # fmt: skip


@connections_app.command("show")
def connections_show(
    tenant: TheTenant,
    provider: TheProvider,
    database_url: DatabaseUrl = None,
    as_json: JsonOutput = False,
) -> None:
    """One connection: state and why, scopes, version, last check (never its secrets)."""

    settings = settings_for(database_url)
    conn = on_store(settings, lambda s: s.connection_get(tenant, provider))
    if as_json:
        echo_json(conn.public())
    else:
        _print_connection(conn.public())


@connections_app.command("rotate")
def connections_rotate(
    tenant: TheTenant,
    provider: TheProvider,
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
        settings = settings_for(database_url, secret_key=secret_key)
        secrets = _read_credentials(credential, credentials_file)
        when = _parse_time(expires_at, "expires_at")
        box = _secret_box(settings)
        return await with_store(
            settings,
            lambda s: connection_rotate(
                s, box, tenant=tenant, provider=provider, secrets=secrets, scopes=scope,
                expires_at=when, actor=actor_or_default(actor), reason=reason,
            ),
        )  # fmt: skip

    conn, released = run_async(go)
    if as_json:
        echo_json({"connection": conn.public(), "released": len(released)})
    else:
        typer.echo(
            f"{tenant}/{provider} is active at credential version {conn.credential_version}; "
            f"{len(released)} held messages released"
        )


@connections_app.command("revoke")
def connections_revoke(
    tenant: TheTenant,
    provider: TheProvider,
    reason: Annotated[str, typer.Option(envvar="SLUICE_REASON", help="Why (required).")],
    actor: Actor = None,
    database_url: DatabaseUrl = None,
    as_json: JsonOutput = False,
) -> None:
    """Stop using a connection now; its messages are held until re-consent."""
    settings = settings_for(database_url)
    args = {"tenant": tenant, "provider": provider}
    act = gated(settings, "connection.revoke", args, actor=actor_or_default(actor), reason=reason)
    held = unless_filed(on_store(settings, act), as_json)
    if as_json:
        echo_json({"held": len(held)})
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
        settings = settings_for(database_url, secret_key=secret_key)
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

        return await with_store(settings, each)

    reports = [r for r in run_async(go) if r is not None]
    if as_json:
        echo_json(reports)
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
        settings = settings_for(
            database_url, secret_key=secret_key, secret_key_previous=secret_key_previous
        )
        box = _box(settings)
        return await with_store(settings, lambda s: rotate(s, box, actor=actor_or_default(actor)))

    n = run_async(go)
    typer.echo(f"{n} credentials re-encrypted; the previous key is no longer needed")
