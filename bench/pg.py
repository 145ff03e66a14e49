"""Throw-away PostgreSQL databases for benchmark parts."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

#: Server-level connection (any existing database) used to CREATE/DROP bench databases.
ADMIN_DSN = os.environ.get("SLUICE_BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")


def db_url(name: str) -> str:
    """URL of database ``name`` on the same server as ``ADMIN_DSN``."""
    info = psycopg.conninfo.conninfo_to_dict(ADMIN_DSN)
    user = info.get("user", "postgres")
    host = info.get("host", "127.0.0.1")
    port = info.get("port", 5432)
    return f"postgresql://{user}@{host}:{port}/{name}"


def drop_db(name: str) -> None:
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def create_db(name: str) -> str:
    """Drop ``name`` if it exists, create it empty, return its URL."""
    drop_db(name)
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return db_url(name)


@contextmanager
def fresh_db(name: str) -> Iterator[str]:
    """A freshly created database for the duration of the block; dropped afterwards."""
    url = create_db(name)
    try:
        yield url
    finally:
        drop_db(name)
