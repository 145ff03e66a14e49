"""Acceptance tests of the two-person rule in the CLI: ``sluice dlq retry`` and friends
file a request (exit 3) when a rule in ``SLUICE_TWO_PERSON`` names them, and ``sluice
requests`` lists, shows, approves and denies it. Real subprocesses, both stores; the dead
letters are seeded through the store (their making is not under test)."""

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

from sluice.model import Attempt, AttemptOutcome, Completion, NewMessage, Status
from sluice.store import AuditEntry, Store, create_store

T = TypeVar("T")


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    return subprocess.run(
        [sys.executable, "-m", "sluice.cli", *args],
        capture_output=True, text=True, env={**base, "COLUMNS": "200", **(env or {})},
        timeout=60, check=False,
    )  # fmt: skip


def with_store(url: str, fn: Callable[[Store], Awaitable[T]]) -> T:
    async def go() -> T:
        store = create_store(url)
        await store.open()  # type: ignore[attr-defined]
        try:
            return await fn(store)
        finally:
            await store.close()

    return asyncio.run(go())


def seed_dead(url: str, n: int) -> list[str]:
    async def go(store: Store) -> list[str]:
        now = datetime.now(UTC)
        ids = await store.enqueue_many(
            [NewMessage(tenant="acme", channel="sms", provider="null", recipient="+15550001111",
                        payload={"i": i}) for i in range(n)],
            now,
        )  # fmt: skip
        claimed = await store.message_claim("w1", n, 30, now)
        await store.message_complete_many(
            "w1",
            [Completion(m.id, m.claim_seq, "w1", Status.DEAD,
                        Attempt(m.id, 1, "w1", "null", now, now, AttemptOutcome.FAILED,
                                error_code="INVALID_RECIPIENT"))
             for m in claimed],
            now,
        )  # fmt: skip
        return ids

    return with_store(url, go)


def statuses(url: str, ids: list[str]) -> list[str]:
    async def go(store: Store) -> list[str]:
        return sorted([(await store.message_get(i)).status.value for i in ids])

    return with_store(url, go)


def audit(url: str) -> list[AuditEntry]:
    return with_store(url, lambda s: s.audit_list(50))


def test_a_rule_files_the_act_and_another_operator_approves_it(store_url: str) -> None:
    ids = seed_dead(store_url, 3)
    env = {"SLUICE_DATABASE_URL": store_url, "SLUICE_TWO_PERSON": "dlq.retry>2"}

    filed = cli("dlq", "retry", "--actor", "cli:alice", "--reason", "provider back", env=env)
    assert filed.returncode == 3, filed.stderr
    assert "filed: dlq.retry waits for another operator (rule dlq.retry>2)" in filed.stdout
    listed = json.loads(cli("requests", "list", "--json", env=env).stdout)
    assert (listed["count"], listed["next_cursor"]) == (1, None)
    [req] = listed["items"]
    assert f"sluice requests approve {req['id']}" in filed.stdout
    assert (req["act"], req["affected"], req["requester"]) == ("dlq.retry", 3, "cli:alice")
    assert statuses(store_url, ids) == ["dead"] * 3

    mine = cli("requests", "approve", req["id"], "--actor", "cli:alice", env=env)
    assert mine.returncode == 2
    assert "cli:alice filed request" in mine.stderr and "another operator" in mine.stderr
    assert statuses(store_url, ids) == ["dead"] * 3

    approved = cli("requests", "approve", req["id"], "--actor", "cli:bob", env=env)
    assert approved.returncode == 0, approved.stderr
    assert f"request {req['id']} approved (dlq.retry, filed by cli:alice)" in approved.stdout
    assert statuses(store_url, ids) == ["queued"] * 3
    shown = json.loads(cli("requests", "show", req["id"], "--json", env=env).stdout)
    assert (shown["state"], shown["decided_by"], shown["result"]["changed"]) == (
        "approved", "cli:bob", 3,
    )  # fmt: skip
    actions = [(e.action, e.actor) for e in audit(store_url)]
    assert actions == [
        ("dlq.retry", "cli:bob"), ("request.approved", "cli:bob"),
        ("request.filed", "cli:alice"),
    ]  # fmt: skip
    again = cli("requests", "approve", req["id"], "--actor", "cli:carol", env=env)
    assert again.returncode == 2 and "is approved" in again.stderr
    assert cli("requests", "list", env=env).stdout.strip() == "no pending requests"


def test_deny__the_act_is_never_done_and_json_says_filed(store_url: str) -> None:
    ids = seed_dead(store_url, 2)
    env = {"SLUICE_DATABASE_URL": store_url, "SLUICE_TWO_PERSON": "dlq.*"}
    filed = cli("dlq", "cancel", "--json", "--actor", "cli:alice", env=env)
    assert filed.returncode == 3, filed.stderr
    out = json.loads(filed.stdout)
    assert out["filed"] is True and out["request"]["state"] == "pending"
    rid = out["request"]["id"]
    denied = cli("requests", "deny", rid, "--actor", "cli:bob", "--reason", "not now", env=env)
    assert denied.returncode == 0, denied.stderr
    assert statuses(store_url, ids) == ["dead", "dead"]
    listed = json.loads(cli("requests", "list", "--state", "all", "--json", env=env).stdout)
    assert [(r["id"], r["state"], r["decision"]) for r in listed["items"]] == [
        (rid, "denied", "not now")
    ]
    # A dry run is never held back.
    dry = cli("dlq", "cancel", "--dry-run", env=env)
    assert dry.returncode == 0 and "dry run: 2 dead letters" in dry.stdout


def test_a_kill_acts_at_once_lifting_it_may_wait(sqlite_url: str) -> None:
    env = {"SLUICE_DATABASE_URL": sqlite_url, "SLUICE_TWO_PERSON": "resume:global,control.set"}
    killed = cli("kill", "--reason", "incident", "--no-wait", env=env)
    assert killed.returncode == 0, killed.stderr
    resumed = cli("resume", "--reason", "fixed", "--no-wait", env=env)
    assert resumed.returncode == 3 and "filed: resume" in resumed.stdout
    controls = json.loads(cli("controls", "list", "--json", env=env).stdout)["items"]
    assert [c["mode"] for c in controls] == ["killed"]
    # A tenant's resume is not global: done at once.
    assert cli("kill", "--tenant", "acme", "--reason", "r", "--no-wait", env=env).returncode == 0
    tenant = cli("resume", "--tenant", "acme", "--reason", "r", "--no-wait", env=env)
    assert tenant.returncode == 0, tenant.stderr


def test_bad_rules_stop_every_command_at_start_naming_the_entry(
    sqlite_url: str, tmp_path: Path
) -> None:
    env = {"SLUICE_DATABASE_URL": sqlite_url, "SLUICE_TWO_PERSON": "dlq.retry>10,kill"}
    result = cli("status", env=env)
    assert result.returncode == 2
    assert "two_person[1] 'kill': kill is containment" in result.stderr
    toml = tmp_path / "sluice.toml"
    toml.write_text('[ops]\ntwo_person = ["dlq.retyr>5"]\n')
    result = cli("requests", "list", env={"SLUICE_DATABASE_URL": sqlite_url,
                                          "SLUICE_CONFIG": str(toml)})  # fmt: skip
    assert result.returncode == 2
    assert "two_person[0] 'dlq.retyr>5': no act 'dlq.retyr'" in result.stderr
    assert "Traceback" not in result.stderr


def test_requests_in_help_and_bad_input_named(sqlite_url: str) -> None:
    top = cli("--help")
    assert "requests" in top.stdout.split()
    env: dict[str, Any] = {"SLUICE_DATABASE_URL": sqlite_url}
    missing = cli("requests", "approve", "nope", "--actor", "b", env=env)
    assert missing.returncode == 2 and "no request with id 'nope'" in missing.stderr
    bad = cli("requests", "list", "--state", "maybe", env=env)
    assert bad.returncode == 2 and "state" in bad.stderr
    assert cli("requests", "list", "--limit", "0", env=env).returncode == 2


def test_held_release__a_tenant_threshold_holds_only_what_exceeds_it(sqlite_url: str) -> None:
    from sluice.flow.controls import Mode, Scope

    async def seed(store: Store) -> list[str]:
        now = datetime.now(UTC)
        ids = await store.enqueue_many(
            [NewMessage(tenant=t, channel="sms", provider="null", recipient="+15550001111",
                        payload={"i": i}) for i, t in enumerate(["acme"] * 3 + ["globex"])],
            now,
        )  # fmt: skip
        for tenant in ("acme", "globex"):
            await store.control_set(
                Scope.of(tenant), Mode.KILLED, actor="t", reason="r", expires_at=None, now=now
            )
        await store.control_hold_queued(now)
        return ids

    ids = with_store(sqlite_url, seed)
    assert statuses(sqlite_url, ids) == ["held"] * 4
    env = {"SLUICE_DATABASE_URL": sqlite_url, "SLUICE_TWO_PERSON": "held.release:tenant>2"}
    small = cli("release", "--tenant", "globex", "--actor", "cli:alice", env=env)
    assert small.returncode == 0 and "1 of 1 held messages released" in small.stdout
    big = cli("release", "--tenant", "acme", "--actor", "cli:alice", env=env)
    assert big.returncode == 3 and "rule held.release:tenant>2" in big.stdout
    assert statuses(sqlite_url, ids[:3]) == ["held"] * 3
    [req] = json.loads(cli("requests", "list", "--json", env=env).stdout)["items"]
    assert (req["tenant"], req["scope"], req["affected"]) == ("acme", "tenant", 3)
    done = cli("requests", "approve", req["id"], "--actor", "cli:bob", env=env)
    assert done.returncode == 0, done.stderr
    # Released; the kill on acme still applies, so a worker would hold them again.
    assert statuses(sqlite_url, ids[:3]) == ["queued"] * 3


def test_issue_14_acts__filed_exit_3__containment_and_protection_at_once(sqlite_url: str) -> None:
    from datetime import timedelta

    from sluice.store.endpoints import EndpointReport

    url = "https://hooks.example.com/in"

    async def seed(store: Store) -> tuple[list[str], str]:
        now = datetime.now(UTC)
        ids = await store.enqueue_many(
            [NewMessage(tenant="acme", channel="sms", provider="null", recipient="+15550001111",
                        payload={"i": i}) for i in range(3)],
            now,
        )  # fmt: skip
        claimed = await store.message_claim("w1", 3, 30, now)
        await store.message_complete_many(
            "w1",
            [Completion(m.id, m.claim_seq, "w1", Status.QUEUED,
                        Attempt(m.id, 1, "w1", "null", now, now, AttemptOutcome.FAILED,
                                error_code="TIMEOUT"), run_at=now + timedelta(hours=1))
             for m in claimed],
            now,
        )  # fmt: skip
        fail = EndpointReport("acme", url, "webhook", failed=2, last_failed_at=now,
                              streak_from=now, error="TIMEOUT")  # fmt: skip
        await store.endpoint_report([fail], now, 3600)
        [row] = await store.endpoint_list()
        return ids, row.id

    ids, endpoint_id = with_store(sqlite_url, seed)
    rules = "messages.retry_now>2,suppression.remove,endpoint.enable"
    env = {"SLUICE_DATABASE_URL": sqlite_url, "SLUICE_TWO_PERSON": rules}

    def approve(rid: str) -> subprocess.CompletedProcess[str]:
        mine = cli("requests", "approve", rid, "--actor", "cli:alice", env=env)
        assert mine.returncode == 2 and "another operator" in mine.stderr
        done = cli("requests", "approve", rid, "--actor", "cli:bob", env=env)
        assert done.returncode == 0, done.stderr
        return done

    def due() -> int:
        async def go(store: Store) -> int:
            now = datetime.now(UTC)
            return sum([(await store.message_get(i)).run_at <= now for i in ids])

        return with_store(sqlite_url, go)

    # messages retry-now counts: over 2 it is filed; a dry run never waits.
    dry = cli("messages", "retry-now", "--tenant", "acme", "--dry-run", "--json", env=env)
    assert dry.returncode == 0 and json.loads(dry.stdout)["matched"] == 3
    filed = cli("messages", "retry-now", "--tenant", "acme", "--actor", "cli:alice", env=env)
    assert filed.returncode == 3, filed.stderr
    assert "filed: messages.retry_now waits for another operator" in filed.stdout
    [req] = json.loads(cli("requests", "list", "--json", env=env).stdout)["items"]
    assert (req["act"], req["affected"], due()) == ("messages.retry_now", 3, 0)
    approve(req["id"])
    assert due() == 3

    # Adding a suppression is protection: at once. Lifting it waits.
    sup = ("+14155550100", "--tenant", "acme", "--channel", "sms", "--actor", "cli:alice")
    assert cli("suppressions", "add", *sup, env=env).returncode == 0
    lift = cli("suppressions", "remove", *sup, "--json", env=env)
    assert lift.returncode == 3, lift.stderr
    out = json.loads(lift.stdout)
    assert out["filed"] is True and out["request"]["act"] == "suppression.remove"
    listed = json.loads(cli("suppressions", "list", "--json", env=env).stdout)
    assert listed["count"] == 1
    approve(out["request"]["id"])
    assert json.loads(cli("suppressions", "list", "--json", env=env).stdout)["count"] == 0

    # Disabling an endpoint is containment: at once. Enabling it waits.
    off = cli("endpoints", "disable", endpoint_id, "--reason", "500s", "--actor", "cli:alice",
              env=env)  # fmt: skip
    assert off.returncode == 0, off.stderr
    on = cli("endpoints", "enable", endpoint_id, "--actor", "cli:alice", env=env)
    assert on.returncode == 3 and "filed: endpoint.enable" in on.stdout
    [req] = json.loads(cli("requests", "list", "--json", env=env).stdout)["items"]
    assert (req["tenant"], req["args"]["endpoint"]) == ("acme", url)
    states = json.loads(cli("endpoints", "list", "--json", env=env).stdout)["items"]
    assert [e["state"] for e in states] == ["disabled"]
    approve(req["id"])
    states = json.loads(cli("endpoints", "list", "--json", env=env).stdout)["items"]
    assert [e["state"] for e in states] == ["healthy"]

    refused = cli("status", env={**env, "SLUICE_TWO_PERSON": "endpoint.disable"})
    assert refused.returncode == 2
    assert "endpoint.disable is containment" in refused.stderr
