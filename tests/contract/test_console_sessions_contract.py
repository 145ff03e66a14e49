"""The Store contract for console sessions and one-time login links (issue 16): every
test runs against PostgreSQL and SQLite."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from sluice.errors import NotFound
from sluice.store import Store
from sluice.store.base import ConsoleSession

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def session(token_hash: str, kind: str = "session", hours: float = 8) -> ConsoleSession:
    return ConsoleSession(
        token_hash=token_hash, kind=kind, key_id="0123456789abcdef", actor="console:ann",
        csrf="c" * 43, created_at=NOW, seen_at=NOW, expires_at=NOW + timedelta(hours=hours),
    )  # fmt: skip


async def test_insert_then_get__keeps_every_field(store: Store) -> None:
    s = session("a" * 64)
    await store.console_session_insert(s)
    assert await store.console_session_get("a" * 64) == s


async def test_get__an_unknown_hash_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.console_session_get("b" * 64)


async def test_touch__moves_seen_at_of_a_session_only(store: Store) -> None:
    await store.console_session_insert(session("s" * 64))
    await store.console_session_insert(session("t" * 64, kind="ticket"))
    later = NOW + timedelta(minutes=5)
    await store.console_session_touch("s" * 64, later)
    await store.console_session_touch("t" * 64, later)
    assert (await store.console_session_get("s" * 64)).seen_at == later
    assert (await store.console_session_get("t" * 64)).seen_at == NOW


async def test_take__returns_it_once_then_none(store: Store) -> None:
    s = session("t" * 64, kind="ticket")
    await store.console_session_insert(s)
    assert await store.console_session_take("t" * 64) == s
    assert await store.console_session_take("t" * 64) is None
    with pytest.raises(NotFound):
        await store.console_session_get("t" * 64)


async def test_take__two_at_once_get_one_ticket_between_them(store: Store) -> None:
    await store.console_session_insert(session("t" * 64, kind="ticket"))
    got = await asyncio.gather(*(store.console_session_take("t" * 64) for _ in range(5)))
    assert sum(g is not None for g in got) == 1


async def test_purge__deletes_what_expired_and_keeps_the_rest(store: Store) -> None:
    await store.console_session_insert(session("o" * 64, hours=1))
    await store.console_session_insert(session("n" * 64, hours=9))
    assert await store.console_session_purge(NOW + timedelta(hours=1)) == 1
    assert (await store.console_session_get("n" * 64)).token_hash == "n" * 64
    with pytest.raises(NotFound):
        await store.console_session_get("o" * 64)
