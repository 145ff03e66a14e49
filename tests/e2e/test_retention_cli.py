"""``sluice purge`` as an operator runs it: a real subprocess on each store."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sluice.model import Attempt, AttemptOutcome, Completion, NewMessage, Status
from sluice.store import MessageFilter, Store, create_store

NOW = datetime.now(UTC)


def cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    return subprocess.run(
        [sys.executable, "-m", "sluice.cli", *args],
        capture_output=True, text=True, timeout=60, check=False,
        env={**env, "COLUMNS": "200", "SLUICE_DATABASE_URL": url},
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


async def _finished(store: Store, status: Status, age: timedelta, n: int) -> list[str]:
    at = NOW - age
    new = [
        NewMessage(tenant="acme", channel="sms", provider="twilio", recipient="+15550001111",
                   payload={"body": "hi"}, run_at=at)
        for _ in range(n)
    ]  # fmt: skip
    ids = await store.enqueue_many(new)
    claimed = await store.message_claim("w1", n, 30, at)
    outcome = AttemptOutcome.SENT if status is Status.SENT else AttemptOutcome.FAILED
    await store.message_complete_many(
        "w1",
        [Completion(m.id, m.claim_seq, "w1", status,
                    Attempt(m.id, 1, "w1", "twilio", at, at, outcome)) for m in claimed],
        at,
    )  # fmt: skip
    return ids


def left(url: str) -> set[str]:
    async def ids(s: Store) -> set[str]:
        return {m.id for m in await s.message_list(MessageFilter(), None, None, 1000)}

    return on_store(url, ids)  # type: ignore[no-any-return]


@pytest.fixture
def loaded(store_url: str) -> str:
    async def load(s: Store) -> None:
        await _finished(s, Status.DEAD, timedelta(days=40), 3)
        await _finished(s, Status.SENT, timedelta(days=10), 2)
        await _finished(s, Status.SENT, timedelta(days=1), 1)

    on_store(store_url, load)
    return store_url


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--older-than", "-1d"], "older_than"),
        (["--older-than=-1d"], "older_than"),
        (["--older-than", "nan"], "older_than"),
        (["--older-than", "0"], "older_than"),
        (["--older-than", "30 parsecs"], "older_than"),
        (["--older-than", "5y"], "older_than"),
        (["--status", "queued"], "status"),
        (["--status", "bogus"], "status"),
        (["--batch", "0"], "batch"),
        (["--tenant", ""], "tenant"),
    ],
)
def test_purge__bad_input_exits_2_naming_the_option_and_changes_nothing(
    loaded: str, args: list[str], named: str
) -> None:
    before = left(loaded)
    r = cli(loaded, "purge", *args)
    assert r.returncode == 2, r.stderr
    assert named in r.stderr
    assert left(loaded) == before


def test_purge__dry_run_counts_per_status_and_removes_nothing(loaded: str) -> None:
    before = left(loaded)
    r = cli(loaded, "purge", "--older-than", "7d", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "dry run: would remove 5 messages" in r.stdout
    assert any(
        line.split()[:1] == ["dead"] and line.split()[-1] == "3" for line in r.stdout.splitlines()
    )
    assert left(loaded) == before
    r = cli(loaded, "purge", "--dry-run", "--json")
    assert json.loads(r.stdout)["counts"] == {"dead": 3, "sent": 2}  # each status's retention


def test_purge__exports_then_removes_and_audits_once(loaded: str, tmp_path: Path) -> None:
    out = tmp_path / "dead.jsonl"
    r = cli(loaded, "purge", "--status", "dead", "--older-than", "30d", "--export", str(out),
            "--batch", "2", "--json", "--actor", "ops:ana")  # fmt: skip
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert (got["counts"], got["batches"], got["export"]) == ({"dead": 3}, 2, str(out))
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["message"]["status"] for x in lines] == ["dead"] * 3
    assert all(len(x["attempts"]) == 1 for x in lines)
    assert not {x["message"]["id"] for x in lines} & left(loaded) and len(left(loaded)) == 3

    async def entries(s: Store) -> list[object]:
        return [e for e in await s.audit_list() if e.action == "message.purge"]

    (entry,) = on_store(loaded, entries)
    assert entry.actor == "ops:ana" and entry.detail["counts"] == {"dead": 3}  # type: ignore[attr-defined]
    # The same file again: refused, nothing removed.
    again = cli(loaded, "purge", "--older-than", "1d", "--export", str(out))
    assert again.returncode == 2 and "export" in again.stderr and len(left(loaded)) == 3


def test_purge__is_in_help() -> None:
    r = subprocess.run([sys.executable, "-m", "sluice.cli", "--help"], capture_output=True,
                       text=True, check=False, env={**os.environ, "COLUMNS": "200"})  # fmt: skip
    assert "purge" in r.stdout.split()
    r = subprocess.run([sys.executable, "-m", "sluice.cli", "purge", "--help"],
                       capture_output=True, text=True, check=False,
                       env={**os.environ, "COLUMNS": "200"})  # fmt: skip
    for var in ("SLUICE_PURGE_OLDER_THAN", "SLUICE_PURGE_STATUS", "SLUICE_TENANT",
                "SLUICE_DRY_RUN", "SLUICE_PURGE_EXPORT", "SLUICE_PURGE_BATCH",
                "SLUICE_DATABASE_URL"):  # fmt: skip
        assert f"env var: {var}" in r.stdout, var
