"""The connection half of the Store contract: every test runs against PostgreSQL and SQLite.

A connection is one tenant's credentials for one provider. These tests pin what the
stores promise about it: secrets never come back out through ``public()``, one
connection per (tenant, provider), a state change holds exactly that connection's
queued messages (and is audited once), and a rotation releases exactly the messages
the connection held — never one held for another reason.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from sluice.connections import HOLD_PREFIX, Connection, ConnectionState
from sluice.errors import NotFound, ValidationError
from sluice.model import Attempt, AttemptOutcome, Completion, NewMessage, Status, new_message_id
from sluice.secrets import SecretBox, generate_key
from sluice.store import AuditEntry, Store
from sluice.store._audit import verify_chain

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(minutes=5)
SECRET = "tok-3f9c2e-super-secret"
BOX = SecretBox(generate_key())


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


def connection(tenant: str = "acme", provider: str = "http", **kw: object) -> Connection:
    cid = new_message_id()
    ciphertext, kid = BOX.encrypt({"token": SECRET}, cid, tenant, provider)
    fields: dict[str, object] = {
        "id": cid,
        "tenant": tenant,
        "provider": provider,
        "state": ConnectionState.ACTIVE,
        "state_reason": None,
        "state_changed_at": NOW,
        "scopes": ["contacts.read"],
        "missing_scopes": [],
        "ciphertext": ciphertext,
        "key_id": kid,
        "credential_version": 1,
        "expires_at": None,
        "last_check_at": None,
        "last_check_ok_at": None,
        "last_check_error": None,
        "created_at": NOW,
        "updated_at": NOW,
    }
    fields.update(kw)
    return Connection(**fields)  # type: ignore[arg-type]


def added(conn: Connection) -> AuditEntry:
    return AuditEntry(at=NOW, actor="test", action="connection.add", target=conn.tenant)


async def insert(store: Store, conn: Connection) -> Connection:
    stored: Connection = await store.connection_insert(conn, added(conn))  # type: ignore[attr-defined]
    return stored


def msg(tenant: str = "acme", provider: str = "http", **kw: object) -> NewMessage:
    fields: dict[str, object] = {
        "tenant": tenant,
        "channel": "api",
        "provider": provider,
        "recipient": "contact-1",
        "payload": {"n": 1},
    }
    fields.update(kw)
    return NewMessage(**fields)  # type: ignore[arg-type]


async def status_of(store: Store, *ids: str) -> list[Status]:
    return [(await store.message_get(i)).status for i in ids]


async def audit_actions(store: Store) -> list[str]:
    return [e.action for e in await store.audit_list()]


def rotate_audit(detail: dict[str, object] | None = None) -> AuditEntry:
    return AuditEntry(
        at=LATER,
        actor="test",
        action="connection.rotate",
        target="acme/http",
        reason="re-consent",
        detail=detail or {"new_credentials": True},
    )


async def rotate(store: Store, tenant: str = "acme", provider: str = "http", **kw: object):  # type: ignore[no-untyped-def]
    params: dict[str, object] = {
        "ciphertext": None,
        "key_id": None,
        "scopes": None,
        "expires_at": None,
        "now": LATER,
        "audit": rotate_audit(),
    }
    params.update(kw)
    return await store.connection_rotate(tenant, provider, **params)  # type: ignore[attr-defined]


async def set_state(store: Store, state: ConnectionState, **kw: object) -> tuple[bool, list[str]]:
    args: dict[str, object] = {
        "tenant": "acme",
        "provider": "http",
        "state": state,
        "reason": "AUTH_REVOKED: invalid_grant",
        "missing_scopes": [],
        "now": LATER,
        "actor": "worker:w1",
    }
    args.update(kw)
    result: tuple[bool, list[str]] = await store.connection_set_state(**args)  # type: ignore[attr-defined]
    return result


# -- insert, get, list --------------------------------------------------------------


async def test_connection_insert__get_and_list_return_it(store: Store) -> None:
    conn = connection(
        scopes=["contacts.read", "contacts.write"], expires_at=NOW + timedelta(days=30)
    )
    stored = await insert(store, conn)
    got = await store.connection_get("acme", "http")  # type: ignore[attr-defined]
    [listed] = await store.connection_list()  # type: ignore[attr-defined]
    for c in (stored, got, listed):
        assert (c.id, c.tenant, c.provider, c.state) == (
            conn.id,
            "acme",
            "http",
            ConnectionState.ACTIVE,
        )
        assert c.scopes == ["contacts.read", "contacts.write"]
        assert (c.credential_version, c.key_id, c.missing_scopes) == (1, BOX.current_id, [])
        assert (c.created_at, c.expires_at) == (NOW, NOW + timedelta(days=30))
        # The ciphertext comes back byte for byte and still opens for this connection.
        assert c.ciphertext == conn.ciphertext
        assert BOX.decrypt(c.ciphertext, c.key_id, c.id, "acme", "http") == {"token": SECRET}


async def test_connection_public__never_contains_ciphertext_or_secrets(store: Store) -> None:
    stored = await insert(store, connection())
    public = stored.public()
    assert "ciphertext" not in public
    text = repr(public) + repr(stored)
    assert SECRET not in text
    assert stored.ciphertext.hex() not in text
    assert repr(stored.ciphertext) not in text
    assert public["tenant"] == "acme" and public["state"] == "active"


async def test_connection_insert__writes_its_audit_row(store: Store) -> None:
    await insert(store, connection())
    assert await audit_actions(store) == ["connection.add"]


async def test_connection_list__filters_by_tenant_and_provider(store: Store) -> None:
    for tenant, provider in [("acme", "http"), ("acme", "null"), ("globex", "http")]:
        await insert(store, connection(tenant, provider))
    every = await store.connection_list()  # type: ignore[attr-defined]
    assert [(c.tenant, c.provider) for c in every] == [
        ("acme", "http"),
        ("acme", "null"),
        ("globex", "http"),
    ]
    acme = await store.connection_list("acme")  # type: ignore[attr-defined]
    assert [c.provider for c in acme] == ["http", "null"]
    http = await store.connection_list(None, "http")  # type: ignore[attr-defined]
    assert [c.tenant for c in http] == ["acme", "globex"]
    assert await store.connection_list("nobody") == []  # type: ignore[attr-defined]


async def test_connection_insert__same_tenant_and_provider_is_refused_and_changes_nothing(
    store: Store,
) -> None:
    first = await insert(store, connection())
    with pytest.raises(ValidationError) as info:
        await insert(store, connection(scopes=["everything"]))
    assert info.value.field == "connection"
    assert "connection" in str(info.value)
    [still] = await store.connection_list()  # type: ignore[attr-defined]
    assert (still.id, still.ciphertext, still.scopes) == (
        first.id,
        first.ciphertext,
        ["contacts.read"],
    )
    assert await audit_actions(store) == ["connection.add"]  # the refused add left no trace


async def test_connection_insert__same_provider_for_another_tenant_is_allowed(
    store: Store,
) -> None:
    await insert(store, connection("acme"))
    await insert(store, connection("globex"))
    assert len(await store.connection_list(None, "http")) == 2  # type: ignore[attr-defined]


async def test_connection_get__unknown_raises_not_found(store: Store) -> None:
    await insert(store, connection("acme", "http"))
    with pytest.raises(NotFound, match="has no null connection"):
        await store.connection_get("acme", "null")  # type: ignore[attr-defined]
    with pytest.raises(NotFound, match="'globex'"):
        await store.connection_get("globex", "http")  # type: ignore[attr-defined]


# -- state changes hold messages ----------------------------------------------------


async def test_connection_set_state__holds_only_that_connections_queued_messages(
    store: Store,
) -> None:
    await insert(store, connection())
    # One of acme's http messages is being sent, one is already sent: both stay as they are.
    sending_id, sent_id = await store.enqueue_many([msg(priority=9), msg(priority=8)], NOW)
    claimed = await store.message_claim("w1", 2, 30, NOW)
    sent = next(m for m in claimed if m.id == sent_id)
    attempt = Attempt(sent.id, sent.claim_seq, "w1", "http", NOW, NOW, AttemptOutcome.SENT)
    completion = Completion(sent.id, sent.claim_seq, "w1", Status.SENT, attempt)
    await store.message_complete_many("w1", [completion], NOW)
    queued = await store.enqueue_many([msg(), msg(run_at=NOW + timedelta(hours=1))], NOW)
    [other_tenant, other_provider] = await store.enqueue_many(
        [msg(tenant="globex"), msg(provider="null")], NOW
    )

    changed, held = await set_state(store, ConnectionState.PENDING_REAUTH)

    assert changed is True
    assert sorted(held) == sorted(queued)
    for mid in queued:
        m = await store.message_get(mid)
        assert m.status is Status.HELD
        assert m.hold_reason is not None and m.hold_reason.startswith(HOLD_PREFIX)
        assert "pending_reauth" in m.hold_reason
        assert m.attempts == 0
    assert await status_of(store, sending_id, sent_id, other_tenant, other_provider) == [
        Status.SENDING,
        Status.SENT,
        Status.QUEUED,
        Status.QUEUED,
    ]
    conn = await store.connection_get("acme", "http")  # type: ignore[attr-defined]
    assert (conn.state, conn.state_reason, conn.state_changed_at) == (
        ConnectionState.PENDING_REAUTH,
        "AUTH_REVOKED: invalid_grant",
        LATER,
    )


async def test_connection_set_state__writes_one_audit_row(store: Store) -> None:
    await insert(store, connection())
    await store.enqueue_many([msg(), msg()], NOW)
    await set_state(store, ConnectionState.PENDING_REAUTH)
    [entry] = [e for e in await store.audit_list() if e.action != "connection.add"]
    assert (entry.action, entry.actor, entry.target) == (
        "connection.pending_reauth",
        "worker:w1",
        "acme/http",
    )
    assert entry.reason == "AUTH_REVOKED: invalid_grant"
    assert entry.detail["held"] == 2


async def test_connection_set_state__same_state_again_is_not_a_change_but_holds_new_messages(
    store: Store,
) -> None:
    await insert(store, connection())
    await store.enqueue_many([msg()], NOW)
    await set_state(store, ConnectionState.PENDING_REAUTH)
    [late] = await store.enqueue_many([msg(payload={"late": True})], NOW)

    changed, held = await set_state(store, ConnectionState.PENDING_REAUTH, reason="again")

    assert (changed, held) == (False, [late])
    assert (await store.message_get(late)).status is Status.HELD
    assert (await audit_actions(store)).count("connection.pending_reauth") == 1
    conn = await store.connection_get("acme", "http")  # type: ignore[attr-defined]
    assert conn.state_reason == "AUTH_REVOKED: invalid_grant"  # the first reason stands


async def test_connection_set_state__needs_reconsent_records_missing_scopes(store: Store) -> None:
    await insert(store, connection())
    [mid] = await store.enqueue_many([msg(scopes=["calendar.write"])], NOW)
    changed, held = await set_state(
        store,
        ConnectionState.NEEDS_RECONSENT,
        reason="SCOPE_MISSING: calendar.write",
        missing_scopes=["calendar.write"],
    )
    assert (changed, held) == (True, [mid])
    conn = await store.connection_get("acme", "http")  # type: ignore[attr-defined]
    assert (conn.state, conn.missing_scopes) == (
        ConnectionState.NEEDS_RECONSENT,
        ["calendar.write"],
    )
    [entry] = [e for e in await store.audit_list() if e.action == "connection.needs_reconsent"]
    assert entry.detail["missing_scopes"] == ["calendar.write"]


async def test_connection_set_state__back_to_active_holds_nothing(store: Store) -> None:
    await insert(store, connection())
    await set_state(store, ConnectionState.REVOKED, reason="offboarded")
    [mid] = await store.enqueue_many([msg()], NOW)
    changed, held = await set_state(store, ConnectionState.ACTIVE, reason="back")
    assert (changed, held) == (True, [])
    assert (await store.message_get(mid)).status is Status.QUEUED


# -- rotate releases held messages --------------------------------------------------


async def test_connection_rotate__activates_bumps_version_and_releases_connection_holds(
    store: Store, store_url: str
) -> None:
    await insert(store, connection())
    await insert(store, connection("globex"))
    held_by_connection = await store.enqueue_many([msg(), msg()], NOW)
    [paused] = await store.enqueue_many([msg(payload={"paused": True})], NOW)
    [globex_msg] = await store.enqueue_many([msg(tenant="globex")], NOW)
    await set_state(store, ConnectionState.NEEDS_RECONSENT, missing_scopes=["calendar.write"])
    await set_state(store, ConnectionState.REVOKED, tenant="globex", reason="offboarded")
    # Held for a reason that is not the connection's: an operator's pause.
    sql(
        store_url,
        "UPDATE sluice_messages SET status = 'held', hold_reason = ? WHERE CAST(id AS TEXT) = ?",
        "operator: paused by on-call",
        paused,
    )
    # The direct update ran after set_state, so the paused message was not held by it.
    assert (await store.message_get(paused)).hold_reason == "operator: paused by on-call"

    ciphertext, kid = BOX.encrypt(
        {"token": "new"},
        (await store.connection_get("acme", "http")).id,
        "acme",
        "http",  # type: ignore[attr-defined]
    )
    conn, released = await rotate(
        store, ciphertext=ciphertext, key_id=kid, scopes=["calendar.write", "contacts.read"]
    )

    assert sorted(released) == sorted(held_by_connection)
    assert (conn.state, conn.credential_version, conn.missing_scopes) == (
        ConnectionState.ACTIVE,
        2,
        [],
    )
    assert conn.scopes == ["calendar.write", "contacts.read"]
    assert conn.state_changed_at == LATER
    assert BOX.decrypt(conn.ciphertext, conn.key_id, conn.id, "acme", "http") == {"token": "new"}
    for mid in held_by_connection:
        m = await store.message_get(mid)
        assert (m.status, m.hold_reason) == (Status.QUEUED, None)
    still = await store.message_get(paused)
    assert (still.status, still.hold_reason) == (Status.HELD, "operator: paused by on-call")
    assert (await store.message_get(globex_msg)).status is Status.HELD  # another tenant's
    [entry] = [e for e in await store.audit_list() if e.action == "connection.rotate"]
    assert entry.target == "acme/http"
    assert entry.detail["released"] == 2
    assert entry.detail["new_credentials"] is True


async def test_connection_rotate__released_messages_are_claimable_again(store: Store) -> None:
    await insert(store, connection())
    ids = await store.enqueue_many([msg(payload={"i": i}) for i in range(3)], NOW)
    await set_state(store, ConnectionState.PENDING_REAUTH)
    assert await store.message_claim("w1", 10, 30, LATER) == []
    await rotate(store, scopes=["contacts.read"])
    claimed = await store.message_claim("w1", 10, 30, LATER)
    assert sorted(m.id for m in claimed) == sorted(ids)


async def test_connection_rotate__without_new_secret_keeps_ciphertext_and_scopes(
    store: Store,
) -> None:
    first = await insert(store, connection(expires_at=NOW + timedelta(days=3)))
    conn, released = await rotate(store)
    assert released == []
    assert (conn.ciphertext, conn.key_id, conn.scopes, conn.expires_at) == (
        first.ciphertext,
        first.key_id,
        ["contacts.read"],
        NOW + timedelta(days=3),
    )
    assert conn.credential_version == 2
    conn, _ = await rotate(store, scopes=["a", "b"])
    assert (conn.scopes, conn.credential_version) == (["a", "b"], 3)


async def test_connection_rotate__unknown_connection_raises_not_found(store: Store) -> None:
    with pytest.raises(NotFound, match="has no http connection"):
        await rotate(store, tenant="nobody")
    assert await audit_actions(store) == []


# -- secrets and checks -------------------------------------------------------------


async def test_connection_store_secret__replaces_ciphertext_key_and_expiry(store: Store) -> None:
    first = await insert(store, connection())
    other = SecretBox(generate_key())
    ciphertext, kid = other.encrypt({"token": "rotated"}, first.id, "acme", "http")
    expires = NOW + timedelta(days=60)
    await store.connection_store_secret(
        first.id, ciphertext, kid, expires, LATER, first.credential_version
    )  # type: ignore[attr-defined]
    conn = await store.connection_get("acme", "http")  # type: ignore[attr-defined]
    assert (conn.ciphertext, conn.key_id, conn.expires_at, conn.updated_at) == (
        ciphertext,
        other.current_id,
        expires,
        LATER,
    )
    assert other.decrypt(conn.ciphertext, conn.key_id, conn.id, "acme", "http") == {
        "token": "rotated"
    }
    # Neither state nor version moves: re-encryption is not a re-consent.
    assert (conn.state, conn.credential_version) == (ConnectionState.ACTIVE, 1)


async def test_connection_record_check__ok_sets_last_ok_and_failure_keeps_it(
    store: Store,
) -> None:
    first = await insert(store, connection())
    expires = NOW + timedelta(days=10)
    await store.connection_record_check(first.id, True, None, expires, LATER)  # type: ignore[attr-defined]
    conn = await store.connection_get("acme", "http")  # type: ignore[attr-defined]
    assert (conn.last_check_at, conn.last_check_ok_at, conn.last_check_error) == (
        LATER,
        LATER,
        None,
    )
    assert conn.expires_at == expires

    failed_at = LATER + timedelta(hours=1)
    await store.connection_record_check(first.id, False, "401 invalid_grant", None, failed_at)  # type: ignore[attr-defined]
    conn = await store.connection_get("acme", "http")  # type: ignore[attr-defined]
    assert (conn.last_check_at, conn.last_check_ok_at, conn.last_check_error) == (
        failed_at,
        LATER,  # only a successful check moves it
        "401 invalid_grant",
    )
    assert conn.expires_at == expires  # a check that learned nothing keeps the expiry


async def test_connection_record_check__failure_first_leaves_last_ok_empty(store: Store) -> None:
    first = await insert(store, connection())
    await store.connection_record_check(first.id, False, "timeout", None, LATER)  # type: ignore[attr-defined]
    conn = await store.connection_get("acme", "http")  # type: ignore[attr-defined]
    assert (conn.last_check_at, conn.last_check_ok_at, conn.last_check_error) == (
        LATER,
        None,
        "timeout",
    )


async def test_connection_changes__keep_the_audit_chain_whole(store: Store) -> None:
    await insert(store, connection())
    await store.enqueue_many([msg()], NOW)
    await set_state(store, ConnectionState.PENDING_REAUTH)
    await rotate(store, scopes=["contacts.read"])
    entries = list(reversed(await store.audit_list()))
    assert [e.action for e in entries] == [
        "connection.add",
        "connection.pending_reauth",
        "connection.rotate",
    ]
    assert verify_chain(entries) is None


async def test_connection_rotate__returns_released_ids_oldest_first(store: Store) -> None:
    await insert(store, connection())
    # Enqueued newest first, so neither insertion order nor id order is oldest first.
    ids = await store.enqueue_many(
        [msg(run_at=NOW + timedelta(minutes=m), payload={"m": m}) for m in (30, 10, 20, 0)], NOW
    )
    await set_state(store, ConnectionState.PENDING_REAUTH)
    _, released = await rotate(store, scopes=["contacts.read"])
    by_minute = dict(zip((30, 10, 20, 0), ids, strict=True))
    assert released == [by_minute[m] for m in (0, 10, 20, 30)]


async def test_connection_find__returns_the_pairs_that_exist_in_one_call(store: Store) -> None:
    a = await insert(store, connection("acme", "http"))
    b = await insert(store, connection("globex", "mail"))
    await insert(store, connection("acme", "mail"))  # exists, not asked for
    found = await store.connection_find([("acme", "http"), ("globex", "mail"), ("nobody", "http")])
    assert sorted(c.id for c in found) == sorted([a.id, b.id])
    assert await store.connection_find([]) == []


async def test_message_claim_with_connections__returns_the_claims_connections_and_no_others(
    store: Store,
) -> None:
    a = await insert(store, connection("acme", "http"))
    await insert(store, connection("acme", "mail"))  # a pair no claimed message has
    await insert(store, connection("globex", "http"))  # likewise
    ids = await store.enqueue_many([msg("acme", "http"), msg("initech", "http")], NOW)
    claimed, found = await store.message_claim_with_connections("w1", 10, 30, NOW)
    assert sorted(m.id for m in claimed) == sorted(ids)
    assert [c.id for c in found] == [a.id]
    assert found[0].ciphertext == a.ciphertext  # the whole row, as connection_find gives it
    assert await status_of(store, *ids) == [Status.SENDING, Status.SENDING]


async def test_message_claim_with_connections__ignores_other_workers_and_older_claims(
    store: Store,
) -> None:
    await insert(store, connection("acme", "http"))
    g = await insert(store, connection("globex", "http"))
    await store.enqueue_many([msg("acme", "http")], NOW)
    claimed, _ = await store.message_claim_with_connections("w1", 10, 30, NOW)
    assert len(claimed) == 1  # acme's message is leased by w1, still sending
    await store.enqueue_many([msg("globex", "http")], NOW)
    # w2 claims at the same instant: w1's lease of the same length must not leak in,
    # nor w2's own earlier claims.
    claimed, found = await store.message_claim_with_connections("w2", 10, 30, NOW)
    assert [m.tenant for m in claimed] == ["globex"]
    assert [c.id for c in found] == [g.id]
    assert await store.message_claim_with_connections("w2", 10, 30, LATER) == ([], [])
