"""The connection gate inside the dispatcher, against real stores (both kinds).

A test-double provider (it implements Sluice's ``Provider`` protocol) records the
credentials each send received and answers from a script, so these tests show what
an operator would see when a tenant's token is revoked or a scope is missing: the
connection's messages wait, visibly, with no attempts burnt and nothing in the
dead-letter queue, other tenants keep sending, and re-consent sends each waiting
message exactly once, oldest first.

Time is a ``FrozenClock``; every run drains what is ready (``until_idle``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
import structlog
from structlog.testing import capture_logs

from sluice.clock import FrozenClock
from sluice.config import Settings
from sluice.connections import HOLD_PREFIX, Connection, ConnectionState
from sluice.errors import ConfigError
from sluice.model import (
    AttemptOutcome,
    ErrorCode,
    Message,
    NewMessage,
    Outcome,
    Status,
)
from sluice.ops.connections import connection_add, connection_revoke, connection_rotate, verify_key
from sluice.providers.base import Credentials, Provider
from sluice.secrets import SecretBox, generate_key
from sluice.store import MessageFilter, Store
from sluice.worker import Dispatcher
from sluice.worker.gate import ConnectionGate

NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
KEY = generate_key()


@pytest.fixture(autouse=True)
def _no_connections_left_over(request: pytest.FixtureRequest) -> Iterator[None]:
    # tests/conftest.py empties every other Sluice table between tests, but not
    # sluice_connections; on the shared PostgreSQL database connections would leak
    # from one test into the next (and into other files' tests), so empty it before
    # and after each test here.
    url: str | None = None
    if "store_url" in request.fixturenames:
        url = request.getfixturevalue("store_url")
    if url is None or not url.startswith("postgresql"):
        yield
        return
    with psycopg.connect(url, autocommit=True) as db:
        db.execute("DELETE FROM sluice_connections")
    yield
    with psycopg.connect(url, autocommit=True) as db:
        db.execute("DELETE FROM sluice_connections")


# -- the test double ----------------------------------------------------------------

Script = Callable[[Message, dict[str, str]], Outcome]


class ScriptedCrm:
    """A provider that needs a tenant connection; records every call and its credentials.

    It stands in for the ``http`` provider (a CRM action), under that name: enqueue
    accepts only provider names Sluice knows."""

    name = "http"
    requires_connection = True

    def __init__(self, script: Script | None = None) -> None:
        self.script = script
        self.calls: list[tuple[str, str, dict[str, str]]] = []  # (message id, tenant, creds)

    async def send(self, message: Message, credentials: Credentials | None = None) -> Outcome:
        creds = dict(credentials or {})
        self.calls.append((message.id, message.tenant, creds))
        if self.script is not None:
            return self.script(message, creds)
        return Outcome.success(provider_message_id=f"crm-{message.id}", provider_status="200")

    def sent_ids(self, tenant: str | None = None) -> list[str]:
        return [mid for mid, t, _ in self.calls if tenant is None or t == tenant]


def revoked_tokens(*tokens: str) -> Script:
    """Refuse the given tokens as an OAuth provider does after a revocation."""

    def answer(message: Message, creds: dict[str, str]) -> Outcome:
        if creds.get("token") in tokens:
            return Outcome.failure(
                ErrorCode.AUTH_REVOKED,
                "invalid_grant: token has been revoked",
                provider_status="HTTP 401",
                provider_code="invalid_grant",
            )
        return Outcome.success(provider_message_id=f"crm-{message.id}")

    return answer


def scope_missing(provider_code: str | None = None) -> Script:
    def answer(message: Message, creds: dict[str, str]) -> Outcome:
        return Outcome.failure(
            ErrorCode.SCOPE_MISSING,
            "insufficient scope",
            provider_status="HTTP 403",
            provider_code=provider_code,
        )

    return answer


def test_scripted_crm__implements_the_provider_protocol() -> None:
    assert isinstance(ScriptedCrm(), Provider)


# -- helpers ------------------------------------------------------------------------


def settings(**kw: object) -> Settings:
    base: dict[str, object] = {
        "database_url": "sqlite:///unused.db",
        "poll_interval": 0.05,
        "flush_interval": 0,
        "reaper_interval": 3600,
        "worker_concurrency": 20,
    }
    base.update(kw)
    return Settings(**base)  # type: ignore[arg-type]


def gate(store: Store, box: SecretBox | None) -> ConnectionGate:
    return ConnectionGate(
        store, box, requires_connection=["http"], worker_id="w-test", logger=structlog.get_logger()
    )


async def drain(
    store: Store,
    provider: Any,
    clock: FrozenClock,
    box: SecretBox | None = None,
    *,
    use_box: bool = True,
    **kw: object,
) -> Dispatcher:
    providers = provider if isinstance(provider, dict) else {"http": provider}
    the_box = (box or SecretBox(KEY)) if use_box else None
    d = Dispatcher(
        store,
        providers,
        settings(**kw),
        clock=clock,
        worker_id="w-test",
        gate=gate(store, the_box),
    )
    await d.run(until_idle=True)
    return d


async def add(
    store: Store,
    tenant: str,
    token: str,
    scopes: list[str] | None = None,
    *,
    key: str = KEY,
    clock: FrozenClock | None = None,
) -> Connection:
    return await connection_add(
        store,
        SecretBox(key),
        tenant=tenant,
        provider="http",
        secrets={"token": token},
        scopes=scopes or [],
        actor="test",
        clock=clock,
    )


def crm(tenant: str = "acme", **kw: object) -> NewMessage:
    fields: dict[str, object] = {
        "tenant": tenant,
        "channel": "api",
        "provider": "http",
        "recipient": "contact-42",
        "action": "contact.update",
        "payload": {"tenant": tenant},
    }
    fields.update(kw)
    return NewMessage(**fields)  # type: ignore[arg-type]


async def get(store: Store, mid: str) -> Message:
    return await store.message_get(mid)


async def dead_letters(store: Store) -> list[str]:
    return await store.message_select("dead", MessageFilter())


def sql(url: str, statement: str, *params: object) -> None:
    """Run one statement straight on the database (``?`` placeholders), committed."""
    if url.startswith("postgresql"):
        with psycopg.connect(url, autocommit=True) as db:
            db.execute(statement.replace("?", "%s"), params)  # type: ignore[arg-type]  # test SQL
        return
    db = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=30)
    try:
        with db:
            db.execute(statement, params)
    finally:
        db.close()


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(NOW)


# -- admitting and holding ----------------------------------------------------------


async def test_gate__no_connection_holds_the_message_before_any_call(
    store: Store, clock: FrozenClock
) -> None:
    [mid] = await store.enqueue_many([crm()], clock.now())
    provider = ScriptedCrm()
    d = await drain(store, provider, clock)
    m = await get(store, mid)
    assert (m.status, m.attempts) == (Status.HELD, 0)
    assert m.hold_reason is not None and m.hold_reason.startswith(HOLD_PREFIX)
    assert "sluice connections add" in m.hold_reason
    assert "'acme'" in m.hold_reason
    assert await store.attempt_list(mid) == []
    assert provider.calls == []
    assert d.stats.held == 1 and d.stats.sent == 0


async def test_gate__held_message_is_not_claimed_again(store: Store, clock: FrozenClock) -> None:
    [mid] = await store.enqueue_many([crm()], clock.now())
    provider = ScriptedCrm()
    await drain(store, provider, clock)
    clock.advance(3600)
    d = await drain(store, provider, clock)
    assert d.stats.claimed == 0
    assert (await get(store, mid)).status is Status.HELD


async def test_gate__active_connection_sends_with_the_decrypted_credentials(
    store: Store, clock: FrozenClock
) -> None:
    await add(store, "acme", "tok-acme", ["contacts.write"])
    await add(store, "globex", "tok-globex", ["contacts.write"])
    [a, g] = await store.enqueue_many(
        [crm("acme", scopes=["contacts.write"]), crm("globex")], clock.now()
    )
    provider = ScriptedCrm()
    await drain(store, provider, clock)
    for mid in (a, g):
        m = await get(store, mid)
        assert (m.status, m.attempts, m.provider_message_id) == (Status.SENT, 1, f"crm-{mid}")
    creds = {mid: c for mid, _, c in provider.calls}
    assert creds == {a: {"token": "tok-acme"}, g: {"token": "tok-globex"}}


async def test_gate__provider_without_connection_requirement_sends_without_credentials(
    store: Store, clock: FrozenClock
) -> None:
    class Open(ScriptedCrm):
        name = "null"
        requires_connection = False

    open_provider = Open()
    [mid] = await store.enqueue_many([crm(provider="null")], clock.now())
    await drain(store, {"http": ScriptedCrm(), "null": open_provider}, clock)
    assert (await get(store, mid)).status is Status.SENT
    assert open_provider.calls == [(mid, "acme", {})]


async def test_gate__scope_not_granted_holds_until_rotate_grants_it(
    store: Store, clock: FrozenClock
) -> None:
    await add(store, "acme", "tok-acme", ["contacts.read"])
    [mid] = await store.enqueue_many([crm(scopes=["calendar.write"])], clock.now())
    provider = ScriptedCrm()
    await drain(store, provider, clock)

    m = await get(store, mid)
    assert (m.status, m.attempts) == (Status.HELD, 0)
    assert m.hold_reason is not None and m.hold_reason.startswith(HOLD_PREFIX)
    assert "scope not granted" in m.hold_reason and "calendar.write" in m.hold_reason
    assert provider.calls == []
    assert await store.attempt_list(mid) == []
    assert await dead_letters(store) == []

    conn, released = await connection_rotate(
        store,
        SecretBox(KEY),
        tenant="acme",
        provider="http",
        secrets=None,
        scopes=["contacts.read", "calendar.write"],
        actor="ops",
        clock=clock,
    )
    assert released == [mid]
    assert conn.scopes == ["calendar.write", "contacts.read"]

    await drain(store, provider, clock)
    await drain(store, provider, clock)
    m = await get(store, mid)
    assert (m.status, m.attempts, m.hold_reason) == (Status.SENT, 1, None)
    assert provider.sent_ids() == [mid]  # exactly once
    assert provider.calls[0][2] == {"token": "tok-acme"}  # the credentials were kept


async def test_gate__revoked_connection_holds_its_messages(
    store: Store, clock: FrozenClock
) -> None:
    await add(store, "acme", "tok-acme")
    [before] = await store.enqueue_many([crm()], clock.now())
    held = await connection_revoke(
        store, tenant="acme", provider="http", actor="ops", reason="offboarding", clock=clock
    )
    assert held == [before]
    [after] = await store.enqueue_many([crm(payload={"late": 1})], clock.now())
    provider = ScriptedCrm()
    await drain(store, provider, clock)
    for mid in (before, after):
        m = await get(store, mid)
        assert (m.status, m.attempts) == (Status.HELD, 0)
        assert m.hold_reason is not None and "revoked" in m.hold_reason
    assert provider.calls == []


# -- the provider refuses the credentials -------------------------------------------


async def revoke_acme_mid_flight(
    store: Store, clock: FrozenClock
) -> tuple[ScriptedCrm, list[str], list[str]]:
    """acme's token is revoked at the provider: one send fails, the rest must wait.

    acme's first message is ready now; its others are queued for later, so they are
    still queued (not claimed) when the refusal arrives. globex is healthy.
    """
    await add(store, "acme", "tok-acme-old", clock=clock)
    await add(store, "globex", "tok-globex", clock=clock)
    acme = await store.enqueue_many(
        [
            crm("acme", payload={"n": 1}),
            crm("acme", payload={"n": 2}, run_at=clock.now() + timedelta(seconds=10)),
            crm("acme", payload={"n": 3}, run_at=clock.now() + timedelta(seconds=20)),
        ],
        clock.now(),
    )
    globex = await store.enqueue_many(
        [crm("globex", payload={"n": i}) for i in range(2)], clock.now()
    )
    provider = ScriptedCrm(revoked_tokens("tok-acme-old"))
    await drain(store, provider, clock)
    return provider, acme, globex


async def test_auth_revoked__marks_the_connection_and_holds_its_messages(
    store: Store, clock: FrozenClock
) -> None:
    provider, acme, globex = await revoke_acme_mid_flight(store, clock)

    conn = await store.connection_get("acme", "http")  # type: ignore[attr-defined]
    assert conn.state is ConnectionState.PENDING_REAUTH
    assert conn.state_reason is not None and "AUTH_REVOKED" in conn.state_reason

    first = await get(store, acme[0])
    assert (first.status, first.attempts) == (Status.HELD, 0)  # the attempt was refunded
    assert first.hold_reason is not None and first.hold_reason.startswith(HOLD_PREFIX)
    assert "pending_reauth" in first.hold_reason
    [attempt] = await store.attempt_list(acme[0])
    assert (attempt.outcome, attempt.error_code, attempt.provider_status) == (
        AttemptOutcome.FAILED,
        "AUTH_REVOKED",
        "HTTP 401",
    )
    assert attempt.error_class == "auth"
    for mid in acme[1:]:
        m = await get(store, mid)
        assert (m.status, m.attempts) == (Status.HELD, 0)
        assert m.hold_reason is not None and m.hold_reason.startswith(HOLD_PREFIX)
        assert await store.attempt_list(mid) == []
    assert provider.sent_ids("acme") == [acme[0]]  # the others never reached the provider

    for mid in globex:
        assert (await get(store, mid)).status is Status.SENT
    assert await dead_letters(store) == []
    report = await store.status_report(clock.now())
    assert report.dead == []
    assert report.counts.get("held") == 3

    [entry] = [e for e in await store.audit_list() if e.action == "connection.pending_reauth"]
    assert (entry.actor, entry.target) == ("worker:w-test", "acme/http")
    assert entry.detail["held"] == 2


async def test_auth_revoked__other_tenants_keep_sending_and_held_ones_stay_held(
    store: Store, clock: FrozenClock
) -> None:
    provider, acme, _ = await revoke_acme_mid_flight(store, clock)
    [late_acme] = await store.enqueue_many([crm("acme", payload={"late": 1})], clock.now())
    more_globex = await store.enqueue_many([crm("globex", payload={"more": 1})], clock.now())
    clock.advance(60)
    calls_before = len(provider.calls)
    await drain(store, provider, clock)

    assert (await get(store, more_globex[0])).status is Status.SENT
    # acme's new message is held by the gate (its connection is pending_reauth).
    late = await get(store, late_acme)
    assert (late.status, late.attempts) == (Status.HELD, 0)
    assert late.hold_reason is not None and "pending_reauth" in late.hold_reason
    assert [t for _, t, _ in provider.calls[calls_before:]] == ["globex"]
    for mid in acme:
        assert (await get(store, mid)).status is Status.HELD
    assert await dead_letters(store) == []


async def test_reconsent__releases_held_messages_oldest_first_and_sends_each_once(
    store: Store, clock: FrozenClock
) -> None:
    provider, acme, _ = await revoke_acme_mid_flight(store, clock)
    calls_before = len(provider.calls)

    conn, released = await connection_rotate(
        store,
        SecretBox(KEY),
        tenant="acme",
        provider="http",
        secrets={"token": "tok-acme-new"},
        scopes=None,
        actor="ops",
        reason="customer re-connected",
        clock=clock,
    )
    assert sorted(released) == sorted(acme)
    assert (conn.state, conn.credential_version) == (ConnectionState.ACTIVE, 2)

    clock.advance(30)  # every acme message is ready now
    # One at a time, so the order the provider sees is the order they were released.
    await drain(store, provider, clock, worker_concurrency=1, worker_batch_size=1)
    await drain(store, provider, clock)

    new_calls = provider.calls[calls_before:]
    assert [mid for mid, _, _ in new_calls] == acme  # oldest first, each exactly once
    assert all(creds == {"token": "tok-acme-new"} for _, _, creds in new_calls)
    for mid in acme:
        m = await get(store, mid)
        assert (m.status, m.attempts, m.hold_reason) == (Status.SENT, 1, None)
    outcomes = [a.outcome for a in await store.attempt_list(acme[0])]
    assert outcomes == [AttemptOutcome.FAILED, AttemptOutcome.SENT]
    assert await dead_letters(store) == []
    [entry] = [e for e in await store.audit_list() if e.action == "connection.rotate"]
    assert (entry.actor, entry.reason, entry.detail["released"]) == (
        "ops",
        "customer re-connected",
        3,
    )


@pytest.mark.parametrize(
    ("provider_code", "message_scopes", "missing"),
    [
        (None, ["calendar.write"], ["calendar.write"]),
        # Nothing names the scope: say so, with what the provider answered (issue 10
        # item 13: the status code used to be recorded as if it were the scope).
        ("403", [], ["unknown (provider refused: HTTP 403)"]),
        ("E_SCOPE", [], ["unknown (provider refused: HTTP 403, code E_SCOPE)"]),
        (None, [], ["unknown (provider refused: HTTP 403)"]),
    ],
    ids=["message-scopes", "status-as-code", "provider-code", "nothing"],
)
async def test_scope_missing__marks_needs_reconsent_with_missing_scopes(
    store: Store,
    clock: FrozenClock,
    provider_code: str | None,
    message_scopes: list[str],
    missing: list[str],
) -> None:
    await add(store, "acme", "tok-acme", ["calendar.write"])
    [mid] = await store.enqueue_many([crm(scopes=message_scopes)], clock.now())
    [later] = await store.enqueue_many(
        [crm(payload={"later": 1}, run_at=clock.now() + timedelta(minutes=5))], clock.now()
    )
    provider = ScriptedCrm(scope_missing(provider_code))
    await drain(store, provider, clock)

    conn = await store.connection_get("acme", "http")  # type: ignore[attr-defined]
    assert (conn.state, conn.missing_scopes) == (ConnectionState.NEEDS_RECONSENT, missing)
    m = await get(store, mid)
    assert (m.status, m.attempts) == (Status.HELD, 0)
    assert m.hold_reason is not None and "needs_reconsent" in m.hold_reason
    [attempt] = await store.attempt_list(mid)
    assert attempt.error_code == "SCOPE_MISSING"
    [audit] = [e for e in await store.audit_list() if e.action == "connection.needs_reconsent"]
    assert audit.detail["missing_scopes"] == missing
    assert (await get(store, later)).status is Status.HELD
    assert await dead_letters(store) == []
    assert provider.sent_ids() == [mid]


# -- the tenancy guard --------------------------------------------------------------


async def test_tenancy_guard__copied_ciphertext_is_refused_audited_and_alerted(
    store: Store, store_url: str, clock: FrozenClock
) -> None:
    acme = await add(store, "acme", "tok-acme")
    await add(store, "globex", "tok-globex")
    # Someone (or a bug) puts acme's sealed credentials on globex's row.
    sql(
        store_url,
        "UPDATE sluice_connections SET ciphertext = ?, key_id = ? "
        "WHERE tenant = 'globex' AND provider = 'http'",
        acme.ciphertext,
        acme.key_id,
    )
    [g] = await store.enqueue_many([crm("globex")], clock.now())
    [a] = await store.enqueue_many([crm("acme")], clock.now())
    provider = ScriptedCrm()
    with capture_logs() as logs:
        await drain(store, provider, clock)

    m = await get(store, g)
    assert (m.status, m.attempts) == (Status.HELD, 0)
    assert m.hold_reason is not None and "tenancy guard" in m.hold_reason
    assert await store.attempt_list(g) == []
    assert provider.sent_ids() == [a]  # acme's own message still goes, with acme's token
    assert provider.calls[0][2] == {"token": "tok-acme"}

    [entry] = [e for e in await store.audit_list() if e.action == "tenancy.violation"]
    assert entry.target == g
    assert entry.detail["severity"] == "SEV0"
    assert entry.detail["message_tenant"] == "globex"
    assert entry.detail["provider"] == "http"
    assert entry.actor == "worker:w-test"

    [alert] = [e for e in logs if e["log_level"] == "critical"]
    assert alert["alert"] == "SEV0"
    assert alert["message_id"] == g
    assert "TENANCY VIOLATION" in alert["event"]
    assert "tok-acme" not in repr(logs)


# -- keys ---------------------------------------------------------------------------


async def test_gate__without_a_secret_box_defers_for_a_worker_that_has_the_key(
    store: Store, clock: FrozenClock
) -> None:
    await add(store, "acme", "tok-acme")
    [mid] = await store.enqueue_many([crm()], clock.now())
    provider = ScriptedCrm()
    await drain(store, provider, clock, use_box=False)
    m = await get(store, mid)
    # The worker's own configuration is at fault, not the message: back to the queue,
    # a little later, no attempt spent, never held.
    assert (m.status, m.attempts, m.hold_reason) == (Status.QUEUED, 0, None)
    assert m.run_at > clock.now()
    assert provider.calls == []
    assert await store.attempt_list(mid) == []


async def test_gate__wrong_key_defers_without_calling_it_a_tenancy_violation(
    store: Store, clock: FrozenClock
) -> None:
    await add(store, "acme", "tok-acme")
    [mid] = await store.enqueue_many([crm()], clock.now())
    provider = ScriptedCrm()
    await drain(store, provider, clock, SecretBox(generate_key()))
    m = await get(store, mid)
    assert (m.status, m.attempts, m.hold_reason) == (Status.QUEUED, 0, None)
    assert provider.calls == []
    assert [e for e in await store.audit_list() if e.action == "tenancy.violation"] == []


async def test_gate__previous_key_still_opens_credentials(store: Store, clock: FrozenClock) -> None:
    await add(store, "acme", "tok-acme")
    [mid] = await store.enqueue_many([crm()], clock.now())
    provider = ScriptedCrm()
    await drain(store, provider, clock, SecretBox(generate_key(), previous=KEY))
    assert (await get(store, mid)).status is Status.SENT
    assert provider.calls[0][2] == {"token": "tok-acme"}


async def test_verify_key__no_connections_needs_no_key(store: Store) -> None:
    assert await verify_key(store, None) == 0


async def test_verify_key__connections_without_a_key_is_a_config_error(store: Store) -> None:
    await add(store, "acme", "tok-acme")
    with pytest.raises(ConfigError, match="SLUICE_SECRET_KEY"):
        await verify_key(store, None)


async def test_verify_key__wrong_key_is_a_config_error_naming_keys_rotate(store: Store) -> None:
    await add(store, "acme", "tok-acme")
    wrong = SecretBox(generate_key())
    with pytest.raises(ConfigError, match="sluice keys rotate") as info:
        await verify_key(store, wrong)
    assert SecretBox(KEY).current_id in str(info.value)
    assert wrong.current_id in str(info.value)


async def test_verify_key__right_or_previous_key_passes(store: Store) -> None:
    await add(store, "acme", "tok-acme")
    await add(store, "globex", "tok-globex")
    assert await verify_key(store, SecretBox(KEY)) == 2
    assert await verify_key(store, SecretBox(generate_key(), previous=KEY)) == 2


# -- refusals that arrive after the operator acted ----------------------------------


class OperatorActsMidSend(ScriptedCrm):
    """The provider refuses the (old) token; while that send is in flight, an operator
    acts on the connection. The refusal is about the credentials the send was given."""

    def __init__(self, act: Callable[[], Any], code: ErrorCode = ErrorCode.AUTH_REVOKED) -> None:
        super().__init__()
        self.act = act
        self.code = code

    async def send(self, message: Message, credentials: Credentials | None = None) -> Outcome:
        creds = dict(credentials or {})
        self.calls.append((message.id, message.tenant, creds))
        if creds.get("token") == "tok-old":
            await self.act()
            return Outcome.failure(self.code, "invalid_grant", provider_status="HTTP 401")
        return Outcome.success(provider_message_id=f"crm-{message.id}")


async def test_auth_revoked__for_credentials_replaced_mid_send_does_not_undo_the_reconsent(
    store: Store, clock: FrozenClock
) -> None:
    await add(store, "acme", "tok-old", clock=clock)
    [mid] = await store.enqueue_many([crm()], clock.now())
    [queued] = await store.enqueue_many(
        [crm(payload={"later": 1}, run_at=clock.now() + timedelta(seconds=30))], clock.now()
    )

    async def reconsent() -> None:
        await connection_rotate(
            store, SecretBox(KEY), tenant="acme", provider="http",
            secrets={"token": "tok-new"}, scopes=None, actor="ops", clock=clock,
        )  # fmt: skip

    provider = OperatorActsMidSend(reconsent)
    await drain(store, provider, clock)

    conn = await store.connection_get("acme", "http")  # type: ignore[attr-defined]
    assert (conn.state, conn.credential_version) == (ConnectionState.ACTIVE, 2)
    assert (await get(store, queued)).status is Status.QUEUED
    clock.advance(60)
    await drain(store, provider, clock)
    assert (await get(store, mid)).status is Status.SENT
    assert (await get(store, queued)).status is Status.SENT


async def test_auth_revoked__after_an_operator_revoke_keeps_the_connection_revoked(
    store: Store, clock: FrozenClock
) -> None:
    await add(store, "acme", "tok-old", clock=clock)
    [mid] = await store.enqueue_many([crm()], clock.now())

    async def revoke() -> None:
        await connection_revoke(
            store, tenant="acme", provider="http", actor="ops", reason="customer offboarded",
            clock=clock,
        )  # fmt: skip

    await drain(store, OperatorActsMidSend(revoke), clock)

    assert (await get(store, mid)).status is Status.HELD
    conn = await store.connection_get("acme", "http")  # type: ignore[attr-defined]
    assert (conn.state, conn.state_reason) == (ConnectionState.REVOKED, "customer offboarded")


async def test_gate__adding_the_missing_connection_releases_what_waited_for_it(
    store: Store, clock: FrozenClock
) -> None:
    [mid] = await store.enqueue_many([crm()], clock.now())
    provider = ScriptedCrm()
    await drain(store, provider, clock)
    assert (await get(store, mid)).status is Status.HELD

    await add(store, "acme", "tok-acme", clock=clock)
    await drain(store, provider, clock)

    m = await get(store, mid)
    assert (m.status, m.attempts) == (Status.SENT, 1)
    assert provider.sent_ids() == [mid]


async def test_gate__message_deferred_for_a_missing_key_goes_out_once_the_key_is_set(
    store: Store, clock: FrozenClock
) -> None:
    await add(store, "acme", "tok-acme", clock=clock)
    [mid] = await store.enqueue_many([crm()], clock.now())
    provider = ScriptedCrm()
    await drain(store, provider, clock, use_box=False)
    assert (await get(store, mid)).status is Status.QUEUED

    clock.advance(60)
    await drain(store, provider, clock)  # the operator restarted the worker with the key

    assert (await get(store, mid)).status is Status.SENT


async def test_gate_load__reads_the_pairs_the_claim_did_not_cover(
    store: Store, clock: FrozenClock
) -> None:
    """The claim brings the connections of the pairs it leased; a failover may then
    move a message to another provider. That pair's connection must still be found
    (read then), and a pair the claim covered is not read again."""
    conn = await add(store, "acme", "tok-acme")
    [mid] = await store.enqueue_many([crm("acme", provider="null")], NOW)
    rerouted = await get(store, mid)
    rerouted.provider = "http"  # as the dispatcher's failover moves it
    g = gate(store, SecretBox(KEY))
    loaded = await g.load([rerouted], {("acme", "null"): None})
    assert loaded[("acme", "http")] is not None
    assert loaded[("acme", "http")].id == conn.id  # type: ignore[union-attr]
    # Covered by the claim: taken as given (here: known to have none), no query.
    assert await g.load([rerouted], {("acme", "http"): None}) == {("acme", "http"): None}
