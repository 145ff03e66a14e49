"""Acceptance tests of ``sluice connections`` and ``sluice keys``: the real CLI.

Each test runs ``python -m sluice.cli`` as an operator would, with the database URL
and the secret key in the environment, and checks what it printed, its exit code
(0 done, 2 bad input or configuration) and what ended up in the database. The one
promise checked everywhere: a credential goes in and never comes out — not in any
command's output, not in the SQLite file, not in a ``pg_dump``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest

from sluice.connections import Connection, ConnectionState
from sluice.model import NewMessage
from sluice.secrets import SecretBox, generate_key
from sluice.store import Store, create_store
from sluice.store.base import AuditEntry

T = TypeVar("T")

TIMEOUT = 60.0
TOKEN = "tok-9d1e7c-do-not-leak"  # the auth_token: must never be seen again
TOKEN_2 = "tok-44aa08-rotated-also-secret"


# -- helpers ------------------------------------------------------------------------


class Sluice:
    """The ``sluice`` command bound to one database; remembers everything it printed."""

    def __init__(self, url: str, cwd: Path) -> None:
        self.url = url
        self.cwd = cwd
        self.printed: list[str] = []

    def __call__(
        self, *args: str, key: str | None = None, stdin: str | None = None, **env: str
    ) -> subprocess.CompletedProcess[str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
        full = {**base, "COLUMNS": "200", "SLUICE_DATABASE_URL": self.url, **env}
        if key is not None:
            full["SLUICE_SECRET_KEY"] = key
        result = subprocess.run(
            [sys.executable, "-m", "sluice.cli", *args],
            capture_output=True,
            text=True,
            env=full,
            input=stdin,
            cwd=self.cwd,  # no stray sluice.toml is picked up
            timeout=TIMEOUT,
            check=False,
        )
        self.printed += [result.stdout, result.stderr]
        return result

    def ok(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        result = self(*args, **kw)
        assert result.returncode == 0, f"sluice {' '.join(args)} failed:\n{result.stderr}"
        return result

    def json(self, *args: str, **kw: Any) -> Any:
        return json.loads(self.ok(*args, "--json", **kw).stdout)

    def with_store(self, fn: Callable[[Store], Awaitable[T]]) -> T:
        """Setup and inspection that are not under test go through the store directly."""

        async def go() -> T:
            store = create_store(self.url)
            await store.open()  # type: ignore[attr-defined]
            try:
                return await fn(store)
            finally:
                await store.close()

        return asyncio.run(go())

    def connections(self) -> list[Connection]:
        return self.with_store(lambda s: s.connection_list())  # type: ignore[attr-defined]

    def audit(self) -> list[AuditEntry]:
        return self.with_store(lambda s: s.audit_list())

    def add_twilio(self, key: str, tenant: str = "acme", *extra: str) -> None:
        self.ok(
            "connections", "add", "--tenant", tenant, "--provider", "twilio",
            "--credential", "account_sid=AC123", "--credential", f"auth_token={TOKEN}",
            "--scope", "messages.send", *extra, key=key,
        )  # fmt: skip


def error_of(result: subprocess.CompletedProcess[str]) -> str:
    """What a failed command said, with rich's panel borders and wrapping taken out."""
    text = result.stderr + result.stdout
    for ch in "│╭╮╰╯─":
        text = text.replace(ch, " ")
    return " ".join(text.split())


@pytest.fixture
def sqlite_cli(tmp_path: Path) -> Sluice:
    """``sluice`` against a fresh SQLite file made by ``sluice migrate``."""
    url = f"sqlite:///{tmp_path / 'sluice.db'}"
    cli = Sluice(url, tmp_path)
    cli.ok("migrate")
    cli.printed.clear()
    return cli


@pytest.fixture
def pg_cli(clean_pg_url: str, tmp_path: Path) -> Iterator[Sluice]:
    """``sluice`` against the run's PostgreSQL database, without connections."""
    # tests/conftest.py empties the other Sluice tables, not sluice_connections.
    with psycopg.connect(clean_pg_url, autocommit=True) as db:
        db.execute("DELETE FROM sluice_connections")
    yield Sluice(clean_pg_url, tmp_path)
    with psycopg.connect(clean_pg_url, autocommit=True) as db:
        db.execute("DELETE FROM sluice_connections")


@pytest.fixture
def key() -> str:
    return generate_key()


# -- keys generate ------------------------------------------------------------------


def test_keys_generate__prints_a_new_32_byte_key_each_time(sqlite_cli: Sluice) -> None:
    first = sqlite_cli.ok("keys", "generate").stdout.strip()
    second = sqlite_cli.ok("keys", "generate").stdout.strip()
    assert first != second
    for printed in (first, second):
        assert len(base64.urlsafe_b64decode(printed)) == 32
        SecretBox(printed)  # usable as SLUICE_SECRET_KEY as printed


# -- add and list -------------------------------------------------------------------


def test_connections_add__without_a_key_exits_2_and_stores_nothing(sqlite_cli: Sluice) -> None:
    result = sqlite_cli(
        "connections", "add", "--tenant", "acme", "--provider", "twilio",
        "--credential", "account_sid=AC123", "--credential", f"auth_token={TOKEN}",
    )  # fmt: skip
    assert result.returncode == 2
    assert "SLUICE_SECRET_KEY" in error_of(result)
    assert "sluice keys generate" in error_of(result)
    assert sqlite_cli.connections() == []
    assert sqlite_cli.audit() == []
    assert sqlite_cli.json("connections", "list")["items"] == []


def test_connections_add__with_credential_pairs_is_listed(sqlite_cli: Sluice, key: str) -> None:
    added = sqlite_cli.ok(
        "connections", "add", "--tenant", "acme", "--provider", "twilio",
        "--credential", "account_sid=AC123", "--credential", f"auth_token={TOKEN}",
        "--scope", "messages.send", "--scope", "lookups.read",
        "--expires-at", "2030-01-01T00:00:00Z", key=key,
    )  # fmt: skip
    assert "added for acme/twilio" in added.stdout
    [listed] = sqlite_cli.json("connections", "list")["items"]
    assert (listed["tenant"], listed["provider"], listed["state"]) == ("acme", "twilio", "active")
    assert listed["scopes"] == ["lookups.read", "messages.send"]
    assert listed["credential_version"] == 1
    assert listed["expires_at"].startswith("2030-01-01T00:00:00")
    assert "ciphertext" not in listed
    table = sqlite_cli.ok("connections", "list").stdout
    assert "acme" in table and "twilio" in table and "active" in table
    # The audit row names the credential keys, never their values.
    [entry] = sqlite_cli.audit()
    assert (entry.action, entry.target) == ("connection.add", "acme/twilio")
    assert entry.detail["credential_keys"] == ["account_sid", "auth_token"]
    assert TOKEN not in json.dumps(entry.detail)


def test_connections_add__from_a_credentials_file_and_from_stdin(
    sqlite_cli: Sluice, key: str, tmp_path: Path
) -> None:
    creds = tmp_path / "sendgrid.json"
    creds.write_text(json.dumps({"api_key": TOKEN, "from_email": "ops@acme.example"}))
    sqlite_cli.ok(
        "connections", "add", "--tenant", "acme", "--provider", "sendgrid",
        "--credentials-file", str(creds), key=key,
    )  # fmt: skip
    sqlite_cli.ok(
        "connections", "add", "--tenant", "globex", "--provider", "whatsapp",
        "--credentials-file", "-", key=key,
        stdin=json.dumps({"access_token": TOKEN_2, "phone_number_id": "1555"}),
    )  # fmt: skip
    listed = sqlite_cli.json("connections", "list")["items"]
    assert [(c["tenant"], c["provider"]) for c in listed] == [
        ("acme", "sendgrid"),
        ("globex", "whatsapp"),
    ]
    only_globex = sqlite_cli.json("connections", "list", "--tenant", "globex")["items"]
    assert [c["provider"] for c in only_globex] == ["whatsapp"]
    # What was stored opens, with the key, to exactly what was given.
    box = SecretBox(key)
    opened = {
        (c.tenant, c.provider): box.decrypt(c.ciphertext, c.key_id, c.id, c.tenant, c.provider)
        for c in sqlite_cli.connections()
    }
    assert opened == {
        ("acme", "sendgrid"): {"api_key": TOKEN, "from_email": "ops@acme.example"},
        ("globex", "whatsapp"): {"access_token": TOKEN_2, "phone_number_id": "1555"},
    }
    assert all(TOKEN not in p and TOKEN_2 not in p for p in sqlite_cli.printed)


# -- secrets never come back out ----------------------------------------------------


def test_secret__never_printed_by_any_command_nor_stored_in_the_sqlite_file(
    sqlite_cli: Sluice, key: str, tmp_path: Path
) -> None:
    sqlite_cli.add_twilio(key)
    sqlite_cli.ok(
        "connections", "add", "--tenant", "globex", "--provider", "twilio",
        "--credential", "account_sid=AC9", "--credential", f"auth_token={TOKEN_2}",
        "--json", key=key,
    )  # fmt: skip
    [queued] = sqlite_cli.with_store(
        lambda s: s.enqueue_many(
            [
                NewMessage(
                    tenant="acme", channel="sms", provider="twilio",
                    recipient="+15550100", payload={"body": "hi"},
                )
            ]
        )
    )  # fmt: skip
    duplicate = sqlite_cli(
        "connections", "add", "--tenant", "acme", "--provider", "twilio",
        "--credential", "account_sid=AC123", "--credential", f"auth_token={TOKEN}", key=key,
    )  # fmt: skip
    assert duplicate.returncode == 2 and "already has" in error_of(duplicate)
    sqlite_cli.ok("connections", "list")
    sqlite_cli.ok("connections", "list", "--json")
    shown = sqlite_cli.ok("connections", "show", "--tenant", "acme", "--provider", "twilio")
    assert "messages.send" in shown.stdout and "active" in shown.stdout
    sqlite_cli.ok("connections", "show", "--tenant", "acme", "--provider", "twilio", "--json")
    revoked = sqlite_cli.ok(
        "connections", "revoke", "--tenant", "acme", "--provider", "twilio",
        "--reason", "token leaked in a ticket",
    )  # fmt: skip
    assert "1 queued messages held" in revoked.stdout
    state = sqlite_cli.json("connections", "show", "--tenant", "acme", "--provider", "twilio")
    assert (state["state"], state["state_reason"]) == ("revoked", "token leaked in a ticket")
    rotated = sqlite_cli.ok(
        "connections", "rotate", "--tenant", "acme", "--provider", "twilio",
        "--credential", "account_sid=AC123", "--credential", f"auth_token={TOKEN_2}", key=key,
    )  # fmt: skip
    assert "credential version 2" in rotated.stdout
    assert "1 held messages released" in rotated.stdout
    again = sqlite_cli.json(
        "connections", "rotate", "--tenant", "acme", "--provider", "twilio",
        "--scope", "messages.send", key=key,
    )  # fmt: skip
    assert again["connection"]["credential_version"] == 3 and again["released"] == 0
    assert sqlite_cli.with_store(lambda s: s.message_get(queued)).status.value == "queued"

    printed = "\n".join(sqlite_cli.printed)
    assert "acme" in printed  # the commands did print about the connection
    assert TOKEN not in printed
    assert TOKEN_2 not in printed

    files = sorted(tmp_path.glob("sluice.db*"))  # the database, its WAL and shared memory
    stored = b"".join(f.read_bytes() for f in files)
    assert b"acme" in stored  # the tenant is there in the clear ...
    assert TOKEN.encode() not in stored  # ... its credentials are not
    assert TOKEN_2.encode() not in stored
    assert b"AC123" not in stored


def test_secret__not_in_a_pg_dump_of_the_database(pg_cli: Sluice, key: str) -> None:
    pg_cli.add_twilio(key, "acme-pg-tenant")
    pg_cli.ok(
        "connections", "rotate", "--tenant", "acme-pg-tenant", "--provider", "twilio",
        "--credential", "account_sid=AC123", "--credential", f"auth_token={TOKEN_2}", key=key,
    )  # fmt: skip
    [listed] = pg_cli.json("connections", "list")["items"]
    assert (listed["tenant"], listed["credential_version"]) == ("acme-pg-tenant", 2)
    pg_cli.ok("connections", "show", "--tenant", "acme-pg-tenant", "--provider", "twilio")
    printed = "\n".join(pg_cli.printed)
    assert TOKEN not in printed and TOKEN_2 not in printed

    db_name = pg_cli.url.rsplit("/", 1)[1]
    dump = subprocess.run(
        ["/usr/bin/pg_dump", "-h", "127.0.0.1", "-U", "postgres", db_name],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=True,
    ).stdout
    assert "sluice_connections" in dump
    assert "acme-pg-tenant" in dump
    assert TOKEN not in dump
    assert TOKEN_2 not in dump
    assert "AC123" not in dump


# -- bad input ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (
            ["--provider", "twilio", "--credential", "account_sid=AC1"],
            ["credentials", "auth_token"],
        ),
        (["--provider", "twilio", "--credential", "novalue"], ["credentials", "key=value"]),
        (["--provider", "http", "--credential", "token="], ["credentials", "non-empty"]),
        (["--provider", "http"], ["credentials", "required"]),
        (
            ["--provider", "http", "--credential", "token=x", "--expires-at", "soon"],
            ["expires_at", "ISO 8601"],
        ),
        (
            ["--provider", "http", "--credential", "token=x", "--expires-at", "2030-01-01T00:00"],
            ["expires_at", "timezone"],
        ),
        (["--provider", "http", "--credentials-file", "{bad-json}"], ["credentials", "JSON"]),
        (["--provider", "http", "--credentials-file", "{list}"], ["credentials", "JSON object"]),
        (["--provider", "http", "--credentials-file", "{missing}"], ["credentials", "cannot read"]),
        (["--provider", " ", "--credential", "token=x"], ["provider", "required"]),
        (["--tenant", " ", "--provider", "http", "--credential", "token=x"], ["tenant"]),
        (
            ["--provider", "sendgird", "--credential", "api_key=SG.x"],
            [
                "provider",
                "did you mean 'sendgrid'?",
                "http, null, sendgrid, sluice_events, twilio, webhook",
            ],
        ),
        (
            ["--provider", "crm", "--credential", "token=x"],
            ["provider", "'crm' is not a provider", '[providers."name"]'],
        ),
        (
            ["--provider", "twilio-eu", "--credential", "account_sid=AC1"],
            ["credentials", "a twilio-eu connection needs auth_token"],
        ),
    ],
    ids=[
        "twilio-missing-key",
        "pair-without-equals",
        "empty-value",
        "no-credentials",
        "expires-not-a-time",
        "expires-no-timezone",
        "file-not-json",
        "file-not-object",
        "file-missing",
        "blank-provider",
        "blank-tenant",
        "misspelt-provider",
        "unknown-provider",
        "alias-needs-the-keys-of-its-kind",
    ],
)
def test_connections_add__bad_input_exits_2_naming_the_field_and_stores_nothing(
    sqlite_cli: Sluice, key: str, tmp_path: Path, args: list[str], says: list[str]
) -> None:
    files = {
        "{bad-json}": tmp_path / "bad.json",
        "{list}": tmp_path / "list.json",
        "{missing}": tmp_path / "nope.json",
    }
    files["{bad-json}"].write_text('{"token": "x",')
    # The sluice.toml the command finds in its working directory declares one alias.
    (tmp_path / "sluice.toml").write_text('[providers."twilio-eu"]\nkind = "twilio"\n')
    files["{list}"].write_text('["token", "x"]')
    args = [str(files[a]) if a in files else a for a in args]
    if "--tenant" not in args:
        args = ["--tenant", "acme", *args]
    result = sqlite_cli("connections", "add", *args, key=key)
    assert result.returncode == 2, result.stderr
    message = error_of(result)
    for word in says:
        assert word in message
    assert sqlite_cli.connections() == []
    assert sqlite_cli.audit() == []


def test_connections_add__for_an_alias_of_the_sluice_toml_in_effect(
    sqlite_cli: Sluice, key: str, tmp_path: Path
) -> None:
    (tmp_path / "sluice.toml").write_text('[providers."twilio-eu"]\nkind = "twilio"\n')
    sqlite_cli.ok(
        "connections", "add", "--tenant", "acme", "--provider", "twilio-eu",
        "--credential", "account_sid=AC9", "--credential", f"auth_token={TOKEN}", key=key,
    )  # fmt: skip
    assert [(c.tenant, c.provider) for c in sqlite_cli.connections()] == [("acme", "twilio-eu")]


def test_connections_add__malformed_credential_pair_is_refused_without_echoing_it(
    sqlite_cli: Sluice, key: str
) -> None:
    result = sqlite_cli(
        "connections", "add", "--tenant", "acme", "--provider", "twilio",
        "--credential", "account_sid=AC123", "--credential", f"auth_token:{TOKEN}", key=key,
    )  # fmt: skip
    assert result.returncode == 2
    assert "credentials" in error_of(result)
    assert TOKEN not in result.stdout + result.stderr


@pytest.mark.parametrize("command", ["show", "rotate", "revoke"])
def test_connections__unknown_connection_exits_2_saying_it_has_none(
    sqlite_cli: Sluice, key: str, command: str
) -> None:
    sqlite_cli.add_twilio(key)
    extra = {
        "show": [],
        "rotate": ["--scope", "messages.send"],
        "revoke": ["--reason", "offboarding"],
    }[command]
    result = sqlite_cli(
        "connections", command, "--tenant", "nobody", "--provider", "twilio", *extra, key=key
    )
    assert result.returncode == 2
    assert "has no" in error_of(result) and "'nobody'" in error_of(result)
    [still] = sqlite_cli.connections()
    assert (still.tenant, still.state, still.credential_version) == (
        "acme",
        ConnectionState.ACTIVE,
        1,
    )


def test_connections_rotate__without_credentials_or_scopes_exits_2(
    sqlite_cli: Sluice, key: str
) -> None:
    sqlite_cli.add_twilio(key)
    result = sqlite_cli("connections", "rotate", "--tenant", "acme", "--provider", "twilio")
    assert result.returncode == 2
    assert "credentials" in error_of(result)
    [still] = sqlite_cli.connections()
    assert still.credential_version == 1


def test_connections_rotate__new_credentials_without_a_key_exits_2(
    sqlite_cli: Sluice, key: str
) -> None:
    sqlite_cli.add_twilio(key)
    result = sqlite_cli(
        "connections", "rotate", "--tenant", "acme", "--provider", "twilio",
        "--credential", "account_sid=AC1", "--credential", f"auth_token={TOKEN_2}",
    )  # fmt: skip
    assert result.returncode == 2
    assert "SLUICE_SECRET_KEY" in error_of(result)
    assert TOKEN_2 not in error_of(result)
    [still] = sqlite_cli.connections()
    assert still.credential_version == 1


@pytest.mark.parametrize("reason", [None, "", "   "])
def test_connections_revoke__requires_a_reason(
    sqlite_cli: Sluice, key: str, reason: str | None
) -> None:
    sqlite_cli.add_twilio(key)
    extra = [] if reason is None else ["--reason", reason]
    result = sqlite_cli("connections", "revoke", "--tenant", "acme", "--provider", "twilio", *extra)
    assert result.returncode == 2
    assert ("--reason" if reason is None else "reason") in error_of(result)
    [still] = sqlite_cli.connections()
    assert still.state is ConnectionState.ACTIVE
    assert [e.action for e in sqlite_cli.audit()] == ["connection.add"]


# -- keys rotate and the worker's key check -----------------------------------------


def test_keys_rotate__re_encrypts_and_the_worker_then_needs_only_the_new_key(
    sqlite_cli: Sluice,
) -> None:
    old, new = generate_key(), generate_key()
    sqlite_cli.add_twilio(old, "acme")
    sqlite_cli.add_twilio(old, "globex")

    # Before the rotation the new key alone does not open what the old one sealed.
    early = sqlite_cli("worker", "--until-idle", key=new)
    assert early.returncode == 2

    rotated = sqlite_cli.ok("keys", "rotate", key=new, SLUICE_SECRET_KEY_PREVIOUS=old)
    assert "re-encrypted" in rotated.stdout
    assert rotated.stdout.startswith("2 ")
    box = SecretBox(new)
    for c in sqlite_cli.connections():
        assert c.key_id == box.current_id
        assert box.decrypt(c.ciphertext, c.key_id, c.id, c.tenant, c.provider)["auth_token"] == (
            TOKEN
        )
    [entry] = [e for e in sqlite_cli.audit() if e.action == "keys.rotate"]
    assert entry.detail == {"re_encrypted": 2, "key_id": box.current_id}

    started = sqlite_cli("worker", "--until-idle", key=new)
    assert started.returncode == 0, started.stderr

    stale = sqlite_cli("worker", "--until-idle", key=old)
    assert stale.returncode == 2
    message = error_of(stale)
    assert "is not the key that encrypted" in message
    assert SecretBox(old).current_id in message and box.current_id in message
    assert "sluice keys rotate" in message

    # Rotating again with nothing left under the old key changes nothing.
    assert sqlite_cli.ok("keys", "rotate", key=new).stdout.startswith("0 ")
    assert TOKEN not in "\n".join(sqlite_cli.printed)


def test_keys_rotate__without_the_previous_key_exits_2_and_changes_nothing(
    sqlite_cli: Sluice,
) -> None:
    old, new = generate_key(), generate_key()
    sqlite_cli.add_twilio(old)
    [before] = sqlite_cli.connections()
    result = sqlite_cli("keys", "rotate", key=new)
    assert result.returncode == 2
    message = error_of(result)
    assert SecretBox(old).current_id in message and "SLUICE_SECRET_KEY_PREVIOUS" in message
    [after] = sqlite_cli.connections()
    assert (after.key_id, after.ciphertext) == (before.key_id, before.ciphertext)
    assert [e.action for e in sqlite_cli.audit()] == ["connection.add"]


def test_keys_rotate__without_a_key_exits_2(sqlite_cli: Sluice, key: str) -> None:
    sqlite_cli.add_twilio(key)
    result = sqlite_cli("keys", "rotate", SLUICE_SECRET_KEY_PREVIOUS=key)
    assert result.returncode == 2
    assert "SLUICE_SECRET_KEY" in error_of(result)


def test_worker__with_connections_but_no_key_exits_2(sqlite_cli: Sluice, key: str) -> None:
    sqlite_cli.add_twilio(key)
    result = sqlite_cli("worker", "--until-idle")
    assert result.returncode == 2
    assert "SLUICE_SECRET_KEY" in error_of(result)
    assert "1 connections" in error_of(result)


def test_worker__without_connections_starts_without_a_key(sqlite_cli: Sluice) -> None:
    result = sqlite_cli("worker", "--until-idle")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("bad", ["not-a-key", base64.urlsafe_b64encode(b"k" * 16).decode()])
def test_worker__malformed_key_exits_2_naming_it(sqlite_cli: Sluice, bad: str) -> None:
    result = sqlite_cli("worker", "--until-idle", key=bad)
    assert result.returncode == 2
    assert "SLUICE_SECRET_KEY" in error_of(result)
