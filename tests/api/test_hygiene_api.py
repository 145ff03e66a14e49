"""Recipient hygiene end to end over HTTP: signed provider webhooks in, the projector, then
the dispatcher sending (the providers' APIs faked at the wire), and /v1/suppressions.

What a tenant and an operator see: STOP suppresses and START lifts, for that tenant only;
a bounce or a spam complaint suppresses an address; a WhatsApp user who wrote opens the
24-hour window for free-form text; another tenant's list never applies and never shows.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import psycopg
import pytest
import structlog
from api_harness import Api
from test_ingress_api import (
    HOOKS,
    META_SECRET,
    SENDGRID_PUBLIC,
    TWILIO_TOKEN,
    meta_request,
    projector,
    sendgrid_request,
    sent_message,
    twilio_request,
)

from sluice.clock import FrozenClock
from sluice.config import Settings
from sluice.ingress.config import IngressConfig, IngressSource
from sluice.model import NewMessage, Status
from sluice.ops.connections import connection_add
from sluice.providers.whatsapp import WhatsAppProvider
from sluice.secrets import SecretBox, generate_key
from sluice.store import Store
from sluice.worker import Dispatcher
from sluice.worker.gate import ConnectionGate

KEY = generate_key()
OUR_NUMBER = "+15550009999"  # routed to acme in the ingress config
PHONE_ID = "106540352242922"  # acme's WhatsApp phone number id


@pytest.fixture
def ingress_config() -> IngressConfig:
    """Acme's number and WhatsApp phone id routed to acme, which has an inbound_url."""
    return IngressConfig(
        sources={
            "twilio": IngressSource("twilio", "twilio", secrets=(TWILIO_TOKEN,),
                                    routes={OUR_NUMBER: "acme"}),
            "sendgrid": IngressSource("sendgrid", "sendgrid", public_keys=(SENDGRID_PUBLIC,)),
            "whatsapp": IngressSource("whatsapp", "whatsapp", secrets=(META_SECRET,),
                                      routes={PHONE_ID: "acme"}),
        },
        inbound_urls={"acme": HOOKS},
    )  # fmt: skip


@pytest.fixture(autouse=True)
def _no_connections_left_over(request: pytest.FixtureRequest) -> Iterator[None]:
    url = request.getfixturevalue("store_url")
    if url.startswith("postgresql"):
        with psycopg.connect(url, autocommit=True) as db:
            db.execute("DELETE FROM sluice_connections")
    yield
    if url.startswith("postgresql"):
        with psycopg.connect(url, autocommit=True) as db:
            db.execute("DELETE FROM sluice_connections")


async def inbound_sms(api: Api, sid: str, sender: str, body: str, **extra: str) -> None:
    fields = {"MessageSid": sid, "From": sender, "To": OUR_NUMBER, "Body": body,
              "AccountSid": "AC1", **extra}  # fmt: skip
    url, content, headers = twilio_request(fields)
    r = await api.client.post(url, content=content, headers=headers)
    assert r.status_code == 200, r.text


async def inbound_whatsapp(api: Api, wamid: str, sender: str, text: str) -> None:
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550009999", "phone_number_id": PHONE_ID},
        "contacts": [{"profile": {"name": "Ann"}, "wa_id": sender}],
        "messages": [{"from": sender, "id": wamid, "type": "text", "text": {"body": text},
                      "timestamp": str(int(datetime.now(UTC).timestamp()))}],
    }  # fmt: skip
    change = {"field": "messages", "value": value}
    body, headers = meta_request(
        {"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [change]}]}
    )
    r = await api.client.post("/v1/ingress/whatsapp", content=body, headers=headers)
    assert r.status_code == 200, r.text


async def listed(api: Api, headers: dict[str, str], **params: str) -> dict[str, object]:
    r = await api.client.get("/v1/suppressions", params=params, headers=headers)
    assert r.status_code == 200, r.text
    body: dict[str, object] = r.json()
    return body


async def test_stop_then_start__round_trip_for_that_tenant_only(
    api: Api, ingress_config: IngressConfig
) -> None:
    await api.store.suppression_put(  # another tenant's entry for the same number
        *_other_entry()
    )
    await inbound_sms(api, "SMstop", "+14155550100", "  Stop ")
    await projector(api, ingress_config).drain()

    page = await listed(api, api.acme)
    assert page["count"] == 1 and page["next_cursor"] is None
    [item] = page["items"]  # type: ignore[misc]
    assert (item["tenant"], item["channel"], item["recipient"], item["reason"]) == (
        "acme", "sms", "+14155550100", "stop",
    )  # fmt: skip
    assert (item["source"], item["actor"]) == ("SMstop", "ingress:twilio")

    await inbound_sms(api, "SMhello", "+14155550100", "please stop the noise, thanks")
    await inbound_sms(api, "SMstart", "+14155550100", "START")
    await projector(api, ingress_config).drain()

    assert (await listed(api, api.acme))["count"] == 0
    # globex's entry is untouched, and never shown to acme.
    assert (await listed(api, api.ops, tenant="globex"))["count"] == 1
    actions = [(a.action, a.actor) for a in await api.store.audit_list(100)]
    assert ("suppression.add", "ingress:twilio") in actions
    assert ("suppression.remove", "ingress:twilio") in actions
    # Every inbound message is still forwarded to the tenant, keywords included.
    forwarded = await api.store.message_list(
        __import__("sluice.store", fromlist=["MessageFilter"]).MessageFilter(channel="webhook"),
        None, None, 10,
    )  # fmt: skip
    assert len(forwarded) == 3


async def test_twilio_opt_out_type__counts_as_stop(api: Api, ingress_config: IngressConfig) -> None:
    await inbound_sms(api, "SMx", "whatsapp:+14155550100", "arrêtez", OptOutType="STOP")
    await projector(api, ingress_config).drain()

    [item] = (await listed(api, api.ops, tenant="acme"))["items"]  # type: ignore[misc]
    assert (item["channel"], item["recipient"], item["reason"]) == (
        "whatsapp", "+14155550100", "opt_out",
    )  # fmt: skip


async def test_hostile_senders__change_nothing(api: Api, ingress_config: IngressConfig) -> None:
    await inbound_sms(api, "SM1", "+1" + "5" * 5000, "STOP")
    await inbound_sms(api, "SM2", "not a number", "STOP")
    await projector(api, ingress_config).drain()

    assert (await listed(api, api.ops))["count"] == 0
    assert (await api.store.inbox_counts()).get("done") == 2


async def test_sendgrid__hard_bounce_and_complaint_suppress_soft_bounce_does_not(
    api: Api, ingress_config: IngressConfig
) -> None:
    mid = await sent_message(api.store, provider="sendgrid", provider_message_id="abc")
    base = {"sg_message_id": "abc.filter1", "sluice_message_id": mid, "timestamp": 1_700_000_000}
    events = [
        {**base, "event": "bounce", "type": "blocked", "email": "soft@example.com",
         "sg_event_id": "e1", "status": "4.7.1"},
        {**base, "event": "bounce", "type": "bounce", "email": "A@Example.com",
         "sg_event_id": "e2", "status": "5.1.1"},
        {**base, "event": "spamreport", "email": "b@example.com", "sg_event_id": "e3"},
        {**base, "event": "group_unsubscribe", "email": "c@example.com", "sg_event_id": "e4",
         "asm_group_id": 7},
    ]  # fmt: skip
    body, headers = sendgrid_request(events)
    assert (await api.client.post("/v1/ingress/sendgrid", content=body, headers=headers)).is_success
    await projector(api, ingress_config).drain()

    items = (await listed(api, api.ops, tenant="acme", channel="email"))["items"]
    assert {(i["recipient"], i["reason"], i["source"]) for i in items} == {  # type: ignore[index,union-attr]
        ("a@example.com", "bounce", "e2"),
        ("b@example.com", "spamreport", "e3"),
        ("c@example.com", "group_unsubscribe", "e4"),
    }


async def test_whatsapp_window__opened_by_a_real_inbound_message(
    api: Api, ingress_config: IngressConfig
) -> None:
    await inbound_whatsapp(api, "wamid.in1", "14155550100", "hi, where is my order?")
    await projector(api, ingress_config).drain()
    clock = FrozenClock(datetime.now(UTC))
    await connection_add(
        api.store, SecretBox(KEY), tenant="acme", provider="whatsapp",
        secrets={"access_token": "EAAG", "phone_number_id": PHONE_ID},
        scopes=["whatsapp_business_messaging"], actor="test", clock=clock,
    )  # fmt: skip
    ids = await api.store.enqueue_many(
        [
            NewMessage(tenant="acme", channel="whatsapp", provider="whatsapp",
                       recipient=to, payload={"body": "on its way"})
            for to in ("+14155550100", "+14155550199")  # wrote / never wrote
        ],
        clock.now(),
    )  # fmt: skip
    calls: list[str] = []

    def wire(request: httpx.Request) -> httpx.Response:
        calls.append(json.loads(request.content)["to"])
        return httpx.Response(200, json={"messages": [{"id": f"wamid.out{len(calls)}"}]})

    await _drain(api.store, wire, clock)

    wrote, never = [await api.store.message_get(mid) for mid in ids]
    assert wrote.status is Status.SENT
    assert (never.status, never.last_error_code) == (Status.DEAD, "WINDOW_CLOSED")
    assert calls == ["+14155550100"]


async def test_api__add_list_remove_with_tenant_scoping(api: Api) -> None:
    add = {"channel": "sms", "recipient": "+14155550100", "reason": "asked by phone"}
    mine = await api.client.post("/v1/suppressions", json=add, headers=api.acme)
    again = await api.client.post("/v1/suppressions", json=add, headers=api.acme)
    theirs = await api.client.post("/v1/suppressions", json={**add, "tenant": "acme"},
                                   headers=api.other)  # fmt: skip
    ops = await api.client.post("/v1/suppressions", json={**add, "tenant": "other"},
                                headers=api.ops)  # fmt: skip
    no_tenant = await api.client.post("/v1/suppressions", json=add, headers=api.ops)

    assert mine.status_code == 200 and mine.json()["created"] is True
    assert mine.json()["suppression"]["actor"] == "api:acme-app"
    assert again.json()["created"] is False
    assert theirs.status_code == 422 and "tenant" in theirs.text
    assert ops.status_code == 200 and ops.json()["suppression"]["tenant"] == "other"
    assert no_tenant.status_code == 422
    assert [i["tenant"] for i in (await listed(api, api.other))["items"]] == ["other"]  # type: ignore[index,union-attr]
    snoop = await api.client.get("/v1/suppressions", params={"tenant": "acme"}, headers=api.other)
    assert snoop.status_code == 422

    gone = await api.client.delete(
        "/v1/suppressions", params={"channel": "sms", "recipient": "+14155550100"},
        headers=api.acme,
    )  # fmt: skip
    twice = await api.client.delete(
        "/v1/suppressions", params={"channel": "sms", "recipient": "+14155550100"},
        headers=api.acme,
    )  # fmt: skip
    assert gone.status_code == 200 and gone.json()["recipient"] == "+14155550100"
    assert twice.status_code == 404
    assert (await listed(api, api.ops))["count"] == 1  # other's entry stays


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"channel": "sms", "recipient": "\ud800"}, "recipient"),
        ({"channel": "sms", "recipient": "+1" + "4" * 3000}, "recipient"),
        ({"channel": "sms", "recipient": "+14155550100", "reason": "x" * 501}, "reason"),
        ({"channel": "fax", "recipient": "+14155550100"}, "channel"),
        ({"channel": "email", "recipient": "ann at example.com"}, "recipient"),
        ({"channel": "sms", "recipient": "+14155550100", "extra": 1}, "extra"),
    ],
)
async def test_api__bad_input_is_refused_by_field_and_changes_nothing(
    api: Api, body: dict[str, object], field: str
) -> None:
    r = await api.client.post(
        "/v1/suppressions", content=json.dumps(body).encode(), headers=api.acme
        | {"content-type": "application/json"},
    )  # fmt: skip
    assert r.status_code == 422, r.text
    assert field in r.text
    assert (await listed(api, api.ops))["count"] == 0
    assert not [a for a in await api.store.audit_list(100) if a.action.startswith("suppression")]


async def test_api__pages_with_a_cursor_and_refuses_a_forged_one(api: Api) -> None:
    for n in range(5):
        add = {"channel": "sms", "recipient": f"+1415555010{n}"}
        assert (await api.client.post("/v1/suppressions", json=add, headers=api.acme)).is_success
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "2"} | ({"cursor": cursor} if cursor else {})
        page = await listed(api, api.acme, **params)
        seen += [i["recipient"] for i in page["items"]]  # type: ignore[union-attr,index]
        cursor = page["next_cursor"]  # type: ignore[assignment]
        if cursor is None:
            break
    assert seen == [f"+1415555010{n}" for n in range(5)]
    bad = await api.client.get("/v1/suppressions", params={"cursor": "%%%"}, headers=api.acme)
    assert bad.status_code == 422 and "cursor" in bad.text


def _other_entry() -> tuple[object, object]:
    from sluice.flow.hygiene import Suppression
    from sluice.model import AuditEntry

    now = datetime.now(UTC)
    entry = Suppression("globex", "sms", "+14155550100", "stop", "SMg", "test", now)
    return entry, AuditEntry(at=now, actor="test", action="suppression.add")


async def _drain(store: Store, wire: object, clock: FrozenClock) -> Dispatcher:
    settings = Settings(database_url="sqlite:///unused.db", poll_interval=0.05,
                        flush_interval=0, reaper_interval=3600)  # fmt: skip
    gate = ConnectionGate(store, SecretBox(KEY), requires_connection=["whatsapp"],
                          worker_id="w", logger=structlog.get_logger())  # fmt: skip
    async with httpx.AsyncClient(transport=httpx.MockTransport(wire)) as client:  # type: ignore[arg-type]
        d = Dispatcher(store, {"whatsapp": WhatsAppProvider(client, clock=clock)}, settings,
                       clock=clock, worker_id="w", gate=gate)  # fmt: skip
        await d.run(until_idle=True)
    return d


async def test_opt_out_receipts__suppress_the_messages_recipient(
    api: Api, ingress_config: IngressConfig
) -> None:
    sms = await sent_message(api.store, provider="twilio", provider_message_id="SM1")
    wa = await sent_message(api.store, provider="whatsapp", provider_message_id="wamid.9")
    fields = {"MessageSid": "SM1", "MessageStatus": "undelivered", "ErrorCode": "21610",
              "AccountSid": "AC1"}  # fmt: skip
    url, content, headers = twilio_request(fields, f"sluice_message_id={sms}")
    assert (await api.client.post(url, content=content, headers=headers)).is_success
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550009999", "phone_number_id": PHONE_ID},
        "statuses": [{"id": "wamid.9", "status": "failed", "timestamp": "1700000000",
                      "recipient_id": "15550001111", "biz_opaque_callback_data": wa,
                      "errors": [{"code": 131050, "title": "stopped marketing"}]}],
    }  # fmt: skip
    body, headers = meta_request(
        {"object": "whatsapp_business_account",
         "entry": [{"id": "1", "changes": [{"field": "messages", "value": value}]}]}
    )  # fmt: skip
    assert (await api.client.post("/v1/ingress/whatsapp", content=body, headers=headers)).is_success

    await projector(api, ingress_config).drain()

    items = (await listed(api, api.ops, tenant="acme"))["items"]
    assert {(i["channel"], i["recipient"], i["reason"]) for i in items} == {  # type: ignore[index,union-attr]
        ("sms", "+15550001111", "provider_error"),
        ("whatsapp", "+15550001111", "provider_error"),
    }


async def test_a_stop_retried_after_a_later_start__is_not_applied_again(
    api: Api, ingress_config: IngressConfig
) -> None:
    from dataclasses import replace
    from datetime import timedelta

    from sluice.ingress.projector import Projector

    no_url = replace(ingress_config, inbound_urls={})  # forwarding waits: events retried
    settings = Settings(database_url="sqlite://unused", projector_max_attempts=5)

    await inbound_sms(api, "SMstop", "+14155550100", "STOP")
    clock = FrozenClock(datetime.now(UTC) + timedelta(seconds=1))  # ingress used real time
    p = Projector(api.store, settings, no_url, worker_id="p1", clock=clock)
    await p.drain()  # applied, then put back: no inbound_url
    assert (await listed(api, api.acme))["count"] == 1
    await inbound_sms(api, "SMstart", "+14155550100", "START")
    clock.advance(2)
    await p.drain()  # the START lifts it; the STOP, if due again, is not re-applied
    assert (await listed(api, api.acme))["count"] == 0
    clock.advance(timedelta(minutes=10).total_seconds())
    await p.drain()  # both tried again: neither keyword is applied a second time

    assert (await listed(api, api.acme))["count"] == 0
