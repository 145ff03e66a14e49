"""Controls: ``kill``, ``pause`` and ``resume`` a scope, and ``controls set/clear/list``.

Setting or clearing a control returns once every live worker has acknowledged it (exit 1
naming any that did not), unless ``--no-wait``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer

from sluice.cli.options import (
    ActionOpt,
    Actor,
    Channel,
    DatabaseUrl,
    JsonOutput,
    NeedReason,
    Provider,
    Tenant,
)
from sluice.cli.requests import gated, unless_filed
from sluice.cli.runtime import (
    actor_or_default,
    echo_json,
    echo_table,
    fail,
    on_store,
    run_async,
    settings_for,
    with_store,
)
from sluice.errors import SluiceError
from sluice.ops.render import listing

__all__ = ["controls_app", "kill", "pause", "resume"]

controls_app = typer.Typer(
    help="Controls: set, clear and list the mode of a scope (see also kill, pause, resume).",
    no_args_is_help=True,
)

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


def _scope(
    tenant: str | None, channel: str | None, provider: str | None, action: str | None
) -> Any:
    from sluice.flow.controls import Scope

    try:
        return Scope.of(tenant, channel, provider, action)
    except SluiceError as exc:
        raise fail(exc) from None


def _print_change(change: Any, verb: str, as_json: bool) -> None:
    if as_json:
        echo_json(change.as_dict())
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


def _change_control(
    mode: str | None,
    tenant: str | None,
    channel: str | None,
    provider: str | None,
    action: str | None,
    reason: str,
    *,
    expires: str | None = None,
    keep_held: bool = False,
    actor: str | None,
    timeout: float,
    no_wait: bool,
    database_url: str | None,
    as_json: bool,
) -> None:
    """Set ``mode`` on the scope the options name, or clear its control when ``mode`` is
    None; print the change."""
    from sluice.ops import controls as ops
    from sluice.ops.requests import scope_args

    scope = _scope(tenant, channel, provider, action)

    async def go() -> Any:
        settings = settings_for(database_url)
        seconds = ops.parse_duration(expires) if expires else None
        who = actor_or_default(actor)
        args: dict[str, Any] = {"scope": scope_args(scope), "wait": not no_wait,
                                "timeout": timeout}  # fmt: skip
        if mode is None:
            args["release"] = not keep_held
        else:
            args.update(mode=mode, expires_in=seconds)
        act = "resume" if mode is None else "control.set"
        return await with_store(settings, gated(settings, act, args, actor=who, reason=reason))

    change = unless_filed(run_async(go), as_json)
    _print_change(change, "clear" if mode is None else "set", as_json)


def _set_command(mode: str, doc: str) -> Callable[..., None]:
    """``kill`` and ``pause``: set one mode on the scope the options name."""

    def command(
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
        _change_control(mode, tenant, channel, provider, action, reason, expires=expires,
                        actor=actor, timeout=timeout, no_wait=no_wait, database_url=database_url,
                        as_json=as_json)  # fmt: skip

    command.__doc__ = doc
    return command


def _clear_command(doc: str) -> Callable[..., None]:
    """``resume`` and ``controls clear``: two names for one command."""

    def command(
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
        _change_control(None, tenant, channel, provider, action, reason, keep_held=keep_held,
                        actor=actor, timeout=timeout, no_wait=no_wait, database_url=database_url,
                        as_json=as_json)  # fmt: skip

    command.__doc__ = doc
    return command


kill = _set_command(
    "killed",
    """Kill switch: nothing in the scope leaves; its messages are held. No scope = global.

    Returns once every live worker has acknowledged (exit 1 naming any that did not).
    """,
)
pause = _set_command(
    "paused", "Pause a scope: its messages stay queued, nothing is claimed. No scope = global."
)
resume = _clear_command(
    "Lift the control on exactly this scope and release the messages controls held in it."
)


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
    _change_control(mode, tenant, channel, provider, action, reason, expires=expires,
                    actor=actor, timeout=timeout, no_wait=no_wait, database_url=database_url,
                    as_json=as_json)  # fmt: skip


# Registered here, between set and list, because --help lists commands in this order.
controls_app.command("clear")(
    _clear_command("Remove the control of exactly this scope (the same as resume).")
)


@controls_app.command("list")
def controls_list(database_url: DatabaseUrl = None, as_json: JsonOutput = False) -> None:
    """Controls in force, and the default mode of everything else."""
    from sluice.ops import controls as ops

    settings = settings_for(database_url)
    controls = on_store(settings, ops.control_list)
    if as_json:
        echo_json(listing([c.as_dict() for c in controls], default_mode=settings.default_mode))
        return
    typer.echo(f"default mode: {settings.default_mode}")
    if not controls:
        typer.echo("no controls set")
        return
    echo_table(
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
