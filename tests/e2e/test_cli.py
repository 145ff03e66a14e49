"""Acceptance tests of the ``sluice`` command: real subprocesses, real databases.

Each test starts ``python -m sluice.cli`` the way an operator would, reads what it
printed and its exit code (0 done, 1 the system failed, 2 bad input), and checks the
outcome in the store. Setup that is not under test (seeding messages, reading the
audit log) goes through the store directly, which keeps the file fast.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psycopg
import pytest

from dying import dying
from sluice.model import NewMessage
from sluice.store import Store, create_store
from sluice.store._queries import migrations
from sluice.store.base import AuditEntry

T = TypeVar("T")

TIMEOUT = 30.0

# The suite's conftest files (tests/ and tests/e2e/) are both importable as
# ``conftest``, so which one ``from conftest import ...`` finds depends on the order
# pytest loaded them; these few helpers are local instead.
PG_ADMIN_URL = os.environ.get(
    "SLUICE_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


# -- helpers ------------------------------------------------------------------------


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a ``sluice`` child: no inherited ``SLUICE_*``, wide output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    # Rich wraps help and error panels at the terminal width; this wide, nothing is split.
    return {**env, "COLUMNS": "200", **(extra or {})}


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real ``sluice ARGS`` in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "sluice.cli", *args],
        capture_output=True,
        text=True,
        env=child_env(env),
        timeout=TIMEOUT,
        check=False,
    )


def cli_many(*calls: tuple[str, ...]) -> list[subprocess.CompletedProcess[str]]:
    """Run several independent ``sluice`` commands at once; results in order."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda args: cli(*args), calls))


def ok(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command that must succeed."""
    result = cli(*args, env=env)
    assert result.returncode == 0, f"sluice {' '.join(args)} failed:\n{result.stderr}"
    return result


def ok_json(*args: str, env: dict[str, str] | None = None) -> Any:
    """Run a command with ``--json`` that must succeed; its parsed output."""
    return json.loads(ok(*args, "--json", env=env).stdout)


def with_store(url: str, fn: Callable[[Store], Awaitable[T]]) -> T:
    """Run ``fn`` against an open store for ``url`` (setup and inspection only)."""

    async def go() -> T:
        store = create_store(url)
        await store.open()  # type: ignore[attr-defined]
        try:
            return await fn(store)
        finally:
            await store.close()

    return asyncio.run(go())


def enqueue(url: str, *messages: NewMessage) -> list[str]:
    return with_store(url, lambda s: s.enqueue_many(list(messages)))


def counts(url: str) -> dict[str, int]:
    report = with_store(url, lambda s: s.status_report(datetime.now(UTC)))
    return dict(report.counts)


def audit(url: str) -> list[AuditEntry]:
    """The audit log, newest first."""
    return with_store(url, lambda s: s.audit_list())


def snapshot(url: str) -> tuple[dict[str, int], int]:
    """What an operator could notice changing: message counts and audit entries."""
    return counts(url), len(audit(url))


#: Aliases the enqueuing side's sluice.toml still declares but the workers' no longer
#: does (an account retired from the workers first): their messages are accepted at
#: enqueue and dead-lettered as UNKNOWN_PROVIDER by the worker.
RETIRED = {"sms": "twilio-old", "email": "sendgrid-old"}


@pytest.fixture
def retired(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Enqueue (this process) sees the retired aliases; returns the environment of a
    worker that does not."""
    enqueuer = tmp_path / "enqueuer.toml"
    enqueuer.write_text(
        '[providers."twilio-old"]\nkind = "twilio"\n[providers."sendgrid-old"]\nkind = "sendgrid"\n'
    )
    worker = tmp_path / "worker.toml"
    worker.write_text("")
    monkeypatch.setenv("SLUICE_CONFIG", str(enqueuer))
    return {"SLUICE_CONFIG": str(worker)}


def message(tenant: str = "acme", channel: str = "sms", provider: str = "null") -> NewMessage:
    """``provider="retired"``: the retired alias of ``channel`` (see ``retired``)."""
    gone = provider == "retired"
    return NewMessage(
        tenant=tenant,
        channel=channel,
        provider=RETIRED[channel] if gone else provider,
        recipient="ann@example.com" if channel == "email" else "+15550100",
        payload={"text": "hello"},
        max_attempts=1 if gone else 5,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def popen(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start ``sluice ARGS`` in the background, output to procN.out/.err; killed after the test."""
    started: list[subprocess.Popen[str]] = []
    with ExitStack() as files:

        def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
            n = len(started)
            proc = subprocess.Popen(
                [sys.executable, "-m", "sluice.cli", *args],
                stdout=files.enter_context((tmp_path / f"proc{n}.out").open("w")),
                stderr=files.enter_context((tmp_path / f"proc{n}.err").open("w")),
                text=True,
                env=child_env(env),
            )
            started.append(proc)
            return proc

        yield start
        for proc in started:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


def stderr_of(tmp_path: Path, n: int = 0) -> str:
    return (tmp_path / f"proc{n}.err").read_text()


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


# -- help ---------------------------------------------------------------------------

COMMANDS = ("migrate", "worker", "send", "status", "messages", "dlq", "simulator", "run")

ENV_VARS = {
    ("migrate",): ["SLUICE_DATABASE_URL"],
    ("worker",): [
        "SLUICE_DATABASE_URL",
        "SLUICE_WORKER_CONCURRENCY",
        "SLUICE_WORKER_BATCH_SIZE",
        "SLUICE_LEASE_SECONDS",
        "SLUICE_REAPER_INTERVAL",
        "SLUICE_POLL_INTERVAL",
        "SLUICE_HTTP_TIMEOUT",
        "SLUICE_WEBHOOK_SECRET",
        "SLUICE_UNTIL_IDLE",
        "SLUICE_LOG_LEVEL",
    ],
    ("send",): [
        "SLUICE_TENANT",
        "SLUICE_CHANNEL",
        "SLUICE_RECIPIENT",
        "SLUICE_PROVIDER",
        "SLUICE_PAYLOAD",
        "SLUICE_ACTION",
        "SLUICE_PRIORITY",
        "SLUICE_RUN_AT",
        "SLUICE_MAX_ATTEMPTS",
        "SLUICE_IDEMPOTENCY_KEY",
        "SLUICE_CORRELATION_ID",
        "SLUICE_SCOPES",
        "SLUICE_DATABASE_URL",
        "SLUICE_JSON",
    ],
    ("status",): ["SLUICE_DATABASE_URL", "SLUICE_JSON"],
    ("serve",): [
        "SLUICE_DATABASE_URL",
        "SLUICE_API_HOST",
        "SLUICE_API_PORT",
        "SLUICE_API_WORKERS",
        "SLUICE_LOG_LEVEL",
        "SLUICE_API_HEADER_TIMEOUT",
        "SLUICE_API_BODY_TIMEOUT",
        "SLUICE_API_MAX_CONNECTIONS",
    ],
    ("messages", "show"): ["SLUICE_DATABASE_URL", "SLUICE_JSON"],
    ("dlq", "list"): ["SLUICE_TENANT", "SLUICE_CHANNEL", "SLUICE_DATABASE_URL", "SLUICE_JSON"],
    **{
        ("dlq", verb): [
            "SLUICE_ERROR_CODE",
            "SLUICE_CHANNEL",
            "SLUICE_TENANT",
            "SLUICE_SINCE",
            "SLUICE_LIMIT",
            "SLUICE_DRY_RUN",
            "SLUICE_ACTOR",
            "SLUICE_REASON",
            "SLUICE_DATABASE_URL",
            "SLUICE_JSON",
        ]
        for verb in ("retry", "cancel")
    },
    ("simulator",): [
        "SLUICE_SIMULATOR_HOST",
        "SLUICE_SIMULATOR_PORT",
        "SLUICE_WEBHOOK_SECRET",
        "SLUICE_SIMULATOR_CALLBACKS",
    ],
    ("run",): [
        "SLUICE_DATABASE_URL",
        "SLUICE_SIMULATOR_PORT",
        "SLUICE_DEMO",
        "SLUICE_DEMO_RATE",
        "SLUICE_RUN_DURATION",
    ],
    # -- evidence and markers (issue 15) --
    ("annotate",): ["SLUICE_ANNOTATION_KIND", "SLUICE_TENANT", "SLUICE_ANNOTATION_AT",
                    "SLUICE_ACTOR", "SLUICE_DATABASE_URL", "SLUICE_JSON"],
    ("annotations", "list"): ["SLUICE_ANNOTATIONS_SINCE", "SLUICE_ANNOTATIONS_UNTIL",
                              "SLUICE_ANNOTATION_KIND", "SLUICE_TENANT", "SLUICE_LIMIT",
                              "SLUICE_CURSOR", "SLUICE_DATABASE_URL", "SLUICE_JSON"],
    ("incidents", "evidence"): ["SLUICE_EVIDENCE_OUT", "SLUICE_EVIDENCE_MARGIN", "SLUICE_ACTOR",
                                "SLUICE_DATABASE_URL", "SLUICE_JSON"],
}  # fmt: skip


def test_help__lists_every_command() -> None:
    top, dlq, messages = cli_many(("--help",), ("dlq", "--help"), ("messages", "--help"))

    assert top.returncode == 0, top.stderr
    words = set(top.stdout.split())
    assert set(COMMANDS) <= words, f"missing: {set(COMMANDS) - words}"
    assert dlq.returncode == 0, dlq.stderr
    assert {"list", "retry", "cancel"} <= set(dlq.stdout.split())
    assert messages.returncode == 0, messages.stderr
    assert "show" in messages.stdout.split()


def test_help__every_command_shows_the_environment_variable_of_each_option() -> None:
    commands = list(ENV_VARS)
    results = cli_many(*[(*command, "--help") for command in commands])

    missing = {}
    for command, result in zip(commands, results, strict=True):
        assert result.returncode == 0, f"{command}: {result.stderr}"
        absent = [v for v in ENV_VARS[command] if f"env var: {v}" not in result.stdout]
        if absent:
            missing[" ".join(command)] = absent
    assert not missing, f"--help does not name these environment variables: {missing}"


def test_version__prints_the_installed_package_version() -> None:
    from importlib.metadata import version

    result = cli("--version")

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"sluice {version('sluice')}"


def test_no_arguments__prints_help_not_a_traceback() -> None:
    result = cli()

    assert "Usage" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


# -- migrate ------------------------------------------------------------------------


@pytest.fixture(params=["postgres", "sqlite"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each kind: no schema at all."""
    if request.param == "postgres":
        name = f"sluice_e2e_fresh_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        yield f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    else:
        yield f"sqlite:///{tmp_path / 'fresh.db'}"


def test_status__before_migrate_fails_and_says_to_run_migrate(fresh_url: str) -> None:
    result = cli("status", env={"SLUICE_DATABASE_URL": fresh_url})

    assert result.returncode == 1
    assert "sluice migrate" in result.stderr
    assert "Traceback" not in result.stderr


def test_migrate__applies_the_schema_once_then_reports_it_up_to_date(fresh_url: str) -> None:
    env = {"SLUICE_DATABASE_URL": fresh_url}

    first = ok("migrate", env=env)
    second = ok("migrate", env=env)

    newest = newest_version("postgres" if fresh_url.startswith("postgres") else "sqlite")
    expected = ", ".join(str(v) for v in range(1, newest + 1))
    assert first.stdout.strip() == f"applied migrations: {expected}"
    assert second.stdout.strip() == "schema is up to date"
    assert ok_json("status", env=env)["counts"] == {}


async def test_status__one_moment_while_messages_die(store: Store, store_url: str) -> None:
    """``sluice status --by tenant --json`` run again and again while another process
    kills 600 messages two at a time: every answer counts all of them, by status and by
    tenant, and its dead count agrees with its dead letters (it reads one snapshot)."""
    total, overlapped = 600, 0
    args = ("status", "--by", "tenant", "--json", "--database-url", store_url)
    async with dying(store, store_url, total, datetime.now(UTC), pause=0.003) as moving:
        while not moving.done():
            body = json.loads((await asyncio.to_thread(ok, *args)).stdout)
            counts = body["counts"]
            assert sum(counts.values()) == sum(g["total"] for g in body["groups"]) == total
            assert counts.get("dead", 0) == sum(g["count"] for g in body["dead"]), body
            overlapped += 0 < counts.get("dead", 0) < total
    assert overlapped >= 2  # the answers did overlap the moves


# -- send ---------------------------------------------------------------------------

SEND = ("send", "--tenant", "acme", "--channel", "sms", "--recipient", "+15550100")


def test_send__prints_the_new_id_and_messages_show_has_what_was_sent(
    store_url: str, tmp_path: Path
) -> None:
    payload_file = tmp_path / "payload.json"
    payload_file.write_text(json.dumps({"order_id": "ord_1", "amount_cents": 1250}))

    plain = ok(*SEND, "--provider", "null", "--database-url", store_url)
    as_json = ok_json(
        *SEND,
        "--provider", "null",
        "--action", "order.created",
        "--payload", f"@{payload_file}",
        "--priority", "7",
        "--max-attempts", "3",
        "--run-at", "+2h",
        "--idempotency-key", "order-1",
        "--correlation-id", "trace-42",
        "--scope", "orders:write",
        "--scope", "sms:send",
        env={"SLUICE_DATABASE_URL": store_url},
    )  # fmt: skip

    plain_id = plain.stdout.strip()
    assert str(uuid.UUID(plain_id)) == plain_id
    assert set(as_json) == {"id"}
    assert str(uuid.UUID(as_json["id"])) == as_json["id"] != plain_id
    shown = ok_json("messages", "show", as_json["id"], "--database-url", store_url)
    msg = shown["message"]
    assert {k: msg[k] for k in (
        "id", "tenant", "channel", "provider", "recipient", "action", "payload", "priority",
        "max_attempts", "attempts", "status", "idempotency_key", "correlation_id", "scopes",
    )} == {
        "id": as_json["id"], "tenant": "acme", "channel": "sms", "provider": "null",
        "recipient": "+15550100", "action": "order.created",
        "payload": {"order_id": "ord_1", "amount_cents": 1250}, "priority": 7,
        "max_attempts": 3, "attempts": 0, "status": "queued", "idempotency_key": "order-1",
        "correlation_id": "trace-42", "scopes": ["orders:write", "sms:send"],
    }  # fmt: skip
    delay = datetime.fromisoformat(msg["run_at"]) - datetime.now(UTC)
    assert timedelta(hours=1, minutes=55) < delay <= timedelta(hours=2)
    assert shown["attempts"] == []
    assert counts(store_url) == {"queued": 2}


def test_send__idempotency_key_returns_the_same_message_and_rejects_other_content(
    store_url: str,
) -> None:
    keyed = (*SEND, "--provider", "null", "--idempotency-key", "k-1", "--database-url", store_url)

    first = ok(*keyed, "--payload", '{"a": 1}').stdout.strip()
    again = ok(*keyed, "--payload", '{"a": 1}', "--correlation-id", "retry-trace").stdout.strip()
    conflict = cli(*keyed, "--payload", '{"a": 2}')

    assert again == first
    assert conflict.returncode == 2
    assert "idempotency key" in conflict.stderr
    assert first in conflict.stderr
    assert conflict.stdout == ""
    assert ok_json("status", "--database-url", store_url)["counts"] == {"queued": 1}


# -- bad input ----------------------------------------------------------------------

S = (*SEND, "--provider", "null")


def bad(name: str, args: tuple[str, ...], *says: str, env: dict[str, str] | None = None) -> Any:
    """One bad-input case: the command, and what its error message must mention."""
    return pytest.param(args, env or {}, list(says), id=name)


BAD_INPUT = [
    bad("send-empty-tenant", ("send", "--tenant", "", *S[3:]), "tenant"),
    bad("send-payload-not-json", (*S, "--payload", "{not json"), "payload", "JSON"),
    bad("send-payload-not-object", (*S, "--payload", "[1]"), "payload", "JSON object"),
    bad("send-payload-missing-file", (*S, "--payload", "@/no/such.json"), "payload", "/no/such"),
    bad("send-priority-out-of-range", (*S, "--priority", "5000"), "priority"),
    bad("send-max-attempts-0", (*S, "--max-attempts", "0"), "max_attempts"),
    bad("send-run-at-not-a-time", (*S, "--run-at", "tomorrow"), "run_at"),
    bad("send-run-at-without-zone", (*S, "--run-at", "2030-01-01T09:00"), "run_at", "timezone"),
    bad("send-unknown-option", (*S, "--no-such-option"), "--no-such-option"),
    bad("send-sms-to-a-name", (*S, "--recipient", "bob"), "recipient", "E.164", "+14155550100"),
    bad("send-unknown-provider", (*S, "--provider", "twillio"), "provider", "'twilio'"),
    bad("send-sms-via-sendgrid", (*S, "--provider", "sendgrid"), "channel", "'email'"),
    bad(
        "send-email-not-an-address",
        (*S, "--channel", "email", "--recipient", "ann@example"),
        "recipient",
        "ann@example.com",
    ),
    bad(
        "send-webhook-to-loopback",
        (*S, "--channel", "webhook", "--provider", "webhook", "--recipient", "http://2130706433/"),
        "recipient",
        "loopback",
        "SLUICE_ALLOW_LOOPBACK_TARGETS",
    ),
    bad("send-tenant-with-space", ("send", "--tenant", "acme ", *S[3:]), "tenant", "whitespace"),
    bad("dlq-retry-limit-0", ("dlq", "retry", "--limit", "0"), "limit"),
    bad("dlq-retry-since-not-a-time", ("dlq", "retry", "--since", "yesterday"), "since"),
    bad(
        "worker-lease-not-a-number",
        ("worker", "--until-idle"),
        "SLUICE_LEASE_SECONDS",
        env={"SLUICE_LEASE_SECONDS": "abc"},
    ),
    bad(
        "worker-lease-not-above-http-timeout",
        ("worker", "--until-idle", "--lease-seconds", "5", "--http-timeout", "10"),
        "SLUICE_LEASE_SECONDS",
        "SLUICE_HTTP_TIMEOUT",
    ),
    bad(
        "messages-show-unknown-id",
        ("messages", "show", "01a20000-0000-7000-8000-000000000000"),
        "no message",
    ),
]


@pytest.mark.parametrize(("args", "env", "says"), BAD_INPUT)
def test_bad_input__exits_2_names_the_problem_and_changes_nothing(
    sqlite_url: str, args: tuple[str, ...], env: dict[str, str], says: list[str]
) -> None:
    enqueue(sqlite_url, message())
    before = snapshot(sqlite_url)

    result = cli(*args, "--database-url", sqlite_url, env=env)

    assert result.returncode == 2, result.stdout + result.stderr
    for fragment in says:
        assert fragment in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert snapshot(sqlite_url) == before


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(S, id="send"),
        pytest.param(("worker", "--until-idle"), id="worker"),
        pytest.param(("dlq", "retry"), id="dlq-retry"),
        pytest.param(("dlq", "cancel"), id="dlq-cancel"),
        pytest.param(("run", "--demo", "0", "--duration", "1", "--port", "0"), id="run"),
        pytest.param(("migrate",), id="migrate"),
        pytest.param(("status",), id="status"),
        pytest.param(("dlq", "list"), id="dlq-list"),
        pytest.param(("messages", "show", "x"), id="messages-show"),
    ],
)
def test_unsupported_database_url__exits_2_naming_the_setting(args: tuple[str, ...]) -> None:
    result = cli(*args, "--database-url", "mysql://x")

    assert result.returncode == 2, result.stderr
    assert "SLUICE_DATABASE_URL" in result.stderr
    assert "mysql://x" in result.stderr
    assert "Traceback" not in result.stderr


def _unreachable_urls() -> list[Any]:
    nothing_listens = free_port()
    admin = PG_ADMIN_URL.rsplit("/", 1)[0]
    return [
        pytest.param(
            "postgresql://postgres@nosuchhost.invalid/x",
            ["cannot resolve host nosuchhost.invalid"],
            id="unknown-host",
        ),
        pytest.param(
            f"{admin}/nosuchdb",
            ['database "nosuchdb" does not exist', "createdb", "SLUICE_DATABASE_URL"],
            id="missing-database",
        ),
        pytest.param(
            f"postgresql://postgres@127.0.0.1:{nothing_listens}/x",
            [f"no PostgreSQL server is answering at 127.0.0.1:{nothing_listens}", "start it"],
            id="server-down",
        ),
    ]


@pytest.mark.parametrize(("url", "says"), _unreachable_urls())
@pytest.mark.parametrize("command", [("status",), ("migrate",), ("worker", "--until-idle")])
def test_database_unreachable__one_line_saying_why_and_exit_1(
    url: str, says: list[str], command: tuple[str, ...]
) -> None:
    result = cli(*command, "--database-url", url)
    assert result.returncode == 1, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for words in says:
        assert words in lines[0], lines[0]
    assert "Traceback" not in result.stderr and "pool" not in result.stderr


# -- worker --until-idle ------------------------------------------------------------


def test_worker_until_idle__sends_what_it_can_and_dead_letters_the_rest(
    store_url: str, retired: dict[str, str]
) -> None:
    env = {"SLUICE_DATABASE_URL": store_url, **retired}
    *_, dead_id = enqueue(store_url, message(), message(), message(), message(provider="retired"))

    worker = cli("worker", "--until-idle", env=env)

    assert worker.returncode == 0, worker.stderr
    assert "worker done: sent 3" in worker.stderr
    assert "dead-lettered 1" in worker.stderr
    status = ok_json("status", env=env)
    assert status["counts"] == {"sent": 3, "dead": 1}
    dlq = ok_json("dlq", "list", env=env)
    assert dlq["total"] == 1
    assert [(g["channel"], g["error_code"], g["count"]) for g in dlq["items"]] == [
        ("sms", "UNKNOWN_PROVIDER", 1)
    ]
    shown = ok_json("messages", "show", dead_id, env=env)
    assert shown["message"]["status"] == "dead"
    assert shown["message"]["last_error_code"] == "UNKNOWN_PROVIDER"
    assert [(a["attempt_no"], a["outcome"], a["error_code"]) for a in shown["attempts"]] == [
        (1, "failed", "UNKNOWN_PROVIDER")
    ]


def test_worker__refuses_to_start_on_a_database_without_the_schema(tmp_path: Path) -> None:
    result = cli("worker", "--until-idle", "--database-url", f"sqlite:///{tmp_path / 'new.db'}")

    assert result.returncode == 1
    assert "sluice migrate" in result.stderr
    assert "Traceback" not in result.stderr


def test_worker__private_targets_are_logged_at_start_and_audited_when_they_change(
    sqlite_url: str,
) -> None:
    def start(targets: str | None) -> subprocess.CompletedProcess[str]:
        extra = {"SLUICE_ALLOW_PRIVATE_TARGETS": targets} if targets is not None else {}
        return cli("worker", "--until-idle", env={"SLUICE_DATABASE_URL": sqlite_url, **extra})

    def audited() -> list[AuditEntry]:
        entries = [e for e in audit(sqlite_url) if e.action == "netguard.private_targets"]
        return list(reversed(entries))

    plain = start(None)
    assert plain.returncode == 0, plain.stderr
    assert audited() == []  # nothing listed, as ever: nothing to record

    listed = start("10.20.0.0/16, hooks.corp.example")
    same = start("HOOKS.corp.example. 10.20.0.0/16")  # the same list, spelt otherwise
    bad = start("10.20.0.0/16, 169.254.169.254")
    cleared = start("")

    assert [r.returncode for r in (listed, same, cleared)] == [0, 0, 0], listed.stderr
    for run in (listed, same):
        assert "may call these private networks and names" in run.stderr
        assert "hooks.corp.example" in run.stderr
    assert "SLUICE_ALLOW_PRIVATE_TARGETS changed" in listed.stderr
    assert "changed" not in same.stderr
    assert bad.returncode == 2
    assert "SLUICE_ALLOW_PRIVATE_TARGETS: '169.254.169.254' is link-local" in bad.stderr
    assert "Traceback" not in bad.stderr
    entries = audited()
    assert [e.detail for e in entries] == [
        {"allow": ["10.20.0.0/16", "hooks.corp.example"]},
        {"allow": []},
    ]
    assert all(e.actor.startswith("worker:") for e in entries)
    assert entries[0].target == "SLUICE_ALLOW_PRIVATE_TARGETS"


# -- dead-letter queue --------------------------------------------------------------


@dataclass
class DeadLetters:
    url: str
    acme_sms: list[str]
    globex_email: str
    acme_email: str
    sent: str

    @property
    def all(self) -> set[str]:
        return {*self.acme_sms, self.globex_email, self.acme_email}


@pytest.fixture
def dead(store_url: str, retired: dict[str, str]) -> DeadLetters:
    """Four dead letters (acme/sms x2, globex/email, acme/email) and one sent message."""
    ids = enqueue(
        store_url,
        message("acme", "sms", "retired"),
        message("acme", "sms", "retired"),
        message("globex", "email", "retired"),
        message("acme", "email", "retired"),
        message("acme", "sms", "null"),
    )
    ok("worker", "--until-idle", "--database-url", store_url, env=retired)
    assert counts(store_url) == {"dead": 4, "sent": 1}
    return DeadLetters(store_url, ids[:2], ids[2], ids[3], ids[4])


def test_dlq_retry_dry_run__reports_the_matches_and_changes_nothing(dead: DeadLetters) -> None:
    before = snapshot(dead.url)

    result = ok("dlq", "retry", "--dry-run", "--database-url", dead.url)

    assert "dry run: 4 dead letters would be requeued" in result.stdout
    assert {line.strip() for line in result.stdout.splitlines()[1:]} == dead.all
    assert snapshot(dead.url) == before
    assert audit(dead.url) == []


def test_dlq_retry__filters_select_the_matching_dead_letters(dead: DeadLetters) -> None:
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    cases: list[tuple[tuple[str, ...], set[str] | int]] = [
        ((), dead.all),
        (("--channel", "sms"), set(dead.acme_sms)),
        (("--tenant", "globex"), {dead.globex_email}),
        (("--tenant", "acme", "--channel", "email"), {dead.acme_email}),
        (("--error-code", "UNKNOWN_PROVIDER"), dead.all),
        (("--error-code", "TIMEOUT"), set()),
        (("--since", "1h"), dead.all),
        (("--since", future), set()),
        (("--limit", "3"), 3),
    ]
    before = snapshot(dead.url)

    results = cli_many(
        *[("dlq", "retry", "--dry-run", "--json", *f, "--database-url", dead.url) for f, _ in cases]
    )

    for (flags, expected), result in zip(cases, results, strict=True):
        assert result.returncode == 0, f"{flags}: {result.stderr}"
        out = json.loads(result.stdout)
        assert out["action"] == "retry"
        assert out["dry_run"] is True
        assert out["changed"] == 0
        assert out["matched"] == len(out["ids"])
        if isinstance(expected, int):
            assert out["matched"] == expected, flags
            assert set(out["ids"]) <= dead.all, flags
        else:
            assert set(out["ids"]) == expected, flags
    assert snapshot(dead.url) == before


def test_dlq_retry__requeues_with_fresh_attempts_and_writes_an_audit_entry(
    dead: DeadLetters,
) -> None:
    env = {"SLUICE_DATABASE_URL": dead.url}

    out = ok_json(
        "dlq", "retry", "--channel", "sms", "--actor", "alice", "--reason", "provider fixed",
        env=env,
    )  # fmt: skip

    assert set(out) == {"action", "dry_run", "matched", "changed", "ids"}
    assert (out["action"], out["dry_run"], out["matched"], out["changed"]) == ("retry", False, 2, 2)
    assert set(out["ids"]) == set(dead.acme_sms)
    for mid in dead.acme_sms:
        msg = ok_json("messages", "show", mid, env=env)["message"]
        assert (msg["status"], msg["attempts"]) == ("queued", 0)
    assert counts(dead.url) == {"queued": 2, "dead": 2, "sent": 1}
    entries = audit(dead.url)
    assert len(entries) == 1
    entry = entries[0]
    assert (entry.action, entry.actor, entry.reason) == ("dlq.retry", "alice", "provider fixed")
    assert entry.detail["count"] == 2
    assert set(entry.detail["ids"]) == set(dead.acme_sms)
    assert entry.detail["filter"] == {"channel": "sms"}


def test_dlq_cancel__moves_the_matches_to_cancelled_and_audits_who(dead: DeadLetters) -> None:
    result = ok(
        "dlq", "cancel", "--tenant", "globex", "--reason", "customer left",
        "--database-url", dead.url,
    )  # fmt: skip

    assert "1 of 1 dead letters cancelled" in result.stdout
    shown = ok_json("messages", "show", dead.globex_email, "--database-url", dead.url)
    assert shown["message"]["status"] == "cancelled"
    remaining = ok_json("dlq", "list", "--database-url", dead.url)
    assert remaining["total"] == 3
    assert counts(dead.url) == {"dead": 3, "cancelled": 1, "sent": 1}
    [entry] = audit(dead.url)
    assert (entry.action, entry.reason) == ("dlq.cancel", "customer left")
    assert entry.actor.startswith("cli")  # no --actor: the CLI names the user it runs as
    assert entry.detail["count"] == 1
    assert entry.detail["filter"] == {"tenant": "globex"}


# -- worker: graceful shutdown ------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_worker__stops_cleanly_on_signal_and_records_that_it_stopped(
    sqlite_url: str,
    tmp_path: Path,
    popen: Callable[..., subprocess.Popen[str]],
    sig: signal.Signals,
) -> None:
    enqueue(sqlite_url, *[message() for _ in range(5)])
    worker = popen("worker", "--poll-interval", "0.2", env={"SLUICE_DATABASE_URL": sqlite_url})
    wait_for(lambda: counts(sqlite_url).get("sent") == 5, 20, "the worker to send all 5")
    assert worker.poll() is None, "the worker exited without being told to"

    started = time.monotonic()
    worker.send_signal(sig)
    returncode = worker.wait(timeout=10)

    assert returncode == 0, stderr_of(tmp_path)
    assert time.monotonic() - started < 5
    assert "worker done: sent 5" in stderr_of(tmp_path)
    workers = ok_json("status", "--database-url", sqlite_url)["workers"]
    assert [w["pid"] for w in workers] == [worker.pid]
    assert workers[0]["stopped_at"] is not None
    assert workers[0]["sent_total"] == 5


# -- simulator ----------------------------------------------------------------------


def test_simulator__without_a_secret_serves_the_providers_and_names_the_variable_at_webhook(
    tmp_path: Path, popen: Callable[..., subprocess.Popen[str]]
) -> None:
    port = free_port()
    sim = popen("simulator", "--port", str(port), "--no-callbacks")
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert sim.poll() is None, f"the simulator exited: {stderr_of(tmp_path)}"
        try:
            return httpx.get(f"{base}/_sim/health", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(healthy, 15, "the simulator to answer /_sim/health")
    webhook = httpx.post(f"{base}/webhook/orders", content=b"{}", timeout=5)
    assert webhook.status_code == 503
    assert "SLUICE_WEBHOOK_SECRET" in webhook.json()["error"]
    sid = "AC" + "7" * 32
    httpx.post(
        f"{base}/_sim/credentials",
        json={"provider": "twilio", "account_sid": sid, "auth_token": "tok"},
        timeout=5,
    ).raise_for_status()
    account = httpx.get(
        f"{base}/twilio/2010-04-01/Accounts/{sid}.json", auth=(sid, "tok"), timeout=5
    )
    assert account.status_code == 200 and account.json()["sid"] == sid
    assert httpx.get(f"{base}/_sim/callbacks", timeout=5).json() == {"enabled": False}
    assert "webhook receiver off" in stderr_of(tmp_path)


def test_simulator__an_invalid_secret_exits_2_naming_the_variable() -> None:
    result = cli(
        "simulator", "--port", str(free_port()), env={"SLUICE_WEBHOOK_SECRET": "whsec_not base64!"}
    )

    assert result.returncode == 2
    assert "SLUICE_WEBHOOK_SECRET" in result.stderr
    assert "Traceback" not in result.stderr


def test_simulator__serves_health_until_terminated(
    tmp_path: Path, popen: Callable[..., subprocess.Popen[str]]
) -> None:
    secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    port = free_port()
    sim = popen("simulator", "--port", str(port), env={"SLUICE_WEBHOOK_SECRET": secret})

    def healthy() -> bool:
        assert sim.poll() is None, f"the simulator exited: {stderr_of(tmp_path)}"
        try:
            return httpx.get(f"http://127.0.0.1:{port}/_sim/health", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(healthy, 15, "the simulator to answer /_sim/health")
    sim.terminate()
    returncode = sim.wait(timeout=10)

    # uvicorn re-raises the SIGTERM it handled once it has shut down cleanly.
    assert returncode in (0, -signal.SIGTERM), stderr_of(tmp_path)

    assert f"http://127.0.0.1:{port}" in stderr_of(tmp_path)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/_sim/health", timeout=1)


def test_read_commands__refuse_a_missing_sqlite_file_instead_of_creating_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    missing = tmp_path / "typo" / "sluice.db"
    for args in (("status",), ("dlq", "list"), ("worker", "--until-idle")):
        result = cli(*args, "--database-url", f"sqlite:///{missing}")
        assert result.returncode == 1, result.stderr
        assert "no SQLite database" in result.stderr
        assert "sluice migrate" in result.stderr
    assert not missing.parent.exists()


def newest_version(dialect: str) -> int:
    return max(v for v, _, _ in migrations(dialect))
