"""``requests``: the two-person rule — list, show, approve and deny what waits for a second
operator; and :func:`gated`, which every command of an act a rule may name goes through.

An act that a rule in ``[ops] two_person`` holds back is filed, not done: the command
prints the request's id and exits with :data:`FILED` (3), so that a script can tell
"done" (0) from "waiting for another operator".
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any

import typer

from sluice.cli.options import Actor, DatabaseUrl, JsonOutput, Reason
from sluice.cli.runtime import (
    actor_or_default,
    echo_json,
    echo_table,
    on_store,
    settings_for,
)
from sluice.config import Settings
from sluice.ops.render import jsonable
from sluice.store import Store

__all__ = ["FILED", "gated", "requests_app", "unless_filed"]

#: The exit code of a command whose act was filed as a request instead of done.
FILED = 3

requests_app = typer.Typer(
    help="The two-person rule: acts waiting for a second operator (list, show, approve, deny).",
    no_args_is_help=True,
)

RequestId = Annotated[str, typer.Argument(help="The request's id (sluice requests list).")]


def gated(
    settings: Settings, act: str, args: Mapping[str, Any], *, actor: str, reason: str | None
) -> Callable[[Store], Awaitable[Any]]:
    """The act, through the two-person rule (:func:`sluice.ops.requests.perform`)."""
    from sluice.ops.requests import perform

    return lambda store: perform(store, settings, act, args, actor=actor, reason=reason)


def unless_filed(result: Any, as_json: bool) -> Any:
    """``result`` as it is, unless the act was filed: then say so and exit :data:`FILED`."""
    from sluice.ops.requests import Filed

    if isinstance(result, Filed):
        if as_json:
            echo_json(result.as_dict())
        else:
            typer.echo(result.summary())
        raise typer.Exit(FILED)
    return result


def _row(r: Any) -> list[Any]:
    who = f"{r.requester} → {r.decided_by}" if r.decided_by else r.requester
    return [r.id, r.state, r.act, r.tenant or "(global)", r.affected, who,
            r.created_at.isoformat(timespec="seconds"), r.reason]  # fmt: skip


@requests_app.command("list")
def requests_list(
    state: Annotated[
        str,
        typer.Option(
            "--state",
            envvar="SLUICE_REQUEST_STATE",
            help="pending, approved, denied, expired, or all.",
        ),
    ] = "pending",
    limit: Annotated[
        int, typer.Option("--limit", envvar="SLUICE_LIMIT", help="At most this many (1-1000).")
    ] = 50,
    before: Annotated[
        str | None,
        typer.Option(
            "--before", envvar="SLUICE_BEFORE", help="The next page: the cursor a page gave."
        ),
    ] = None,
    database_url: DatabaseUrl = None,
    as_json: JsonOutput = False,
) -> None:
    """Requests, newest first (pending ones unless --state says)."""
    from sluice.ops.requests import request_page

    settings = settings_for(database_url)
    wanted = None if state == "all" else state
    rows, cursor = on_store(settings, lambda s: request_page(s, wanted, limit, before))
    if as_json:
        echo_json({"items": jsonable(rows), "count": len(rows), "next_cursor": cursor})
        return
    if not rows:
        typer.echo(f"no {state if wanted else ''} requests".replace("  ", " "))
        return
    echo_table(["id", "state", "act", "tenant", "affected", "by", "filed", "reason"],
               [_row(r) for r in rows])  # fmt: skip
    if cursor:
        typer.echo(f"\nmore: sluice requests list --state {state} --before {cursor}")


@requests_app.command("show")
def requests_show(
    request_id: RequestId, database_url: DatabaseUrl = None, as_json: JsonOutput = False
) -> None:
    """One request: its act with every argument, who filed it, and its decision."""
    from sluice.ops.requests import request_get

    settings = settings_for(database_url)
    req = on_store(settings, lambda s: request_get(s, request_id))
    if as_json:
        echo_json(req)
        return
    for name in ("id", "state", "act", "scope", "tenant", "affected", "requester", "reason",
                 "created_at", "expires_at", "decided_by", "decided_at", "decision"):  # fmt: skip
        value = getattr(req, name)
        typer.echo(f"{name + ':':12} {jsonable(value) if value not in (None, '') else '-'}")
    typer.echo(f"{'args:':12} {jsonable(req.args)}")
    if req.result is not None:
        typer.echo(f"{'result:':12} {jsonable(req.result)}")


@requests_app.command("approve")
def requests_approve(
    request_id: RequestId,
    actor: Actor = None,
    reason: Reason = None,
    database_url: DatabaseUrl = None,
    as_json: JsonOutput = False,
) -> None:
    """Approve another operator's request: its act is done now, as you, with the arguments
    it was filed with (bounded to the number of messages the request showed)."""
    from sluice.ops.requests import request_approve

    settings = settings_for(database_url)
    who = actor_or_default(actor)
    decided = on_store(
        settings, lambda s: request_approve(s, settings, request_id, actor=who, reason=reason)
    )
    if as_json:
        echo_json(decided.as_dict())
        return
    req = decided.request
    typer.echo(
        f"request {req.id} approved ({req.act}, filed by {req.requester}); "
        f"done: {jsonable(req.result)}"
    )
    token = getattr(decided.result, "token", None)
    if token:  # apikeys.create: the key is shown once, to the approver
        typer.echo(f"the new key (shown once): {token}")


@requests_app.command("deny")
def requests_deny(
    request_id: RequestId,
    actor: Actor = None,
    reason: Reason = None,
    database_url: DatabaseUrl = None,
    as_json: JsonOutput = False,
) -> None:
    """Deny a request (the requester may withdraw their own): its act is never done."""
    from sluice.ops.requests import request_deny

    settings = settings_for(database_url)
    who = actor_or_default(actor)
    decided = on_store(settings, lambda s: request_deny(s, request_id, actor=who, reason=reason))
    if as_json:
        echo_json(decided.as_dict())
        return
    typer.echo(f"request {request_id} denied; {decided.request.act} was not done")
