"""Post-send verification over HTTP (issue 15): ``verify_within`` on ``POST /v1/messages``
(validated by name), and ``POST /v1/messages/confirm|fail``, audited as the key, a tenant
key limited to its own tenant's messages."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from api_harness import Api
from test_ingress_api import TWILIO_TOKEN, projector, status_callback

from sluice import metrics
from sluice.ingress.config import IngressConfig, IngressSource
from sluice.model import Attempt, AttemptOutcome, Completion, NewMessage, Status
from sluice.store import AuditFilter, MessageFilter


@pytest.fixture
def ingress_config() -> IngressConfig:
    """Twilio's status callbacks, signed with its token."""
    return IngressConfig(
        sources={"twilio": IngressSource("twilio", "twilio", secrets=(TWILIO_TOKEN,))}
    )


SMS = {"channel": "sms", "provider": "null", "recipient": "+15550001111", "payload": {"body": "hi"}}


async def needs_confirm(api: Api, headers: dict[str, str], within: object = 60) -> str:
    """A message sent through the API with ``verify_within``, past its deadline unconfirmed."""
    r = await api.client.post(
        "/v1/messages", json={**SMS, "verify_within": within}, headers=headers
    )
    assert r.status_code == 201, r.text
    mid: str = r.json()["id"]
    now = datetime.now(UTC)
    [m] = [m for m in await api.store.message_claim("w1", 100, 30, now) if m.id == mid]
    attempt = Attempt(mid, m.claim_seq, "w1", "null", now, now, AttemptOutcome.SENT)
    await api.store.message_complete_many(
        "w1", [Completion(mid, m.claim_seq, "w1", Status.SENT, attempt)], now
    )
    await api.store.message_verify_due(now + timedelta(days=2))
    assert (await api.store.message_get(mid)).status is Status.NEEDS_CONFIRM
    return mid


async def test_enqueue__verify_within_as_seconds_or_a_span(api: Api) -> None:
    for given, seconds in ((90, 90.0), (2.5, 2.5), ("10m", 600.0), ("1d", 86400.0)):
        r = await api.client.post(
            "/v1/messages", json={**SMS, "verify_within": given}, headers=api.acme
        )
        assert r.status_code == 201, r.text
        assert r.json()["verify_within"] == seconds
        assert (await api.store.message_get(r.json()["id"])).verify_within == seconds


@pytest.mark.parametrize(
    "bad", [0, -5, 1e308, 367 * 86400, "NaN", "soon", "-1m", True, "", "9" * 40, "\ud800"]
)
async def test_enqueue__bad_verify_within_refused_by_name(api: Api, bad: object) -> None:
    before = len(await api.store.message_list(MessageFilter(), None, None, 100))
    r = await api.client.post(
        "/v1/messages",
        content=json.dumps({**SMS, "verify_within": bad}),  # ASCII: a lone surrogate escaped
        headers={**api.acme, "content-type": "application/json"},
    )
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "verify_within", r.json()
    assert len(await api.store.message_list(MessageFilter(), None, None, 100)) == before


async def test_enqueue__non_finite_verify_within_in_raw_json_is_refused(api: Api) -> None:
    body = '{"channel": "sms", "provider": "null", "recipient": "+15550001111", '
    for raw in ("NaN", "Infinity", "-Infinity"):
        r = await api.client.post(
            "/v1/messages",
            content=body + f'"verify_within": {raw}}}',
            headers={**api.acme, "content-type": "application/json"},
        )
        assert r.status_code == 422, (raw, r.text)
    assert await api.store.message_list(MessageFilter(), None, None, 10) == []


async def test_confirm_and_fail__move_the_message_and_are_audited_as_the_key(api: Api) -> None:
    a = await needs_confirm(api, api.acme)
    b = await needs_confirm(api, api.acme, "5m")
    listed = await api.client.get(
        "/v1/messages", params={"status": "needs_confirm"}, headers=api.acme
    )
    assert sorted(m["id"] for m in listed.json()["items"]) == sorted([a, b])
    ok = await api.client.post(
        "/v1/messages/confirm", json={"ids": [a], "reason": "customer replied"}, headers=api.acme
    )
    assert ok.status_code == 200, ok.text
    assert ok.json() | {"ids": None} == {
        "action": "message.confirm", "status": "delivered", "changed": 1, "ids": None,
        "already": [],
    }  # fmt: skip
    gone = await api.client.post(
        "/v1/messages/fail", json={"ids": [b], "reason": "no trace of it"}, headers=api.ops
    )
    assert gone.status_code == 200 and gone.json()["ids"] == [b]
    assert (await api.store.message_get(a)).status is Status.DELIVERED
    dead = await api.store.message_get(b)
    assert (dead.status, dead.last_error_code) == (Status.DEAD, "NOT_CONFIRMED")
    [c] = await api.store.audit_list(10, AuditFilter(action="message.confirm"))
    [f] = await api.store.audit_list(10, AuditFilter(action="message.fail"))
    assert (c.actor, c.reason, c.detail["ids"]) == ("api:acme-app", "customer replied", [a])
    assert (f.actor, f.detail["ids"]) == ("api:oncall", [b])
    # The dead letter goes back through the usual door.
    retry = await api.client.post(
        "/v1/dlq/retry", json={"error_code": "NOT_CONFIRMED", "reason": "resend"}, headers=api.ops
    )
    assert retry.status_code == 200, retry.text
    assert (await api.store.message_get(b)).status is Status.QUEUED


async def test_confirm__another_tenants_message_is_404_like_a_missing_one(api: Api) -> None:
    theirs = await needs_confirm(api, api.other)
    mine = await needs_confirm(api, api.acme)
    missing = "01900000-0000-7000-8000-000000000000"
    for verb in ("confirm", "fail"):
        for ids in ([theirs], [mine, theirs], [missing]):
            r = await api.client.post(
                f"/v1/messages/{verb}", json={"ids": ids, "reason": "r"}, headers=api.acme
            )
            assert r.status_code == 404, r.text
            assert "no message with id" in r.json()["detail"]
    for mid in (theirs, mine):
        assert (await api.store.message_get(mid)).status is Status.NEEDS_CONFIRM
    assert await api.store.audit_list(10, AuditFilter(action="message.")) == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"ids": [], "reason": "r"}, "ids"),
        ({"reason": "r"}, "ids"),
        ({"ids": ["x"], "reason": "r"}, "ids[0]"),
        ({"ids": ["01900000-0000-7000-8000-000000000000"]}, "reason"),
        ({"ids": ["01900000-0000-7000-8000-000000000000"], "reason": ""}, "reason"),
        ({"ids": ["01900000-0000-7000-8000-000000000000"], "reason": "\ud800"}, "reason"),
        ({"ids": ["01900000-0000-7000-8000-000000000000"], "reason": "r", "x": 1}, "x"),
    ],
)
async def test_confirm__bad_input_refused_by_name(
    api: Api, body: dict[str, object], field: str
) -> None:
    mid = await needs_confirm(api, api.acme)
    r = await api.client.post(
        "/v1/messages/confirm",
        content=json.dumps(body),  # ASCII: a lone surrogate escaped
        headers={**api.acme, "content-type": "application/json"},
    )
    assert r.status_code == 422, r.text
    assert r.json()["field"].startswith(field), r.json()
    assert (await api.store.message_get(mid)).status is Status.NEEDS_CONFIRM


async def test_confirm__a_message_not_waiting_is_409(api: Api) -> None:
    queued = (await api.client.post("/v1/messages", json=SMS, headers=api.acme)).json()["id"]
    r = await api.client.post(
        "/v1/messages/confirm", json={"ids": [queued], "reason": "r"}, headers=api.acme
    )
    assert r.status_code == 409 and "queued" in r.json()["detail"]


async def test_a_failed_receipt_through_ingress__needs_confirm_counted(
    api: Api, ingress_config: IngressConfig
) -> None:
    (mid,) = await api.store.enqueue_many(
        [NewMessage(tenant="acme", channel="sms", provider="twilio", recipient="+15550001111",
                    verify_within=3600)]
    )  # fmt: skip
    now = datetime.now(UTC)
    (m,) = await api.store.message_claim("w1", 1, 30, now)
    attempt = Attempt(mid, 1, "w1", "twilio", now, now, AttemptOutcome.SENT)
    done = Completion(mid, m.claim_seq, "w1", Status.SENT, attempt, provider_message_id="SM1")
    await api.store.message_complete_many("w1", [done], now)
    counter = metrics.of(metrics.NEEDS_CONFIRM, "acme", "sms", "twilio", "receipt")
    before = counter._value.get()
    url, body, headers = status_callback(mid, "undelivered", ErrorCode="30003")
    assert (await api.client.post(url, content=body, headers=headers)).is_success
    await projector(api, ingress_config).drain()
    got = await api.store.message_get(mid)
    assert got.status is Status.NEEDS_CONFIRM, got
    assert counter._value.get() == before + 1
    # A late delivered callback settles it.
    url, body, headers = status_callback(mid, "delivered")
    assert (await api.client.post(url, content=body, headers=headers)).is_success
    await projector(api, ingress_config).drain()
    assert (await api.store.message_get(mid)).status is Status.DELIVERED
