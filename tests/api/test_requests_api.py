"""The two-person rule over HTTP: an act a rule names answers 202 with the request filed;
``/v1/requests`` lists, shows, approves (another key only) and denies it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from api_harness import Api, bearer
from test_operator_api import dead_message
from test_waiting_api import waiting

from sluice.config import Settings
from sluice.model import Status
from sluice.ops.apikeys import api_key_create
from sluice.ops.suppressions import suppression_add, suppression_list


@pytest.fixture
def api_settings(store_url: str) -> Settings:
    rules = ("dlq.retry", "resume:global", "breaker.*", "apikeys.create", "limit.set",
             "messages.retry_now>1", "throttles.clear", "suppression.remove")  # fmt: skip
    return Settings(database_url=store_url, api_max_body=65_536, two_person=rules)


async def second_operator(api: Api) -> dict[str, str]:
    key = await api_key_create(api.store, "second", "operator", None, actor="test")
    return bearer(key.token)


async def test_filed_202__approved_by_another_key_only(api: Api) -> None:
    mid = await dead_message(api)
    r = await api.client.post("/v1/dlq/retry", json={"reason": "fixed"}, headers=api.ops)
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["filed"] is True and body["rules"] == ["dlq.retry"]
    req = body["request"]
    assert (req["act"], req["state"], req["requester"], req["affected"]) == (
        "dlq.retry", "pending", "api:oncall", 1,
    )  # fmt: skip
    assert (await api.store.message_get(mid)).status is Status.DEAD

    listed = (await api.client.get("/v1/requests", headers=api.ops)).json()
    assert (listed["count"], listed["next_cursor"]) == (1, None)
    assert [i["id"] for i in listed["items"]] == [req["id"]]

    own = await api.client.post(f"/v1/requests/{req['id']}/approve", json={}, headers=api.ops)
    assert own.status_code == 422 and own.json()["field"] == "actor"
    assert (await api.store.message_get(mid)).status is Status.DEAD

    second = await second_operator(api)
    ok = await api.client.post(
        f"/v1/requests/{req['id']}/approve", json={"reason": "checked"}, headers=second
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["result"]["changed"] == 1
    assert ok.json()["request"]["decided_by"] == "api:second"
    assert (await api.store.message_get(mid)).status is Status.QUEUED
    shown = (await api.client.get(f"/v1/requests/{req['id']}", headers=api.ops)).json()
    assert (shown["state"], shown["decision"]) == ("approved", "checked")
    again = await api.client.post(f"/v1/requests/{req['id']}/deny", json={}, headers=second)
    assert again.status_code == 409


async def test_a_kill_acts_at_once__lifting_it_globally_waits(api: Api) -> None:
    kill = {"mode": "killed", "reason": "incident", "wait": False}
    r = await api.client.post("/v1/controls", json=kill, headers=api.ops)
    assert r.status_code == 200, r.text
    lift = {"reason": "fixed", "wait": False}
    r = await api.client.post("/v1/controls/clear", json=lift, headers=api.ops)
    assert r.status_code == 202 and r.json()["request"]["act"] == "resume"
    assert [c.mode.value for c in await api.store.control_list()] == ["killed"]
    rid = r.json()["request"]["id"]
    denied = await api.client.post(
        f"/v1/requests/{rid}/deny", json={"reason": "not yet"}, headers=api.ops
    )
    assert denied.status_code == 200 and denied.json()["request"]["state"] == "denied"
    assert [c.mode.value for c in await api.store.control_list()] == ["killed"]


async def test_breaker_force__filed_then_done_on_approval(api: Api) -> None:
    r = await api.client.post(
        "/v1/breakers/p:null/open", json={"reason": "flapping"}, headers=api.ops
    )
    assert r.status_code == 202 and r.json()["request"]["act"] == "breaker.force"
    listed = (await api.client.get("/v1/requests", headers=api.ops)).json()
    assert listed["count"] == 1
    second = await second_operator(api)
    rid = listed["items"][0]["id"]
    ok = await api.client.post(f"/v1/requests/{rid}/approve", json={}, headers=second)
    assert ok.status_code == 200, ok.text
    assert [b.state for b in await api.store.breaker_list()] == ["open"]


async def test_bad_input__named_and_nothing_filed(api: Api) -> None:
    bad = await api.client.post("/v1/breakers/x:nope:/open", json={"reason": "r"}, headers=api.ops)
    assert bad.status_code == 422 and bad.json()["field"] == "key"
    limit = {"kind": "rate", "provider": "null", "rate": -1, "reason": "r"}
    bad = await api.client.post("/v1/limits", json=limit, headers=api.ops)
    assert bad.status_code == 422
    assert (await api.client.get("/v1/requests", headers=api.ops)).json()["count"] == 0
    for path in ("/v1/requests/zz", "/v1/requests/abc/approve"):
        r = await api.client.get(path, headers=api.ops)
        assert r.status_code in (404, 405, 422)
    missing = await api.client.post("/v1/requests/abc/approve", json={}, headers=api.ops)
    assert missing.status_code == 404
    bad_state = await api.client.get("/v1/requests?state=maybe", headers=api.ops)
    assert bad_state.status_code == 422
    tenant = await api.client.get("/v1/requests", headers=api.acme)
    assert tenant.status_code == 403


async def test_retry_now__over_the_threshold_202_then_done_by_another_key(api: Api) -> None:
    one = await waiting(api, "solo")
    r = await api.client.post("/v1/messages/retry-now", json={"tenant": "solo"}, headers=api.ops)
    assert r.status_code == 200 and r.json()["ids"] == [one]  # 1 is not over 1: done at once
    ids = [await waiting(api), await waiting(api)]
    r = await api.client.post(
        "/v1/messages/retry-now", json={"tenant": "acme", "reason": "twilio back"},
        headers=api.ops,
    )  # fmt: skip
    assert r.status_code == 202, r.text
    req = r.json()["request"]
    assert (req["act"], req["affected"], req["tenant"]) == ("messages.retry_now", 2, "acme")
    now = datetime.now(UTC)
    assert all([(await api.store.message_get(i)).run_at > now for i in ids])
    ok = await api.client.post(
        f"/v1/requests/{req['id']}/approve", json={}, headers=await second_operator(api)
    )
    assert ok.status_code == 200 and ok.json()["result"]["changed"] == 2
    later = datetime.now(UTC)
    assert all([(await api.store.message_get(i)).run_at <= later for i in ids])


async def test_throttles_clear__filed_202(api: Api) -> None:
    now = datetime.now(UTC)
    await api.store.throttle_set("acme", "twilio", now + timedelta(minutes=5), "429", now)
    body = {"tenant": "acme", "reason": "provider fixed", "wait": False}
    r = await api.client.post("/v1/throttles/clear", json=body, headers=api.ops)
    assert r.status_code == 202 and r.json()["request"]["act"] == "throttles.clear"
    dry = await api.client.post("/v1/throttles/clear", json={**body, "dry_run": True},
                                headers=api.ops)  # fmt: skip
    assert dry.status_code == 200 and dry.json()["count"] == 1  # a dry run never waits
    assert len(await api.store.throttle_list(now)) == 1
    ok = await api.client.post(
        f"/v1/requests/{r.json()['request']['id']}/approve", json={},
        headers=await second_operator(api),
    )  # fmt: skip
    assert ok.status_code == 200, ok.text
    assert await api.store.throttle_list(now) == []


async def test_suppression_remove__a_tenant_key_files_an_operator_approves(api: Api) -> None:
    await suppression_add(api.store, tenant="acme", channel="sms", recipient="+14155550100",
                          actor="test", reason="STOP")  # fmt: skip
    query = {"channel": "sms", "recipient": "+14155550100", "reason": "asked us"}
    r = await api.client.delete("/v1/suppressions", params=query, headers=api.acme)
    assert r.status_code == 202, r.text
    req = r.json()["request"]
    assert (req["act"], req["tenant"], req["requester"]) == ("suppression.remove", "acme",
                                                            "api:acme-app")  # fmt: skip
    assert len((await suppression_list(api.store, tenant="acme")).items) == 1
    missing = await api.client.delete(
        "/v1/suppressions", params={**query, "recipient": "+14155550199"}, headers=api.acme
    )
    assert missing.status_code == 404  # nothing to lift: nothing filed
    ok = await api.client.post(f"/v1/requests/{req['id']}/approve", json={}, headers=api.ops)
    assert ok.status_code == 200 and ok.json()["result"]["recipient"] == "+14155550100"
    assert (await suppression_list(api.store, tenant="acme")).items == []


async def test_openapi__the_new_gated_routes_document_202(api: Api) -> None:
    paths = (await api.client.get("/openapi.json")).json()["paths"]
    for path, verb in (("/v1/messages/retry-now", "post"), ("/v1/throttles/clear", "post"),
                       ("/v1/endpoints/{endpoint_id}/{verb}", "post"),
                       ("/v1/suppressions", "delete"),
                       ("/v1/tenants/{tenant}/events-url", "delete")):  # fmt: skip
        assert "202" in paths[path][verb]["responses"], path
