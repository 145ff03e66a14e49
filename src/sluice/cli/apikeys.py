"""``apikeys``: keys to the HTTP API — create one (its secret is shown once), list, revoke."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import typer

from sluice.cli.options import Actor, DatabaseUrl, JsonOutput, Reason
from sluice.cli.requests import gated, unless_filed
from sluice.cli.runtime import actor_or_default, echo_json, echo_table, on_store, settings_for
from sluice.ops.render import jsonable, listing

__all__ = ["apikeys_app"]

apikeys_app = typer.Typer(
    help="HTTP API keys: create (the secret is shown once), list, revoke.",
    no_args_is_help=True,
)


def _key_view(key: Any) -> dict[str, Any]:
    return {k: getattr(key, k) for k in ("id", "name", "role", "tenant", "created_by",
                                          "created_at", "revoked_at")}  # fmt: skip


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
    settings = settings_for(database_url)
    args = {"name": name, "role": role, "tenant": tenant}
    act = gated(settings, "apikeys.create", args, actor=actor_or_default(actor), reason=None)
    made = unless_filed(on_store(settings, act), as_json)
    if as_json:
        echo_json({**jsonable(_key_view(made.key)), "token": made.token})
        return
    typer.echo(made.token)
    typer.echo(
        f"key {made.key.id} ({made.key.role}{' of ' + made.key.tenant if made.key.tenant else ''})"
        ": store the token now, it is not shown again",
        err=True,
    )


@apikeys_app.command("list")
def apikeys_list(database_url: DatabaseUrl = None, as_json: JsonOutput = False) -> None:
    """Every key (never the secrets), with who made it and whether it is revoked."""
    from sluice.ops.apikeys import api_key_list

    settings = settings_for(database_url)
    keys = on_store(settings, api_key_list)
    if as_json:
        echo_json(listing([_key_view(k) for k in keys]))
        return

    def when(at: datetime | None) -> str:
        return at.isoformat(timespec="seconds") if at else "-"

    rows = [[k.id, k.name, k.role, k.tenant or "-", when(k.created_at), when(k.revoked_at)]
            for k in keys]  # fmt: skip
    echo_table(["ID", "NAME", "ROLE", "TENANT", "CREATED", "REVOKED"], rows)


@apikeys_app.command("revoke")
def apikeys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (or the whole sk_… token).")],
    actor: Actor = None,
    reason: Reason = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Revoke a key: refused at once by new servers, within 5 s by running ones."""
    settings = settings_for(database_url)
    who = actor_or_default(actor)
    act = gated(settings, "apikeys.revoke", {"key_id": key_id}, actor=who, reason=reason)
    key = unless_filed(on_store(settings, act), False)
    typer.echo(f"revoked {key.id} ({key.name})")
