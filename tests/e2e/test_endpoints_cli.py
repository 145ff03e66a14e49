"""The real ``sluice endpoints`` and ``sluice tenants events-url`` commands (issue 14)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from sluice.secrets import generate_key
from sluice.store import Store, create_store
from sluice.store.endpoints import EndpointReport

T = TypeVar("T")
URL = "https://hooks.acme.example/in"


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    return subprocess.run(
        [sys.executable, "-m", "sluice.cli", *args], capture_output=True, text=True,
        env={**base, "COLUMNS": "200", **env}, timeout=60, check=False,
    )  # fmt: skip


def ok(*args: str, env: dict[str, str]) -> str:
    result = cli(*args, env=env)
    assert result.returncode == 0, f"sluice {' '.join(args)} failed:\n{result.stderr}"
    return result.stdout


def on_store(url: str, fn: Callable[[Store], Awaitable[T]]) -> T:
    async def go() -> T:
        store = create_store(url)
        await store.open()
        try:
            return await fn(store)
        finally:
            await store.close()

    return asyncio.run(go())


def test_endpoints__list_disable_enable(store_url: str) -> None:
    env = {"SLUICE_DATABASE_URL": store_url}
    assert "no endpoints" in ok("endpoints", "list", env=env)
    now = datetime.now(UTC)
    report = EndpointReport("acme", URL, "webhook", ok=1, failed=3, last_ok_at=now,
                            last_failed_at=now, streak_from=now, error="TIMEOUT: x")  # fmt: skip
    on_store(store_url, lambda s: s.endpoint_report([report], now, 3600))
    listing: dict[str, Any] = json.loads(ok("endpoints", "list", "--json", env=env))
    assert (listing["count"], listing["next_cursor"]) == (1, None)
    [item] = listing["items"]
    assert (item["endpoint"], item["state"], item["failure_rate"]) == (URL, "failing", 0.75)
    table = ok("endpoints", "list", "--tenant", "acme", env=env)
    assert table.splitlines()[0].split()[:4] == ["id", "tenant", "endpoint", "state"]
    assert "75%" in table

    refused = cli("endpoints", "disable", item["id"], env=env)
    assert refused.returncode != 0 and "reason" in refused.stderr
    said = ok("endpoints", "disable", item["id"], "--reason", "abuse", "--actor", "ann", env=env)
    assert "disabled" in said and f"sluice endpoints enable {item['id']}" in said
    assert "disabled" in ok("endpoints", "list", "--state", "disabled", env=env)
    enabled = json.loads(ok("endpoints", "enable", item["id"], "--json", env=env))
    assert (enabled["state"], enabled["released"]) == ("healthy", 0)
    bad = cli("endpoints", "list", "--state", "sleepy", env=env)
    assert bad.returncode != 0 and "state" in bad.stderr
    unknown = cli("endpoints", "enable", "no-such-id", env=env)
    assert unknown.returncode != 0 and "no endpoint" in unknown.stderr
    audit = on_store(store_url, lambda s: s.audit_list())
    assert [e.actor for e in audit if e.action == "endpoint.disable"] == ["ann"]


def test_tenants_events_url__set_list_clear(store_url: str) -> None:
    env = {"SLUICE_DATABASE_URL": store_url, "SLUICE_SECRET_KEY": generate_key()}
    said = ok("tenants", "events-url", "set", "acme", "https://events.acme.example/in", env=env)
    assert "signing secret (shown once" in said and "whsec_" in said
    listing = json.loads(ok("tenants", "events-url", "list", "--json", env=env))
    assert listing == {
        "items": [{"tenant": "acme", "events_url": "https://events.acme.example/in"}],
        "count": 1, "next_cursor": None,
    }  # fmt: skip
    bad = cli("tenants", "events-url", "set", "acme", "http://10.0.0.1/in", env=env)
    assert bad.returncode != 0 and "events_url" in bad.stderr
    no_key = cli("tenants", "events-url", "set", "globex", "https://e.example/",
                 env={"SLUICE_DATABASE_URL": store_url})  # fmt: skip
    assert no_key.returncode != 0 and "SLUICE_SECRET_KEY" in no_key.stderr
    assert "no events are sent" in ok("tenants", "events-url", "clear", "acme", env=env)
    again = cli("tenants", "events-url", "clear", "acme", env=env)
    assert again.returncode != 0 and "tenant" in again.stderr
    assert "no tenant has an events URL" in ok("tenants", "events-url", "list", env=env)
