"""Ingress over HTTP: each provider's real signature scheme, the dedupe ledger, store
before 2xx, and the projector applying receipts and forwarding inbound events."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import pytest
from api_harness import Api
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from standardwebhooks import Webhook

from sluice.config import Settings
from sluice.ingress.config import IngressConfig, IngressSource
from sluice.ingress.projector import Projector
from sluice.model import Attempt, AttemptOutcome, Completion, NewMessage, Status
from sluice.store import Store

TWILIO_TOKEN = "twilio-auth-token-0123456789abcdef"
META_SECRET = "meta-app-secret"
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
SENDGRID_KEY = ec.generate_private_key(ec.SECP256R1())
SENDGRID_PUBLIC = base64.b64encode(
    SENDGRID_KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
).decode()
HOOKS = "https://acme.example.com/hooks"


@pytest.fixture
def ingress_config() -> IngressConfig:
    return IngressConfig(
        sources={
            "twilio": IngressSource(
                "twilio",
                "twilio",
                secrets=("old-token", TWILIO_TOKEN),
                routes={"+15550009999": "acme"},
            ),
            "sendgrid": IngressSource("sendgrid", "sendgrid", public_keys=(SENDGRID_PUBLIC,)),
            "whatsapp": IngressSource(
                "whatsapp",
                "whatsapp",
                secrets=(META_SECRET,),
                verify_token="let-me-in",
                routes={"106540352242922": "acme"},
            ),
            "partner": IngressSource("partner", "webhook", secrets=(WEBHOOK_SECRET,)),
        },
        inbound_urls={"acme": HOOKS},
    )


def projector(api: Api, config: IngressConfig, **kw: object) -> Projector:
    settings = Settings(database_url="sqlite://unused", projector_max_attempts=3, **kw)  # type: ignore[arg-type]
    return Projector(api.store, settings, config, worker_id="p1")


CHANNELS = {"twilio": "sms", "sendgrid": "email", "whatsapp": "whatsapp", "webhook": "webhook",
            "null": "sms"}  # fmt: skip
RECIPIENTS = {"sms": "+15550001111", "whatsapp": "+15550001111", "email": "a@example.com",
              "webhook": "https://hooks.example.com/x"}  # fmt: skip


async def sent_message(
    store: Store, tenant: str = "acme", provider: str = "twilio", provider_message_id: str = "SM1"
) -> str:
    """A message sent through ``provider``, which answered with ``provider_message_id``."""
    channel = CHANNELS[provider]
    (mid,) = await store.enqueue_many(
        [NewMessage(tenant=tenant, channel=channel, provider=provider,
                    recipient=RECIPIENTS[channel])]
    )  # fmt: skip
    now = datetime.now(UTC)
    (claimed,) = await store.message_claim("w1", 1, 30, now)
    attempt = Attempt(mid, 1, "w1", provider, now, now, AttemptOutcome.SENT)
    done = Completion(
        mid, claimed.claim_seq, "w1", Status.SENT, attempt, provider_message_id=provider_message_id
    )
    await store.message_complete_many("w1", [done], now)
    return mid


# -- signing, as each provider does it ------------------------------------------------


def twilio_request(
    fields: dict[str, str], query: str = "", token: str = TWILIO_TOKEN
) -> tuple[str, bytes, dict[str, str]]:
    url = "http://sluice.test/v1/ingress/twilio" + (f"?{query}" if query else "")
    signed = url + "".join(k + v for k, v in sorted(fields.items()))
    sig = base64.b64encode(hmac.new(token.encode(), signed.encode(), hashlib.sha1).digest())
    headers = {
        "X-Twilio-Signature": sig.decode(),
        "content-type": "application/x-www-form-urlencoded",
    }
    return url, urlencode(fields).encode(), headers


def status_callback(mid: str, status: str, **extra: str) -> tuple[str, bytes, dict[str, str]]:
    fields = {"MessageSid": "SM1", "MessageStatus": status, "AccountSid": "AC1", **extra}
    return twilio_request(fields, f"sluice_message_id={mid}")


def sendgrid_request(events: list[dict[str, object]]) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(events).encode()
    ts = str(int(datetime.now(UTC).timestamp()))
    sig = SENDGRID_KEY.sign(ts.encode() + body, ec.ECDSA(hashes.SHA256()))
    return body, {
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(sig).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": ts,
        "content-type": "application/json",
    }


def meta_request(document: dict[str, object]) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(document).encode()
    digest = hmac.new(META_SECRET.encode(), body, hashlib.sha256).hexdigest()
    return body, {"X-Hub-Signature-256": f"sha256={digest}", "content-type": "application/json"}


def standard_request(webhook_id: str, document: dict[str, object]) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(document)
    now = datetime.now(UTC)
    sig = Webhook(WEBHOOK_SECRET).sign(webhook_id, now, body)
    return body.encode(), {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": sig,
        "content-type": "application/json",
    }


async def inbox_size(store: Store) -> int:
    return sum((await store.inbox_counts()).values())


# -- the four schemes end to end ---------------------------------------------------------


async def test_twilio__signed_status_callback_is_stored_then_applied(
    api: Api, ingress_config: IngressConfig
) -> None:
    mid = await sent_message(api.store)
    url, body, headers = status_callback(mid, "delivered")
    r = await api.client.post(url, content=body, headers=headers)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/xml")
    assert await api.store.inbox_counts() == {"pending": 1}  # durable before the 2xx
    await projector(api, ingress_config).drain()
    assert (await api.store.message_get(mid)).status is Status.DELIVERED
    detail = (await api.client.get(f"/v1/messages/{mid}", headers=api.acme)).json()
    assert [x["status"] for x in detail["receipts"]] == ["delivered"]


async def test_twilio__bad_signatures_are_401_and_store_nothing(api: Api) -> None:
    mid = await sent_message(api.store)
    url, body, headers = status_callback(mid, "delivered")
    tampered = body.replace(b"delivered", b"undelivered")
    wrong = twilio_request({"MessageSid": "SM1", "MessageStatus": "delivered"}, token="nope")
    for b, h in ((tampered, headers), (body, {}), (wrong[1], wrong[2])):
        r = await api.client.post(url, content=b, headers=h)
        assert r.status_code == 401, r.text
        assert r.headers["content-type"] == "application/problem+json"
    assert await inbox_size(api.store) == 0


async def test_sendgrid__a_signed_batch_stores_each_event(
    api: Api, ingress_config: IngressConfig
) -> None:
    mid = await sent_message(api.store, provider="sendgrid", provider_message_id="abc")
    base = {"email": "a@example.com", "sg_message_id": "abc.filter1", "sluice_message_id": mid}
    events = [
        {**base, "event": "delivered", "sg_event_id": "ev1", "timestamp": 1_700_000_000},
        {**base, "event": "open", "sg_event_id": "ev2", "timestamp": 1_700_000_100},
        {**base, "event": "click", "sg_event_id": "ev3", "timestamp": 1_700_000_200,
         "url": "https://x.example"},
    ]  # fmt: skip
    body, headers = sendgrid_request(events)
    r = await api.client.post("/v1/ingress/sendgrid", content=body, headers=headers)
    assert r.status_code == 200 and r.json() == {"received": 3, "duplicates": 0}
    again = await api.client.post("/v1/ingress/sendgrid", content=body, headers=headers)
    assert again.json() == {"received": 3, "duplicates": 3}
    await projector(api, ingress_config).drain()
    assert (await api.store.message_get(mid)).status is Status.READ
    # the click is an email event for the tenant: forwarded through the outbox
    (forward,) = await api.store.message_list(
        __import__("sluice.store", fromlist=["MessageFilter"]).MessageFilter(channel="webhook"),
        None, None, 10,
    )  # fmt: skip
    assert (forward.tenant, forward.recipient, forward.action) == (
        "acme",
        HOOKS,
        "inbound.sendgrid",
    )
    bad = dict(headers, **{"X-Twilio-Email-Event-Webhook-Timestamp": "1700000000"})
    stale = await api.client.post("/v1/ingress/sendgrid", content=body, headers=bad)
    assert stale.status_code == 401


async def test_whatsapp__handshake_and_signed_statuses(
    api: Api, ingress_config: IngressConfig
) -> None:
    ok = await api.client.get(
        "/v1/ingress/whatsapp",
        params={"hub.mode": "subscribe", "hub.verify_token": "let-me-in", "hub.challenge": "1158"},
    )
    assert ok.status_code == 200 and ok.text == "1158"
    no = await api.client.get(
        "/v1/ingress/whatsapp",
        params={"hub.mode": "subscribe", "hub.verify_token": "guess", "hub.challenge": "1"},
    )
    assert no.status_code == 403
    mid = await sent_message(api.store, provider="whatsapp", provider_message_id="wamid.1")
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550009999", "phone_number_id": "106540352242922"},
        "statuses": [{"id": "wamid.1", "status": "delivered", "timestamp": "1700000000",
                      "recipient_id": "15550001111", "biz_opaque_callback_data": mid}],
    }  # fmt: skip
    change = {"field": "messages", "value": value}
    document = {"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [change]}]}
    body, headers = meta_request(document)
    r = await api.client.post("/v1/ingress/whatsapp", content=body, headers=headers)
    assert r.status_code == 200 and r.json()["received"] == 1
    forged = await api.client.post("/v1/ingress/whatsapp", content=body + b" ", headers=headers)
    assert forged.status_code == 401
    await projector(api, ingress_config).drain()
    assert (await api.store.message_get(mid)).status is Status.DELIVERED


async def test_standard_webhooks__signed_receipt_and_bad_payload(
    api: Api, ingress_config: IngressConfig
) -> None:
    mid = await sent_message(api.store)
    data = {"message_id": mid, "error_code": "550", "detail": "mailbox unknown"}
    doc = {"type": "message.bounced", "timestamp": "2026-01-01T00:00:00Z", "data": data}
    body, headers = standard_request("msg_1", doc)
    r = await api.client.post("/v1/ingress/partner", content=body, headers=headers)
    assert r.status_code == 200
    await projector(api, ingress_config).drain()
    got = await api.store.message_get(mid)
    assert (got.status, got.last_error_code) == (Status.BOUNCED, "550")
    # validly signed, but not a payload: 400 naming the field, nothing stored
    junk, junk_headers = standard_request("msg_2", {"type": 7})  # type: ignore[dict-item]
    r = await api.client.post("/v1/ingress/partner", content=junk, headers=junk_headers)
    assert r.status_code == 400 and r.json()["field"] == "type"
    assert await inbox_size(api.store) == 1


async def test_unknown_ingress_is_404(api: Api) -> None:
    r = await api.client.post("/v1/ingress/nobody", content=b"{}")
    assert r.status_code == 404


# -- replay, ordering, projector failures ------------------------------------------------


async def test_replay__five_concurrent_deliveries_are_processed_once(
    api: Api, ingress_config: IngressConfig
) -> None:
    mid = await sent_message(api.store)
    email = await sent_message(api.store, provider="sendgrid", provider_message_id="abc")
    requests = [status_callback(mid, "delivered"), status_callback(mid, "read")]
    inbound = twilio_request(
        {"MessageSid": "SMin1", "SmsStatus": "received", "Body": "STOP", "From": "+15551230000",
         "To": "+15550009999"}
    )  # fmt: skip
    sg_body, sg_headers = sendgrid_request(
        [{"event": "delivered", "sg_event_id": "evX", "sluice_message_id": email,
          "sg_message_id": "abc", "timestamp": 1_700_000_000}]
    )  # fmt: skip
    calls = []
    for _ in range(5):
        for url, body, headers in [*requests, inbound]:
            calls.append(api.client.post(url, content=body, headers=headers))
        calls.append(api.client.post("/v1/ingress/sendgrid", content=sg_body, headers=sg_headers))
    replies = await asyncio.gather(*calls)
    assert all(r.status_code == 200 for r in replies), [
        r.text for r in replies if r.status_code != 200
    ]
    assert await api.store.inbox_counts() == {"pending": 4}
    p = projector(api, ingress_config)
    await asyncio.gather(p.drain(), projector(api, ingress_config).drain())
    assert len(await api.store.receipt_list(mid)) == 2
    assert len(await api.store.receipt_list(email)) == 1
    assert (await api.store.message_get(mid)).status is Status.READ
    assert (await api.store.message_get(email)).status is Status.DELIVERED
    from sluice.store import MessageFilter

    forwarded = await api.store.message_list(MessageFilter(channel="webhook"), None, None, 10)
    assert [m.payload["data"]["Body"] for m in forwarded] == ["STOP"]


async def test_receipt_before_the_send_is_written_waits_and_then_applies(
    api: Api, ingress_config: IngressConfig
) -> None:
    (mid,) = await api.store.enqueue_many(
        [NewMessage(tenant="acme", channel="sms", provider="twilio", recipient="+15550001111")]
    )
    url, body, headers = status_callback(mid, "delivered")
    assert (await api.client.post(url, content=body, headers=headers)).status_code == 200
    p = projector(api, ingress_config)
    await p.drain()
    (item,) = await api.store.inbox_list("pending", None, 10)
    assert item.attempts == 1 and "no sending outcome" in (item.last_error or "")
    now = datetime.now(UTC)
    (claimed,) = await api.store.message_claim("w1", 1, 30, now)
    attempt = Attempt(mid, 1, "w1", "twilio", now, now, AttemptOutcome.SENT)
    await api.store.message_complete_many(
        "w1",
        [Completion(mid, claimed.claim_seq, "w1", Status.SENT, attempt, provider_message_id="SM1")],
        now,
    )
    # due again after its backoff
    p.clock = type("Later", (), {"now": staticmethod(lambda: now + timedelta(minutes=10))})()  # type: ignore[assignment]
    await p.drain()
    assert (await api.store.message_get(mid)).status is Status.DELIVERED


async def test_projector__an_unroutable_inbound_event_goes_dead_then_retries(
    api: Api, ingress_config: IngressConfig
) -> None:
    url, body, headers = twilio_request(
        {"MessageSid": "SMin2", "SmsStatus": "received", "Body": "hi", "To": "+19999999999"}
    )
    assert (await api.client.post(url, content=body, headers=headers)).status_code == 200
    p = projector(api, ingress_config)
    later = datetime.now(UTC)
    for _ in range(3):
        later += timedelta(minutes=10)
        p.clock = type("At", (), {"now": staticmethod(lambda t=later: t)})()  # type: ignore[assignment]
        await p.drain()
    (dead,) = await api.store.inbox_list("dead", None, 10)
    assert "no tenant for inbound address '+19999999999'" in (dead.last_error or "")
    r = await api.client.post("/v1/inbox/retry", json={"ids": [dead.id]}, headers=api.ops)
    assert r.status_code == 200 and r.json()["requeued"] == 1
    listed = await api.client.get("/v1/inbox", params={"state": "pending"}, headers=api.ops)
    assert [e["event_id"] for e in listed.json()] == ["SMin2"]


async def test_a_nul_character_from_a_provider_is_stored_replaced(api: Api) -> None:
    doc = {"type": "reply.received", "timestamp": "2026-01-01T00:00:00Z",
           "data": {"text": "a\u0000b"}}  # fmt: skip
    body, headers = standard_request("msg_nul", doc)
    r = await api.client.post("/v1/ingress/partner", content=body, headers=headers)
    assert r.status_code == 200, r.text
    (item,) = await api.store.inbox_list(None, None, 10)
    assert item.data["data"]["text"] == "a\ufffdb"
