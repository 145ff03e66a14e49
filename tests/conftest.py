"""Shared fixtures: a real PostgreSQL database per test run, SQLite files per test.

The suite never skips for a missing service: if PostgreSQL is down it stops at once
and says how to start it.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from sluice.store import Store, create_store

PG_ADMIN_URL = os.environ.get(
    "SLUICE_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
PG_START = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
REDIS_URL = os.environ.get("SLUICE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REDIS_START = 'redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no'
#: Tables a clean database keeps as they are: the schema's own bookkeeping and the
#: epoch row (reset below). Every other ``sluice_*`` table is emptied, so a new table is
#: never forgotten.
KEEP = ("sluice_schema_migrations", "sluice_flow_epoch")


def pytest_sessionstart(session: pytest.Session) -> None:
    try:
        psycopg.connect(PG_ADMIN_URL, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        pytest.exit(
            f"PostgreSQL is not reachable at {PG_ADMIN_URL} ({exc}).\nStart it with: {PG_START}",
            returncode=3,
        )
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    except redis.exceptions.ConnectionError as exc:
        pytest.exit(
            f"Redis is not reachable at {REDIS_URL} ({exc}).\nStart it with: {REDIS_START}",
            returncode=3,
        )


#: The files that take longest, longest first (seconds of test time, summed per file, in
#: one run of ``make test``'s three xdist workers, 2026-12-05; re-measure with
#: ``pytest --junitxml``). They are collected first, and ``make test`` keeps that order
#: (``--no-loadscope-reorder``): xdist would otherwise hand out the files with the most
#: tests first, which left the one-test files of a minute or so for the end, with the
#: other workers idle.
LONG_FIRST = (
    "api/test_openapi_fuzz.py",  # 104
    "e2e/test_cli.py",  # 93 in many short tests
    "e2e/test_connections_cli.py",  # 80
    "e2e/test_requests_cli.py",  # 65
    "e2e/test_listings_cli.py",  # 63
    "e2e/test_run_embedded.py",  # 60
    "e2e/test_controls_cli.py",  # 53
    "e2e/test_flow_reaction.py",  # 48
    "e2e/test_waiting_cli.py",  # 42
    "e2e/test_endpoints_cli.py",  # 40
    "e2e/test_replay_seeds.py",  # 39
    "e2e/test_noisy_tenant.py",  # 38
    "console/test_console_tenant.py",  # 37
    "console/test_console_limits.py",  # 36
    "console/test_console_overview.py",  # 34
    "console/test_console_controls.py",  # 33
    "console/test_console_auth.py",  # 32
    "e2e/test_evidence_cli.py",  # 31
    "e2e/test_cut_off_worker.py",  # 31
    "e2e/test_retention_cli.py",  # 31
    "e2e/test_breakers_cli.py",  # 31
    "e2e/test_replay_loop_429.py",  # 30
    "console/test_console_messages.py",  # 28
    "e2e/test_verify_cli.py",  # 28
    "e2e/test_redis_limits.py",  # 27
    "e2e/test_serve.py",  # 24
)
TESTS = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The files of ``LONG_FIRST`` first, in its order; the rest as collected."""
    rank = {name: i for i, name in enumerate(LONG_FIRST)}

    def place(item: pytest.Item) -> int:
        try:
            name = item.path.resolve().relative_to(TESTS).as_posix()
        except ValueError:
            return len(rank)
        return rank.get(name, len(rank))

    items.sort(key=place)


@pytest.fixture
def redis_url() -> str:
    """The test Redis (checked at session start)."""
    return REDIS_URL


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix unique to this test; the test's keys are deleted afterwards."""
    prefix = f"sluice-test:{os.getpid()}:{secrets.token_hex(4)}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=prefix + "*"))
    if keys:
        client.delete(*keys)
    client.close()


def pg_url_for(name: str) -> str:
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    return f"{base}/{name}"


def create_database(prefix: str = "sluice_test") -> str:
    """Create a uniquely named database; return its URL."""
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(3)}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return pg_url_for(name)


def drop_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _migrate(url: str) -> None:
    store = create_store(url)
    await store.open()  # type: ignore[attr-defined]
    try:
        await store.migrate()
    finally:
        await store.close()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A migrated PostgreSQL database for this test run, dropped at the end."""
    url = create_database()
    asyncio.run(_migrate(url))
    yield url
    drop_database(url)


def clean_pg(url: str) -> None:
    """Empty every Sluice table (the audit trigger is bypassed for the test only)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        tables = [
            name
            for (name,) in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
                "AND tablename LIKE 'sluice%%'"
            )
            if name not in KEEP
        ]
        conn.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY")
        conn.execute("UPDATE sluice_flow_epoch SET version = 0, changed_at = NULL")


@pytest.fixture
def clean_pg_url(pg_url: str) -> str:
    """The run's PostgreSQL database, emptied for this test."""
    clean_pg(pg_url)
    return pg_url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh, migrated SQLite file for this test."""
    url = f"sqlite:///{tmp_path / 'sluice.db'}"
    asyncio.run(_migrate(url))
    return url


@pytest.fixture(params=["postgres", "sqlite"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a clean, migrated store of each kind."""
    if request.param == "postgres":
        url: str = request.getfixturevalue("pg_url")
        clean_pg(url)
        return url
    url = f"sqlite:///{tmp_path / 'sluice.db'}"
    asyncio.run(_migrate(url))
    return url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    """An open store of each kind (the contract suite runs every test on both)."""
    s = create_store(store_url)
    await s.open()  # type: ignore[attr-defined]
    yield s
    await s.close()


def sluice_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run the real ``sluice`` command in a subprocess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "sluice.cli", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        check=False,
    )
