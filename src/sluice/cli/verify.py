"""``messages confirm|fail``: a person decides about messages in ``needs_confirm`` (post-send
verification, issue 15, seed 003 RB-03), through ``sluice.ops.verify``.

``sluice messages list --status needs_confirm`` lists what waits; ``confirm`` says the
messages arrived (→ delivered), ``fail`` says they did not (→ dead, code
``NOT_CONFIRMED``: ``sluice dlq retry --code NOT_CONFIRMED`` sends them again)."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from sluice.cli.options import Actor, DatabaseUrl, JsonOutput, NeedReason
from sluice.cli.runtime import actor_or_default, echo_json, run_async, settings_for, with_store

__all__ = ["confirm", "fail"]

Ids = Annotated[
    list[str],
    typer.Argument(
        help="Message ids (from `sluice messages list --status needs_confirm`), or - to "
        "read them from stdin, one per line.",
        show_default=False,
    ),
]


def _ids(given: list[str]) -> list[str]:
    if given == ["-"]:
        return [line.strip() for line in sys.stdin.read().split() if line.strip()]
    return [part for text in given for part in text.replace(",", " ").split() if part]


def _decide(
    verb: str, ids: list[str], reason: str, actor: str | None, database_url: str | None
) -> Any:
    from sluice.ops.verify import messages_confirm, messages_fail

    act = messages_confirm if verb == "confirm" else messages_fail

    async def go() -> Any:
        settings = settings_for(database_url)
        who = actor_or_default(actor)
        return await with_store(settings, lambda s: act(s, _ids(ids), actor=who, reason=reason))

    return run_async(go)


def _echo(done: Any, as_json: bool) -> None:
    if as_json:
        echo_json(done.as_dict())
        return
    typer.echo(f"{done.changed} message(s) now {done.status}")
    if done.already:
        typer.echo(f"{len(done.already)} already {done.status}: {' '.join(done.already)}")


def confirm(
    ids: Ids,
    reason: NeedReason,
    actor: Actor = None,
    database_url: DatabaseUrl = None,
    as_json: JsonOutput = False,
) -> None:
    """A person says these needs_confirm messages arrived: they become delivered (audited
    as message.confirm)."""
    _echo(_decide("confirm", ids, reason, actor, database_url), as_json)


def fail(
    ids: Ids,
    reason: NeedReason,
    actor: Actor = None,
    database_url: DatabaseUrl = None,
    as_json: JsonOutput = False,
) -> None:
    """A person says these needs_confirm messages did not arrive: they become dead with
    code NOT_CONFIRMED (audited as message.fail); `sluice dlq retry --code NOT_CONFIRMED`
    sends them again."""
    _echo(_decide("fail", ids, reason, actor, database_url), as_json)
