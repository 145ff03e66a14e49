"""On-call listings over HTTP (issue 14): messages by created and updated windows,
attempts, status per group, the high-volume senders — through ``sluice.ops.listings``
as the CLI, with bad input refused by name."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from api_harness import Api

from sluice.model import Attempt, AttemptOutcome, Completion, Status

SMS = {"channel": "sms", "provider": "null", "recipient": "+15550001111"}


async def failed_once(api: Api, headers: dict[str, str]) -> str:
    """A message whose first attempt failed (it waits to retry)."""
    mid = (await api.client.post("/v1/messages", json=SMS, headers=headers)).json()["id"]
    now = datetime.now(UTC)
    (claimed,) = await api.store.message_claim("w-api", 1, 30, now)
    attempt = Attempt(mid, 1, "w-api", "null", now, now, AttemptOutcome.FAILED, error_code="X9")
    done = Completion(mid, claimed.claim_seq, "w-api", Status.QUEUED, attempt,
                      run_at=now + timedelta(hours=1))  # fmt: skip
    await api.store.message_complete_many("w-api", [done], now)
    return mid


async def test_messages__created_and_updated_windows(api: Api) -> None:
    mid = (await api.client.post("/v1/messages", json=SMS, headers=api.acme)).json()["id"]
    later = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    earlier = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()

    async def ids(**params: str) -> list[str]:
        r = await api.client.get("/v1/messages", params=params, headers=api.acme)
        assert r.status_code == 200, r.text
        return [m["id"] for m in r.json()["items"]]

    assert await ids(until=later, updated_since=earlier) == [mid]
    assert await ids(until=earlier) == []
    assert await ids(updated_until=earlier) == []
    backwards = await api.client.get(
        "/v1/messages", params={"since": later, "until": earlier}, headers=api.acme
    )
    assert backwards.status_code == 422 and backwards.json()["field"] == "until"
    naive = await api.client.get("/v1/messages", params={"until": "2026-01-01T00:00"},
                                 headers=api.acme)  # fmt: skip
    assert naive.status_code == 422


async def test_attempts__by_message_outcome_and_worker_a_page_at_a_time(api: Api) -> None:
    first = await failed_once(api, api.acme)
    second = await failed_once(api, api.other)
    r = await api.client.get("/v1/attempts", params={"limit": 1}, headers=api.ops)
    assert r.status_code == 200, r.text
    page = r.json()
    assert page["count"] == 1 and [a["message_id"] for a in page["items"]] == [second]
    nxt = await api.client.get(
        "/v1/attempts", params={"limit": 1, "cursor": page["next_cursor"]}, headers=api.ops
    )
    assert [a["message_id"] for a in nxt.json()["items"]] == [first]
    assert nxt.json()["next_cursor"] is None
    by = {"message_id": first, "outcome": "failed", "worker_id": "w-api", "error_code": "X9"}
    mine = (await api.client.get("/v1/attempts", params=by, headers=api.ops)).json()
    assert [(a["message_id"], a["outcome"]) for a in mine["items"]] == [(first, "failed")]
    sent = await api.client.get("/v1/attempts", params={"outcome": "sent"}, headers=api.ops)
    assert sent.json() == {"items": [], "count": 0, "next_cursor": None}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"outcome": "exploded"}, "outcome"),
        ({"cursor": "abc"}, "cursor"),
        ({"cursor": "-1"}, "cursor"),
        ({"limit": 0}, "limit"),
        ({"limit": 10**9}, "limit"),
        ({"message_id": "not-a-message"}, "message_id"),
        ({"since": "2026-01-02T00:00Z", "until": "2026-01-01T00:00Z"}, "until"),
    ],
)
async def test_attempts__bad_input_names_the_field(
    api: Api, params: dict[str, object], field: str
) -> None:
    r = await api.client.get("/v1/attempts", params=params, headers=api.ops)
    assert r.status_code == 422, r.text
    body = r.json()
    assert body.get("field") == field or field in str(body.get("errors")), body


async def test_attempts__and_top_are_for_operators_only(api: Api) -> None:
    for path in ("/v1/attempts", "/v1/top"):
        assert (await api.client.get(path, headers=api.acme)).status_code == 403


async def test_top__the_high_volume_senders_of_the_window(api: Api) -> None:
    for _ in range(3):
        await api.client.post("/v1/messages", json=SMS, headers=api.other)
    await failed_once(api, api.acme)
    r = await api.client.get("/v1/top", params={"by": "tenant", "since": 3600}, headers=api.ops)
    assert r.status_code == 200, r.text
    body = r.json()
    rows = [(t["group"], t["created"], t["failed"], t["waiting"]) for t in body["items"]]
    assert rows == [("other", 3, 0, 3), ("acme", 1, 1, 1)]
    assert (body["count"], body["next_cursor"], body["by"]) == (2, None, "tenant")
    one = await api.client.get("/v1/top", params={"limit": 1, "channel": "sms"}, headers=api.ops)
    assert [t["group"] for t in one.json()["items"]] == ["other"]


@pytest.mark.parametrize(
    "params",
    [{"by": "recipient"}, {"since": 0}, {"since": "nan"}, {"since": "inf"}, {"since": 1e12},
     {"limit": 0}, {"limit": 5000}],
)  # fmt: skip
async def test_top__bad_input_is_refused(api: Api, params: dict[str, object]) -> None:
    r = await api.client.get("/v1/top", params=params, headers=api.ops)
    assert r.status_code == 422, r.text
    assert next(iter(params)) in r.text


async def test_status__by_tenant_oldest_ages_held_reasons_workers(api: Api) -> None:
    await api.client.post("/v1/messages", json=SMS, headers=api.acme)
    await api.client.post("/v1/messages", json=SMS, headers=api.other)
    await api.client.post("/v1/messages", json=SMS, headers=api.other)
    await api.store.worker_heartbeat("w-host", "box-1", 4242, 7, 0, datetime.now(UTC))
    now = datetime.now(UTC)
    [m] = await api.store.message_claim("w-host", 1, 30, now)
    held = Completion(m.id, m.claim_seq, "w-host", Status.HELD, None, hold_reason="approval")
    await api.store.message_complete_many("w-host", [held], now)
    r = await api.client.get("/v1/status", params={"by": "tenant"}, headers=api.ops)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["counts"] == {"queued": 2, "held": 1} and body["inbox"] == {}
    groups = {g["group"]: g["counts"] for g in body["groups"]}
    assert sum(groups["other"].values()) == 2 and sum(groups["acme"].values()) == 1
    assert body["oldest_queued_created_age_seconds"] is not None
    [reason] = body["held_by_reason"]
    assert (reason["reason"], reason["count"]) == ("approval", 1)
    assert reason["oldest_held_age_seconds"] is not None
    [w] = body["workers"]
    assert (w["id"], w["host"], w["pid"], w["in_flight"], w["running"]) == (
        "w-host", "box-1", 4242, 7, True,
    )  # fmt: skip
    bad = await api.client.get("/v1/status", params={"by": "recipient"}, headers=api.ops)
    assert bad.status_code == 422 and "by" in bad.text


async def test_dlq_retry__by_ids_and_not_with_a_filter_too(api: Api) -> None:
    mid = (await api.client.post("/v1/messages", json=SMS, headers=api.acme)).json()["id"]
    now = datetime.now(UTC)
    (m,) = await api.store.message_claim("w1", 1, 30, now)
    attempt = Attempt(mid, 1, "w1", "null", now, now, AttemptOutcome.FAILED, error_code="X")
    dead = Completion(mid, m.claim_seq, "w1", Status.DEAD, attempt)
    await api.store.message_complete_many("w1", [dead], now)
    both = {"ids": [mid], "tenant": "acme"}
    r = await api.client.post("/v1/dlq/retry", json=both, headers=api.ops)
    assert r.status_code == 422 and r.json()["field"] == "ids"
    bad = await api.client.post("/v1/dlq/retry", json={"ids": ["nope"]}, headers=api.ops)
    assert bad.status_code == 422 and bad.json()["field"] == "ids[0]"
    assert (await api.store.message_get(mid)).status is Status.DEAD  # nothing changed
    r = await api.client.post("/v1/dlq/retry", json={"ids": [mid]}, headers=api.ops)
    assert r.status_code == 200 and r.json()["ids"] == [mid]
    assert (await api.store.message_get(mid)).status is Status.QUEUED
    [entry] = [e for e in await api.store.audit_list() if e.action == "dlq.retry"]
    assert entry.detail["by_id"] is True
