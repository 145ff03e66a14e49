"""``tenants``: a tenant's own settings — where its operational events go (issue 14):
``tenants events-url set|clear|show``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from sluice.cli.options import Actor, DatabaseUrl, JsonOutput, Reason
from sluice.cli.runtime import (
    actor_or_default,
    echo_json,
    echo_table,
    on_store,
    run_async,
    settings_for,
    with_store,
)
from sluice.store import Store

__all__ = ["tenants_app"]

tenants_app = typer.Typer(help="A tenant's own settings: its events URL.", no_args_is_help=True)
events_app = typer.Typer(
    help="Where a tenant's operational events go (endpoint.disabled, message.dead, …), "
    "signed with its own Standard Webhooks secret.",
    no_args_is_help=True,
)
tenants_app.add_typer(events_app, name="events-url")

TenantName = Annotated[str, typer.Argument(help="The tenant.")]


@events_app.command("set")
def events_url_set(
    tenant: TenantName,
    url: Annotated[str, typer.Argument(help="https:// URL that receives the events.")],
    secret: Annotated[
        str | None,
        typer.Option(
            "--secret",
            envvar="SLUICE_EVENTS_SECRET",
            help="Standard Webhooks secret (whsec_…) to sign with; default: keep the "
            "tenant's, or make one and print it once.",
        ),
    ] = None,
    actor: Actor = None,
    reason: Reason = None,
    database_url: DatabaseUrl = None,
    as_json: JsonOutput = False,
) -> None:
    """Send a tenant's operational events to URL, signed with its secret."""
    from sluice.cli.connections import _box
    from sluice.ops.tenant_events import events_url_set as set_url

    async def go() -> Any:
        settings = settings_for(database_url)
        box = _box(settings)

        async def act(store: Store) -> Any:
            return await set_url(store, box, tenant=tenant, url=url, secret=secret,
                                 actor=actor_or_default(actor), reason=reason,
                                 settings=settings)  # fmt: skip

        return await with_store(settings, act)

    done = run_async(go)
    if as_json:
        echo_json(done.as_dict())
        return
    typer.echo(f"tenant {done.tenant}: events go to {done.events_url}")
    if done.secret:
        typer.echo(f"signing secret (shown once; give it to the tenant): {done.secret}")


@events_app.command("clear")
def events_url_clear(
    tenant: TenantName,
    actor: Actor = None,
    reason: Reason = None,
    database_url: DatabaseUrl = None,
    as_json: JsonOutput = False,
) -> None:
    """Stop sending a tenant events (its secret is kept for a later set)."""
    from sluice.cli.requests import gated, unless_filed

    settings = settings_for(database_url)
    who = actor_or_default(actor)
    act = gated(settings, "events_url.clear", {"tenant": tenant}, actor=who, reason=reason)
    done = unless_filed(on_store(settings, act), as_json)
    if as_json:
        echo_json(done.as_dict())
    else:
        typer.echo(f"tenant {done.tenant}: no events are sent any more")


@events_app.command("list")
def events_url_list(
    tenant: Annotated[str | None, typer.Option("--tenant", help="Only this tenant.")] = None,
    database_url: DatabaseUrl = None,
    as_json: JsonOutput = False,
) -> None:
    """Tenants with an events URL."""
    from sluice.ops.tenant_events import events_url_get

    settings = settings_for(database_url)
    found = on_store(settings, lambda s: events_url_get(s, tenant))
    items = [{"tenant": t.tenant, "events_url": t.events_url} for t in found]
    if as_json:
        echo_json({"items": items, "count": len(items), "next_cursor": None})
    elif not items:
        typer.echo("no tenant has an events URL")
    else:
        echo_table(["tenant", "events url"], [[i["tenant"], i["events_url"]] for i in items])
