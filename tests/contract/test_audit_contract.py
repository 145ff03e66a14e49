"""The audit log read back: filters, paging, the append-only triggers and the hash chain
check, on PostgreSQL and SQLite alike (real databases, tampered with by hand)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from sluice.errors import ValidationError
from sluice.flow.controls import Control, Mode, Scope, control_audit
from sluice.ops.audit import audit_filter, audit_list, audit_page, audit_verify
from sluice.store import AuditEntry, AuditFilter, Store
from sluice.store.base import LimitRow, limit_audit
from sluice.store.sqlite import sqlite_path

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def at(minutes: int) -> datetime:
    return NOW + timedelta(minutes=minutes)


async def seed(store: Store) -> dict[str, int]:
    """One entry of each shape the writers produce, in this order; their ids by name."""
    control = Control(
        id="c1", scope=Scope.of("acme", "sms", "twilio", "order.created"), mode=Mode.KILLED,
        actor="cli:ann", reason="runaway", created_at=at(0), expires_at=None, version=1,
    )  # fmt: skip
    limit = LimitRow(
        kind="quota", tenant="acme", provider="sendgrid", action="", spec={"limit": 10},
        actor="cli:bob", reason="cap", updated_at=at(1),
    )  # fmt: skip
    paused = Control(
        id="c2", scope=Scope.of("other"), mode=Mode.PAUSED, actor="api:oncall",
        reason="done", created_at=at(8), expires_at=None, version=2,
    )  # fmt: skip
    entries = {
        "control": control_audit("control.set", control, at(0), "cli:ann", "runaway"),
        "limit": limit_audit("limit.set", limit),
        "connection": AuditEntry(
            at=at(2),
            actor="cli:ann",
            action="connection.add",
            target="acme/twilio",
            detail={"scopes": [], "credential_keys": ["token"]},
        ),
        "breaker": AuditEntry(
            at=at(3),
            actor="worker:w1",
            action="breaker.open",
            target="c:acme:twilio",
            detail={"from": "closed", "to": "open"},
        ),
        "provider_breaker": AuditEntry(
            at=at(4),
            actor="worker:w1",
            action="breaker.open",
            target="p:sendgrid",
            detail={"from": "closed", "to": "open"},
        ),
        "quota": AuditEntry(
            at=at(5),
            actor="worker:w1",
            action="quota.threshold",
            target="quota(tenant=acme provider=sendgrid)",
            detail={"key": "q:acme|sendgrid|", "threshold": 0.85},
        ),
        "violation": AuditEntry(
            at=at(6),
            actor="projector:w1",
            action="tenancy.violation",
            target="inbox:9",
            detail={"severity": "SEV0", "source_tenant": "other", "message_tenant": "acme"},
        ),
        "dlq": AuditEntry(
            at=at(7),
            actor="api:oncall",
            action="dlq.retry",
            target="messages",
            detail={"filter": {"tenant": "other", "channel": "email"}},
        ),
        "other_control": control_audit("control.clear", paused, at(8), "api:oncall", "done"),
        "keys": AuditEntry(
            at=at(9), actor="cli:ann", action="keys.rotate", detail={"re_encrypted": 2}
        ),
    }
    ids = {}
    for name, entry in entries.items():
        ids[name] = (await store.audit_append(entry)).id or 0
    return ids


async def names(store: Store, ids: dict[str, int], **kw: object) -> list[str]:
    by_id = {v: k for k, v in ids.items()}
    found = await store.audit_list(100, AuditFilter(**kw))  # type: ignore[arg-type]
    return [by_id[e.id or 0] for e in found]


async def test_audit_list__without_a_filter_is_the_newest_first(store: Store) -> None:
    ids = await seed(store)
    assert [e.id for e in await store.audit_list(3)] == sorted(ids.values(), reverse=True)[:3]
    assert [e.id for e in await store.audit_list(3, AuditFilter())] == [
        e.id for e in await store.audit_list(3)
    ]


async def test_audit_list__tenant_matches_every_shape_that_names_it(store: Store) -> None:
    ids = await seed(store)
    assert await names(store, ids, tenant="acme") == [
        "violation", "quota", "breaker", "connection", "limit", "control",
    ]  # fmt: skip
    # A tenancy violation names both sides; a bulk act names its filter's tenant.
    assert await names(store, ids, tenant="other") == ["other_control", "dlq", "violation"]
    assert await names(store, ids, tenant="acm") == []  # exact, not a prefix
    assert await names(store, ids, tenant="nobody") == []


async def test_audit_list__scope_fields_match_what_writers_record(store: Store) -> None:
    ids = await seed(store)
    assert await names(store, ids, channel="sms") == ["control"]
    assert await names(store, ids, channel="email") == ["dlq"]
    assert await names(store, ids, provider="twilio") == ["breaker", "connection", "control"]
    assert await names(store, ids, provider="sendgrid") == ["provider_breaker", "limit"]
    assert await names(store, ids, scope_action="order.created") == ["control"]
    assert await names(store, ids, tenant="acme", provider="twilio") == [
        "breaker", "connection", "control",
    ]  # fmt: skip


async def test_audit_list__action_prefix_actor_and_time(store: Store) -> None:
    ids = await seed(store)
    assert await names(store, ids, action="control.") == ["other_control", "control"]
    assert await names(store, ids, action="breaker.open") == ["provider_breaker", "breaker"]
    assert await names(store, ids, action="_") == []  # no LIKE wildcard
    assert await names(store, ids, action="%") == []
    assert await names(store, ids, actor="cli:ann") == ["keys", "connection", "control"]
    assert await names(store, ids, since=at(7)) == ["keys", "other_control", "dlq"]
    assert await names(store, ids, until=at(2)) == ["limit", "control"]  # until: exclusive
    assert await names(store, ids, since=at(2), until=at(4), actor="worker:w1") == ["breaker"]


async def test_audit_page__pages_back_without_gaps_or_repeats(store: Store) -> None:
    ids = await seed(store)
    seen: list[int] = []
    flt = audit_filter()
    while True:
        page, older = await audit_page(store, flt, 4)
        seen += [e.id or 0 for e in page]
        if older is None:
            break
        flt = audit_filter(before_id=older)
    assert seen == sorted(ids.values(), reverse=True)


async def test_audit_walk__pages_oldest_first(store: Store) -> None:
    ids = await seed(store)
    first = await store.audit_walk(0, 4)
    rest = await store.audit_walk(first[-1].id or 0, 100)
    assert [e.id for e in first + rest] == sorted(ids.values())
    assert await store.audit_walk(max(ids.values()), 10) == []


async def test_audit_list__bad_input_is_refused_before_the_store(store: Store) -> None:
    with pytest.raises(ValidationError, match="until: must be after since"):
        audit_filter(since=at(5), until=at(5))
    with pytest.raises(ValidationError, match="since: needs a timezone"):
        audit_filter(since=datetime(2026, 1, 1))  # naive: refused
    with pytest.raises(ValidationError, match="tenant: must not be empty"):
        audit_filter(tenant=" ")
    with pytest.raises(ValidationError, match="actor: must not contain NUL"):
        audit_filter(actor="a\x00")
    with pytest.raises(ValidationError, match="limit: must be between 1 and 1000"):
        await audit_list(store, audit_filter(), 0)


# -- append-only and the chain check -------------------------------------------------


def _raw(store_url: str) -> psycopg.Connection | sqlite3.Connection:
    if store_url.startswith("postgresql"):
        return psycopg.connect(store_url, autocommit=True)
    return sqlite3.connect(sqlite_path(store_url), isolation_level=None)


REFUSED = (psycopg.Error, sqlite3.Error)


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE sluice_audit SET reason = 'rewritten'",
        "DELETE FROM sluice_audit WHERE id = 1",
        # SQLite has no TRUNCATE; DELETE without WHERE is its equivalent.
        "TRUNCATE sluice_audit",
    ],
)
async def test_audit__update_delete_truncate_are_refused(
    store: Store, store_url: str, statement: str
) -> None:
    await seed(store)
    before = [(e.id, e.reason, e.hash) for e in await store.audit_list(100)]
    if statement.startswith("TRUNCATE") and store.dialect == "sqlite":
        statement = "DELETE FROM sluice_audit"
    conn = _raw(store_url)
    try:
        with pytest.raises(REFUSED, match="append-only"):
            conn.execute(statement)
    finally:
        conn.close()
    assert [(e.id, e.reason, e.hash) for e in await store.audit_list(100)] == before
    assert (await audit_verify(store)).ok


def _tamper(store_url: str, statement: str) -> None:
    """Change the log behind the triggers' back, as an intruder with the database's
    owner rights could: PostgreSQL's replica role skips triggers (superuser only);
    on SQLite the trigger is dropped from this test's own copy of the database."""
    conn = _raw(store_url)
    try:
        if isinstance(conn, psycopg.Connection):
            conn.execute("SET session_replication_role = replica")
            conn.execute(statement)
        else:
            conn.execute("DROP TRIGGER sluice_audit_no_update")
            conn.execute("DROP TRIGGER sluice_audit_no_delete")
            conn.execute(statement)
    finally:
        conn.close()


async def test_audit_verify__holds_over_pages(store: Store) -> None:
    ids = await seed(store)
    for page in (1, 3, 1000):
        check = await audit_verify(store, page)
        assert (check.ok, check.checked, check.broken_at) == (True, len(ids), None)


async def test_audit_verify__names_a_changed_entry(store: Store, store_url: str) -> None:
    ids = await seed(store)
    _tamper(store_url, f"UPDATE sluice_audit SET reason = 'nothing' WHERE id = {ids['breaker']}")
    check = await audit_verify(store, page=2)
    assert (check.ok, check.broken_at, check.checked) == (False, ids["breaker"], 3)
    assert "content does not match its hash" in (check.why or "")


async def test_audit_verify__names_the_entry_after_a_removed_one(
    store: Store, store_url: str
) -> None:
    ids = await seed(store)
    _tamper(store_url, f"DELETE FROM sluice_audit WHERE id = {ids['quota']}")
    check = await audit_verify(store, page=4)
    assert (check.ok, check.broken_at) == (False, ids["violation"])
    assert f"hash of entry {ids['provider_breaker']}" in (check.why or "")


async def test_audit_verify__an_empty_log_holds(store: Store) -> None:
    check = await audit_verify(store)
    assert (check.ok, check.checked) == (True, 0)
    with pytest.raises(ValidationError, match="page_size"):
        await audit_verify(store, 0)
