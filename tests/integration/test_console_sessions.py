"""Console sessions end when they should: after their lifetime, after an idle hour, when
their key is revoked, at logout; a one-time link opens one session, once, in time.
Every test runs on PostgreSQL and SQLite."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sluice.console.sessions import (
    IDLE_TTL,
    SESSION_TTL,
    TICKET_TTL,
    login_link,
    session_end,
    session_from_key,
    session_from_ticket,
    session_viewer,
)
from sluice.errors import ValidationError
from sluice.ops.apikeys import api_key_create, api_key_revoke
from sluice.store import Store
from sluice.store.base import ApiKey

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def keys_of(store: Store):  # type: ignore[no-untyped-def]
    async def key_of(key_id: str) -> ApiKey | None:
        return await store.api_key_get(key_id)

    return key_of


async def test_a_session_lasts_its_lifetime_while_used_then_ends(store: Store) -> None:
    made = await api_key_create(store, "ops", "operator", None, actor="t")
    token, viewer = await session_from_key(store, made.token, "ann", T0)
    assert viewer.actor == "console:ann" and viewer.operator
    at = T0
    while at + timedelta(minutes=50) < T0 + SESSION_TTL:  # used every 50 minutes
        at += timedelta(minutes=50)
        assert await session_viewer(store, token, at, keys_of(store)) is not None
    assert await session_viewer(store, token, T0 + SESSION_TTL, keys_of(store)) is None


async def test_an_idle_session_ends_after_the_idle_time(store: Store) -> None:
    made = await api_key_create(store, "ops", "operator", None, actor="t")
    token, _ = await session_from_key(store, made.token, "", T0)
    almost = T0 + IDLE_TTL - timedelta(seconds=1)
    assert await session_viewer(store, token, almost, keys_of(store)) is not None
    later = almost + IDLE_TTL
    assert await session_viewer(store, token, later, keys_of(store)) is None


async def test_revoking_the_key_or_logging_out_ends_it(store: Store) -> None:
    made = await api_key_create(store, "ops", "operator", None, actor="t")
    a, _ = await session_from_key(store, made.token, "", T0)
    b, _ = await session_from_key(store, made.token, "", T0)
    await session_end(store, a)
    assert await session_viewer(store, a, T0, keys_of(store)) is None
    assert await session_viewer(store, b, T0, keys_of(store)) is not None
    await api_key_revoke(store, made.key.id, actor="t")
    assert await session_viewer(store, b, T0, keys_of(store)) is None


async def test_a_tenant_key_opens_a_tenant_session(store: Store) -> None:
    made = await api_key_create(store, "acme-app", "tenant", "acme", actor="t")
    _, viewer = await session_from_key(store, made.token, "", T0)
    assert (viewer.operator, viewer.tenant, viewer.actor) == (False, "acme", "console:acme-app")
    assert viewer.sees("acme") and not viewer.sees("globex")


@pytest.mark.parametrize(
    "token",
    ["", "sk_", "sk_0123456789abcdef.short", "\ud800", "x" * 10_000,
     "sk_0123456789abcdef." + "A" * 43],
)  # fmt: skip
async def test_a_bad_key_opens_nothing(store: Store, token: str) -> None:
    with pytest.raises(ValidationError, match="key"):
        await session_from_key(store, token, "", T0)


@pytest.mark.parametrize("name", ["two words", "\ud800", "x" * 65, "<script>"])
async def test_a_bad_name_is_refused_and_opens_nothing(store: Store, name: str) -> None:
    made = await api_key_create(store, "ops", "operator", None, actor="t")
    with pytest.raises(ValidationError, match="name"):
        await session_from_key(store, made.token, name, T0)


async def test_a_link_opens_one_session_once_within_its_time(store: Store) -> None:
    made = await api_key_create(store, "run", "operator", None, actor="t")
    first = await login_link(store, made.key, "console:operator", T0)
    _, viewer = await session_from_ticket(store, first, T0 + timedelta(minutes=1))
    assert viewer.actor == "console:operator"
    with pytest.raises(ValidationError, match="used already or has expired"):
        await session_from_ticket(store, first, T0 + timedelta(minutes=2))
    late = await login_link(store, made.key, "console:operator", T0)
    with pytest.raises(ValidationError, match="used already or has expired"):
        await session_from_ticket(store, late, T0 + TICKET_TTL)
    revoked = await login_link(store, made.key, "console:operator", T0)
    await api_key_revoke(store, made.key.id, actor="t")
    with pytest.raises(ValidationError, match="revoked"):
        await session_from_ticket(store, revoked, T0)


async def test_a_link_token_is_not_a_session_cookie(store: Store) -> None:
    made = await api_key_create(store, "run", "operator", None, actor="t")
    ticket = await login_link(store, made.key, "console:operator", T0)
    assert await session_viewer(store, ticket, T0, keys_of(store)) is None
