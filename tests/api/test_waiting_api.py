"""``POST /v1/messages/retry-now``, ``GET /v1/throttles`` and ``POST /v1/throttles/clear``
(issue 14): operator keys only, the same acts as the CLI, bad input named."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from api_harness import Api

from sluice.model import Attempt, AttemptOutcome, Completion, NewMessage, Status


async def waiting(api: Api, tenant: str = "acme") -> str:
    """One message waiting out a retry backoff (an hour)."""
    now = datetime.now(UTC)
    [mid] = await api.store.enqueue_many(
        [NewMessage(tenant=tenant, channel="webhook", provider="null",
                    recipient="https://example.test/h")], now
    )  # fmt: skip
    [m] = [x for x in await api.store.message_claim("w1", 100, 30, now) if x.id == mid]
    attempt = Attempt(mid, m.claim_seq, "w1", "null", now, now, AttemptOutcome.FAILED,
                      error_code="TIMEOUT")  # fmt: skip
    c = Completion(mid, m.claim_seq, "w1", Status.QUEUED, attempt, run_at=now + timedelta(hours=1))
    await api.store.message_complete_many("w1", [c], now)
    return mid


async def test_retry_now__dry_run_then_moves_and_tenants_may_not(api: Api) -> None:
    a, b = await waiting(api), await waiting(api, "other")
    denied = await api.client.post("/v1/messages/retry-now", json={}, headers=api.acme)
    assert denied.status_code == 403
    dry = await api.client.post(
        "/v1/messages/retry-now", json={"tenant": "acme", "dry_run": True}, headers=api.ops
    )
    assert dry.status_code == 200, dry.text
    assert (dry.json()["matched"], dry.json()["changed"], dry.json()["ids"]) == (1, 0, [a])
    done = await api.client.post(
        "/v1/messages/retry-now", json={"ids": [a, b], "reason": "provider back"},
        headers=api.ops,
    )  # fmt: skip
    assert done.status_code == 200 and sorted(done.json()["ids"]) == sorted([a, b])
    [entry] = [e for e in await api.store.audit_list() if e.action == "message.retry_now"]
    assert entry.actor == "api:oncall" and entry.reason == "provider back"


async def test_throttles__listed_and_cleared_in_the_one_listing_shape(api: Api) -> None:
    now = datetime.now(UTC)
    await api.store.throttle_set("acme", "twilio", now + timedelta(minutes=5), "429", now)
    listed = await api.client.get("/v1/throttles", headers=api.ops)
    assert listed.status_code == 200
    body = listed.json()
    assert (body["count"], body["next_cursor"]) == (1, None)
    assert body["items"][0]["target"] == "twilio" and body["items"][0]["remaining_seconds"] > 0
    assert (await api.client.get("/v1/throttles", headers=api.acme)).status_code == 403
    cleared = await api.client.post(
        "/v1/throttles/clear", json={"provider": "twilio", "reason": "back"}, headers=api.ops
    )
    assert cleared.status_code == 200, cleared.text
    assert cleared.json()["count"] == 1 and cleared.json()["ack"]["complete"]
    assert (await api.client.get("/v1/throttles", headers=api.ops)).json()["count"] == 0


async def test_bad_input_is_422_naming_the_field(api: Api) -> None:
    mid = await waiting(api)
    cases = [
        ("/v1/messages/retry-now", '{"ids": ["not-a-uuid"]}', "ids[0]"),
        ("/v1/messages/retry-now", '{"ids": []}', "ids"),
        ("/v1/messages/retry-now", '{"limit": 0}', "limit"),
        ("/v1/messages/retry-now", '{"limit": "5"}', "limit"),
        ("/v1/messages/retry-now", '{"tenant": "\\ud800"}', "tenant"),
        ("/v1/messages/retry-now", '{"dry_run": 1}', "dry_run"),
        ("/v1/messages/retry-now", '{"surprise": 1}', "surprise"),
        ("/v1/throttles/clear", '{"provider": "twilio"}', "reason"),
        ("/v1/throttles/clear", '{"reason": "r"}', "provider"),
        ("/v1/throttles/clear", '{"provider": "a\\u0000", "reason": "r"}', "provider"),
        ("/v1/throttles/clear", '{"all": "yes", "reason": "r"}', "all"),
        ("/v1/throttles/clear", '{"all": true, "reason": "r", "timeout": 1e999}', "timeout"),
    ]
    for path, body, field in cases:
        r = await api.client.post(
            path, content=body, headers={**api.ops, "content-type": "application/json"}
        )
        assert r.status_code == 422, (path, body, r.text)
        assert field in r.json()["field"], (path, body, r.json())
    assert (await api.store.message_get(mid)).run_at > datetime.now(UTC)
