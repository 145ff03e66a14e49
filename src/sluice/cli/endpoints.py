"""``endpoints``: the health of each webhook and ``http`` endpoint per tenant (issue 14) —
list, disable (its messages are held), enable (they go back to the queue)."""

from __future__ import annotations

from collections.abc import Callable
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
from sluice.store import Store

__all__ = ["endpoints_app"]

endpoints_app = typer.Typer(
    help="Webhook and http endpoints per tenant: state (healthy, failing, disabled), last "
    "success, failure rate; disable or enable one.",
    no_args_is_help=True,
)

EndpointId = Annotated[str, typer.Argument(help="The endpoint's id (sluice endpoints list).")]


@endpoints_app.command("list")
def endpoints_list(
    tenant: Tenant = None,
    state: Annotated[
        str | None, typer.Option(help="Only endpoints in this state: healthy, failing, disabled.")
    ] = None,
    database_url: DatabaseUrl = None,
    as_json: JsonOutput = False,
) -> None:
    """Every endpoint: state, failing since, last success, failure rate in the window."""
    from sluice.ops.endpoints import endpoints_list as list_endpoints

    settings = settings_for(database_url)
    found = on_store(settings, lambda s: list_endpoints(s, tenant=tenant, state=state))
    if as_json:
        echo_json({"items": [e.as_dict() for e in found], "count": len(found),
                   "next_cursor": None})  # fmt: skip
        return
    if not found:
        typer.echo("no endpoints: no webhook or http action has been sent yet")
        return

    def at(t: Any) -> str:
        return t.isoformat(timespec="seconds") if t is not None else "-"

    echo_table(
        ["id", "tenant", "endpoint", "state", "last success", "failing since", "fail rate",
         "reason"],
        [
            [e.id, e.tenant, e.endpoint, e.state, at(e.last_success_at), at(e.failing_since),
             "-" if e.failure_rate is None else f"{e.failure_rate:.0%}",
             e.disabled_reason or e.last_error or ""]
            for e in found
        ],
    )  # fmt: skip


def _command(verb: str, doc: str) -> Callable[..., None]:
    def command(
        endpoint_id: EndpointId,
        reason: Reason = None,
        actor: Actor = None,
        database_url: DatabaseUrl = None,
        as_json: JsonOutput = False,
    ) -> None:
        from sluice.ops.endpoints import endpoint_disable

        async def go() -> Any:
            settings = settings_for(database_url)
            who = actor_or_default(actor)
            if verb == "enable":  # may wait for a second operator (the two-person rule)
                args = {"id": endpoint_id}
                return await with_store(
                    settings, gated(settings, "endpoint.enable", args, actor=who, reason=reason)
                )

            async def disable(store: Store) -> Any:  # containment: never waits
                return await endpoint_disable(store, endpoint_id, actor=who, reason=reason)

            return await with_store(settings, disable)

        change = unless_filed(run_async(go), as_json)
        e = change.endpoint
        if as_json:
            echo_json(change.as_dict())
        elif verb == "enable":
            typer.echo(f"endpoint {e.endpoint} of {e.tenant} enabled; "
                       f"{len(change.released)} held messages released")  # fmt: skip
        else:
            typer.echo(f"endpoint {e.endpoint} of {e.tenant} disabled: its messages are held "
                       f"until: sluice endpoints enable {e.id}")  # fmt: skip

    command.__doc__ = doc
    return command


endpoints_app.command("disable")(
    _command("disable", "Disable an endpoint: workers hold its messages until it is enabled.")
)
endpoints_app.command("enable")(
    _command("enable", "Enable an endpoint and release the messages held for it (audited).")
)
