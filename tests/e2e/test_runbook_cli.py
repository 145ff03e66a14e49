"""``sluice runbook list|show|diagnose`` and ``sluice incidents show`` from the shell, on
a real database with a provider outage in it: the findings name the provider, its codes,
its breaker, the failover route and the tenants, and the commands come filled in."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sluice.model import Attempt, AttemptOutcome, AuditEntry, Completion, NewMessage, Status
from sluice.store import Store, create_store
from sluice.store.base import Firing


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    return subprocess.run(
        [sys.executable, "-m", "sluice.cli", *args], capture_output=True, text=True,
        env={**base, "COLUMNS": "200", **(env or {})}, timeout=60, check=False,
    )  # fmt: skip


def on_store(url: str, fn: Callable[[Store], Awaitable[Any]]) -> Any:
    async def go() -> Any:
        store: Store = create_store(url)
        await store.open()  # type: ignore[attr-defined]
        try:
            return await fn(store)
        finally:
            await store.close()

    return asyncio.run(go())


async def outage(store: Store) -> str:
    """twilio fails for acme and globex; null carries the sms route; p:twilio is open;
    an incident of SluiceBreakerOpen is open for it. Returns the incident's id."""
    now = datetime.now(UTC)
    at = now - timedelta(minutes=3)

    async def batch(n: int, tenant: str, provider: str, code: str | None) -> None:
        msgs = [NewMessage(tenant=tenant, channel="sms", provider=provider,
                           recipient="+15550001111", payload={}) for _ in range(n)]  # fmt: skip
        await store.enqueue_many(msgs, now - timedelta(minutes=10))
        done = []
        for m in await store.message_claim("w1", n, 30, at):
            outcome = AttemptOutcome.FAILED if code else AttemptOutcome.SENT
            a = Attempt(m.id, m.claim_seq, "w1", m.provider, at, at, outcome, error_code=code)
            status = Status.QUEUED if code else Status.SENT
            run_at = now + timedelta(hours=1) if code else None
            done.append(Completion(m.id, m.claim_seq, "w1", status, a, run_at=run_at))
        await store.message_complete_many("w1", done, at)

    await batch(8, "acme", "twilio", "PROVIDER_UNAVAILABLE")
    await batch(3, "globex", "twilio", "PROVIDER_UNAVAILABLE")
    await batch(5, "acme", "null", None)
    await store.breaker_transition(
        "p:twilio", "twilio", "", None, "open", retry_at=None, reason="failure rate 100%",
        forced=False, now=at,
        audit=AuditEntry(at=at, actor="worker:w1", action="breaker.open", target="p:twilio"),
    )  # fmt: skip
    firing = Firing("SluiceBreakerOpen", {"key": "p:twilio"}, "P2", ("PROVIDER",),
                    "001#provider-outage", "Breaker p:twilio is open", 1.0)  # fmt: skip
    incident, _ = await store.incident_fire(firing, now - timedelta(minutes=1))
    return incident.id


@pytest.fixture
def world(sqlite_url: str, tmp_path: Path) -> tuple[str, dict[str, str], str]:
    toml = tmp_path / "sluice.toml"
    toml.write_text('[routes]\nsms = ["twilio", "null"]\n')
    incident = on_store(sqlite_url, outage)
    return sqlite_url, {"SLUICE_CONFIG": str(toml)}, incident


def test_runbook_list_and_show() -> None:
    done = cli("runbook", "list", "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["count"] == len(out["items"]) and out["next_cursor"] is None
    ids = {i["id"]: i for i in out["items"]}
    assert "SluiceBreakerOpen" in ids["provider-outage"]["rules"]
    text = cli("runbook", "list").stdout
    assert "scope-revoked" in text and "000#remediation" in text
    shown = cli("runbook", "show", "RB-09")
    assert shown.returncode == 0, shown.stderr
    assert "provider-outage: Provider outage" in shown.stdout
    assert "sluice breakers open p:{provider}" in shown.stdout
    assert "sluice --help" not in shown.stdout
    assert "runbook" in cli("--help").stdout


def test_diagnose_provider_outage(world: tuple[str, dict[str, str], str]) -> None:
    url, env, _ = world
    done = cli("runbook", "diagnose", "provider-outage", "--since", "1h",
               "--database-url", url, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert (
        "!! [failures] provider twilio is failing: 100% of its attempts, mostly "
        "PROVIDER_UNAVAILABLE" in out
    )
    assert "!! [breakers] breaker p:twilio is open" in out
    assert "route twilio → null; null sent 5 in the window" in out
    assert "2 tenant(s) affected, most of all acme (8 failures)" in out
    assert 'sluice breakers open p:twilio --reason "provider outage"' in out
    assert "sluice pause --provider twilio" in out

    as_json = cli("runbook", "diagnose", "provider-outage", "--tenant", "globex", "--json",
                  "--database-url", url, env=env)  # fmt: skip
    d = json.loads(as_json.stdout)
    assert d["scope"] == {"tenant": "globex"}
    tenants = next(f for f in d["findings"] if f["probe"] == "tenants")
    assert tenants["data"]["tenants"] == {"globex": 3}
    assert d["filled"]["provider"] == "twilio"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["no-such-runbook"], "no runbook 'no-such-runbook'"),
        (["provider-outage", "--since", "yesterday"], "since: 'yesterday' is neither"),
        (["provider-outage", "--since", "90d"], "since: '90d' reaches back more than 7 days"),
    ],
)
def test_diagnose_bad_input_exits_2_naming_it(
    world: tuple[str, dict[str, str], str], args: list[str], says: str
) -> None:
    url, env, _ = world
    done = cli("runbook", "diagnose", *args, "--database-url", url, env=env)
    assert done.returncode == 2
    assert says in done.stderr
    assert cli("runbook", "show", "nope").returncode == 2


def test_incidents_show_prints_its_runbooks_diagnosis(
    world: tuple[str, dict[str, str], str],
) -> None:
    url, env, incident = world
    done = cli("incidents", "show", incident, "--database-url", url, env=env)
    assert done.returncode == 0, done.stderr
    assert "runbook provider-outage: Provider outage" in done.stdout
    assert "scope: provider=twilio" in done.stdout
    assert "provider twilio is failing" in done.stdout
    assert "sluice breakers open p:twilio" in done.stdout
    d = json.loads(cli("incidents", "show", incident, "--json", "--database-url", url,
                       env=env).stdout)  # fmt: skip
    assert d["id"] == incident and d["diagnosis"]["runbook"] == "provider-outage"


def test_the_filled_commands_run_and_contain(world: tuple[str, dict[str, str], str]) -> None:
    """The diagnosis's containment commands, as printed, are run as they are: the
    breaker is forced open and the provider paused; the recovery's dry run counts."""
    import shlex

    url, env, _ = world
    d = json.loads(cli("runbook", "diagnose", "provider-outage", "--json", "--database-url", url,
                       env=env).stdout)  # fmt: skip
    for step in d["containment"]:
        words = shlex.split(step["command"])
        assert words[0] == "sluice"
        done = cli(*words[1:], "--database-url", url, env=env)
        assert done.returncode == 0, (step["command"], done.stderr)
    dry = next(s for s in d["recovery"] if s["dry_run"])
    done = cli(*shlex.split(dry["command"])[1:], "--database-url", url, env=env)
    assert done.returncode == 0, (dry["command"], done.stderr)

    async def state(store: Store) -> tuple[Any, Any]:
        breakers = {b.key: b for b in await store.breaker_list()}
        controls = [(c.scope.provider, str(c.mode)) for c in await store.control_list()]
        return breakers["p:twilio"], controls

    breaker, controls = on_store(url, state)
    assert (breaker.state, breaker.forced) == ("open", True)
    assert ("twilio", "paused") in controls
    after = json.loads(cli("runbook", "diagnose", "provider-outage", "--json", "--database-url",
                           url, env=env).stdout)  # fmt: skip
    assert "(forced)" in " ".join(f["lines"][0] for f in after["findings"]
                                  if f["probe"] == "breakers")  # fmt: skip


def test_incidents_show_survives_a_broken_config(
    world: tuple[str, dict[str, str], str], tmp_path: Path
) -> None:
    url, _, incident = world
    bad = tmp_path / "bad.toml"
    bad.write_text("[routes]\nsms = []\n")
    done = cli("incidents", "show", incident, "--database-url", url,
               env={"SLUICE_CONFIG": str(bad)})  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert incident in done.stdout and "(no diagnosis: " in done.stdout
    assert "routes.sms must be a non-empty list" in done.stdout
