"""``sluice audit list|verify`` and ``sluice messages list --correlation-id`` as an
operator runs them: real subprocesses on real databases, the log tampered with by hand."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from sluice.flow.controls import Control, Mode, Scope, control_audit
from sluice.model import NewMessage
from sluice.store import AuditEntry, Store, create_store
from sluice.store.sqlite import sqlite_path

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    return subprocess.run(
        [sys.executable, "-m", "sluice.cli", *args],
        capture_output=True, text=True, env={**env, "COLUMNS": "200"}, timeout=60, check=False,
    )  # fmt: skip


def on_store(url: str, fn):  # type: ignore[no-untyped-def]
    async def go():  # type: ignore[no-untyped-def]
        store: Store = create_store(url)
        await store.open()  # type: ignore[attr-defined]
        try:
            return await fn(store)
        finally:
            await store.close()

    return asyncio.run(go())


def seed(url: str) -> list[int]:
    """Six entries: kills of acme and other, then four worker breaker moves."""

    async def go(store: Store) -> list[int]:
        ids = []
        for n, tenant in enumerate(["acme", "other"]):
            control = Control(f"c{n}", Scope.of(tenant), Mode.KILLED, "cli:ann", "stop",
                              NOW, None, n + 1)  # fmt: skip
            entry = control_audit("control.set", control, NOW + timedelta(minutes=n), "cli:ann",
                                  "stop")  # fmt: skip
            ids.append((await store.audit_append(entry)).id)
        for n in range(4):
            entry = AuditEntry(at=NOW + timedelta(minutes=5 + n), actor="worker:w1",
                               action="breaker.open", target="c:acme:twilio")  # fmt: skip
            ids.append((await store.audit_append(entry)).id)
        return ids

    ids: list[int] = on_store(url, go)
    return ids


def tamper(url: str, statement: str) -> None:
    if url.startswith("postgresql"):
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SET session_replication_role = replica")  # skips the triggers
            conn.execute(statement)
        return
    conn = sqlite3.connect(sqlite_path(url), isolation_level=None)
    try:
        conn.execute("DROP TRIGGER sluice_audit_no_update")
        conn.execute(statement)
    finally:
        conn.close()


def test_audit_list__filters_and_prints_json_or_a_table(store_url: str) -> None:
    ids = seed(store_url)
    r = cli("audit", "list", "--tenant", "acme", "--action", "control.", "--database-url",
            store_url, "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    [entry] = json.loads(r.stdout)["items"]
    assert (entry["id"], entry["detail"]["scope"]["tenant"]) == (ids[0], "acme")
    r = cli("audit", "list", "--since", "2026-01-01T12:06:00Z", "--until",
            "2026-01-01T12:08:00Z", "--database-url", store_url)  # fmt: skip
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["ID", "AT", "ACTOR", "ACTION", "TARGET", "REASON"]
    assert [int(line.split()[0]) for line in lines[2:]] == [ids[4], ids[3]]
    r = cli("audit", "list", "--limit", "2", "--tenant", "acme", "--database-url", store_url,
            "--json")  # fmt: skip
    page = json.loads(r.stdout)
    assert [e["id"] for e in page["items"]] == [ids[5], ids[4]]
    assert page["count"] == 2 and page["next_cursor"] == str(ids[4])
    r = cli("audit", "list", "--limit", "2", "--tenant", "acme", "--database-url", store_url,
            "--cursor", page["next_cursor"], "--json")  # fmt: skip
    assert [e["id"] for e in json.loads(r.stdout)["items"]][:1] == [ids[3]]


def test_audit_verify__exit_0_then_exit_1_naming_the_changed_entry(store_url: str) -> None:
    ids = seed(store_url)
    r = cli("audit", "verify", "--page-size", "2", "--database-url", store_url)
    assert (r.returncode, r.stdout.strip()) == (0, "audit chain intact: 6 entries checked")

    tamper(store_url, f"UPDATE sluice_audit SET actor = 'nobody' WHERE id = {ids[3]}")
    r = cli("audit", "verify", "--page-size", "2", "--database-url", store_url)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"BROKEN at entry {ids[3]}" in r.stderr and "3 entries before it hold" in r.stderr
    r = cli("audit", "verify", "--database-url", store_url, "--json")
    assert r.returncode == 1
    assert json.loads(r.stdout) | {"why": None} == {
        "ok": False, "checked": 3, "broken_at": ids[3], "why": None,
    }  # fmt: skip


def test_messages_list__finds_a_correlation_id(store_url: str) -> None:
    def new(corr: str | None) -> NewMessage:
        return NewMessage(tenant="acme", channel="sms", provider="null",
                          recipient="+15550001111", payload={}, correlation_id=corr)  # fmt: skip

    ids = on_store(store_url, lambda s: s.enqueue_many([new("req-1"), new("req-2"), new("req-1")]))
    r = cli("messages", "list", "--correlation-id", "req-1", "--database-url", store_url, "--json")
    assert r.returncode == 0, r.stderr
    assert sorted(m["id"] for m in json.loads(r.stdout)["items"]) == sorted([ids[0], ids[2]])
    r = cli("messages", "list", "--correlation-id", "req-2", "--database-url", store_url)
    assert ids[1] in r.stdout and ids[0] not in r.stdout


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("audit", "list", "--since", "2026-01-01T12:00"),
         "since: '2026-01-01T12:00' needs a timezone"),
        (("audit", "list", "--until", "tomorrow"), "until: 'tomorrow' is neither"),
        (("audit", "list", "--since", "2026-01-02T00:00Z", "--until", "2026-01-01T00:00Z"),
         "until: must be after since"),
        (("audit", "list", "--limit", "0"), "limit: must be between 1 and 1000"),
        (("audit", "list", "--action", " "), "action: must not be empty"),
        (("audit", "verify", "--page-size", "0"), "page_size: must be at least 1"),
        (("messages", "list", "--status", "lost"), "status: 'lost' is not one of"),
        (("messages", "list", "--limit", "50000"), "limit: must be between 1 and 10000"),
    ],
)  # fmt: skip
def test_bad_input__exits_2_naming_the_field(
    sqlite_url: str, args: tuple[str, ...], says: str
) -> None:
    seed(sqlite_url)
    r = cli(*args, "--database-url", sqlite_url)
    assert r.returncode == 2, r.stdout + r.stderr
    assert says in r.stderr and "Traceback" not in r.stderr and r.stdout == ""


def test_help__names_the_commands_and_their_environment_variables() -> None:
    top = cli("--help")
    assert "audit" in top.stdout.split()
    listing = cli("audit", "list", "--help").stdout
    for var in ("SLUICE_AUDIT_SINCE", "SLUICE_AUDIT_ACTION", "SLUICE_TENANT", "SLUICE_ACTION"):
        assert f"env var: {var}" in listing
    assert "SLUICE_AUDIT_PAGE_SIZE" in cli("audit", "verify", "--help").stdout
    assert "SLUICE_CORRELATION_ID" in cli("messages", "list", "--help").stdout
