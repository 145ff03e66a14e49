"""Each runbook's diagnosis, run on a real store (PostgreSQL and SQLite) prepared with
the failure it is for, names the cause — and fills its commands with what it found."""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from sluice.config import Settings, load_settings
from sluice.connections import Connection, ConnectionState
from sluice.errors import NotFound, ValidationError
from sluice.flow.controls import Mode, Scope
from sluice.model import (
    Attempt,
    AttemptOutcome,
    AuditEntry,
    Completion,
    NewMessage,
    Status,
    new_message_id,
)
from sluice.ops.runbooks import Diagnosis, diagnose, make_scope
from sluice.runbooks import RUNBOOKS
from sluice.secrets import SecretBox, generate_key
from sluice.store import Store
from sluice.store.base import InboxItem
from sluice.store.endpoints import EndpointReport
from sluice.store.sqlite import sqlite_path

NOW = datetime.now(UTC).replace(microsecond=0)
MIN = timedelta(minutes=1)
ROUTES = {"sms": ["twilio", "null"]}


def msg(tenant: str = "acme", provider: str = "twilio", **kw: object) -> NewMessage:
    fields: dict[str, object] = {
        "tenant": tenant,
        "channel": "sms",
        "provider": provider,
        "recipient": "+15550001111",
        "payload": {"body": "hi"},
        "run_at": NOW - 40 * MIN,
    }
    fields.update(kw)
    return NewMessage(**fields)  # type: ignore[arg-type]


async def send(
    store: Store,
    n: int,
    *,
    outcome: AttemptOutcome = AttemptOutcome.SENT,
    code: str | None = None,
    status: Status | None = None,
    at: datetime = NOW - 5 * MIN,
    created: datetime = NOW - 30 * MIN,
    **kw: object,
) -> list[str]:
    """Enqueue ``n`` messages, claim them and write one attempt each, ending ``status``."""
    ids = await store.enqueue_many([msg(**kw) for _ in range(n)], created)
    claimed = await store.message_claim("w1", n, 30, at)
    assert {m.id for m in claimed} == set(ids)
    final = status or (Status.SENT if outcome is AttemptOutcome.SENT else Status.QUEUED)
    done = []
    for m in claimed:
        a = Attempt(m.id, m.claim_seq, "w1", m.provider, at, at, outcome, error_code=code)
        run_at = NOW + timedelta(days=1) if final is Status.QUEUED else None
        done.append(Completion(m.id, m.claim_seq, "w1", final, a, run_at=run_at))
    await store.message_complete_many("w1", done, at)
    return ids


async def audit(store: Store, what: str, reason: str, **detail: object) -> None:
    await store.audit_append(
        AuditEntry(at=NOW - 5 * MIN, actor="worker:w1", action=what, target="t",
                   reason=reason, detail=dict(detail))
    )  # fmt: skip


async def connection(store: Store, state: ConnectionState, missing: list[str]) -> None:
    box = SecretBox(generate_key())
    cid = new_message_id()
    ciphertext, kid = box.encrypt({"token": "t0k3n"}, cid, "acme", "twilio")
    conn = Connection(
        id=cid, tenant="acme", provider="twilio", state=ConnectionState.ACTIVE,
        state_reason=None, state_changed_at=NOW - 10 * MIN, scopes=["messages.write"],
        missing_scopes=[], ciphertext=ciphertext, key_id=kid, credential_version=1,
        expires_at=None, last_check_at=None, last_check_ok_at=None, last_check_error=None,
        created_at=NOW - 10 * MIN, updated_at=NOW - 10 * MIN,
    )  # fmt: skip
    add = AuditEntry(at=NOW - 10 * MIN, actor="test", action="connection.add", target="acme")
    await store.connection_insert(conn, add)
    await store.connection_set_state(
        "acme", "twilio", state, "invalid_grant", missing, NOW - 8 * MIN, "worker:w1"
    )


# -- the failures ------------------------------------------------------------------------


async def provider_down(store: Store) -> None:
    await send(store, 12, outcome=AttemptOutcome.FAILED, code="PROVIDER_UNAVAILABLE")
    await send(store, 4, tenant="globex", outcome=AttemptOutcome.FAILED, code="TIMEOUT")
    await send(store, 6, provider="null")  # the failover route carries
    await store.breaker_transition(
        "p:twilio", "twilio", "", None, "open", retry_at=NOW + MIN, reason="failure rate 100%",
        forced=False, now=NOW - 4 * MIN,
        audit=AuditEntry(at=NOW - 4 * MIN, actor="worker:w1", action="breaker.open",
                         target="p:twilio"),
    )  # fmt: skip


async def dead_letters(store: Store) -> None:
    await send(store, 3, action="reply")
    await send(store, 7, outcome=AttemptOutcome.FAILED, code="INVALID_RECIPIENT",
               status=Status.DEAD, action="reply")  # fmt: skip


async def scope_removed(store: Store) -> None:
    await send(store, 5, outcome=AttemptOutcome.FAILED, code="SCOPE_MISSING", status=Status.DEAD)
    await connection(store, ConnectionState.ACTIVE, [])
    await store.connection_set_state(
        "acme", "twilio", ConnectionState.ACTIVE, "scope check", ["messages.write"],
        NOW - 6 * MIN, "worker:w1",
    )  # fmt: skip


async def grant_revoked(store: Store) -> None:
    await send(store, 4, outcome=AttemptOutcome.FAILED, code="AUTH_REVOKED")
    await connection(store, ConnectionState.PENDING_REAUTH, [])


async def throttled(store: Store) -> None:
    await send(store, 9, outcome=AttemptOutcome.THROTTLED, code="RATE_LIMITED")
    await send(store, 3, tenant="globex")
    await store.throttle_set("acme", "twilio", NOW + 10 * MIN, "429 Retry-After 600", NOW)


async def quota_used(store: Store) -> None:
    await send(store, 5, outcome=AttemptOutcome.FAILED, code="QUOTA_EXCEEDED")
    await audit(store, "quota.threshold", "quota of acme/twilio 95% used", key="q:acme|twilio")


async def late_queue(store: Store) -> None:
    await store.enqueue_many([msg() for _ in range(6)], NOW - 30 * MIN)


async def retrying(store: Store) -> None:
    for i in range(3):  # three failed tries each, back in the queue
        if i == 0:
            await store.enqueue_many([msg()], NOW - 30 * MIN)
        [m] = await store.message_claim("w1", 1, 30, NOW - (10 - i) * MIN)
        a = Attempt(m.id, m.claim_seq, "w1", "twilio", NOW - (10 - i) * MIN,
                    NOW - (10 - i) * MIN, AttemptOutcome.FAILED, error_code="TIMEOUT")  # fmt: skip
        run_at = NOW - (10 - i) * MIN + timedelta(seconds=10) if i < 2 else NOW + timedelta(days=1)
        await store.message_complete_many(
            "w1", [Completion(m.id, m.claim_seq, "w1", Status.QUEUED, a, run_at=run_at)],
            NOW - (10 - i) * MIN,
        )  # fmt: skip


async def slow(store: Store) -> None:
    await send(store, 5, created=NOW - 20 * MIN, at=NOW - 2 * MIN)


async def held_by_kill(store: Store) -> None:
    await store.enqueue_many([msg() for _ in range(4)], NOW - 30 * MIN)
    await store.control_set(Scope(tenant="acme"), Mode.KILLED, actor="cli:oncall",
                            reason="runaway", expires_at=None, now=NOW - 20 * MIN)  # fmt: skip
    await store.control_hold_queued(NOW - 20 * MIN)


async def loop(store: Store) -> None:
    await send(store, 8, action="reply")
    await audit(store, "limit.tripped", "recipient cap reached for +15550001111", tenant="acme",
                key="r:acme", action="reply")  # fmt: skip


async def tenancy(store: Store) -> None:
    await audit(store, "tenancy.violation", "connection of globex used for acme",
                message_tenant="acme", connection_tenant="globex")  # fmt: skip


async def inbox_dead(store: Store) -> None:
    items = [
        InboxItem(id=0, provider="twilio", event_id=f"ev{i}", kind="receipt", status="delivered",
                  message_id=None, provider_message_id=f"SM{i}", occurred_at=NOW, error_code=None,
                  detail=None, address=None, data={}, received_at=NOW - 20 * MIN)
        for i in range(3)
    ]  # fmt: skip
    await store.inbox_put(items, NOW - 20 * MIN)
    for item in await store.inbox_claim("w1", 3, 30, NOW - 15 * MIN):
        await store.inbox_dead(item.id, item.attempts, "parse error", NOW - 15 * MIN)


async def endpoint_failing(store: Store) -> None:
    await send(store, 4, provider="webhook", channel="webhook", recipient="https://acme.example/h",
               outcome=AttemptOutcome.FAILED, code="PROVIDER_ERROR")  # fmt: skip
    report = EndpointReport(
        tenant="acme", endpoint="https://acme.example/h", provider="webhook", failed=4,
        last_failed_at=NOW - 5 * MIN, streak_from=NOW - 6 * MIN,
    )  # fmt: skip
    await store.endpoint_report([report], NOW - 5 * MIN, 3600)


async def audit_broken(store: Store, url: str) -> None:
    await audit(store, "control.set", "first")
    await audit(store, "control.set", "second")
    if url.startswith("postgresql"):
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SET session_replication_role = replica")
            conn.execute("UPDATE sluice_audit SET reason = 'rewritten'")
    else:
        db = sqlite3.connect(sqlite_path(url), isolation_level=None)
        db.execute("DROP TRIGGER sluice_audit_no_update")
        db.execute("UPDATE sluice_audit SET reason = 'rewritten'")
        db.close()


Prepare = Callable[[Store], Awaitable[None]]

#: runbook -> (the failure, what its causes must say, a filled command it must offer)
CASES: dict[str, tuple[Prepare, tuple[str, ...], str | None]] = {
    "queue-depth": (late_queue, ("oldest ready message has waited", "no live worker"), None),
    "dlq-growth": (dead_letters, ("INVALID_RECIPIENT",), "--error-code INVALID_RECIPIENT"),
    "high-failure-rate": (provider_down, ("twilio", "PROVIDER_UNAVAILABLE"), "p:twilio"),
    "quota-exhaustion": (quota_used, ("quota is used up", "acme"), "--tenant acme"),
    "stuck-messages": (retrying, ("failed 3 times",), "--provider twilio"),
    "delivery-latency": (slow, ("slow: p95",), None),
    "cross-tenant": (tenancy, ("tenancy violation",), None),
    "publish-failures": (provider_down, ("twilio is failing",), "--provider twilio"),
    "verification-failures": (inbox_dead, ("provider events dead",), None),
    "token-refresh-failure": (grant_revoked, ("pending_reauth", "AUTH_REVOKED"), "--tenant acme"),
    "rate-limited": (throttled, ("twilio is rate limiting acme",), "--provider twilio"),
    "queue-backlog": (late_queue, ("no live worker",), None),
    "action-gateway-failure": (endpoint_failing, ("https://acme.example/h",), "--tenant acme"),
    "provider-outage": (provider_down, ("twilio is failing", "p:twilio is open"), "p:twilio"),
    "runaway-loop": (loop, ("recipient cap tripped", "acme"), "sluice kill --tenant acme"),
    "missing-audit": (audit_broken, ("audit chain breaks",), None),  # type: ignore[dict-item]
    "cost-runaway": (loop, ("acme created",), "sluice pause --tenant acme"),
    "held-too-long": (held_by_kill, ("4 held",), "--tenant acme"),
    "token-revoked": (grant_revoked, ("pending_reauth",), "--tenant acme --provider twilio"),
    "webhook-replay": (inbox_dead, ("provider events dead",), None),
    "outbox-lag": (late_queue, ("oldest ready message has waited",), None),
    "projector-failure": (inbox_dead, ("provider events dead",), None),
    "ingress-down": (inbox_dead, ("provider events dead",), None),
    "duplicate-actions": (loop, ("recipient cap tripped",), "--tenant acme --action reply"),
    "rate-limit-429": (throttled, ("429",), "--provider twilio"),
    "dependency-outage": (provider_down, ("twilio is failing",), None),
    "partial-side-effects": (dead_letters, ("action reply", "INVALID_RECIPIENT"), "--since 1h"),
    "scope-revoked": (scope_removed, ("SCOPE_MISSING", "acme"), "--error-code SCOPE_MISSING"),
}


def settings(url: str) -> Settings:
    return load_settings(env={}, database_url=url)


async def run(store: Store, url: str, runbook: str, **labels: str) -> Diagnosis:
    scope = make_scope("1h", now=NOW, **labels)
    return await diagnose(store, settings(url), runbook, scope, routes=ROUTES)


def test_every_runbook_has_a_case() -> None:
    assert set(CASES) == {rb.id for rb in RUNBOOKS}


@pytest.mark.parametrize("runbook", sorted(CASES))
async def test_diagnosis_names_the_cause(store: Store, store_url: str, runbook: str) -> None:
    prepare, says, command = CASES[runbook]
    if prepare is audit_broken:
        await audit_broken(store, store_url)
    else:
        await prepare(store)
    d = await run(store, store_url, runbook)
    text = "\n".join(d.causes)
    for words in says:
        assert words in text, (runbook, d.causes)
    if command:
        lines = [c["command"] for c in (*d.containment, *d.recovery)]
        assert any(command in line for line in lines), (runbook, lines)


@pytest.mark.parametrize("runbook", ["provider-outage", "dlq-growth", "token-revoked"])
async def test_a_quiet_store_alarms_on_nothing_of_the_failure(
    store: Store, store_url: str, runbook: str
) -> None:
    d = await run(store, store_url, runbook)
    assert not [f for f in d.findings if f.alarm and f.probe not in ("failover", "workers")]
    assert any("<provider>" in c["command"] or "<error_code>" in c["command"]
               or "<tenant>" in c["command"] for c in d.containment + d.recovery)  # fmt: skip


async def test_provider_outage__failover_tenants_and_commands(store: Store, store_url: str) -> None:
    await provider_down(store)
    d = await run(store, store_url, "provider-outage")
    by = {f.probe: f for f in d.findings}
    assert by["failures"].data["providers"][0]["provider"] == "twilio"
    assert by["failures"].fills["error_code"] == "PROVIDER_UNAVAILABLE"
    assert by["breakers"].data["breakers"][0]["key"] == "p:twilio"
    assert by["failover"].data["carrying"] is True  # null sent 6 on the sms route
    assert by["tenants"].data["tenants"] == {"acme": 12, "globex": 4}
    sample = by["sample"].data["attempts"]
    assert len(sample) == 5 and {a["provider"] for a in sample} == {"twilio"}
    assert by["incidents"].headline == "no other incident is open"
    assert d.containment[0]["command"] == (
        'sluice breakers open p:twilio --reason "provider outage"'
    )
    assert "sluice pause --provider twilio" in d.containment[1]["command"]
    assert "SluiceBreakerOpen" in d.rules


async def test_provider_outage__scoped_to_the_provider_still_sees_the_backup_carry(
    store: Store, store_url: str
) -> None:
    """An incident's diagnosis is scoped to the failing provider (its breaker key); the
    backup's attempts lie outside that scope and must still count (found replaying seed
    002 §3 with failover)."""
    await provider_down(store)
    d = await run(store, store_url, "provider-outage", provider="twilio")
    by = {f.probe: f for f in d.findings}
    assert by["failover"].data["carrying"] is True, by["failover"]
    assert by["failover"].headline == "a failover route carries traffic"
    assert by["failover"].lines == ["sms: route twilio → null; null sent 6 in the window"]
    # The other checks stay in scope: only twilio's failures are counted.
    assert {p["provider"] for p in by["failures"].data["providers"]} == {"twilio"}


async def test_scope_narrows_the_diagnosis(store: Store, store_url: str) -> None:
    await provider_down(store)
    d = await run(store, store_url, "provider-outage", tenant="globex")
    by = {f.probe: f for f in d.findings}
    assert by["tenants"].data["tenants"] == {"globex": 4}
    assert "--tenant" not in d.containment[0]["command"]
    other = await run(store, store_url, "provider-outage", tenant="nobody")
    assert not [f for f in other.findings if f.probe == "failures" and f.alarm]


@pytest.mark.parametrize(
    ("since", "field"),
    [("yesterday", "since"), ("30d", "since"), ("-5m", "since"), ("\ud800", "since")],
)
def test_bad_since_is_refused_naming_it(since: str, field: str) -> None:
    with pytest.raises(ValidationError) as err:
        make_scope(since, now=NOW)
    assert err.value.field == field  # type: ignore[attr-defined]


def test_bad_scope_values_and_unknown_runbooks_are_refused() -> None:
    with pytest.raises(ValidationError, match="tenant"):
        make_scope("1h", now=NOW, tenant="a\ud800")
    with pytest.raises(ValidationError, match="provider"):
        make_scope("1h", now=NOW, provider="x" * 500)
    with pytest.raises(ValidationError, match="since"):
        make_scope((NOW + MIN).isoformat(), now=NOW)


async def test_unknown_runbook_is_not_found(store: Store, store_url: str) -> None:
    with pytest.raises(NotFound, match="no runbook 'no-such'"):
        await run(store, store_url, "no-such")


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        ({"key": "p:twilio"}, {"provider": "twilio"}),
        ({"key": "c:acme:twilio"}, {"tenant": "acme", "provider": "twilio"}),
        ({"channel": "sms", "provider": "twilio"}, {"channel": "sms", "provider": "twilio"}),
        ({"worker": "w1"}, {}),
    ],
)
async def test_an_incidents_diagnosis_takes_its_scope(
    store: Store, store_url: str, scope: dict[str, str], expected: dict[str, str]
) -> None:
    from sluice.ops.runbooks import incident_diagnosis
    from sluice.store.base import Firing

    await provider_down(store)
    firing = Firing("SluiceBreakerOpen", scope, "P2", ("PROVIDER",), "001#provider-outage",
                    "breaker open", 1.0)  # fmt: skip
    incident, _ = await store.incident_fire(firing, NOW - MIN)
    d = await incident_diagnosis(store, settings(store_url), incident, routes=ROUTES, now=NOW)
    assert d is not None and d.runbook == "provider-outage" and d.incident == incident.id
    assert d.scope == expected
    assert d.since <= incident.opened_at - timedelta(minutes=59)
    assert any("twilio is failing" in c for c in d.causes)
    unknown = Firing("SomeoneElsesRule", {}, "P3", ("OBS",), "999#nothing", "x", 1.0)
    other, _ = await store.incident_fire(unknown, NOW - MIN)
    assert await incident_diagnosis(store, settings(store_url), other, now=NOW) is None
    assert incident.id in {f.probe: f for f in d.findings}["incidents"].data["open"]
