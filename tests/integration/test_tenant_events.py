"""Operational events to tenants (issue 14), every kind, through a real dispatcher on
both stores: the receivers are faked at the wire (``httpx.MockTransport``) and every
event's Standard Webhooks signature is verified with the tenant's own secret. A tenant
never receives another's events, a tenant without an events URL gets nothing, and events
about event deliveries are never sent."""

from __future__ import annotations

import base64
import json
import os
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import structlog
from standardwebhooks.webhooks import Webhook

from sluice.actions import ActionSpec
from sluice.clock import FrozenClock
from sluice.config import Settings
from sluice.errors import ValidationError
from sluice.flow.limits import parse_limits
from sluice.model import NewMessage, Status
from sluice.netguard import static_resolver
from sluice.ops.connections import connection_add, connection_check
from sluice.ops.endpoints import endpoint_enable
from sluice.ops.tenant_events import (
    emit_tenant_event,
    events_url_clear,
    events_url_get,
    events_url_set,
)
from sluice.providers.http_action import HttpActionProvider
from sluice.providers.webhook import TenantEventsProvider, WebhookProvider
from sluice.secrets import SecretBox, generate_key
from sluice.store import MessageFilter, Store
from sluice.store.canaries import CANARY_ACTION
from sluice.store.tenant_events import dead_digest
from sluice.worker import Dispatcher
from sluice.worker.gate import ConnectionGate
from sluice.worker.limits import Limiter
from sluice.worker.refresh import Refresher

KEY = generate_key()
SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()
PUBLIC = static_resolver("93.184.216.34")
EVENTS = {"acme": "https://events.acme.example/in", "globex": "https://events.globex.example/in"}
ACTION = ActionSpec(name="crm.update", method="POST", url="https://crm.example/api/{recipient}")
HOUR = 3600.0


class Wire:
    """Every request any message makes. Event receivers answer ``events_status``; other
    hosts what ``answers`` says for their host (200 by default), or for the path's last
    part (``/api/r401``: 401)."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.answers: dict[str, int] = {}
        self.events_status = 200

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.host.startswith("events."):
            return httpx.Response(self.events_status)
        last = request.url.path.rsplit("/", 1)[-1]
        if last.startswith("r") and last[1:].isdigit():
            return httpx.Response(int(last[1:]))
        return httpx.Response(self.answers.get(request.url.host, 200))

    def events(self, tenant: str, secret: str) -> list[dict[str, Any]]:
        """The events that reached ``tenant``'s URL, each signature verified."""
        out = []
        for r in self.requests:
            if str(r.url) != EVENTS[tenant]:
                continue
            body = Webhook(secret).verify(r.content, dict(r.headers))  # raises if forged
            assert body == json.loads(r.content)
            assert body["tenant"] == tenant and body["data"]["tenant"] == tenant
            out.append(body)
        return out


def settings(**kw: Any) -> Settings:
    base: dict[str, Any] = {
        "database_url": "sqlite:///unused.db", "poll_interval": 0.02, "flush_interval": 0,
        "reaper_interval": 3600, "worker_concurrency": 10, "retry_base": 60,
        "retry_cap": HOUR, "breaker_min_volume": 10_000, "max_defer_age": 30 * 86400.0,
    }  # fmt: skip
    return Settings(**{**base, **kw})


async def drain(
    store: Store, wire: Wire, clock: FrozenClock, limits: list[dict[str, Any]] | None = None,
    **kw: Any,
) -> None:  # fmt: skip
    s = settings(**kw)
    box = SecretBox(KEY)
    log = structlog.get_logger("test")
    async with httpx.AsyncClient(transport=httpx.MockTransport(wire)) as client:
        providers: dict[str, Any] = {
            "webhook": WebhookProvider(client, SECRET, resolve=PUBLIC),
            "sluice_events": TenantEventsProvider(client, resolve=PUBLIC),
            "http": HttpActionProvider(client, {ACTION.name: ACTION}, resolve=PUBLIC),
        }
        refresher = Refresher(store, box, providers, clock=clock, worker_id="w")
        gate = ConnectionGate(store, box, requires_connection=["sluice_events", "http"],
                              worker_id="w", logger=log, providers=providers,
                              refresher=refresher)  # fmt: skip
        limiter = Limiter(store, s, parse_limits(limits or []), clock=clock, logger=log,
                          worker_id="w", shared_clock=clock)  # fmt: skip
        d = Dispatcher(store, providers, s, clock=clock, worker_id="w", gate=gate,
                       limiter=limiter, logger=log)  # fmt: skip
        await d.run(until_idle=True)


async def tenants(store: Store, clock: FrozenClock) -> dict[str, str]:
    """Both tenants' events URLs set; their secrets (made by Sluice, shown once)."""
    secrets = {}
    for tenant, url in EVENTS.items():
        done = await events_url_set(store, SecretBox(KEY), tenant=tenant, url=url,
                                    actor="op", clock=clock)  # fmt: skip
        assert done.secret is not None and done.events_url == url
        secrets[tenant] = done.secret
    return secrets


def hook(url: str, tenant: str = "acme", **kw: Any) -> NewMessage:
    return NewMessage(tenant=tenant, channel="webhook", provider="webhook", recipient=url,
                      payload={}, **kw)  # fmt: skip


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(datetime.now(UTC))


async def test_endpoint_disabled_and_recovered__told_to_its_tenant_only(
    store: Store, clock: FrozenClock
) -> None:
    secrets = await tenants(store, clock)
    wire = Wire()
    wire.answers["dead.example"] = 503
    dead = "https://dead.example/hook"
    first = await store.enqueue_many([hook(dead, max_attempts=50)], clock.now())
    await drain(store, wire, clock, endpoint_disable_after=HOUR)
    clock.advance(2 * HOUR)
    second = await store.enqueue_many([hook(dead)], clock.now())
    await drain(store, wire, clock, endpoint_disable_after=HOUR)  # disables it at the end
    clock.advance(60)
    await drain(store, wire, clock, endpoint_disable_after=HOUR)  # holds, sends the event
    assert {(await store.message_get(i)).status for i in first + second} == {Status.HELD}
    [event] = wire.events("acme", secrets["acme"])
    assert event["type"] == "endpoint.disabled"
    assert event["data"]["endpoint"] == dead and event["data"]["state"] == "disabled"
    assert "failing without a success since" in event["data"]["reason"]

    [row] = [e for e in await store.endpoint_list(tenant="acme") if e.endpoint == dead]
    wire.answers["dead.example"] = 200
    await endpoint_enable(store, row.id, actor="op", clock=clock)
    await drain(store, wire, clock, endpoint_disable_after=HOUR)
    kinds = [e["type"] for e in wire.events("acme", secrets["acme"])]
    assert kinds == ["endpoint.disabled", "endpoint.recovered"]
    assert wire.events("globex", secrets["globex"]) == []  # never about another tenant


async def test_message_dead__one_digest_a_minute_per_tenant_listing_its_ids(
    store: Store, clock: FrozenClock
) -> None:
    secrets = await tenants(store, clock)
    wire = Wire()
    wire.answers["gone.example"] = 410  # ENDPOINT_GONE: dead at once
    acme = await store.enqueue_many([hook("https://gone.example/a") for _ in range(3)],
                                    clock.now())  # fmt: skip
    globex = await store.enqueue_many([hook("https://gone.example/b", "globex")], clock.now())
    await drain(store, wire, clock)
    assert {(await store.message_get(i)).status for i in acme + globex} == {Status.DEAD}
    assert wire.events("acme", secrets["acme"]) == []  # not a minute since the last digest
    clock.advance(120)
    await drain(store, wire, clock)  # the digest is enqueued at its end
    await drain(store, wire, clock)
    [a] = wire.events("acme", secrets["acme"])
    [g] = wire.events("globex", secrets["globex"])
    assert a["type"] == g["type"] == "message.dead"
    assert sorted(a["data"]["message_ids"]) == sorted(acme) and a["data"]["count"] == 3
    assert g["data"]["message_ids"] == globex
    # More dead messages within the minute wait for the next digest.
    more = await store.enqueue_many([hook("https://gone.example/a")], clock.now())
    await drain(store, wire, clock)
    assert await dead_digest(store, clock.now()) == {}
    clock.advance(61)
    sent = await dead_digest(store, clock.now())
    assert set(sent) == {"acme"}
    await drain(store, wire, clock)
    assert wire.events("acme", secrets["acme"])[-1]["data"]["message_ids"] == more


async def test_connection_states__pending_reauth_and_needs_reconsent(
    store: Store, clock: FrozenClock
) -> None:
    secrets = await tenants(store, clock)
    for tenant in ("acme", "globex"):
        await connection_add(store, SecretBox(KEY), tenant=tenant, provider="http",
                             secrets={"access_token": "t"}, scopes=[], actor="op",
                             clock=clock)  # fmt: skip
    wire = Wire()
    messages = [
        NewMessage(tenant="acme", channel="crm", provider="http", recipient="r401",
                   action=ACTION.name, payload={}),
        NewMessage(tenant="globex", channel="crm", provider="http", recipient="r403",
                   action=ACTION.name, payload={}),
    ]  # fmt: skip
    await store.enqueue_many(messages, clock.now())
    await drain(store, wire, clock)
    await drain(store, wire, clock)
    [a] = wire.events("acme", secrets["acme"])
    [g] = wire.events("globex", secrets["globex"])
    assert (a["type"], a["data"]["provider"]) == ("connection.pending_reauth", "http")
    assert (g["type"], g["data"]["state"]) == ("connection.needs_reconsent", "needs_reconsent")


async def test_quota_threshold__70_85_95_percent(store: Store, clock: FrozenClock) -> None:
    secrets = await tenants(store, clock)
    wire = Wire()
    # A quota on all of acme's messages: its events spend none of it (all 20 go).
    quota = [{"kind": "quota", "tenant": "acme", "limit": 20, "window": "1d"}]
    await store.enqueue_many([hook(f"https://ok.example/{i}") for i in range(20)], clock.now())
    await drain(store, wire, clock, quota)
    await drain(store, wire, clock, quota)
    events = wire.events("acme", secrets["acme"])
    assert [e["type"] for e in events] == ["quota.threshold"] * 3
    assert sorted(e["data"]["used_pct"] for e in events) == [70, 85, 95]
    assert await store.message_select(Status.QUEUED, MessageFilter()) == []
    assert wire.events("globex", secrets["globex"]) == []


async def test_suppression_added__and_no_events_url_no_message(
    store: Store, clock: FrozenClock
) -> None:
    secrets = await tenants(store, clock)
    wire = Wire()
    data = {"channel": "sms", "recipient": "+14155550100", "reason": "STOP"}
    mid = await emit_tenant_event(store, "acme", "suppression.added", data, now=clock.now())
    assert mid is not None
    assert await emit_tenant_event(store, "initech", "suppression.added", data) is None
    await events_url_clear(store, tenant="globex", actor="op", clock=clock)
    assert await emit_tenant_event(store, "globex", "suppression.added", data) is None
    with pytest.raises(ValidationError) as err:
        await emit_tenant_event(store, "acme", "made.up", data)
    assert err.value.field == "kind"
    await drain(store, wire, clock)
    [event] = wire.events("acme", secrets["acme"])
    assert event["type"] == "suppression.added" and event["data"]["recipient"] == data["recipient"]
    # Nothing was enqueued for the tenants without an events URL.
    sent = await store.message_select(Status.SENT, MessageFilter())
    tenants_seen = Counter([(await store.message_get(i)).tenant for i in sent])
    assert tenants_seen == {"acme": 1}


async def test_no_loops__event_deliveries_are_never_the_subject_of_events(
    store: Store, clock: FrozenClock
) -> None:
    secrets = await tenants(store, clock)
    wire = Wire()
    wire.events_status = 503  # acme's events receiver is down for good
    await emit_tenant_event(store, "acme", "suppression.added", {"x": 1}, now=clock.now())
    for _ in range(4):
        await drain(store, wire, clock, endpoint_disable_after=HOUR)
        clock.advance(HOUR)
    [row] = await store.endpoint_list(tenant="acme")
    assert row.endpoint == EVENTS["acme"] and row.state == "disabled"
    # Its disabling was not announced to itself (and nothing else was enqueued).
    events = await store.message_select(Status.HELD, MessageFilter(provider="sluice_events"))
    assert len(events) == 1
    # A dead event is not reported as message.dead.
    wire.events_status = 410
    await endpoint_enable(store, row.id, actor="op", clock=clock)
    await drain(store, wire, clock)
    clock.advance(120)
    assert await dead_digest(store, clock.now()) == {}
    assert secrets  # both set; neither received anything
    assert all(r.url.host != "events.globex.example" for r in wire.requests)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"url": "http://events.acme.example/in"}, "events_url"),
        ({"url": "https://127.0.0.1/in"}, "events_url"),
        ({"url": "https://10.0.0.8/in"}, "events_url"),
        ({"url": "https://169.254.169.254/latest"}, "events_url"),
        ({"url": "ftp://events.acme.example/"}, "events_url"),
        ({"url": ""}, "events_url"),
        ({"url": "https://x.example/" + "a" * 3000}, "events_url"),
        ({"tenant": ""}, "tenant"),
        ({"tenant": "bad\ud800"}, "tenant"),
        ({"tenant": "x" * 200}, "tenant"),
        ({"secret": "not-a-secret"}, "secret"),
        ({"secret": "whsec_!!!"}, "secret"),
    ],
)
async def test_set__bad_input_names_the_field_and_changes_nothing(
    store: Store, kwargs: dict[str, str], field: str
) -> None:
    args: dict[str, Any] = {"tenant": "acme", "url": EVENTS["acme"], **kwargs}
    with pytest.raises(ValidationError) as err:
        await events_url_set(store, SecretBox(KEY), actor="op", **args)
    assert err.value.field == field
    assert await events_url_get(store) == []
    assert await store.connection_list("acme", "sluice_events") == []


async def test_clear__a_tenant_without_an_events_url_is_refused_by_name(store: Store) -> None:
    with pytest.raises(ValidationError) as err:
        await events_url_clear(store, tenant="nobody", actor="op")
    assert err.value.field == "tenant"


async def test_set__keeps_the_secret_unless_given_and_audits_without_it(
    store: Store, clock: FrozenClock
) -> None:
    box = SecretBox(KEY)
    first = await events_url_set(store, box, tenant="acme", url=EVENTS["acme"], actor="op")
    again = await events_url_set(store, box, tenant="acme", url=EVENTS["acme"] + "2", actor="op")
    assert first.secret is not None and again.secret is None  # kept, not shown again
    mine = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    given = await events_url_set(store, box, tenant="acme", url=EVENTS["acme"], secret=mine,
                                 actor="op")  # fmt: skip
    assert given.secret is None
    conn = await store.connection_get("acme", "sluice_events")
    assert box.decrypt(conn.ciphertext, conn.key_id, conn.id, "acme", "sluice_events") == {
        "secret": mine
    }
    text = json.dumps([e.detail for e in await store.audit_list()])
    assert mine not in text and first.secret not in text


async def test_connections_check__a_refused_token_tells_the_tenant(
    store: Store, clock: FrozenClock
) -> None:
    secrets = await tenants(store, clock)
    box = SecretBox(KEY)
    creds = {"access_token": "t", "check_url": "https://crm.example/me/r401"}
    conn = await connection_add(store, box, tenant="acme", provider="http", secrets=creds,
                                scopes=[], actor="op", clock=clock)  # fmt: skip
    wire = Wire()
    async with httpx.AsyncClient(transport=httpx.MockTransport(wire)) as client:
        provider = HttpActionProvider(client, {}, resolve=PUBLIC)
        report = await connection_check(store, box, provider, conn, clock=clock)
    assert not report.ok
    assert (await store.connection_get("acme", "http")).state.value == "pending_reauth"
    await drain(store, wire, clock)
    [event] = wire.events("acme", secrets["acme"])
    assert event["type"] == "connection.pending_reauth"
    assert event["data"]["reason"].startswith("connections check:")
    assert wire.events("globex", secrets["globex"]) == []


async def test_token_refresh_refused__tells_the_tenant(store: Store, clock: FrozenClock) -> None:
    secrets = await tenants(store, clock)
    creds = {"access_token": "old", "refresh_token": "rt", "client_id": "c",
             "client_secret": "s", "token_url": "https://auth.example/token/r400"}  # fmt: skip
    await connection_add(store, SecretBox(KEY), tenant="globex", provider="http",
                         secrets=creds, scopes=[], actor="op", clock=clock,
                         expires_at=clock.now() + timedelta(seconds=30))  # fmt: skip
    wire = Wire()
    message = NewMessage(tenant="globex", channel="crm", provider="http", recipient="ok",
                         action=ACTION.name, payload={})  # fmt: skip
    [mid] = await store.enqueue_many([message], clock.now())
    await drain(store, wire, clock)
    await drain(store, wire, clock)
    assert (await store.message_get(mid)).status is Status.HELD
    [event] = wire.events("globex", secrets["globex"])
    assert (event["type"], event["data"]["provider"]) == ("connection.pending_reauth", "http")
    assert "token refresh failed" in event["data"]["reason"]
    assert wire.events("acme", secrets["acme"]) == []


async def test_a_new_suppression_tells_its_tenant_once(store: Store, clock: FrozenClock) -> None:
    """Whoever suppresses a recipient (ingress, a worker, an operator: all through
    ``store.hygiene.suppress``), the tenant hears ``suppression.added`` once; a repeated
    STOP tells nobody again, and no other tenant hears of it."""
    from sluice.flow.hygiene import Suppression
    from sluice.store.hygiene import suppress

    secrets = await tenants(store, clock)
    wire = Wire()
    s = Suppression(
        tenant="acme", channel="sms", recipient="+14155550100", reason="stop",
        source="SM123", actor="ingress:twilio", created_at=clock.now(),
    )  # fmt: skip
    assert await suppress(store, s) is True
    assert await suppress(store, s) is False  # already suppressed: nothing, nobody told
    await drain(store, wire, clock)
    [event] = wire.events("acme", secrets["acme"])
    assert event["type"] == "suppression.added"
    assert event["data"] == {
        "tenant": "acme", "channel": "sms", "recipient": "+14155550100", "reason": "stop",
        "source": "SM123", "created_at": s.created_at.isoformat(),
    }  # fmt: skip
    assert wire.events("globex", secrets["globex"]) == []


async def test_dead_digest__leaves_out_canaries_sent_with_the_tenants_connection(
    store: Store, clock: FrozenClock
) -> None:
    # Canaries (issue 15) are Sluice's own checks, not the tenant's messages.
    secrets = await tenants(store, clock)
    wire = Wire()
    wire.answers["gone.example"] = 410
    (mine,) = await store.enqueue_many([hook("https://gone.example/a")], clock.now())
    await store.enqueue_many([hook("https://gone.example/c", action=CANARY_ACTION)], clock.now())
    await drain(store, wire, clock)
    clock.advance(120)
    await drain(store, wire, clock)
    await drain(store, wire, clock)

    [event] = wire.events("acme", secrets["acme"])
    assert event["data"]["message_ids"] == [mine]
