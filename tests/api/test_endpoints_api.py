"""The operator API of issue 14: ``/v1/endpoints`` and ``/v1/tenants/{tenant}/events-url``
call the same ``sluice.ops`` acts as the CLI; bad input is a problem naming the field."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from api_harness import Api

from sluice.config import Settings
from sluice.model import Completion, NewMessage, Status
from sluice.secrets import generate_key
from sluice.store import MessageFilter
from sluice.store.endpoints import EndpointReport, hold_text

KEY = generate_key()
URL = "https://hooks.acme.example/in"
NOW = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture
def api_settings(store_url: str) -> Settings:
    return Settings(database_url=store_url, api_max_body=65_536, secret_key=KEY)


async def endpoint(api: Api) -> str:
    report = EndpointReport("acme", URL, "webhook", failed=3, last_failed_at=NOW,
                            streak_from=NOW, error="PROVIDER_UNAVAILABLE: HTTP 503")  # fmt: skip
    await api.store.endpoint_report([report], NOW, 3600)
    [row] = await api.store.endpoint_list()
    return row.id


async def test_endpoints__list_disable_enable_release(api: Api) -> None:
    eid = await endpoint(api)
    got = await api.client.get("/v1/endpoints", headers=api.ops)
    assert got.status_code == 200
    body = got.json()
    assert body["count"] == 1 and body["next_cursor"] is None
    [item] = body["items"]
    assert (item["id"], item["state"], item["failure_rate"]) == (eid, "failing", 1.0)
    assert item["last_success_at"] is None
    assert (await api.client.get("/v1/endpoints?state=healthy", headers=api.ops)).json()[
        "count"
    ] == 0
    # Disabling needs a reason.
    refused = await api.client.post(f"/v1/endpoints/{eid}/disable", json={}, headers=api.ops)
    assert refused.status_code == 422 and refused.json()["field"] == "reason"
    done = await api.client.post(
        f"/v1/endpoints/{eid}/disable", json={"reason": "abuse"}, headers=api.ops
    )
    assert done.status_code == 200 and done.json()["state"] == "disabled"
    # A message held for it (as a worker holds it) is released by enable.
    [mid] = await api.store.enqueue_many(
        [NewMessage(tenant="acme", channel="webhook", provider="webhook", recipient=URL)]
    )
    moved = await api.store.message_claim("w", 1, 30, datetime.now(UTC))
    assert [m.id for m in moved] == [mid]
    held = Completion(
        message_id=mid, claim_seq=moved[0].claim_seq, worker_id="w", status=Status.HELD,
        attempt=None, refund_attempt=True, hold_reason=hold_text(URL, "x"),
    )  # fmt: skip
    await api.store.message_complete_many("w", [held], datetime.now(UTC))
    enabled = await api.client.post(f"/v1/endpoints/{eid}/enable", json={}, headers=api.ops)
    assert enabled.status_code == 200
    assert (enabled.json()["state"], enabled.json()["released"]) == ("healthy", 1)
    assert await api.store.message_select(Status.QUEUED, MessageFilter()) == [mid]
    actions = [e.action for e in await api.store.audit_list()]
    assert {"endpoint.disable", "endpoint.enable", "held.release"} <= set(actions)


async def test_endpoints__operators_only_and_bad_input_named(api: Api) -> None:
    eid = await endpoint(api)
    assert (await api.client.get("/v1/endpoints", headers=api.acme)).status_code == 403
    tenant_act = await api.client.post(f"/v1/endpoints/{eid}/enable", json={}, headers=api.acme)
    assert tenant_act.status_code == 403
    bad = await api.client.get("/v1/endpoints?state=broken", headers=api.ops)
    assert bad.status_code == 422 and bad.json()["field"] == "state"
    missing = await api.client.post("/v1/endpoints/nope/enable", json={}, headers=api.ops)
    assert missing.status_code == 404
    long = await api.client.post(f"/v1/endpoints/{'x' * 100}/enable", json={}, headers=api.ops)
    assert long.status_code == 422 and long.json()["field"] == "endpoint_id"
    verb = await api.client.post(f"/v1/endpoints/{eid}/explode", json={}, headers=api.ops)
    assert verb.status_code == 422


async def test_events_url__set_show_clear(api: Api) -> None:
    put = await api.client.put(
        "/v1/tenants/acme/events-url", json={"events_url": "https://events.acme.example/in"},
        headers=api.ops,
    )  # fmt: skip
    assert put.status_code == 200
    assert put.json()["secret"].startswith("whsec_")  # made here, shown once
    shown = await api.client.get("/v1/tenants/acme/events-url", headers=api.ops)
    assert shown.json() == {"tenant": "acme", "events_url": "https://events.acme.example/in"}
    assert "secret" not in shown.text
    gone = await api.client.delete("/v1/tenants/acme/events-url", headers=api.ops)
    assert gone.status_code == 200 and gone.json()["events_url"] is None
    again = await api.client.delete("/v1/tenants/acme/events-url", headers=api.ops)
    assert again.status_code == 422 and again.json()["field"] == "tenant"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"events_url": "http://events.acme.example/in"}, "events_url"),
        ({"events_url": "https://127.0.0.1/in"}, "events_url"),
        ({"events_url": "https://[::1]/in"}, "events_url"),
        ({"events_url": "https://192.168.1.4/in"}, "events_url"),
        ({"events_url": "https://ok.example/", "secret": "plain"}, "secret"),
        ({"events_url": "https://ok.example/", "surprise": 1}, "surprise"),
        ({}, "events_url"),
    ],
)
async def test_events_url__bad_input_named_and_nothing_changed(
    api: Api, body: dict[str, object], field: str
) -> None:
    got = await api.client.put("/v1/tenants/acme/events-url", json=body, headers=api.ops)
    assert got.status_code == 422, got.text
    assert got.json()["field"] == field
    assert await api.store.tenant_events_list() == []
    tenant = await api.client.put(
        "/v1/tenants/acme/events-url", json={"events_url": "https://ok.example/"},
        headers=api.acme,
    )  # fmt: skip
    assert tenant.status_code == 403  # a tenant key cannot point events anywhere


async def test_messages__tenants_cannot_send_as_sluice_events(api: Api) -> None:
    body = {"channel": "webhook", "provider": "sluice_events",
            "recipient": "https://events.acme.example/in", "payload": {}}  # fmt: skip
    got = await api.client.post("/v1/messages", json=body, headers=api.acme)
    assert got.status_code == 422 and got.json()["field"] == "provider"
    assert await api.store.message_select(Status.QUEUED, MessageFilter()) == []
