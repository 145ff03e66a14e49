"""Recipient hygiene in the dispatcher, against real stores and the real Twilio and
WhatsApp adapters (HTTP faked at the wire, every request counted).

What an operator would see: a message to a suppressed recipient ends ``suppressed``
with no request reaching the provider, no attempt spent, nothing in the dead-letter
queue; another tenant's list never applies; a provider's "unsubscribed" answer
suppresses the recipient for the next message; free-form WhatsApp text outside the
24-hour window ends dead with ``WINDOW_CLOSED`` before the call, templates go.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest
import structlog

from sluice.clock import FrozenClock
from sluice.config import Settings
from sluice.flow.hygiene import Suppression
from sluice.model import NewMessage, Status
from sluice.ops.connections import connection_add
from sluice.providers.twilio import TwilioProvider
from sluice.providers.whatsapp import WhatsAppProvider
from sluice.secrets import SecretBox, generate_key
from sluice.store import MessageFilter, Store
from sluice.store.hygiene import suppress
from sluice.worker import Dispatcher
from sluice.worker.gate import ConnectionGate

NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
KEY = generate_key()
TWILIO = {"account_sid": "AC" + "1" * 32, "auth_token": "tok", "from": "+14155550000"}
META = {"access_token": "EAAG", "phone_number_id": "1555"}


@pytest.fixture(autouse=True)
def _no_connections_left_over(request: pytest.FixtureRequest) -> Iterator[None]:
    # The shared PostgreSQL database keeps sluice_connections between tests (see
    # tests/integration/test_connection_gate.py): empty it around each test here.
    url = request.getfixturevalue("store_url") if "store_url" in request.fixturenames else None
    if url is not None and url.startswith("postgresql"):
        with psycopg.connect(url, autocommit=True) as db:
            db.execute("DELETE FROM sluice_connections")
    yield
    if url is not None and url.startswith("postgresql"):
        with psycopg.connect(url, autocommit=True) as db:
            db.execute("DELETE FROM sluice_connections")


class Wire:
    """Both providers' APIs: counts every request by recipient; answers from a script."""

    def __init__(self, refuse: dict[str, tuple[int, dict[str, object]]] | None = None) -> None:
        self.refuse = refuse or {}
        self.calls: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "api.twilio.com":
            to = dict(httpx.QueryParams(request.content.decode()))["To"]
            answer = httpx.Response(201, json={"sid": f"SM{len(self.calls)}", "status": "queued"})
        else:
            to = json.loads(request.content)["to"]
            answer = httpx.Response(200, json={"messages": [{"id": f"wamid.{len(self.calls)}"}]})
        self.calls.append(to)
        if to in self.refuse:
            status, body = self.refuse[to]
            return httpx.Response(status, json=body)
        return answer


async def connect(store: Store, clock: FrozenClock, *tenants: str) -> None:
    for tenant in tenants:
        for provider, secrets, scopes in (
            ("twilio", TWILIO, []),
            ("whatsapp", META, ["whatsapp_business_messaging"]),
        ):
            await connection_add(
                store, SecretBox(KEY), tenant=tenant, provider=provider, secrets=secrets,
                scopes=scopes, actor="test", clock=clock,
            )  # fmt: skip


async def drain(store: Store, wire: Wire, clock: FrozenClock, **kw: object) -> Dispatcher:
    settings = Settings(
        database_url="sqlite:///unused.db", poll_interval=0.05, flush_interval=0,
        reaper_interval=3600, worker_concurrency=20, **kw,  # type: ignore[arg-type]
    )  # fmt: skip
    gate = ConnectionGate(
        store, SecretBox(KEY), requires_connection=["twilio", "whatsapp"],
        worker_id="w-test", logger=structlog.get_logger(),
    )  # fmt: skip
    async with httpx.AsyncClient(transport=httpx.MockTransport(wire)) as client:
        providers = {
            "twilio": TwilioProvider(client, clock=clock),
            "whatsapp": WhatsAppProvider(client, clock=clock),
        }
        d = Dispatcher(store, providers, settings, clock=clock, worker_id="w-test", gate=gate)
        await d.run(until_idle=True)
    return d


def sms(tenant: str, to: str, **kw: object) -> NewMessage:
    return NewMessage(
        tenant=tenant, channel="sms", provider="twilio", recipient=to,
        payload={"body": "your code is 123456"}, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def whatsapp(tenant: str, to: str, payload: dict[str, object]) -> NewMessage:
    return NewMessage(
        tenant=tenant, channel="whatsapp", provider="whatsapp", recipient=to, payload=payload
    )


def stop(tenant: str, channel: str, recipient: str) -> Suppression:
    return Suppression(tenant, channel, recipient, "stop", "SMinbound", "test", NOW)


async def test_mixed_batch__sent_plus_suppressed_is_everything_and_none_reaches_the_wire(
    store: Store,
) -> None:
    clock = FrozenClock(NOW)
    await connect(store, clock, "acme", "globex")
    stopped = [f"+1415555{n:04d}" for n in range(0, 40, 3)]
    for number in stopped:
        await suppress(store, stop("acme", "sms", number))
    # globex's list never applies to acme, nor acme's to globex.
    await suppress(store, stop("globex", "sms", "+14155550001"))
    numbers = [f"+1415555{n:04d}" for n in range(40)]
    acme = await store.enqueue_many([sms("acme", n) for n in numbers], clock.now())
    globex = await store.enqueue_many([sms("globex", n) for n in stopped], clock.now())
    wire = Wire()

    d = await drain(store, wire, clock)

    everything = [await store.message_get(mid) for mid in acme + globex]
    statuses = [m.status for m in everything]
    sent, suppressed = statuses.count(Status.SENT), statuses.count(Status.SUPPRESSED)
    assert sent + suppressed == len(acme) + len(globex)
    assert suppressed == len(stopped) and d.stats.suppressed == len(stopped)
    # Exactly one request per message sent, none for a suppressed one.
    assert sorted(wire.calls) == sorted(
        [n for n in numbers if n not in stopped] + stopped  # acme's others, all of globex's
    )
    for m in everything:
        if m.status is Status.SUPPRESSED:
            assert m.tenant == "acme" and m.recipient in stopped
            assert (m.attempts, m.last_error_code) == (0, "RECIPIENT_SUPPRESSED")
            assert "suppression list" in (m.last_error or "")
            assert await store.attempt_list(m.id) == []
    assert await store.dlq_groups(MessageFilter()) == []
    listed = await store.message_list(MessageFilter(), "suppressed", None, 100)
    assert len(listed) == len(stopped)


async def test_provider_unsubscribed__suppresses_the_recipient_for_the_next_message(
    store: Store,
) -> None:
    clock = FrozenClock(NOW)
    await connect(store, clock, "acme", "globex")
    wire = Wire({"+14155550100": (400, {"code": 21610, "message": "unsubscribed recipient"})})
    [first] = await store.enqueue_many([sms("acme", "+14155550100")], clock.now())

    await drain(store, wire, clock)
    [second] = await store.enqueue_many([sms("acme", "+14155550100")], clock.now())
    [other] = await store.enqueue_many([sms("globex", "+14155550100")], clock.now())
    await drain(store, wire, clock)

    one, two = await store.message_get(first), await store.message_get(second)
    assert (one.status, one.last_error_code) == (Status.SUPPRESSED, "RECIPIENT_UNSUBSCRIBED")
    assert len(await store.attempt_list(first)) == 1  # the call was made, and is kept
    assert (two.status, two.attempts) == (Status.SUPPRESSED, 0)
    # The first send and globex's (globex never opted out there): two calls, not three.
    assert wire.calls == ["+14155550100", "+14155550100"]
    assert (await store.message_get(other)).last_error_code == "RECIPIENT_UNSUBSCRIBED"
    [entry] = await store.suppression_list("acme", "sms", None, None, 10)
    assert (entry.reason, entry.source, entry.actor) == (
        "provider_error", "twilio:21610", "worker:w-test",
    )  # fmt: skip
    added = [a for a in await store.audit_list(100) if a.action == "suppression.add"]
    assert [a.target for a in added] == ["globex/sms/+14155550100", "acme/sms/+14155550100"]
    assert await store.dlq_groups(MessageFilter()) == []


async def test_whatsapp_window__free_text_stopped_before_the_call_templates_go(
    store: Store,
) -> None:
    clock = FrozenClock(NOW)
    await connect(store, clock, "acme")
    await store.contact_seen("acme", "whatsapp", "+14155550111", NOW - timedelta(hours=2))
    await store.contact_seen("acme", "whatsapp", "+14155550122", NOW - timedelta(hours=25))
    template = {"template": {"name": "order_update", "language": "en"}}
    ids = await store.enqueue_many(
        [
            whatsapp("acme", "+14155550111", {"body": "inside the window"}),
            whatsapp("acme", "14155550111", {"body": "same person, wa_id spelling"}),
            whatsapp("acme", "+14155550122", {"body": "a day and an hour later"}),
            whatsapp("acme", "+14155550133", {"body": "never wrote"}),
            whatsapp("acme", "+14155550133", template),
        ],
        clock.now(),
    )
    wire = Wire()

    await drain(store, wire, clock)

    got = [await store.message_get(mid) for mid in ids]
    assert [m.status for m in got] == [
        Status.SENT, Status.SENT, Status.DEAD, Status.DEAD, Status.SENT,
    ]  # fmt: skip
    for m in got[2:4]:
        assert (m.last_error_code, m.attempts) == ("WINDOW_CLOSED", 0)
        assert "24-hour customer-service window" in (m.last_error or "")
        assert "template" in (m.last_error or "")
    assert sorted(wire.calls) == sorted(["+14155550111", "14155550111", "+14155550133"])
    [group] = await store.dlq_groups(MessageFilter())
    assert (group.error_code, group.count) == ("WINDOW_CLOSED", 2)


async def test_whatsapp_window__off_by_setting_leaves_it_to_the_provider(store: Store) -> None:
    clock = FrozenClock(NOW)
    await connect(store, clock, "acme")
    [mid] = await store.enqueue_many(
        [whatsapp("acme", "+14155550133", {"body": "never wrote"})], clock.now()
    )
    wire = Wire({"+14155550133": (400, {"error": {"code": 131047, "message": "re-engage"}})})

    await drain(store, wire, clock, whatsapp_window=False)

    m = await store.message_get(mid)
    assert (m.status, m.last_error_code, wire.calls) == (
        Status.DEAD, "WINDOW_CLOSED", ["+14155550133"],
    )  # fmt: skip


async def test_state_metrics__suppression_list_sizes_per_medium(store: Store) -> None:
    from sluice.ops.state_metrics import StateMetrics

    await suppress(store, stop("acme", "sms", "+14155550100"))
    await suppress(store, stop("globex", "sms", "+14155550100"))
    await suppress(store, stop("acme", "email", "ann@example.com"))
    state = StateMetrics(store, Settings(database_url="sqlite:///unused.db"))

    await state.refresh(force=True)

    [family] = [f for f in state.collect() if f.name == "sluice_suppressions"]
    assert {s.labels["channel"]: s.value for s in family.samples} == {"sms": 2, "email": 1}


async def test_store_cannot_be_asked__the_batch_goes_back_unsent_then_goes_out(
    sqlite_url: str,
) -> None:
    """The suppression lookup fails (its table is gone): nothing is sent, nothing is
    lost or spent; once the lookup works again every message goes out exactly once."""
    import asyncio
    import sqlite3

    from sluice.store import create_store
    from sluice.store.sqlite import sqlite_path

    store = create_store(sqlite_url)
    await store.open()  # type: ignore[attr-defined]
    try:
        clock = FrozenClock(NOW)
        await connect(store, clock, "acme")
        ids = await store.enqueue_many(
            [sms("acme", f"+141555501{n:02d}") for n in range(10)], clock.now()
        )
        path = sqlite_path(sqlite_url)
        with sqlite3.connect(path) as db:
            db.execute("ALTER TABLE sluice_suppressions RENAME TO sluice_suppressions_away")
        wire = Wire()
        running = asyncio.create_task(drain(store, wire, clock))
        await asyncio.sleep(0.5)

        assert wire.calls == []
        assert {(await store.message_get(i)).status for i in ids} == {Status.QUEUED}
        with sqlite3.connect(path) as db:
            db.execute("ALTER TABLE sluice_suppressions_away RENAME TO sluice_suppressions")
        await asyncio.wait_for(running, 30)

        got = [await store.message_get(i) for i in ids]
        assert [(m.status, m.attempts) for m in got] == [(Status.SENT, 1)] * 10
        assert sorted(wire.calls) == sorted(m.recipient for m in got)
    finally:
        await store.close()
