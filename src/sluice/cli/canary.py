"""``canary``: the golden path checked now (``run``, the verification step of recovery,
seed 003 §2.3) and what recent canaries came to (``list``); ``sluice.ops.canary`` does
the work. Workers run the same canaries on the ``[canary]`` schedule."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from sluice.cli.options import Actor, DatabaseUrl, JsonOutput, Provider, Reason
from sluice.cli.runtime import (
    actor_or_default,
    echo_json,
    echo_table,
    fail,
    on_store,
    settings_for,
)
from sluice.errors import SluiceError, ValidationError
from sluice.ops.render import age, listing
from sluice.store.canaries import CanaryRun

__all__ = ["canary_app"]

canary_app = typer.Typer(
    help="Golden-path canaries: run one now, list recent outcomes ([canary] in sluice.toml).",
    no_args_is_help=True,
)


def _rows(runs: list[CanaryRun]) -> list[list[object]]:
    now = datetime.now(UTC)
    return [
        [r.id[:8], r.target, r.provider, r.tenant, r.outcome,
         age((now - r.sent_at).total_seconds()),
         age((r.receipt_at - r.sent_at).total_seconds()) if r.receipt_at else "-",
         (r.error or "")[:60]]
        for r in runs
    ]  # fmt: skip


_HEADERS = ["ID", "TARGET", "PROVIDER", "TENANT", "OUTCOME", "AGE", "RECEIPT AFTER", "ERROR"]


@canary_app.command("run")
def canary_run(
    provider: Provider = None,
    wait: Annotated[
        str | None,
        typer.Option(
            "--wait",
            envvar="SLUICE_CANARY_WAIT",
            help="Wait at most this long for each receipt (30s, 2m). [default: the "
            "target's timeout]",
        ),
    ] = None,
    actor: Actor = None,
    reason: Reason = None,
    database_url: DatabaseUrl = None,
    as_json: JsonOutput = False,
) -> None:
    """Send a canary to each [canary] target (of --provider) now and wait for its delivery
    receipt; exit 1 unless every one is ok. A failed or missing one opens an incident.
    Needs a running worker. Audited."""
    from sluice.logs import configure_logging
    from sluice.ops.canary import all_ok, canary_config
    from sluice.ops.canary import canary_run as run
    from sluice.retention import parse_span

    settings = settings_for(database_url)
    try:
        configure_logging("warning")  # stdout is for the result; each outcome is printed
        seconds = None if wait is None else parse_span(wait, "--wait")
        config = canary_config()
        if seconds is not None and seconds > 600:
            raise ValidationError("--wait", "must be at most 10m")
    except SluiceError as exc:
        raise fail(exc) from None
    who = actor_or_default(actor)
    runs = on_store(
        settings,
        lambda s: run(s, config, actor=who, provider=provider, wait=seconds, reason=reason),
    )
    if as_json:
        echo_json(listing(runs))
    else:
        echo_table(_HEADERS, _rows(runs))
    if not all_ok(runs):
        raise typer.Exit(1)


@canary_app.command("list")
def canary_list(
    provider: Provider = None,
    limit: Annotated[
        int, typer.Option("--limit", envvar="SLUICE_LIMIT", help="Most canaries to show.")
    ] = 50,
    database_url: DatabaseUrl = None,
    as_json: JsonOutput = False,
) -> None:
    """Recent canaries, newest first: target, outcome, how long the receipt took, error."""
    from sluice.ops.canary import canary_list as listed

    settings = settings_for(database_url)
    runs = on_store(settings, lambda s: listed(s, provider, limit))
    if as_json:
        echo_json(listing(runs))
        return
    echo_table(_HEADERS, _rows(runs))
