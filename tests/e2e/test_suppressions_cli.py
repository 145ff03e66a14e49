"""Acceptance test of ``sluice suppressions``: the real CLI, then a real worker.

An operator suppresses a number for one tenant, lists it (table and JSON), a worker
drains a mix of messages (the ``null`` provider: nothing leaves the machine), and every
message to that number of that tenant ends ``suppressed`` while the rest are sent; the
operator lifts it, and bad input exits 2 naming the field, changing nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from sluice.model import NewMessage, Status
from sluice.store import Store, create_store

TIMEOUT = 60.0


def run(url: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    env.update(SLUICE_DATABASE_URL=url, COLUMNS="200", SLUICE_ACTOR="cli:ann")
    return subprocess.run(
        [sys.executable, "-m", "sluice.cli", *args], capture_output=True, text=True, env=env,
        cwd=cwd, timeout=TIMEOUT, check=False,
    )  # fmt: skip


def on_store(url: str, fn: Any) -> Any:
    async def go() -> Any:
        store: Store = create_store(url)
        await store.open()  # type: ignore[attr-defined]
        try:
            return await fn(store)
        finally:
            await store.close()

    return asyncio.run(go())


def test_suppressions_cli__add_list_drain_remove(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sluice.db'}"
    assert run(url, tmp_path, "migrate").returncode == 0

    added = run(url, tmp_path, "suppressions", "add", "+14155550100", "--tenant", "acme",
                "--channel", "sms", "--reason", "asked on the phone")  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert "+14155550100 suppressed for acme on sms" in added.stdout
    table = run(url, tmp_path, "suppressions", "list", "--tenant", "acme")
    assert "asked on the phone" in table.stdout and "cli:ann" in table.stdout
    page = json.loads(run(url, tmp_path, "suppressions", "list", "--json").stdout)
    assert (page["count"], page["next_cursor"]) == (1, None)
    assert page["items"][0]["recipient"] == "+14155550100"

    def message(tenant: str, to: str) -> NewMessage:
        return NewMessage(tenant=tenant, channel="sms", provider="null", recipient=to)

    mix = [message("acme", "+14155550100"), message("acme", "+14155550101"),
           message("globex", "+14155550100"), message("acme", "+14155550100")]  # fmt: skip
    ids = on_store(url, lambda s: s.enqueue_many(mix))
    worker = run(url, tmp_path, "worker", "--until-idle")
    assert worker.returncode == 0, worker.stderr
    got = on_store(url, lambda s: asyncio.gather(*(s.message_get(i) for i in ids)))
    assert [m.status for m in got] == [
        Status.SUPPRESSED, Status.SENT, Status.SENT, Status.SUPPRESSED,
    ]  # fmt: skip
    assert {m.last_error_code for m in got if m.status is Status.SUPPRESSED} == {
        "RECIPIENT_SUPPRESSED"
    }

    removed = run(url, tmp_path, "suppressions", "remove", "+14155550100", "--tenant", "acme",
                  "--channel", "sms", "--reason", "opted back in")  # fmt: skip
    assert removed.returncode == 0, removed.stderr
    again = run(url, tmp_path, "suppressions", "remove", "+14155550100", "--tenant", "acme",
                "--channel", "sms")  # fmt: skip
    assert again.returncode != 0 and "not suppressed" in again.stderr
    audit = on_store(url, lambda s: s.audit_list(100))
    assert [(a.action, a.actor) for a in audit if a.action.startswith("suppression")] == [
        ("suppression.remove", "cli:ann"), ("suppression.add", "cli:ann"),
    ]  # fmt: skip


def test_suppressions_cli__bad_input_names_the_field_and_changes_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sluice.db'}"
    assert run(url, tmp_path, "migrate").returncode == 0
    for args, field in (
        (("+1", "--tenant", "acme", "--channel", "sms"), "recipient"),
        (("+14155550100", "--tenant", "acme", "--channel", "fax"), "channel"),
        (("+14155550100", "--tenant", " acme", "--channel", "sms"), "tenant"),
        (("x" * 5000, "--tenant", "acme", "--channel", "email"), "recipient"),
    ):
        result = run(url, tmp_path, "suppressions", "add", *args)
        assert result.returncode == 2, result.stderr
        assert f"{field}:" in result.stderr
    listed = json.loads(run(url, tmp_path, "suppressions", "list", "--json").stdout)
    assert listed == {"items": [], "count": 0, "next_cursor": None}
