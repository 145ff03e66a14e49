"""Ingress under attack: a poisoned event cannot fail its neighbours, an event cannot
touch a message of a tenant its source does not speak for, and replays are keyed on what
the provider signed.

Each test here reproduces an attack from the outside review (issue 10, items 1-3) over
the real HTTP handler and the real store of each kind.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime
from urllib.parse import urlencode

import pytest
from api_harness import Api
from standardwebhooks import Webhook
from test_ingress_api import CHANNELS, RECIPIENTS

from sluice.api.ingress import InboxWriter
from sluice.config import Settings
from sluice.ingress.config import IngressConfig, IngressSource
from sluice.ingress.projector import Projector
from sluice.model import Attempt, AttemptOutcome, Completion, NewMessage, Status
from sluice.store import MessageFilter, Store
from sluice.store.base import InboxItem

ACME_TOKEN = "acme-twilio-auth-token-000000000001"
GLOBEX_TOKEN = "globex-twilio-auth-token-00000000002"
PLATFORM_TOKEN = "platform-twilio-auth-token-000000003"
ACME_WHSEC = "whsec_" + base64.b64encode(b"a" * 32).decode()
OPEN_WHSEC = "whsec_" + base64.b64encode(b"o" * 32).decode()
HOOKS = {"acme": "https://acme.example.com/in", "globex": "https://globex.example.com/in"}


@pytest.fixture
def ingress_config() -> IngressConfig:
    return IngressConfig(
        sources={
            # Per-tenant Twilio accounts: each auth token speaks for its own tenant.
            "twilio": IngressSource(
                "twilio",
                "twilio",
                tenant_secrets={"acme": (ACME_TOKEN,), "globex": (GLOBEX_TOKEN,)},
                routes={"+15550000001": "acme", "+15550000002": "globex"},
            ),
            # The operator's own Twilio account, shared by every tenant.
            "twilio-shared": IngressSource("twilio-shared", "twilio", secrets=(PLATFORM_TOKEN,)),
            # A partner of acme's, signing with Standard Webhooks.
            "acme-partner": IngressSource(
                "acme-partner", "webhook", secrets=(ACME_WHSEC,), tenant="acme"
            ),
            "open-partner": IngressSource("open-partner", "webhook", secrets=(OPEN_WHSEC,)),
        },
        inbound_urls=HOOKS,
    )


def projector(api: Api, config: IngressConfig) -> Projector:
    settings = Settings(database_url="sqlite://unused", projector_max_attempts=3)
    kinds = {"twilio": "twilio", "sendgrid": "sendgrid", "null": "null", "webhook": "webhook"}
    return Projector(api.store, settings, config, worker_id="p1", provider_kinds=kinds)


async def sent(store: Store, tenant: str, provider: str = "twilio", sid: str = "SM1") -> str:
    channel = CHANNELS[provider]
    (mid,) = await store.enqueue_many(
        [
            NewMessage(
                tenant=tenant, channel=channel, provider=provider, recipient=RECIPIENTS[channel]
            )
        ]
    )
    now = datetime.now(UTC)
    (claimed,) = await store.message_claim("w1", 1, 30, now)
    attempt = Attempt(mid, 1, "w1", provider, now, now, AttemptOutcome.SENT)
    done = Completion(mid, claimed.claim_seq, "w1", Status.SENT, attempt, provider_message_id=sid)
    await store.message_complete_many("w1", [done], now)
    return mid


def twilio(
    fields: dict[str, str], token: str, query: str = "", source: str = "twilio", **headers: str
) -> tuple[str, bytes, dict[str, str]]:
    url = f"http://sluice.test/v1/ingress/{source}" + (f"?{query}" if query else "")
    signed = url + "".join(k + v for k, v in sorted(fields.items()))
    sig = base64.b64encode(hmac.new(token.encode(), signed.encode(), hashlib.sha1).digest())
    return (
        url,
        urlencode(fields).encode(),
        {
            "X-Twilio-Signature": sig.decode(),
            "content-type": "application/x-www-form-urlencoded",
            **headers,
        },
    )


def standard(webhook_id: str, body: str, secret: str) -> tuple[bytes, dict[str, str]]:
    """A Standard Webhooks request over ``body`` exactly as given (raw JSON text)."""
    now = datetime.now(UTC)
    return body.encode(), {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(webhook_id, now, body),
        "content-type": "application/json",
    }


async def audit_actions(store: Store) -> list[str]:
    return [e.action for e in await store.audit_list(100)]


# -- 1. one poisoned event cannot fail another -----------------------------------------

POISON = '{"type":"x.y","timestamp":"2026-01-01T00:00:00Z","data":{"n":1e400}}'


async def test_poison__a_non_finite_number_is_400_naming_the_field_and_stores_nothing(
    api: Api,
) -> None:
    body, headers = standard("poison-1", POISON, OPEN_WHSEC)
    r = await api.client.post("/v1/ingress/open-partner", content=body, headers=headers)
    assert r.status_code == 400, r.text
    assert r.json()["field"] == "data.n"
    assert "not finite" in r.json()["detail"]
    assert await api.store.inbox_counts() == {}


async def test_poison__good_events_posted_beside_poison_are_all_2xx_and_stored(api: Api) -> None:
    good = [
        standard(
            f"good-{i}",
            json.dumps(
                {"type": "reply.received", "timestamp": "2026-01-01T00:00:00Z", "data": {"i": i}}
            ),
            OPEN_WHSEC,
        )
        for i in range(60)
    ]
    bad = [standard(f"poison-{i}", POISON, OPEN_WHSEC) for i in range(20)]
    calls = [
        api.client.post("/v1/ingress/open-partner", content=body, headers=headers)
        for body, headers in [x for pair in zip(good[::3], bad, strict=False) for x in pair] + good
    ]
    replies = await asyncio.gather(*calls)
    good_replies = [r for r in replies if b"poison" not in r.request.headers["webhook-id"].encode()]
    assert all(r.status_code == 200 for r in good_replies), [r.text for r in good_replies]
    poison_replies = [r for r in replies if r not in good_replies]
    assert len(poison_replies) == 20
    assert {r.status_code for r in poison_replies} == {400}
    stored = {i.event_id for i in await api.store.inbox_list(None, None, 1000)}
    assert stored == {f"good-{i}" for i in range(60)}


def _item(event_id: str, data: dict[str, object]) -> InboxItem:
    now = datetime.now(UTC)
    return InboxItem(
        id=0,
        provider="open-partner",
        event_id=event_id,
        kind="inbound",
        status=None,
        message_id=None,
        provider_message_id=None,
        occurred_at=None,
        error_code=None,
        detail=None,
        address=None,
        data=data,
        received_at=now,
    )


async def test_inbox_writer__a_refused_group_write_is_retried_request_by_request(
    store: Store,
) -> None:
    """Defence in depth: even an event the parser let through that the database then
    refuses fails only its own request, never the others sharing the group write."""
    writer = InboxWriter(store, gather=Settings().ingress_gather)
    now = datetime.now(UTC)
    requests = [[_item(f"ok-{i}", {"i": i})] for i in range(10)]
    requests.insert(4, [_item("bad", {"n": float("inf")})])
    results = await asyncio.gather(
        *(writer.put(items, now) for items in requests), return_exceptions=True
    )
    failed = [r for r in results if isinstance(r, BaseException)]
    assert len(failed) == 1 and "not valid JSON" in str(failed[0])
    assert [r for r in results if not isinstance(r, BaseException)] == [[True]] * 10
    assert await store.inbox_counts() == {"pending": 10}


# -- 2. receipts and inbound events are bound to their tenant ---------------------------


async def test_tenancy__a_source_for_acme_cannot_bounce_a_globex_message(
    api: Api, ingress_config: IngressConfig
) -> None:
    victim = await sent(api.store, "globex", provider="null")
    doc = {
        "type": "message.bounced",
        "timestamp": "2026-01-01T00:00:00Z",
        "data": {"message_id": victim, "error_code": "550", "detail": "attacker's text"},
    }
    body, headers = standard("evil-1", json.dumps(doc), ACME_WHSEC)
    r = await api.client.post("/v1/ingress/acme-partner", content=body, headers=headers)
    assert r.status_code == 200  # signed: acknowledged, so the sender does not retry
    await projector(api, ingress_config).drain()
    got = await api.store.message_get(victim)
    assert (got.status, got.last_error) == (Status.SENT, None)
    assert await api.store.receipt_list(victim) == []
    (item,) = await api.store.inbox_list("rejected", None, 10)
    assert item.source_tenant == "acme"
    assert "speaks for tenant 'acme'" in (item.last_error or "")
    assert "tenancy.violation" in await audit_actions(api.store)


async def test_tenancy__an_inbound_event_naming_a_globex_message_is_not_forwarded(
    api: Api, ingress_config: IngressConfig
) -> None:
    victim = await sent(api.store, "globex", provider="null")
    doc = {
        "type": "reply.received",
        "timestamp": "2026-01-01T00:00:00Z",
        "data": {"message_id": victim, "text": "hello"},
    }
    body, headers = standard("evil-2", json.dumps(doc), ACME_WHSEC)
    r = await api.client.post("/v1/ingress/acme-partner", content=body, headers=headers)
    assert r.status_code == 200
    await projector(api, ingress_config).drain()
    assert await api.store.message_list(MessageFilter(channel="webhook"), None, None, 10) == []
    assert [i.state for i in await api.store.inbox_list(None, None, 10)] == ["rejected"]


async def test_tenancy__the_same_source_applies_receipts_to_its_own_tenant(
    api: Api, ingress_config: IngressConfig
) -> None:
    own = await sent(api.store, "acme", provider="null")
    doc = {
        "type": "message.delivered",
        "timestamp": "2026-01-01T00:00:00Z",
        "data": {"message_id": own},
    }
    body, headers = standard("fine-1", json.dumps(doc), ACME_WHSEC)
    assert (
        await api.client.post("/v1/ingress/acme-partner", content=body, headers=headers)
    ).status_code == 200
    await projector(api, ingress_config).drain()
    assert (await api.store.message_get(own)).status is Status.DELIVERED


async def test_tenancy__a_twilio_token_of_acme_cannot_move_a_globex_message(
    api: Api, ingress_config: IngressConfig
) -> None:
    victim = await sent(api.store, "globex", sid="SMglobex1")
    mine = await sent(api.store, "acme", sid="SMacme1")
    forged = twilio(
        {
            "MessageSid": "SMmadeup",
            "MessageStatus": "undelivered",
            "ErrorCode": "30005",
            "AccountSid": "ACacme",
        },
        ACME_TOKEN,
        f"sluice_message_id={victim}",
    )
    # Acme's own callback naming globex's real SID, too: the tenant is what refuses it.
    named = twilio(
        {"MessageSid": "SMglobex1", "MessageStatus": "undelivered", "AccountSid": "ACacme"},
        ACME_TOKEN,
        f"sluice_message_id={victim}",
    )
    honest = twilio(
        {"MessageSid": "SMacme1", "MessageStatus": "delivered", "AccountSid": "ACacme"},
        ACME_TOKEN,
        f"sluice_message_id={mine}",
    )
    for url, body, headers in (forged, named, honest):
        assert (await api.client.post(url, content=body, headers=headers)).status_code == 200
    await projector(api, ingress_config).drain()
    assert (await api.store.message_get(victim)).status is Status.SENT
    assert (await api.store.message_get(mine)).status is Status.DELIVERED
    assert len(await api.store.inbox_list("rejected", None, 10)) == 2
    # And globex's real callback, with globex's token, is neither a duplicate nor refused.
    real = twilio(
        {"MessageSid": "SMglobex1", "MessageStatus": "undelivered", "AccountSid": "ACglobex"},
        GLOBEX_TOKEN,
        f"sluice_message_id={victim}",
    )
    r = await api.client.post(real[0], content=real[1], headers=real[2])
    assert r.status_code == 200
    await projector(api, ingress_config).drain()
    assert (await api.store.message_get(victim)).status is Status.BOUNCED


async def test_tenancy__a_shared_account_callback_must_name_the_messages_own_sid(
    api: Api, ingress_config: IngressConfig
) -> None:
    """The operator's shared account speaks for every tenant, but only of messages it
    sent: a made-up MessageSid beside another message's id is refused."""
    victim = await sent(api.store, "globex", sid="SMreal")
    forged = twilio(
        {"MessageSid": "SMmadeup", "MessageStatus": "undelivered"},
        PLATFORM_TOKEN,
        f"sluice_message_id={victim}",
        source="twilio-shared",
    )
    honest = twilio(
        {"MessageSid": "SMreal", "MessageStatus": "delivered"},
        PLATFORM_TOKEN,
        f"sluice_message_id={victim}",
        source="twilio-shared",
    )
    for url, body, headers in (forged, honest):
        assert (await api.client.post(url, content=body, headers=headers)).status_code == 200
    await projector(api, ingress_config).drain()
    assert (await api.store.message_get(victim)).status is Status.DELIVERED
    (rejected,) = await api.store.inbox_list("rejected", None, 10)
    assert "'SMmadeup'" in (rejected.last_error or "")


async def test_tenancy__a_twilio_event_cannot_be_about_a_message_sent_another_way(
    api: Api, ingress_config: IngressConfig
) -> None:
    email = await sent(api.store, "acme", provider="sendgrid", sid="SMsame")
    url, body, headers = twilio(
        {"MessageSid": "SMsame", "MessageStatus": "delivered"},
        PLATFORM_TOKEN,
        f"sluice_message_id={email}",
        source="twilio-shared",
    )
    assert (await api.client.post(url, content=body, headers=headers)).status_code == 200
    await projector(api, ingress_config).drain()
    assert (await api.store.message_get(email)).status is Status.SENT
    (rejected,) = await api.store.inbox_list("rejected", None, 10)
    assert "sent through 'sendgrid'" in (rejected.last_error or "")


async def test_tenancy__an_inbound_sms_to_globex_number_signed_by_acme_is_refused(
    api: Api, ingress_config: IngressConfig
) -> None:
    to_globex = twilio(
        {
            "MessageSid": "SMin1",
            "SmsStatus": "received",
            "Body": "hi",
            "From": "+15551230000",
            "To": "+15550000002",
        },
        ACME_TOKEN,
    )
    to_acme = twilio(
        {
            "MessageSid": "SMin2",
            "SmsStatus": "received",
            "Body": "hi",
            "From": "+15551230000",
            "To": "+15550000001",
        },
        ACME_TOKEN,
    )
    for url, body, headers in (to_globex, to_acme):
        assert (await api.client.post(url, content=body, headers=headers)).status_code == 200
    await projector(api, ingress_config).drain()
    forwarded = await api.store.message_list(MessageFilter(channel="webhook"), None, None, 10)
    assert [(m.tenant, m.recipient) for m in forwarded] == [("acme", HOOKS["acme"])]
    (rejected,) = await api.store.inbox_list("rejected", None, 10)
    assert rejected.event_id == "SMin1"


# -- 3. Twilio replays are keyed on what Twilio signed ---------------------------------------


async def test_twilio_replay__new_idempotency_tokens_do_not_make_new_events(api: Api) -> None:
    mid = await sent(api.store, "acme", sid="SMacme9")
    fields = {"MessageSid": "SMacme9", "MessageStatus": "delivered"}
    for n in range(6):
        url, body, headers = twilio(
            fields,
            ACME_TOKEN,
            f"sluice_message_id={mid}",
            **{"I-Twilio-Idempotency-Token": f"token-{n}"},
        )
        r = await api.client.post(url, content=body, headers=headers)
        assert r.status_code == 200
    assert await api.store.inbox_counts() == {"pending": 1}
