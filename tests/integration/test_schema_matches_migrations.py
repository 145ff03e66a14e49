"""A fresh schema equals the migration chain.

``store/sql/<dialect>/schema.sql`` is the whole current schema in one file, for reading
and for fresh installs; ``store/migrations/<dialect>/`` is how existing databases get
there. Each test builds one database from each and compares what the catalogs say, so
the two can never drift apart unnoticed.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import sqlite3
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg
import pytest

from sluice.errors import MigrationError
from sluice.store import create_store
from sluice.store._queries import migrations

ADMIN_URL = os.environ.get(
    "SLUICE_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


# -- helpers ------------------------------------------------------------------------


@contextlib.contextmanager
def fresh_pg_database(prefix: str) -> Iterator[str]:
    """An empty, uniquely named PostgreSQL database, dropped afterwards whatever happens."""
    name = f"sluice_schema_{prefix}_{os.getpid()}_{secrets.token_hex(3)}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def schema_sql(dialect: str) -> str:
    return resources.files("sluice.store").joinpath(f"sql/{dialect}/schema.sql").read_text()


async def migrate(url: str) -> list[int]:
    store = create_store(url)
    await store.open()  # type: ignore[attr-defined]  # both stores have open()
    try:
        return await store.migrate()
    finally:
        await store.close()


def newest_version(dialect: str) -> int:
    return max(v for v, _, _ in migrations(dialect))


# Everything below compares Sluice's own objects; the version table is bookkeeping
# that only the migrator creates.
_PG_SLUICE = "{col} LIKE 'sluice\\_%' AND {col} NOT LIKE 'sluice\\_schema\\_migrations%'"

PG_CATALOG: dict[str, str] = {
    "relations": f"""
        SELECT c.relname, c.relkind, coalesce(array_to_string(c.reloptions, ','), '')
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND {_PG_SLUICE.format(col="c.relname")}
        ORDER BY 1""",
    # Position within the table rather than ordinal_position itself: a dropped column
    # leaves a gap in the numbering that a fresh CREATE TABLE does not have.
    "columns": f"""
        SELECT table_name, column_name,
               row_number() OVER (PARTITION BY table_name ORDER BY ordinal_position),
               data_type, udt_name, character_maximum_length, numeric_precision,
               is_nullable, column_default, is_identity, identity_generation, is_generated
        FROM information_schema.columns
        WHERE table_schema = 'public' AND {_PG_SLUICE.format(col="table_name")}
        ORDER BY 1, 3""",
    "indexes": f"""
        SELECT tablename, indexname, indexdef FROM pg_indexes
        WHERE schemaname = 'public' AND {_PG_SLUICE.format(col="tablename")}
        ORDER BY 1, 2""",
    "constraints": f"""
        SELECT c.relname, k.conname, k.contype, pg_get_constraintdef(k.oid)
        FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND {_PG_SLUICE.format(col="c.relname")}
        ORDER BY 1, 2""",
    # pg_trigger rather than information_schema.triggers: the latter leaves out
    # TRUNCATE triggers, and sluice_audit has one.
    "triggers": f"""
        SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid)
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE NOT t.tgisinternal AND n.nspname = 'public'
          AND {_PG_SLUICE.format(col="c.relname")}
        ORDER BY 1, 2""",
    "functions": """
        SELECT p.proname, pg_get_functiondef(p.oid)
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'public' AND p.proname LIKE 'sluice\\_%'
        ORDER BY 1""",
}


def pg_catalog(url: str) -> dict[str, list[tuple[Any, ...]]]:
    with psycopg.connect(url) as conn:
        return {name: conn.execute(sql).fetchall() for name, sql in PG_CATALOG.items()}  # type: ignore[arg-type]  # constant SQL


def _normalise_sql(sql: str | None) -> str | None:
    """The statement without comments and with single spaces: layout is not schema."""
    if sql is None:
        return None
    return " ".join(re.sub(r"--[^\n]*", "", sql).split())


def sqlite_catalog(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        master = [
            (kind, name, table, _normalise_sql(sql))
            for kind, name, table, sql in conn.execute(
                "SELECT type, name, tbl_name, sql FROM sqlite_master "
                "WHERE tbl_name <> 'sluice_schema_migrations' ORDER BY type, name"
            )
        ]
        tables = [name for kind, name, _, _ in master if kind == "table"]
        catalog: dict[str, list[tuple[Any, ...]]] = {"sqlite_master": master}
        for table in tables:
            catalog[f"table_info({table})"] = conn.execute(
                "SELECT * FROM pragma_table_info(?)", (table,)
            ).fetchall()
            catalog[f"index_list({table})"] = conn.execute(
                "SELECT * FROM pragma_index_list(?) ORDER BY name", (table,)
            ).fetchall()
        return catalog


# -- PostgreSQL -----------------------------------------------------------------------


async def test_schema__postgres_snapshot_equals_migration_chain() -> None:
    with fresh_pg_database("chain") as chain_url, fresh_pg_database("snap") as snap_url:
        assert await migrate(chain_url) == list(range(1, newest_version("postgres") + 1))
        with psycopg.connect(snap_url, autocommit=True) as conn:
            conn.execute(schema_sql("postgres").encode())

        from_migrations = pg_catalog(chain_url)
        from_schema = pg_catalog(snap_url)

    # A catalog query that matched nothing would make the comparison vacuous.
    assert {r[0] for r in from_migrations["relations"]} >= {
        "sluice_messages",
        "sluice_attempts",
        "sluice_audit",
        "sluice_workers",
    }
    assert all(from_migrations[part] for part in PG_CATALOG), from_migrations
    for part in PG_CATALOG:
        assert from_schema[part] == from_migrations[part], f"{part} differ"


async def test_migrate__postgres_second_run_changes_nothing() -> None:
    with fresh_pg_database("twice") as url:
        first = await migrate(url)
        before = pg_catalog(url)
        assert await migrate(url) == []
        assert pg_catalog(url) == before
        with psycopg.connect(url) as conn:
            versions = conn.execute("SELECT version FROM sluice_schema_migrations").fetchall()
    assert first == list(range(1, newest_version("postgres") + 1))
    assert sorted(v for (v,) in versions) == first


async def test_migrate__postgres_refuses_a_schema_newer_than_the_code() -> None:
    future = newest_version("postgres") + 1
    with fresh_pg_database("newer") as url:
        await migrate(url)
        with psycopg.connect(url) as conn:
            conn.execute(
                "INSERT INTO sluice_schema_migrations (version, name) VALUES (%s, 'future')",
                (future,),
            )
        with pytest.raises(MigrationError, match="newer") as excinfo:
            await migrate(url)
    assert str(future) in str(excinfo.value)


# -- SQLite -------------------------------------------------------------------------


async def test_schema__sqlite_snapshot_equals_migration_chain(tmp_path: Path) -> None:
    chain, snap = tmp_path / "chain.db", tmp_path / "snapshot.db"
    assert await migrate(f"sqlite:///{chain}") == list(range(1, newest_version("sqlite") + 1))
    with contextlib.closing(sqlite3.connect(snap)) as conn:
        conn.executescript(schema_sql("sqlite"))

    from_migrations = sqlite_catalog(chain)
    from_schema = sqlite_catalog(snap)

    names = {name for _, name, _, _ in from_migrations["sqlite_master"]}
    assert names >= {"sluice_messages", "sluice_attempts", "sluice_audit", "sluice_workers"}
    assert from_schema.keys() == from_migrations.keys()
    for part in from_migrations:
        assert from_schema[part] == from_migrations[part], f"{part} differ"


async def test_migrate__sqlite_second_run_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "twice.db"
    url = f"sqlite:///{path}"
    first = await migrate(url)
    before = sqlite_catalog(path)
    assert await migrate(url) == []
    assert sqlite_catalog(path) == before
    with contextlib.closing(sqlite3.connect(path)) as conn:
        versions = [v for (v,) in conn.execute("SELECT version FROM sluice_schema_migrations")]
    assert first == list(range(1, newest_version("sqlite") + 1))
    assert sorted(versions) == first


async def test_migrate__sqlite_refuses_a_schema_newer_than_the_code(tmp_path: Path) -> None:
    path = tmp_path / "newer.db"
    url = f"sqlite:///{path}"
    future = newest_version("sqlite") + 1
    await migrate(url)
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute(
            "INSERT INTO sluice_schema_migrations (version, name) VALUES (?, 'future')",
            (future,),
        )
    with pytest.raises(MigrationError, match="newer") as excinfo:
        await migrate(url)
    assert str(future) in str(excinfo.value)
