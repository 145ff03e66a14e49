"""The transactional outbox on the application's own connection, on real databases.

The promise under test: a message enqueued inside the application's transaction exists
exactly when the application's own writes do. Commit: both are there, and a worker can
claim the message. Rollback: neither ever existed. Each way in is covered: psycopg
(sync and async), the standard library's sqlite3, and SQLAlchemy over both.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session, sessionmaker

import sluice
from sluice import (
    ConfigError,
    FrozenClock,
    IdempotencyConflict,
    Message,
    NewMessage,
    NotFound,
    Status,
    ValidationError,
)
from sluice.store import create_store

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


class AppFailure(Exception):
    """Something in the application's own code went wrong mid-transaction."""


# -- helpers ------------------------------------------------------------------------


def new(**kw: Any) -> NewMessage:
    fields: dict[str, Any] = {
        "tenant": "acme",
        "channel": "webhook",
        "provider": "null",
        "recipient": "https://example.test/hook",
        "payload": {"order": "o-1"},
    }
    fields.update(kw)
    return NewMessage(**fields)


def is_pg(url: str) -> bool:
    return url.startswith("postgresql")


def sqlite_file(url: str) -> str:
    return url[len("sqlite:///") :]


def app_connect(url: str) -> Any:
    """The application's own DB-API connection, in its driver's default transaction mode."""
    if is_pg(url):
        return psycopg.connect(url)
    return sqlite3.connect(sqlite_file(url))


@contextlib.contextmanager
def app_connection(url: str) -> Iterator[Any]:
    conn = app_connect(url)
    try:
        yield conn
    finally:
        conn.close()


def place_order(conn: Any, order_id: str, total: int = 100) -> None:
    """The application's own write, on its own connection."""
    mark = "%s" if isinstance(conn, psycopg.Connection) else "?"
    conn.execute(f"INSERT INTO orders (id, total) VALUES ({mark}, {mark})", (order_id, total))


def orders(url: str) -> list[str]:
    """Order ids as a fresh connection sees them."""
    with app_connection(url) as conn:
        rows = conn.execute("SELECT id FROM orders ORDER BY id").fetchall()
    return [r[0] for r in rows]


def message_count(url: str) -> int:
    """Messages as a fresh connection sees them."""
    with app_connection(url) as conn:
        (n,) = conn.execute("SELECT count(*) FROM sluice_messages").fetchone()
    return int(n)


async def stored_async(url: str, message_id: str) -> Message | None:
    """The message as Sluice itself reads it, or None if it does not exist."""
    store = create_store(url)
    await store.open()  # type: ignore[attr-defined]  # both stores have open()
    try:
        return await store.message_get(message_id)
    except NotFound:
        return None
    finally:
        await store.close()


def stored(url: str, message_id: str) -> Message | None:
    return asyncio.run(stored_async(url, message_id))


async def claim(url: str, at: datetime = NOW, limit: int = 2000) -> list[Message]:
    """What a worker gets when it asks the store for work."""
    store = create_store(url)
    await store.open()  # type: ignore[attr-defined]  # both stores have open()
    try:
        return await store.message_claim("worker-1", limit, 30.0, at)
    finally:
        await store.close()


def create_orders_table(url: str) -> None:
    with app_connection(url) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS orders (id text PRIMARY KEY, total integer NOT NULL)"
        )
        conn.execute("DELETE FROM orders")
        conn.commit()


@pytest.fixture
def pg_app(clean_pg_url: str) -> str:
    """A migrated PostgreSQL database with the application's own ``orders`` table, empty."""
    create_orders_table(clean_pg_url)
    return clean_pg_url


@pytest.fixture
def sqlite_app(sqlite_url: str) -> str:
    """A migrated SQLite file with the application's own ``orders`` table."""
    create_orders_table(sqlite_url)
    return sqlite_url


@pytest.fixture(params=["postgres", "sqlite"])
def app_url(request: pytest.FixtureRequest) -> str:
    """The application's database, of each kind in turn."""
    return str(request.getfixturevalue("pg_app" if request.param == "postgres" else "sqlite_app"))


# -- psycopg, sync ------------------------------------------------------------------


def test_enqueue__psycopg_commit_keeps_order_and_message_together(pg_app: str) -> None:
    with psycopg.connect(pg_app) as conn:
        place_order(conn, "o-1")
        mid = sluice.enqueue(conn, new(payload={"order": "o-1"}, priority=3))
        # Not committed yet: nobody else can see either write.
        assert orders(pg_app) == []
        assert message_count(pg_app) == 0
    # Leaving the block committed the transaction.
    assert orders(pg_app) == ["o-1"]
    message = stored(pg_app, mid)
    assert message is not None
    assert message.status is Status.QUEUED
    assert message.payload == {"order": "o-1"}
    assert message.priority == 3


def test_enqueue__psycopg_rolled_back_transaction_leaves_nothing(pg_app: str) -> None:
    with pytest.raises(AppFailure), psycopg.connect(pg_app) as conn:
        place_order(conn, "o-1")
        mid = sluice.enqueue(conn, new())
        raise AppFailure("payment declined")
    assert orders(pg_app) == []
    assert stored(pg_app, mid) is None
    assert message_count(pg_app) == 0


def test_enqueue__psycopg_explicit_rollback_leaves_nothing(pg_app: str) -> None:
    with psycopg.connect(pg_app) as conn:
        place_order(conn, "o-1")
        mid = sluice.enqueue(conn, new())
        conn.rollback()
    assert orders(pg_app) == []
    assert stored(pg_app, mid) is None


@pytest.mark.parametrize("fails", [False, True], ids=["commit", "rollback"])
def test_enqueue__psycopg_transaction_block_on_autocommit_connection(
    pg_app: str, fails: bool
) -> None:
    with (
        psycopg.connect(pg_app, autocommit=True) as conn,
        contextlib.suppress(AppFailure),
        conn.transaction(),
    ):
        place_order(conn, "o-1")
        mid = sluice.enqueue(conn, new())
        if fails:
            raise AppFailure
    assert orders(pg_app) == ([] if fails else ["o-1"])
    assert (stored(pg_app, mid) is None) is fails


@pytest.mark.parametrize("fails", [False, True], ids=["commit", "rollback"])
@pytest.mark.parametrize("keyed", [True, False], ids=["keyed", "copied"])
def test_enqueue_many__psycopg_thousand_messages_in_one_transaction(
    pg_app: str, fails: bool, keyed: bool
) -> None:
    # Without idempotency keys the batch goes in by COPY, inside the caller's transaction.
    batch = [
        new(payload={"order": f"o-{i}"}, idempotency_key=f"order-{i}" if keyed else None)
        for i in range(1000)
    ]
    with psycopg.connect(pg_app) as conn:
        place_order(conn, "o-bulk")
        ids = sluice.enqueue_many(conn, batch)
        assert message_count(pg_app) == 0
        conn.rollback() if fails else conn.commit()
    assert ids == [m.id for m in batch]
    assert message_count(pg_app) == (0 if fails else 1000)
    assert orders(pg_app) == ([] if fails else ["o-bulk"])
    claimed = asyncio.run(claim(pg_app, datetime.now(UTC)))
    assert sorted(m.id for m in claimed) == ([] if fails else sorted(ids))


# -- psycopg, async -----------------------------------------------------------------


async def test_enqueue_async__async_connection_commit_keeps_both(pg_app: str) -> None:
    async with await psycopg.AsyncConnection.connect(pg_app) as aconn:
        await aconn.execute("INSERT INTO orders (id, total) VALUES ('o-1', 100)")
        mid = await sluice.enqueue_async(aconn, new())
        [second] = await sluice.enqueue_many_async(aconn, [new(payload={"order": "o-1b"})])
        assert await stored_async(pg_app, mid) is None
    assert orders(pg_app) == ["o-1"]
    first = await stored_async(pg_app, mid)
    assert first is not None
    assert first.status is Status.QUEUED
    assert await stored_async(pg_app, second) is not None


async def test_enqueue_async__async_connection_rollback_leaves_nothing(pg_app: str) -> None:
    with pytest.raises(AppFailure):
        async with await psycopg.AsyncConnection.connect(pg_app) as aconn:
            await aconn.execute("INSERT INTO orders (id, total) VALUES ('o-1', 100)")
            mid = await sluice.enqueue_async(aconn, new())
            raise AppFailure
    assert orders(pg_app) == []
    assert await stored_async(pg_app, mid) is None
    assert message_count(pg_app) == 0


# -- sqlite3 ------------------------------------------------------------------------


def test_enqueue__sqlite3_commit_keeps_order_and_message_together(sqlite_app: str) -> None:
    conn = sqlite3.connect(sqlite_file(sqlite_app))  # the default, implicit-transaction mode
    try:
        place_order(conn, "o-1")
        mid = sluice.enqueue(conn, new(payload={"order": "o-1"}))
        assert conn.in_transaction
        assert message_count(sqlite_app) == 0
        conn.commit()
    finally:
        conn.close()
    assert orders(sqlite_app) == ["o-1"]
    message = stored(sqlite_app, mid)
    assert message is not None
    assert message.payload == {"order": "o-1"}
    assert message.status is Status.QUEUED


def test_enqueue__sqlite3_rollback_leaves_nothing(sqlite_app: str) -> None:
    conn = sqlite3.connect(sqlite_file(sqlite_app))
    try:
        place_order(conn, "o-1")
        mid = sluice.enqueue(conn, new())
        conn.rollback()
    finally:
        conn.close()
    assert orders(sqlite_app) == []
    assert stored(sqlite_app, mid) is None
    assert message_count(sqlite_app) == 0


def test_enqueue__sqlite3_connection_as_context_manager_rolls_back_on_error(
    sqlite_app: str,
) -> None:
    conn = sqlite3.connect(sqlite_file(sqlite_app))
    try:
        with pytest.raises(AppFailure), conn:
            place_order(conn, "o-1")
            sluice.enqueue(conn, new())
            raise AppFailure
    finally:
        conn.close()
    assert orders(sqlite_app) == []
    assert message_count(sqlite_app) == 0


# -- SQLAlchemy ---------------------------------------------------------------------


def sqlalchemy_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://", 1) if is_pg(url) else url


@pytest.fixture
def engine(app_url: str) -> Iterator[Engine]:
    eng = create_engine(sqlalchemy_url(app_url))
    yield eng
    eng.dispose()


INSERT_ORDER = text("INSERT INTO orders (id, total) VALUES (:id, :total)")


def _in_engine_begin(engine: Engine, fails: bool) -> str:
    with engine.begin() as conn:
        conn.execute(INSERT_ORDER, {"id": "o-1", "total": 100})
        mid = sluice.enqueue(conn, new())
        if fails:
            raise AppFailure
    return mid


def _in_commit_as_you_go(engine: Engine, fails: bool) -> str:
    with engine.connect() as conn:
        conn.execute(INSERT_ORDER, {"id": "o-1", "total": 100})
        mid = sluice.enqueue(conn, new())
        conn.rollback() if fails else conn.commit()
    return mid


def _in_session(engine: Engine, fails: bool) -> str:
    with Session(engine) as session, session.begin():
        session.execute(INSERT_ORDER, {"id": "o-1", "total": 100})
        mid = sluice.enqueue(session, new())
        if fails:
            raise AppFailure
    return mid


def _in_sessionmaker_session(engine: Engine, fails: bool) -> str:
    make_session = sessionmaker(engine)
    with make_session() as session:
        session.execute(INSERT_ORDER, {"id": "o-1", "total": 100})
        [mid] = sluice.enqueue_many(session, [new()])
        session.rollback() if fails else session.commit()
    return mid


@pytest.mark.parametrize(
    "style",
    [_in_engine_begin, _in_commit_as_you_go, _in_session, _in_sessionmaker_session],
    ids=["engine.begin", "commit-as-you-go", "Session.begin", "sessionmaker"],
)
@pytest.mark.parametrize("fails", [False, True], ids=["commit", "rollback"])
def test_enqueue__sqlalchemy_message_shares_the_callers_transaction(
    app_url: str, engine: Engine, style: Any, fails: bool
) -> None:
    mid = ""
    try:
        mid = style(engine, fails)
    except AppFailure:
        assert fails
    else:
        assert mid
    if fails:
        assert orders(app_url) == []
        assert message_count(app_url) == 0
    else:
        assert orders(app_url) == ["o-1"]
        message = stored(app_url, mid)
        assert message is not None
        assert message.status is Status.QUEUED


# -- the worker's view ----------------------------------------------------------------


async def test_enqueue__committed_message_is_claimed_by_a_worker(store_url: str) -> None:
    message = new(
        action="order.created",
        payload={"order": "o-1", "lines": [1, 2]},
        priority=7,
        idempotency_key="order-o-1",
        correlation_id="trace-1",
        scopes=["orders:write"],
    )
    with app_connection(store_url) as conn:
        mid = sluice.enqueue(conn, message, clock=FrozenClock(NOW))
        conn.commit()

    [claimed] = await claim(store_url, NOW)

    assert claimed.id == mid == message.id
    assert (claimed.tenant, claimed.channel, claimed.provider, claimed.action) == (
        "acme",
        "webhook",
        "null",
        "order.created",
    )
    assert claimed.recipient == "https://example.test/hook"
    assert claimed.payload == {"order": "o-1", "lines": [1, 2]}
    assert claimed.priority == 7
    assert claimed.idempotency_key == "order-o-1"
    assert claimed.correlation_id == "trace-1"
    assert claimed.scopes == ["orders:write"]
    assert claimed.attempts == 1
    assert claimed.run_at == NOW
    assert await claim(store_url, NOW) == []  # leased: a second worker does not get it


async def test_enqueue__uncommitted_message_is_invisible_to_workers(pg_app: str) -> None:
    with psycopg.connect(pg_app) as conn:
        mid = sluice.enqueue(conn, new(), clock=FrozenClock(NOW))
        assert await claim(pg_app, NOW) == []
        conn.commit()
        assert [m.id for m in await claim(pg_app, NOW)] == [mid]


async def test_enqueue__rolled_back_message_is_never_claimed(store_url: str) -> None:
    with app_connection(store_url) as conn:
        sluice.enqueue(conn, new(), clock=FrozenClock(NOW))
        conn.rollback()
    assert await claim(store_url, NOW) == []


# -- idempotency through the caller's connection -------------------------------------


def test_enqueue__same_key_and_content_returns_the_first_id(app_url: str) -> None:
    with app_connection(app_url) as conn:
        first = sluice.enqueue(conn, new(idempotency_key="order-o-1", correlation_id="t-1"))
        conn.commit()
        # A retried request: a fresh NewMessage (new id), same content, new trace id.
        again = sluice.enqueue(conn, new(idempotency_key="order-o-1", correlation_id="t-2"))
        conn.commit()
    assert again == first
    assert message_count(app_url) == 1


def test_enqueue__same_key_twice_in_one_transaction_is_one_message(app_url: str) -> None:
    with app_connection(app_url) as conn:
        a = sluice.enqueue(conn, new(idempotency_key="k"))
        b = sluice.enqueue(conn, new(idempotency_key="k"))
        c, d = sluice.enqueue_many(conn, [new(idempotency_key="k2"), new(idempotency_key="k2")])
        conn.commit()
    assert a == b
    assert c == d
    assert message_count(app_url) == 2


def test_enqueue__same_key_in_another_tenant_is_another_message(app_url: str) -> None:
    with app_connection(app_url) as conn:
        a = sluice.enqueue(conn, new(tenant="acme", idempotency_key="k"))
        b = sluice.enqueue(conn, new(tenant="globex", idempotency_key="k"))
        conn.commit()
    assert a != b
    assert message_count(app_url) == 2


def test_enqueue__key_reused_for_other_content_conflicts_and_rolls_back_cleanly(
    app_url: str,
) -> None:
    with app_connection(app_url) as conn:
        place_order(conn, "o-1")
        first = sluice.enqueue(conn, new(idempotency_key="order", payload={"order": "o-1"}))
        conn.commit()

        place_order(conn, "o-2")
        with pytest.raises(IdempotencyConflict) as excinfo:
            sluice.enqueue(conn, new(idempotency_key="order", payload={"order": "o-2"}))
        conn.rollback()

        # The connection is still good for the next transaction.
        place_order(conn, "o-3")
        third = sluice.enqueue(conn, new(idempotency_key="order-3"))
        conn.commit()

    assert excinfo.value.existing_id == first
    assert (excinfo.value.tenant, excinfo.value.key) == ("acme", "order")
    assert orders(app_url) == ["o-1", "o-3"]
    assert message_count(app_url) == 2
    kept = stored(app_url, first)
    assert kept is not None
    assert kept.payload == {"order": "o-1"}
    assert stored(app_url, third) is not None


# -- misuse ---------------------------------------------------------------------------


@pytest.mark.parametrize("thing", [object(), "postgresql://db/app", None])
def test_enqueue__unsupported_connection_names_what_to_pass(thing: Any) -> None:
    for call in (lambda: sluice.enqueue(thing, new()), lambda: sluice.enqueue_many(thing, [new()])):
        with pytest.raises(ConfigError) as excinfo:
            call()
        text_ = str(excinfo.value)
        assert "psycopg Connection" in text_
        assert "sqlite3 Connection" in text_
        assert "SQLAlchemy" in text_


@pytest.mark.parametrize("kind", ["engine", "sessionmaker"])
def test_enqueue__sqlalchemy_engine_is_a_config_error(sqlite_app: str, kind: str) -> None:
    eng = create_engine(sqlite_app)
    try:
        thing = eng if kind == "engine" else sessionmaker(eng)
        with pytest.raises(ConfigError, match="Connection or Session"):
            sluice.enqueue(thing, new())
    finally:
        eng.dispose()


async def test_enqueue__sync_call_on_async_connection_points_to_enqueue_async(pg_app: str) -> None:
    async with await psycopg.AsyncConnection.connect(pg_app) as aconn:
        with pytest.raises(ConfigError, match="enqueue_many_async"):
            sluice.enqueue(aconn, new())


async def test_enqueue_async__on_sync_connection_is_a_config_error(pg_app: str) -> None:
    with psycopg.connect(pg_app) as conn:
        with pytest.raises(ConfigError, match="AsyncConnection"):
            await sluice.enqueue_async(conn, new())
        with pytest.raises(ConfigError, match="AsyncConnection"):
            await sluice.enqueue_many_async(object(), [new()])


def test_enqueue__invalid_message_writes_nothing_even_when_caller_commits(app_url: str) -> None:
    with app_connection(app_url) as conn:
        place_order(conn, "o-1")
        with pytest.raises(ValidationError) as single:
            sluice.enqueue(conn, new(recipient=""))
        with pytest.raises(ValidationError) as batch:
            sluice.enqueue_many(conn, [new(), new(payload={"x": float("nan")}), new()])
        with pytest.raises(ValidationError) as empty:
            sluice.enqueue_many(conn, [])
        conn.commit()
    assert single.value.field == "recipient"
    assert batch.value.field == "messages[1].payload"
    assert empty.value.field == "messages"
    # The application's own write was committed; no message, not even the valid ones.
    assert orders(app_url) == ["o-1"]
    assert message_count(app_url) == 0


def test_enqueue__unknown_provider_or_channel_it_does_not_serve_writes_nothing(
    app_url: str,
) -> None:
    with app_connection(app_url) as conn:
        place_order(conn, "o-1")
        with pytest.raises(ValidationError) as unknown:
            sluice.enqueue_many(conn, [new(), new(), new(provider="twillio")])
        with pytest.raises(ValidationError) as channel:
            sluice.enqueue(conn, new(provider="sendgrid", channel="sms"))
        conn.commit()
    assert unknown.value.field == "messages[2].provider"
    assert "did you mean 'twilio'?" in unknown.value.problem
    assert channel.value.field == "channel"
    assert orders(app_url) == ["o-1"]
    assert message_count(app_url) == 0


def test_enqueue__provider_alias_of_the_sluice_toml_in_effect_is_accepted(
    app_url: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "sluice.toml"
    config.write_text('[providers."twilio-eu"]\nkind = "twilio"\n')
    monkeypatch.setenv("SLUICE_CONFIG", str(config))
    with app_connection(app_url) as conn:
        sluice.enqueue(conn, new(provider="twilio-eu", channel="sms", recipient="+14155550100"))
        conn.commit()
    assert message_count(app_url) == 1


# -- wake-ups (PostgreSQL NOTIFY) ----------------------------------------------------


def fresh_channel() -> str:
    # The producer sends at most one NOTIFY per channel per 0.2 s in a process;
    # a channel of its own keeps each test clear of that.
    return f"notify-{secrets.token_hex(6)}"


@contextlib.contextmanager
def listening(url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(url, autocommit=True) as listener:
        listener.execute("LISTEN sluice_ready")
        yield listener


def received(listener: psycopg.Connection[Any], timeout: float) -> list[tuple[str, str]]:
    return [(n.channel, n.payload) for n in listener.notifies(timeout=timeout, stop_after=1)]


def test_enqueue__notifies_workers_when_the_transaction_commits(pg_app: str) -> None:
    channel = fresh_channel()
    with listening(pg_app) as listener:
        with psycopg.connect(pg_app) as conn:
            sluice.enqueue(conn, new(channel=channel))
            assert received(listener, timeout=0.3) == []  # nothing before the commit
            conn.commit()
        assert received(listener, timeout=5) == [("sluice_ready", channel)]


def test_enqueue__rolled_back_enqueue_notifies_nobody(pg_app: str) -> None:
    channel = fresh_channel()
    with listening(pg_app) as listener:
        with psycopg.connect(pg_app) as conn:
            sluice.enqueue(conn, new(channel=channel))
            conn.rollback()
        assert received(listener, timeout=0.5) == []


async def test_enqueue_async__notifies_workers_when_the_transaction_commits(pg_app: str) -> None:
    channel = fresh_channel()
    with listening(pg_app) as listener:
        async with await psycopg.AsyncConnection.connect(pg_app) as aconn:
            await sluice.enqueue_async(aconn, new(channel=channel))
        assert received(listener, timeout=5) == [("sluice_ready", channel)]
