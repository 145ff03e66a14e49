"""``Idempotency-Key`` when the database fails in the middle of a request.

The failure is real: a trigger on the key records fires when the request records its
response. On PostgreSQL it terminates the request's own server connection
(``pg_terminate_backend``), as a database restart or a network cut would; SQLite has
no connection to cut, so its trigger makes the write fail. What the client must see
after a retry, whatever the moment of the failure: one message, never two.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import psycopg
import pytest
from api_harness import bearer

from sluice.api import create_app
from sluice.clock import FrozenClock
from sluice.config import Settings
from sluice.ops.apikeys import api_key_create
from sluice.store import MessageFilter, Store
from sluice.store.sqlite import sqlite_path

SMS = {"channel": "sms", "provider": "null", "recipient": "+15550001111", "payload": {"n": 1}}

_PG_FAIL = """
CREATE OR REPLACE FUNCTION sluice_test_connection_dies() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_terminate_backend(pg_backend_pid());
    PERFORM pg_sleep(5);  -- never reached: the backend is gone at the line above
    RETURN NULL;
END $$
"""
#: (trigger name, the statement it fails): recording the response, giving the key back.
_WRITES = {
    "finish": ("sluice_test_fail_finish", "UPDATE", "NEW.state = 'done'"),
    "release": ("sluice_test_fail_release", "DELETE", "OLD.state = 'running'"),
}


@dataclass
class Client:
    http: httpx.AsyncClient
    store: Store
    clock: FrozenClock
    headers: dict[str, str]

    async def post(self, key: str = "order-7") -> httpx.Response:
        return await self.http.post(
            "/v1/messages", json=SMS, headers={**self.headers, "Idempotency-Key": key}
        )

    async def messages(self) -> int:
        return len(await self.store.message_list(MessageFilter(tenant="acme"), None, None, 100))


@pytest.fixture
async def client(store: Store, store_url: str) -> AsyncIterator[Client]:
    clock = FrozenClock()
    settings = Settings(database_url=store_url, idempotency_lock=60)
    app = create_app(settings, store=store, clock=clock)
    key = await api_key_create(store, "shop", "tenant", "acme", actor="test")
    # raise_app_exceptions=False: a failure is answered the way a real server answers it.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://sluice.test") as http:
        yield Client(http, store, clock, bearer(key.token))


@contextmanager
def failing(store_url: str, *writes: str) -> Iterator[None]:
    """The database fails each of ``writes`` to the key records while inside."""
    if store_url.startswith("sqlite"):
        db = sqlite3.connect(sqlite_path(store_url), isolation_level=None)
        try:
            for write in writes:
                name, op, when = _WRITES[write]
                db.execute(
                    f"CREATE TRIGGER {name} BEFORE {op} ON sluice_idempotency WHEN {when} "
                    "BEGIN SELECT RAISE(ABORT, 'the disk went away'); END"
                )
            yield
        finally:
            for write in writes:
                db.execute(f"DROP TRIGGER IF EXISTS {_WRITES[write][0]}")
            db.close()
        return
    with psycopg.connect(store_url, autocommit=True) as db:
        db.execute(_PG_FAIL)
        try:
            for write in writes:
                name, op, when = _WRITES[write]
                db.execute(
                    f"CREATE TRIGGER {name} BEFORE {op} ON sluice_idempotency FOR EACH ROW "
                    f"WHEN ({when}) EXECUTE FUNCTION sluice_test_connection_dies()"
                )
            yield
        finally:
            for write in writes:
                db.execute(f"DROP TRIGGER IF EXISTS {_WRITES[write][0]} ON sluice_idempotency")
            db.execute("DROP FUNCTION sluice_test_connection_dies()")


async def test_idempotency__a_request_that_fails_as_it_records_its_response_stores_nothing(
    client: Client, store_url: str
) -> None:
    with failing(store_url, "finish"):
        failed = await client.post()
    assert failed.status_code in (500, 503), failed.text
    assert await client.messages() == 0  # the messages went with the record

    retried = await client.post()
    again = await client.post()

    assert retried.status_code == 201, retried.text
    assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    assert again.json() == retried.json()
    assert await client.messages() == 1


async def test_idempotency__a_key_the_failure_left_running_is_taken_over_without_a_second_message(
    client: Client, store_url: str
) -> None:
    # The database also fails the request's attempt to give its key back: the key stays
    # "running" until its lock runs out, as when the server is down for a while.
    with failing(store_url, "finish", "release"):
        failed = await client.post()
    assert failed.status_code in (500, 503), failed.text

    early = await client.post()
    client.clock.advance(61)
    late = await client.post()
    replayed = await client.post()

    assert early.status_code == 409 and early.headers["retry-after"] == "1"
    assert late.status_code == 201, late.text
    assert replayed.json() == late.json()
    assert await client.messages() == 1
