"""OAuth 2.0 token refresh, single-flight: across processes on PostgreSQL, and in the worker.

The cross-process test starts real worker-like processes, each with its own store, its
own ``Refresher`` and the real ``http`` provider, against a token endpoint served by a
local HTTP server that counts what it receives. The dispatcher tests drive the real
dispatcher, gate, refresher and provider on both stores, the wire faked with
``httpx.MockTransport``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import httpx
import structlog

from sluice.actions import ActionSpec
from sluice.clock import FrozenClock, SystemClock
from sluice.config import Settings
from sluice.connections import ConnectionState
from sluice.model import NewMessage, Status
from sluice.netguard import static_resolver
from sluice.ops.connections import connection_add, connection_rotate
from sluice.providers.http_action import HttpActionProvider
from sluice.secrets import SecretBox, generate_key
from sluice.store import Store, create_store
from sluice.worker import Dispatcher
from sluice.worker.gate import ConnectionGate
from sluice.worker.refresh import Refresher

KEY = generate_key()
NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
TOKEN_URL = "https://auth.example/oauth/token"
ACTION = ActionSpec(
    name="calendar.create_event",
    method="POST",
    url="https://api.example/calendars/{recipient}/events",
    body={"summary": "{payload.title}"},
    scopes=("calendar.events.write",),
)


# -- across processes (PostgreSQL) --------------------------------------------------


class TokenServer:
    """A token endpoint on 127.0.0.1 that answers slowly and counts every request."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.requests: list[dict[str, list[str]]] = []
        self.answered_at: list[float] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # the http.server hook name
                length = int(self.headers.get("content-length", 0))
                form = parse_qs(self.rfile.read(length).decode())
                with server._lock:
                    server.requests.append(form)
                    n = len(server.requests)
                time.sleep(server.delay)  # the first refresher holds the lock meanwhile
                body = json.dumps(
                    {
                        "access_token": f"at-new-{n}",
                        "token_type": "Bearer",
                        "expires_in": 3600,
                        "refresh_token": f"rt-new-{n}",
                    }
                ).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                with server._lock:
                    server.answered_at.append(time.time())

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/oauth/token"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> TokenServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


#: One refresher process: opens its own store, says "ready", waits for "go", refreshes.
REFRESHER_PROCESS = textwrap.dedent(
    """
    import asyncio, json, sys, time
    import httpx
    from sluice.clock import SystemClock
    from sluice.providers.http_action import HttpActionProvider
    from sluice.secrets import SecretBox
    from sluice.store import create_store
    from sluice.worker.refresh import Refresher

    url, key, name = sys.argv[1:4]

    async def main():
        store = create_store(url)
        await store.open()
        box = SecretBox(key)
        async with httpx.AsyncClient() as client:
            provider = HttpActionProvider(client, {}, timeout=10, allow_loopback=True)
            refresher = Refresher(store, box, {"http": provider}, worker_id=name)
            conn = await store.connection_get("acme", "http")
            plain = box.decrypt(conn.ciphertext, conn.key_id, conn.id, conn.tenant, conn.provider)
            print("ready", flush=True)
            sys.stdin.readline()
            started = time.time()
            fresh = await refresher.ensure_fresh(conn, plain, SystemClock().now())
            print(json.dumps({
                "started": started,
                "access_token": fresh.credentials["access_token"],
                "refresh_token": fresh.credentials["refresh_token"],
                "version": fresh.connection.credential_version,
                "refresh_calls": refresher.refresh_calls,
            }), flush=True)
        await store.close()

    asyncio.run(main())
    """
)


def start_refreshers(url: str, n: int) -> Iterator[subprocess.Popen[str]]:
    for i in range(n):
        yield subprocess.Popen(
            [sys.executable, "-c", REFRESHER_PROCESS, url, KEY, f"proc-{i}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )


async def test_refresh__single_flight_across_processes_on_postgres(clean_pg_url: str) -> None:
    store = create_store(clean_pg_url)
    await store.open()  # type: ignore[attr-defined]
    box = SecretBox(KEY)
    with TokenServer(delay=1.0) as server:
        try:
            await connection_add(
                store, box, tenant="acme", provider="http",
                secrets={"access_token": "at-old", "refresh_token": "rt-old",
                         "token_url": server.url, "client_id": "cid", "client_secret": "sec"},
                scopes=["calendar.events.write"],
                expires_at=SystemClock().now() + timedelta(seconds=60),  # inside the margin
                actor="test",
            )  # fmt: skip
            procs = list(start_refreshers(clean_pg_url, 4))
            try:
                for p in procs:  # every process is up, its store open, its row read
                    assert p.stdout is not None and p.stdout.readline().strip() == "ready"
                for p in procs:
                    assert p.stdin is not None
                    p.stdin.write("go\n")
                    p.stdin.flush()
                # The last line is the result; structlog may have printed before it.
                results = [json.loads(p.communicate(timeout=60)[0].splitlines()[-1]) for p in procs]
            finally:
                for p in procs:
                    p.kill() if p.poll() is None else None
            assert [p.returncode for p in procs] == [0, 0, 0, 0]
            # Exactly one call reached the token endpoint ...
            assert len(server.requests) == 1
            assert server.requests[0]["refresh_token"] == ["rt-old"]
            assert sum(r["refresh_calls"] for r in results) == 1
            # ... while all four were asking at once (each started before it was answered) ...
            assert max(r["started"] for r in results) < server.answered_at[0]
            # ... and every process ended up with the one new token and refresh token.
            assert {(r["access_token"], r["refresh_token"], r["version"]) for r in results} == {
                ("at-new-1", "rt-new-1", 2)
            }
            conn = await store.connection_get("acme", "http")  # type: ignore[attr-defined]
            plain = box.decrypt(conn.ciphertext, conn.key_id, conn.id, "acme", "http")
            assert (plain["access_token"], plain["refresh_token"]) == ("at-new-1", "rt-new-1")
            assert conn.expires_at is not None
            assert conn.expires_at > SystemClock().now() + timedelta(minutes=55)
            actions = [e.action for e in await store.audit_list(20)]
            assert actions.count("connection.refresh") == 1
        finally:
            await store.close()


# -- in the worker: dispatcher, gate, refresher, provider -----------------------------


class Apis:
    """The token endpoint and the action API behind one ``MockTransport``."""

    def __init__(self, token_answers: list[httpx.Response]) -> None:
        self.token_answers = token_answers
        self.token_requests: list[httpx.Request] = []
        self.action_requests: list[httpx.Request] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        if request.url.host == "auth.example":
            self.token_requests.append(request)
            n = len(self.token_requests)
            return self.token_answers[min(n, len(self.token_answers)) - 1]
        self.action_requests.append(request)
        return httpx.Response(201, json={"id": f"evt-{len(self.action_requests)}"})

    @property
    def bearers(self) -> set[str]:
        return {r.headers["authorization"] for r in self.action_requests}


def token(access: str, expires_in: int = 3600, **more: Any) -> httpx.Response:
    return httpx.Response(200, json={"access_token": access, "expires_in": expires_in, **more})


def settings() -> Settings:
    return Settings(
        database_url="sqlite:///unused.db",
        poll_interval=0.05,
        flush_interval=0,
        reaper_interval=3600,
        worker_concurrency=20,
    )


async def drain(store: Store, apis: Apis, clock: FrozenClock) -> Refresher:
    box = SecretBox(KEY)
    log = structlog.get_logger("test")
    async with httpx.AsyncClient(transport=httpx.MockTransport(apis)) as client:
        # The APIs are made-up host names; the SSRF guard gets a public address for them.
        provider = HttpActionProvider(
            client, {ACTION.name: ACTION}, clock=clock, resolve=static_resolver("93.184.216.34")
        )
        providers = {"http": provider}
        refresher = Refresher(store, box, providers, clock=clock, worker_id="w-test")
        gate = ConnectionGate(
            store,
            box,
            requires_connection=["http"],
            worker_id="w-test",
            logger=log,
            refresher=refresher,
            providers=providers,
        )
        dispatcher = Dispatcher(
            store, providers, settings(), clock=clock, worker_id="w-test", gate=gate
        )
        await dispatcher.run(until_idle=True)
        return refresher


async def connect(
    store: Store, clock: FrozenClock, *, expires_in: float = 60, scopes: list[str] | None = None
) -> None:
    await connection_add(
        store, SecretBox(KEY), tenant="acme", provider="http",
        secrets={"access_token": "at-old", "refresh_token": "rt-old", "token_url": TOKEN_URL,
                 "client_id": "cid", "client_secret": "sec"},
        scopes=["calendar.events.write"] if scopes is None else scopes,
        expires_at=clock.now() + timedelta(seconds=expires_in),
        actor="test", clock=clock,
    )  # fmt: skip


async def enqueue(store: Store, clock: FrozenClock, n: int) -> list[str]:
    return await store.enqueue_many(
        [
            NewMessage(
                tenant="acme",
                channel="calendar",
                provider="http",
                recipient="team@acme.example",
                action=ACTION.name,
                payload={"title": f"meeting {i}"},
            )
            for i in range(n)
        ],
        clock.now(),
    )


async def test_worker__expiring_token_is_refreshed_once_and_the_action_gets_the_new_one(
    store: Store,
) -> None:
    clock = FrozenClock(NOW)
    await connect(store, clock, expires_in=60)  # inside the 300 s margin
    ids = await enqueue(store, clock, 10)
    apis = Apis([token("at-new", refresh_token="rt-new")])
    refresher = await drain(store, apis, clock)
    assert len(apis.token_requests) == 1
    assert refresher.refresh_calls == 1
    assert len(apis.action_requests) == 10
    assert apis.bearers == {"Bearer at-new"}
    assert {(await store.message_get(i)).status for i in ids} == {Status.SENT}
    conn = await store.connection_get("acme", "http")  # type: ignore[attr-defined]
    assert (conn.credential_version, conn.expires_at) == (2, NOW + timedelta(hours=1))
    plain = SecretBox(KEY).decrypt(conn.ciphertext, conn.key_id, conn.id, "acme", "http")
    assert plain["refresh_token"] == "rt-new"
    # The next worker run finds the token fresh and does not refresh again.
    await enqueue(store, clock, 2)
    await drain(store, apis, clock)
    assert len(apis.token_requests) == 1
    assert len(apis.action_requests) == 12


async def test_worker__token_shorter_lived_than_the_margin_is_not_refreshed_per_send(
    store: Store,
) -> None:
    clock = FrozenClock(NOW)
    await connect(store, clock, expires_in=60)
    await enqueue(store, clock, 3)
    apis = Apis([token("at-2", expires_in=120), token("at-3", expires_in=120)])
    await drain(store, apis, clock)
    clock.advance(30)  # 90 s left: inside the 300 s margin, but not half-way through
    await enqueue(store, clock, 3)
    await drain(store, apis, clock)
    assert len(apis.token_requests) == 1
    assert apis.bearers == {"Bearer at-2"}
    clock.advance(31)  # past half its lifetime: now it is refreshed
    await enqueue(store, clock, 1)
    await drain(store, apis, clock)
    assert len(apis.token_requests) == 2
    assert apis.action_requests[-1].headers["authorization"] == "Bearer at-3"


async def test_worker__token_far_from_expiry_is_not_refreshed(store: Store) -> None:
    clock = FrozenClock(NOW)
    await connect(store, clock, expires_in=3600)
    await enqueue(store, clock, 3)
    apis = Apis([token("at-new")])
    await drain(store, apis, clock)
    assert apis.token_requests == []
    assert apis.bearers == {"Bearer at-old"}


async def test_worker__invalid_grant_moves_the_connection_to_pending_reauth_and_holds(
    store: Store,
) -> None:
    clock = FrozenClock(NOW)
    await connect(store, clock, expires_in=60)
    ids = await enqueue(store, clock, 5)
    apis = Apis([httpx.Response(400, json={"error": "invalid_grant"})])
    await drain(store, apis, clock)
    assert len(apis.token_requests) == 1  # one refusal is enough for every message
    assert apis.action_requests == []  # nothing was sent with a token about to die
    conn = await store.connection_get("acme", "http")  # type: ignore[attr-defined]
    assert conn.state is ConnectionState.PENDING_REAUTH
    assert "invalid_grant" in (conn.state_reason or "")
    for mid in ids:
        m = await store.message_get(mid)
        assert (m.status, m.attempts) == (Status.HELD, 0)
        assert (m.hold_reason or "").startswith("connection: pending_reauth")
    report = await store.status_report(clock.now())
    assert report.dead == []  # nothing in the dead-letter queue
    assert report.counts.get("dead", 0) == 0
    actions = [e.action for e in await store.audit_list(20)]
    assert actions.count("connection.pending_reauth") == 1
    # Re-consent: new credentials release the held messages, which go out once each.
    await connection_rotate(
        store, SecretBox(KEY), tenant="acme", provider="http",
        secrets={"access_token": "at-consented", "refresh_token": "rt-2", "token_url": TOKEN_URL},
        scopes=None, expires_at=clock.now() + timedelta(hours=1), actor="ops", clock=clock,
    )  # fmt: skip
    await drain(store, apis, clock)
    assert len(apis.token_requests) == 1
    assert len(apis.action_requests) == 5
    assert apis.bearers == {"Bearer at-consented"}
    assert {(await store.message_get(i)).status for i in ids} == {Status.SENT}


async def test_worker__token_endpoint_outage_uses_the_token_while_it_is_valid(
    store: Store,
) -> None:
    clock = FrozenClock(NOW)
    await connect(store, clock, expires_in=60)  # still valid for a minute
    ids = await enqueue(store, clock, 5)
    apis = Apis([httpx.Response(503)])
    await drain(store, apis, clock)
    assert len(apis.token_requests) == 1  # backed off: not one call per message
    assert apis.bearers == {"Bearer at-old"}
    assert {(await store.message_get(i)).status for i in ids} == {Status.SENT}
    conn = await store.connection_get("acme", "http")  # type: ignore[attr-defined]
    assert (conn.state, conn.credential_version) == (ConnectionState.ACTIVE, 1)


async def test_worker__expired_token_during_an_outage_defers_without_spending_attempts(
    store: Store,
) -> None:
    clock = FrozenClock(NOW)
    await connect(store, clock, expires_in=-10)  # already expired
    ids = await enqueue(store, clock, 3)
    apis = Apis([httpx.Response(503), token("at-new")])
    await drain(store, apis, clock)
    assert apis.action_requests == []
    for mid in ids:
        m = await store.message_get(mid)
        assert (m.status, m.attempts, m.last_error_code) == (
            Status.QUEUED,
            0,
            "PROVIDER_UNAVAILABLE",
        )
    conn = await store.connection_get("acme", "http")  # type: ignore[attr-defined]
    assert conn.state is ConnectionState.ACTIVE  # a blip is not a reason to re-consent
    clock.advance(120)  # past the backoff and the deferral: the endpoint is back
    await drain(store, apis, clock)
    assert len(apis.token_requests) == 2
    assert apis.bearers == {"Bearer at-new"}
    assert {(await store.message_get(i)).status for i in ids} == {Status.SENT}


async def test_worker__connection_without_the_actions_scope_holds_before_any_call(
    store: Store,
) -> None:
    clock = FrozenClock(NOW)
    await connect(store, clock, expires_in=60, scopes=["calendar.read"])
    [mid] = await enqueue(store, clock, 1)
    apis = Apis([token("at-new")])
    await drain(store, apis, clock)
    assert apis.token_requests == [] and apis.action_requests == []
    m = await store.message_get(mid)
    assert m.status is Status.HELD
    assert "scope not granted: calendar.events.write" in (m.hold_reason or "")
