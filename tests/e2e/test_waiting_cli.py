"""The real ``sluice messages retry-now`` and ``sluice throttles list|clear`` (issue 14)
on both stores: dry runs change nothing, acts are audited, bad input is named."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sluice.model import Attempt, AttemptOutcome, Completion, NewMessage, Status
from sluice.store import Store, create_store

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


async def waiting(store: Store, n: int, tenant: str) -> list[str]:
    """``n`` messages waiting out a retry backoff of an hour."""
    now = datetime.now(UTC)
    ids = await store.enqueue_many(
        [NewMessage(tenant=tenant, channel="webhook", provider="null",
                    recipient="https://example.test/h") for _ in range(n)], now
    )  # fmt: skip
    done = []
    for m in await store.message_claim("w1", 100, 30, now):
        attempt = Attempt(m.id, m.claim_seq, "w1", "null", now, now, AttemptOutcome.FAILED,
                          error_code="TIMEOUT")  # fmt: skip
        later = now + timedelta(hours=1)
        done.append(Completion(m.id, m.claim_seq, "w1", Status.QUEUED, attempt, run_at=later))
    await store.message_complete_many("w1", done, now)
    return ids


def run_at(url: str, ids: list[str]) -> list[datetime]:
    async def read(store: Store) -> list[datetime]:
        return [(await store.message_get(i)).run_at for i in ids]

    return on_store(url, read)


def test_retry_now__dry_run_then_by_ids_from_stdin_audited(store_url: str) -> None:
    acme = on_store(store_url, lambda s: waiting(s, 3, "acme"))
    other = on_store(store_url, lambda s: waiting(s, 2, "other"))
    before = run_at(store_url, acme + other)
    db = ("--database-url", store_url)

    dry = ok("messages", "retry-now", "--tenant", "acme", "--dry-run", *db)
    assert "dry run: 3 waiting messages would be made due now" in dry
    assert {line.strip() for line in dry.splitlines()[1:]} == set(acme)
    assert run_at(store_url, acme + other) == before

    moved = ok(
        "messages", "retry-now", "--ids", "-", "--reason", "provider back", "--actor", "ana",
        "--json", *db, stdin="\n".join([acme[0], other[0]]) + "\n",
    )  # fmt: skip
    assert (moved["matched"], moved["changed"]) == (2, 2)
    after = run_at(store_url, acme + other)
    assert after[0] < before[0] and after[3] < before[3]
    assert after[1:3] == before[1:3] and after[4] == before[4]
    trail = ok("audit", "list", "--json", *db)
    entries = trail["items"] if isinstance(trail, dict) else trail
    [entry] = [e for e in entries if e["action"] == "message.retry_now"]
    assert (entry["actor"], entry["reason"]) == ("ana", "provider back")


def test_retry_now_and_throttles__bad_input_is_named_and_changes_nothing(store_url: str) -> None:
    ids = on_store(store_url, lambda s: waiting(s, 1, "acme"))
    before = run_at(store_url, ids)
    db = ("--database-url", store_url)
    for args, field in [
        (("messages", "retry-now", "--limit", "0"), "limit"),
        (("messages", "retry-now", "--ids", "nope"), "ids[0]"),
        (("throttles", "clear", "--reason", "r"), "provider"),
        (("throttles", "clear", "--provider", "twilio", "--reason", " "), "reason"),
    ]:
        result = cli(*args, *db)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert field in result.stderr, (args, result.stderr)
    assert run_at(store_url, ids) == before


def test_throttles__list_then_clear_with_dry_run(store_url: str) -> None:
    async def mark(store: Store) -> None:
        now = datetime.now(UTC)
        for tenant, target in (("acme", "twilio"), ("acme", "webhook@https://x.example/h")):
            await store.throttle_set(tenant, target, now + timedelta(minutes=30), "HTTP 429", now)

    on_store(store_url, mark)
    db = ("--database-url", store_url)
    listed = ok("throttles", "list", "--json", *db)
    assert listed["count"] == 2 and listed["next_cursor"] is None
    assert {i["target"] for i in listed["items"]} == {"twilio", "webhook@https://x.example/h"}
    assert "webhook@https://x.example/h" in ok("throttles", "list", *db)

    dry = ok("throttles", "clear", "--provider", "webhook", "--reason", "back", "--dry-run", *db)
    assert "dry run: 1 throttles would be cleared" in dry
    assert ok("throttles", "list", "--json", *db)["count"] == 2
    done = ok("throttles", "clear", "--all", "--reason", "back", "--json", *db)
    assert done["count"] == 2 and done["ack"]["complete"]
    assert ok("throttles", "list", "--json", *db)["count"] == 0
    assert "no throttles in force" in ok("throttles", "list", *db)
    help_text = ok("--help")
    assert "throttles" in help_text
    assert "retry-now" in ok("messages", "--help")


def test_send_ttl__stored_as_an_expiry_and_hostile_values_refused(store_url: str) -> None:
    db = ("--database-url", store_url)
    base = ("send", "--tenant", "acme", "--channel", "sms", "--provider", "null",
            "--recipient", "+15550001111")  # fmt: skip
    sent = ok(*base, "--ttl", "15m", "--json", *db)

    async def read(store: Store) -> Any:
        return await store.message_get(sent["id"])

    m = on_store(store_url, read)
    assert m.expires_at is not None and m.created_at is not None
    assert m.expires_at - m.created_at == timedelta(minutes=15)
    for bad in ("0", "-5m", "nan", "inf", "1e999", "367d", "soon", "\uff15m"):
        result = cli(*base, "--ttl", bad, *db)
        assert result.returncode == 2, (bad, result.stdout, result.stderr)
        assert "ttl" in result.stderr, (bad, result.stderr)
    status = ok("status", "--json", *db)
    assert status["counts"].get("queued") == 1  # only the good one was stored
