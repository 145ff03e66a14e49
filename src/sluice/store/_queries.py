"""Load the named queries of one dialect from its ``.sql`` file."""

from __future__ import annotations

import re
from collections.abc import Set
from functools import cache
from importlib import resources

__all__ = ["load_queries", "migrations", "pending_migrations"]

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)
#: A line that is only a comment: the explanations stay in the .sql file, not in what
#: is sent. They made the claim longer than the 4,096 characters psycopg caches the
#: parsing of, so every claim re-split its text (about a sixth of an empty claim's CPU).
_COMMENT_LINE = re.compile(r"^[ \t]*--.*\n?", re.MULTILINE)


@cache
def load_queries(dialect: str) -> dict[str, str]:
    """Map query name to SQL text for ``dialect`` (``postgres`` or ``sqlite``)."""
    text = resources.files("sluice.store").joinpath(f"sql/{dialect}/queries.sql").read_text()
    parts = _NAME.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise RuntimeError(f"query {name!r} is defined twice for {dialect}")
        queries[name] = _COMMENT_LINE.sub("", body).strip()
    return queries


def migrations(dialect: str) -> list[tuple[int, str, str]]:
    """The numbered migrations of ``dialect``: ``(version, name, sql)`` in order."""
    folder = resources.files("sluice.store").joinpath(f"migrations/{dialect}")
    found = []
    for entry in folder.iterdir():
        match = re.fullmatch(r"(\d{4})_(\w+)\.sql", entry.name)
        if match:
            found.append((int(match.group(1)), match.group(2), entry.read_text()))
    found.sort()
    versions = [v for v, _, _ in found]
    if versions != list(range(1, len(versions) + 1)):
        raise RuntimeError(f"{dialect} migrations are not numbered 1..n: {versions}")
    return found


def pending_migrations(dialect: str, done: Set[int]) -> list[tuple[int, str, str]]:
    """The migrations of ``dialect`` not in ``done``, in order; ``MigrationError`` when the
    database is at a version newer than this Sluice knows."""
    from sluice.errors import MigrationError

    known = migrations(dialect)
    newest = max((v for v, _, _ in known), default=0)
    if done and max(done) > newest:
        raise MigrationError(
            f"database schema is at version {max(done)}, newer than this Sluice "
            f"({newest}); upgrade Sluice"
        )
    return [m for m in known if m[0] not in done]
