"""What every command does around its own work: settings, the store, the event loop, the
exit code, the actor, and printing through :mod:`sluice.ops.render`.

Exit codes: 0 done; 1 the system failed (database down, …); 2 bad input or
configuration (the message names what is wrong, and nothing was changed); 3 filed for a
second operator by the two-person rule (``cli.requests.FILED``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import typer

from sluice.config import Settings, load_settings
from sluice.errors import (
    ConfigError,
    Conflict,
    IdempotencyConflict,
    NotFound,
    SluiceError,
    ValidationError,
)
from sluice.ops.actions import DlqAction
from sluice.ops.render import json_text, table
from sluice.store import Store, open_store

T = TypeVar("T")

#: Errors that mean the input was wrong (exit 2), not that the system failed (exit 1).
BAD_INPUT = (ValidationError, ConfigError, IdempotencyConflict, NotFound, Conflict)


def fail(exc: BaseException) -> typer.Exit:
    """Print ``error: …`` on stderr; the exit to raise: 2 for bad input, 1 otherwise."""
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(2 if isinstance(exc, BAD_INPUT) else 1)


def settings_for(database_url: str | None = None, **overrides: Any) -> Settings:
    """The settings in effect, with the command's flags over the environment's."""
    try:
        return load_settings(database_url=database_url, **overrides)
    except SluiceError as exc:
        raise fail(exc) from None


def run_async(fn: Callable[[], Awaitable[T]]) -> T:
    """Await ``fn()`` on a new event loop; a Sluice error becomes an exit."""
    try:
        return asyncio.run(fn())  # type: ignore[arg-type]  # a coroutine is awaited
    except SluiceError as exc:
        raise fail(exc) from None


async def with_store(
    settings: Settings, fn: Callable[[Store], Awaitable[T]], *, create: bool = False
) -> T:
    """Open the store the settings name, await ``fn(store)``, close it."""
    # Only `migrate` may create a SQLite file: a mistyped path elsewhere is an error,
    # not a new empty database.
    store = await open_store(settings.database_url, settings, create=create)
    try:
        return await fn(store)
    finally:
        await store.close()


def on_store(settings: Settings, fn: Callable[[Store], Awaitable[T]]) -> T:
    """:func:`with_store` on a new event loop: what most commands do once."""
    return run_async(lambda: with_store(settings, fn))


def default_actor() -> str:
    """``cli:<user>``, the actor the audit log names when no ``--actor`` is given."""
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no user name in some containers
        return "cli"


def actor_or_default(actor: str | None) -> str:
    """The ``--actor`` given, or :func:`default_actor`."""
    return actor or default_actor()


def echo_json(value: Any) -> None:
    """Print what ``--json`` prints."""
    typer.echo(json_text(value))


def echo_table(headers: list[str], rows: list[list[Any]]) -> None:
    """Print a text table."""
    typer.echo(table(headers, rows))


def echo_moved(result: DlqAction, noun: str, done: str, *, as_json: bool) -> None:
    """Print what a bulk move did, or under ``--dry-run`` the first 20 it would move."""
    if as_json:
        echo_json(result)
    elif result.dry_run:
        typer.echo(f"dry run: {result.matched} {noun} would be {done}")
        for mid in result.ids[:20]:
            typer.echo(f"  {mid}")
        if result.matched > 20:
            typer.echo(f"  … and {result.matched - 20} more")
    else:
        typer.echo(f"{result.changed} of {result.matched} {noun} {done}")
