"""The ``connection_refresh`` contract: every test runs against PostgreSQL and SQLite alike.

The store never sees a secret: the callback hands it ciphertext. These tests use opaque
bytes for it; ``tests/integration/test_oauth_refresh.py`` drives the real refresher.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from sluice.connections import Connection, ConnectionState
from sluice.errors import NotFound
from sluice.model import NewMessage, Status, new_message_id
from sluice.store import Store
from sluice.store.base import AuditEntry, RefreshOutcome

NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
MARGIN = timedelta(minutes=5)


async def add(
    store: Store, *, expires_at: datetime | None = NOW + timedelta(minutes=1)
) -> Connection:
    conn = Connection(
        id=new_message_id(), tenant="acme", provider="http", state=ConnectionState.ACTIVE,
        state_reason=None, state_changed_at=NOW, scopes=["calendar.write"], missing_scopes=[],
        ciphertext=b"sealed-v1", key_id="k1", credential_version=1, expires_at=expires_at,
        last_check_at=None, last_check_ok_at=None, last_check_error=None, created_at=NOW,
        updated_at=NOW,
    )  # fmt: skip
    audit = AuditEntry(at=NOW, actor="test", action="connection.add", target="acme/http")
    stored: Connection = await store.connection_insert(conn, audit)  # type: ignore[attr-defined]
    return stored


class TokenEndpoint:
    """A refresh callback that follows the margin rule and counts the refreshes it makes."""

    def __init__(self, *, delay: float = 0.0, lifetime: timedelta = timedelta(hours=1)) -> None:
        self.calls = 0
        self.seen: list[Connection] = []
        self.delay = delay
        self.lifetime = lifetime

    async def __call__(self, current: Connection) -> RefreshOutcome | None:
        self.seen.append(current)
        if current.state is not ConnectionState.ACTIVE:
            return None
        if current.expires_at is not None and current.expires_at - NOW > MARGIN:
            return None  # someone refreshed while we waited
        self.calls += 1
        await asyncio.sleep(self.delay)
        return RefreshOutcome(
            ciphertext=f"sealed-v{current.credential_version + 1}".encode(),
            key_id="k2",
            expires_at=NOW + self.lifetime,
            scopes=("calendar.read", "calendar.write"),
            detail={"refresh_token_rotated": True},
        )


async def test_connection_refresh__refreshes_once_and_stores_the_new_ciphertext(
    store: Store,
) -> None:
    before = await add(store)
    endpoint = TokenEndpoint()
    after = await store.connection_refresh("acme", "http", endpoint, NOW, actor="worker:w1")
    assert endpoint.calls == 1
    assert endpoint.seen[0].ciphertext == b"sealed-v1"  # the row as stored, read under the lock
    assert (after.id, after.ciphertext, after.key_id) == (before.id, b"sealed-v2", "k2")
    assert after.credential_version == before.credential_version + 1
    assert after.expires_at == NOW + timedelta(hours=1)
    assert after.scopes == ["calendar.read", "calendar.write"]
    assert after.state is ConnectionState.ACTIVE
    assert await store.connection_get("acme", "http") == after  # type: ignore[attr-defined]
    [entry, *_] = await store.audit_list(10)
    assert (entry.action, entry.actor, entry.target) == (
        "connection.refresh",
        "worker:w1",
        "acme/http",
    )
    assert entry.detail["from_version"] == 1 and entry.detail["to_version"] == 2
    assert entry.detail["refresh_token_rotated"] is True
    assert "sealed" not in repr(entry)  # no credential material in the audit log


async def test_connection_refresh__a_second_caller_inside_the_margin_does_not_refresh(
    store: Store,
) -> None:
    await add(store)
    endpoint = TokenEndpoint()
    first = await store.connection_refresh("acme", "http", endpoint, NOW, actor="w1")
    second = await store.connection_refresh("acme", "http", endpoint, NOW, actor="w2")
    assert endpoint.calls == 1
    assert second == first
    assert [e.action for e in await store.audit_list(10)].count("connection.refresh") == 1


async def test_connection_refresh__concurrent_callers_refresh_once(store: Store) -> None:
    await add(store)
    endpoint = TokenEndpoint(delay=0.1)  # the token call is slow: the others queue on the lock
    results = await asyncio.gather(
        *(store.connection_refresh("acme", "http", endpoint, NOW, actor=f"w{i}") for i in range(5))
    )
    assert endpoint.calls == 1
    assert {r.ciphertext for r in results} == {b"sealed-v2"}
    assert {r.credential_version for r in results} == {2}
    # The four that waited saw the refreshed row, not the one they started from.
    assert [c.credential_version for c in endpoint.seen] == [1, 2, 2, 2, 2]


async def test_connection_refresh__nothing_to_write_leaves_the_row_alone(store: Store) -> None:
    before = await add(store, expires_at=NOW + timedelta(days=1))
    endpoint = TokenEndpoint()
    after = await store.connection_refresh("acme", "http", endpoint, NOW, actor="w1")
    assert endpoint.calls == 0
    assert after == before
    assert [e.action for e in await store.audit_list(10)] == ["connection.add"]


async def test_connection_refresh__failure_moves_to_pending_reauth_and_holds_queued_messages(
    store: Store,
) -> None:
    await add(store)
    queued = await store.enqueue_many(
        [
            NewMessage(tenant="acme", channel="cal", provider="http", recipient="r", action="a"),
            NewMessage(tenant="other", channel="cal", provider="http", recipient="r", action="a"),
        ],
        NOW,
    )

    async def invalid_grant(current: Connection) -> RefreshOutcome | None:
        return RefreshOutcome(
            state=ConnectionState.PENDING_REAUTH,
            reason="token refresh failed: AUTH_REVOKED: invalid_grant",
            detail={"code": "AUTH_REVOKED"},
        )

    after = await store.connection_refresh("acme", "http", invalid_grant, NOW, actor="w1")
    assert after.state is ConnectionState.PENDING_REAUTH
    assert after.state_reason == "token refresh failed: AUTH_REVOKED: invalid_grant"
    assert (after.ciphertext, after.credential_version) == (b"sealed-v1", 1)
    mine, theirs = [await store.message_get(i) for i in queued]
    assert mine.status is Status.HELD
    assert (mine.hold_reason or "").startswith("connection: pending_reauth: token refresh")
    assert theirs.status is Status.QUEUED  # another tenant's messages are not touched
    [entry, *_] = await store.audit_list(10)
    assert (entry.action, entry.detail["held"], entry.detail["cause"]) == (
        "connection.pending_reauth",
        1,
        "token refresh",
    )
    # Whoever comes next sees the state under the lock and calls no token endpoint.
    endpoint = TokenEndpoint()
    again = await store.connection_refresh("acme", "http", endpoint, NOW, actor="w2")
    assert (endpoint.calls, again.state) == (0, ConnectionState.PENDING_REAUTH)
    assert endpoint.seen[0].state is ConnectionState.PENDING_REAUTH


async def test_connection_refresh__never_overwrites_a_connection_that_is_no_longer_active(
    store: Store,
) -> None:
    await add(store)
    await store.connection_set_state(  # type: ignore[attr-defined]
        "acme", "http", ConnectionState.REVOKED, "operator", [], NOW, "ops"
    )

    async def careless(current: Connection) -> RefreshOutcome | None:
        return RefreshOutcome(ciphertext=b"sealed-v2", key_id="k2", expires_at=NOW)

    after = await store.connection_refresh("acme", "http", careless, NOW, actor="w1")
    assert (after.state, after.ciphertext, after.credential_version) == (
        ConnectionState.REVOKED,
        b"sealed-v1",
        1,
    )
    assert "connection.refresh" not in [e.action for e in await store.audit_list(10)]


async def test_connection_refresh__a_failing_callback_writes_nothing_and_frees_the_lock(
    store: Store,
) -> None:
    await add(store)

    async def broken(current: Connection) -> RefreshOutcome | None:
        raise RuntimeError("token endpoint adapter bug")

    with pytest.raises(RuntimeError, match="adapter bug"):
        await store.connection_refresh("acme", "http", broken, NOW, actor="w1")
    endpoint = TokenEndpoint()
    after = await asyncio.wait_for(
        store.connection_refresh("acme", "http", endpoint, NOW, actor="w1"), 10
    )
    assert (endpoint.calls, after.credential_version) == (1, 2)


async def test_connection_refresh__unknown_connection_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound, match="no http connection"):
        await store.connection_refresh("nobody", "http", TokenEndpoint(), NOW, actor="w1")


def test_refresh_outcome__carries_credentials_or_a_state_never_both() -> None:
    with pytest.raises(ValueError, match="not both"):
        RefreshOutcome()
    with pytest.raises(ValueError, match="not both"):
        RefreshOutcome(ciphertext=b"x", key_id="k", state=ConnectionState.PENDING_REAUTH)
    with pytest.raises(ValueError, match="key_id"):
        RefreshOutcome(ciphertext=b"x")
    with pytest.raises(ValueError, match="cannot make a connection active"):
        RefreshOutcome(state=ConnectionState.ACTIVE)
