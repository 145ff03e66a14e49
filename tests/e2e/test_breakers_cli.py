"""Acceptance tests of ``sluice breakers``: the real CLI against real databases.

Each test runs ``python -m sluice.cli`` as an operator would and checks what it
printed, its exit code (0 done, 2 bad input: the message names the problem and
nothing changed) and what ended up in the store. Setup that is not under test (the
outcomes workers would have reported) goes through the store directly.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest

from sluice.flow.breakers import BreakerPolicy
from sluice.store import AuditEntry, Store, create_store
from sluice.store.base import BreakerInfo

T = TypeVar("T")

TIMEOUT = 60.0


# -- helpers ------------------------------------------------------------------------


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real ``sluice ARGS`` in a subprocess, without inherited ``SLUICE_*``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    return subprocess.run(
        [sys.executable, "-m", "sluice.cli", *args],
        capture_output=True,
        text=True,
        env={**base, "COLUMNS": "200", **(env or {})},
        timeout=TIMEOUT,
        check=False,
    )


def ok(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = cli(*args, env=env)
    assert result.returncode == 0, f"sluice {' '.join(args)} failed:\n{result.stderr}"
    return result


def ok_json(*args: str, env: dict[str, str] | None = None) -> Any:
    return json.loads(ok(*args, "--json", env=env).stdout)


def with_store(url: str, fn: Callable[[Store], Awaitable[T]]) -> T:
    async def go() -> T:
        store = create_store(url)
        await store.open()
        try:
            return await fn(store)
        finally:
            await store.close()

    return asyncio.run(go())


def report(url: str, key: str, ok_count: int, failed: int) -> None:
    """Outcomes as a worker's sync would have added them, in the current bucket."""
    bucket = BreakerPolicy().bucket(datetime.now(UTC))
    with_store(url, lambda s: s.breaker_report({(key, bucket): (ok_count, failed)}, {}, now()))


def now() -> datetime:
    return datetime.now(UTC)


def rows(url: str) -> dict[str, BreakerInfo]:
    return {r.key: r for r in with_store(url, lambda s: s.breaker_list())}


def audit(url: str) -> list[AuditEntry]:
    """The audit log, newest first."""
    return with_store(url, lambda s: s.audit_list())


# -- list ---------------------------------------------------------------------------


def test_list__with_no_breakers_says_so(store_url: str) -> None:
    env = {"SLUICE_DATABASE_URL": store_url}

    assert "no breakers" in ok("breakers", "list", env=env).stdout
    assert ok_json("breakers", "list", env=env)["items"] == []


def test_list__shows_state_and_window_figures(store_url: str) -> None:
    report(store_url, "p:twilio", 6, 18)
    report(store_url, "c:acme:twilio", 2, 0)
    ok("breakers", "open", "twilio", "--reason", "incident 42", "--database-url", store_url)

    table = ok("breakers", "list", "--database-url", store_url).stdout
    found = {b["key"]: b for b in ok_json("breakers", "list", "--database-url", store_url)["items"]}

    assert table.splitlines()[0].split() == [
        "key", "state", "ok", "failed", "rate", "since", "retry", "at", "reason",
    ]  # fmt: skip
    [line] = [ln for ln in table.splitlines() if ln.startswith("p:twilio")]
    assert line.split()[:5] == ["p:twilio", "open", "(forced)", "6", "18"]
    assert "75%" in line
    assert "incident 42" in line
    assert found["p:twilio"] == found["p:twilio"] | {
        "provider": "twilio",
        "tenant": "",
        "state": "open",
        "forced": True,
        "ok": 6,
        "failed": 18,
        "failure_rate": 0.75,
        "retry_at": None,
        "reason": "incident 42",
        "probes_ok": 0,
    }
    assert found["c:acme:twilio"] == found["c:acme:twilio"] | {
        "provider": "twilio",
        "tenant": "acme",
        "state": "closed",
        "forced": False,
        "ok": 2,
        "failed": 0,
        "failure_rate": 0.0,
        "since": None,
    }


# -- open, close, reset -------------------------------------------------------------


def test_open__forces_it_open_and_audits_who_and_why(store_url: str) -> None:
    env = {"SLUICE_DATABASE_URL": store_url}

    result = ok(
        "breakers", "open", "twilio", "--reason", "provider incident", "--actor", "alice",
        env=env,
    )  # fmt: skip

    assert "breaker p:twilio forced open" in result.stdout
    row = rows(store_url)["p:twilio"]
    assert (row.state, row.forced, row.reason, row.retry_at) == (
        "open",
        True,
        "provider incident",
        None,
    )
    [entry] = audit(store_url)
    assert (entry.action, entry.actor, entry.target, entry.reason) == (
        "breaker.force_open",
        "alice",
        "p:twilio",
        "provider incident",
    )
    assert entry.detail == {"from": "closed", "from_forced": False, "to": "open", "forced": True}


def test_close_then_reset__a_connection_breaker_with_reason_from_the_environment(
    store_url: str,
) -> None:
    env = {"SLUICE_DATABASE_URL": store_url, "SLUICE_REASON": "false alarm"}
    report(store_url, "c:acme:twilio", 0, 50)

    closed = ok_json("breakers", "close", "c:acme:twilio", env=env)
    reset = ok("breakers", "reset", "c:acme:twilio", env={**env, "SLUICE_REASON": "all clear"})

    assert (closed["key"], closed["state"], closed["forced"], closed["tenant"]) == (
        "c:acme:twilio",
        "closed",
        True,
        "acme",
    )
    assert "breaker c:acme:twilio reset" in reset.stdout
    row = rows(store_url)["c:acme:twilio"]
    assert (row.state, row.forced, row.reason) == ("closed", False, "all clear")
    # the window starts afresh
    assert ok_json("breakers", "list", env=env)["items"][0]["failed"] == 0
    entries = audit(store_url)
    assert [(e.action, e.reason) for e in entries] == [
        ("breaker.reset", "all clear"),
        ("breaker.force_closed", "false alarm"),
    ]
    assert entries[1].actor.startswith("cli")  # no --actor: the user it runs as


# -- bad input ----------------------------------------------------------------------

BAD_INPUT = [
    pytest.param(
        ("breakers", "half-open", "twilio", "--reason", "x"), ["half-open"], id="unknown-state"
    ),
    pytest.param(
        ("breakers", "open", "twilio", "--reason", ""), ["reason", "required"], id="empty-reason"
    ),
    pytest.param(("breakers", "reset", "twilio", "--reason", "  "), ["reason"], id="blank-reason"),
    pytest.param(("breakers", "close", "twilio"), ["--reason"], id="no-reason"),
    pytest.param(
        ("breakers", "open", "c:acme", "--reason", "x"),
        ["key", "c:<tenant>:<provider>"],
        id="bad-key",
    ),
    pytest.param(
        ("breakers", "open", "twilio", "--reason", "x", "--actor", " "), ["actor"], id="blank-actor"
    ),
    pytest.param(
        ("breakers", "open", "nosuch", "--reason", "x"),
        [
            "key",
            "'p:nosuch'",
            "http, null, sendgrid, sluice_events, twilio, webhook, whatsapp",
            "[providers",
        ],
        id="unknown-provider",
    ),
    pytest.param(
        ("breakers", "close", "p:twillio", "--reason", "x"),
        ["key", "did you mean 'twilio'?"],
        id="misspelt-provider",
    ),
    pytest.param(
        ("breakers", "reset", "c:acme:sendgird", "--reason", "x"),
        ["key", "did you mean 'sendgrid'?"],
        id="misspelt-connection-provider",
    ),
]


@pytest.mark.parametrize(("args", "says"), BAD_INPUT)
def test_bad_input__exits_2_names_the_problem_and_changes_nothing(
    sqlite_url: str, args: tuple[str, ...], says: list[str]
) -> None:
    ok("breakers", "open", "sendgrid", "--reason", "before", "--database-url", sqlite_url)
    before = rows(sqlite_url), audit(sqlite_url)

    result = cli(*args, "--database-url", sqlite_url)

    assert result.returncode == 2, result.stdout + result.stderr
    for fragment in says:
        assert fragment in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert (rows(sqlite_url), audit(sqlite_url)) == before


def test_reset__a_breaker_the_store_knows_works_even_if_its_provider_is_gone(
    store_url: str, tmp_path: Path
) -> None:
    # An alias removed from sluice.toml leaves its breaker's outcomes behind: the
    # operator can still reset what `breakers list` shows.
    report(store_url, "p:twilio-retired", 2, 8)
    env = {"SLUICE_DATABASE_URL": store_url}
    ok("breakers", "reset", "twilio-retired", "--reason", "cleanup", env=env)
    assert rows(store_url)["p:twilio-retired"].forced is False


def test_open__an_alias_of_the_sluice_toml_in_effect_is_a_provider(
    store_url: str, tmp_path: Path
) -> None:
    config = tmp_path / "sluice.toml"
    config.write_text('[providers."twilio-backup"]\nkind = "twilio"\n')
    env = {"SLUICE_DATABASE_URL": store_url, "SLUICE_CONFIG": str(config)}
    ok("breakers", "open", "twilio-backup", "--reason", "drill", env=env)
    assert rows(store_url)["p:twilio-backup"].state == "open"


def test_help__names_the_commands_and_environment_variables() -> None:
    group = ok("breakers", "--help").stdout
    open_help = ok("breakers", "open", "--help").stdout
    list_help = ok("breakers", "list", "--help").stdout

    assert {"list", "open", "close", "reset"} <= set(group.split())
    for var in ("SLUICE_REASON", "SLUICE_ACTOR", "SLUICE_DATABASE_URL", "SLUICE_JSON"):
        assert f"env var: {var}" in open_help
    for var in ("SLUICE_DATABASE_URL", "SLUICE_JSON"):
        assert f"env var: {var}" in list_help
