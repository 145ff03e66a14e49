"""The real ``sluice send --verify-within`` and ``sluice messages confirm|fail`` (post-send
verification, issue 15) on both stores: acts are audited, bad input is named and changes
nothing, the commands are in ``--help``."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sluice.model import Attempt, AttemptOutcome, Completion, Status
from sluice.store import AuditFilter, Store, create_store

T = TypeVar("T")


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    return subprocess.run(
        [sys.executable, "-m", "sluice.cli", *args],
        capture_output=True, text=True, env={**env, "COLUMNS": "200"}, timeout=60,
        check=False, input=stdin,
    )  # fmt: skip


def ok(*args: str, stdin: str | None = None) -> Any:
    result = cli(*args, stdin=stdin)
    assert result.returncode == 0, f"sluice {' '.join(args)} failed:\n{result.stderr}"
    return json.loads(result.stdout) if "--json" in args else result.stdout


def on_store(url: str, fn: Callable[[Store], Awaitable[T]]) -> T:
    async def go() -> T:
        store = create_store(url)
        await store.open()  # type: ignore[attr-defined]
        try:
            return await fn(store)
        finally:
            await store.close()

    return asyncio.run(go())


async def send_and_wait_out(store: Store) -> list[str]:
    """Send everything queued, then run the verification sweep a day later."""
    now = datetime.now(UTC)
    done = []
    ids = []
    for m in await store.message_claim("w1", 100, 30, now):
        attempt = Attempt(m.id, m.claim_seq, "w1", "null", now, now, AttemptOutcome.SENT)
        done.append(Completion(m.id, m.claim_seq, "w1", Status.SENT, attempt))
        ids.append(m.id)
    await store.message_complete_many("w1", done, now)
    await store.message_verify_due(now + timedelta(days=1))
    return ids


BASE = ("send", "--tenant", "acme", "--channel", "sms", "--provider", "null",
        "--recipient", "+15550001111")  # fmt: skip


def test_send_verify_within__stored_and_hostile_values_refused(store_url: str) -> None:
    db = ("--database-url", store_url)
    sent = ok(*BASE, "--verify-within", "10m", "--json", *db)

    async def read(store: Store) -> Any:
        return await store.message_get(sent["id"])

    assert on_store(store_url, read).verify_within == 600.0
    for bad in ("0", "-5m", "nan", "inf", "1e999", "367d", "soon", "\uff15m"):
        result = cli(*BASE, "--verify-within", bad, *db)
        assert result.returncode == 2, (bad, result.stdout, result.stderr)
        assert "verify_within" in result.stderr, (bad, result.stderr)
    assert ok("status", "--json", *db)["counts"].get("queued") == 1  # only the good one


def test_confirm_and_fail__act_audited_listed_and_counted(store_url: str) -> None:
    db = ("--database-url", store_url)
    for _ in range(3):
        ok(*BASE, "--verify-within", "60", *db)
    a, b, c = sorted(on_store(store_url, send_and_wait_out))
    status = ok("status", "--json", *db)
    assert status["counts"].get("needs_confirm") == 3
    listed = ok("messages", "list", "--status", "needs_confirm", "--json", *db)
    assert listed["count"] == 3 and sorted(m["id"] for m in listed["items"]) == [a, b, c]
    out = ok("messages", "confirm", a, "--reason", "customer confirmed", "--actor", "ana", *db)
    assert "1 message(s) now delivered" in out
    done = ok("messages", "fail", "-", "--reason", "never arrived", "--json", *db,
              stdin=f"{b}\n{c}\n")  # fmt: skip
    assert sorted(done["ids"]) == [b, c] and done["status"] == "dead"
    counts = ok("status", "--json", *db)["counts"]
    assert (counts.get("delivered"), counts.get("dead"), counts.get("needs_confirm")) == (
        1, 2, None,
    )  # fmt: skip

    async def audit(store: Store) -> Any:
        return (
            await store.audit_list(10, AuditFilter(action="message.confirm")),
            await store.audit_list(10, AuditFilter(action="message.fail")),
        )

    [confirmed], [failed] = on_store(store_url, audit)
    assert (confirmed.actor, confirmed.reason, confirmed.detail["ids"]) == (
        "ana", "customer confirmed", [a],
    )  # fmt: skip
    assert sorted(failed.detail["ids"]) == [b, c]
    retried = ok("dlq", "retry", "--error-code", "NOT_CONFIRMED", "--reason", "resend",
                 "--json", *db)  # fmt: skip
    assert retried["changed"] == 2


def test_confirm__bad_input_named_and_nothing_moves(store_url: str) -> None:
    db = ("--database-url", store_url)
    ok(*BASE, "--verify-within", "60", *db)
    (mid,) = on_store(store_url, send_and_wait_out)
    missing = "01900000-0000-7000-8000-000000000000"
    cases = [
        (("messages", "confirm", mid), "reason"),  # no --reason
        (("messages", "confirm", mid, "--reason", ""), "reason"),
        (("messages", "confirm", "nope", "--reason", "r"), "ids[0]"),
        (("messages", "fail", mid, missing, "--reason", "r"), "no message"),
    ]
    for args, named in cases:
        result = cli(*args, *db)
        assert result.returncode != 0, (args, result.stdout)
        assert named in result.stderr, (args, result.stderr)
    assert ok("status", "--json", *db)["counts"].get("needs_confirm") == 1
    assert "confirm" in ok("messages", "--help") and "fail" in ok("messages", "--help")
