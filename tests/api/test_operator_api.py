"""Operator endpoints over HTTP: the same ``sluice.ops`` acts the CLI runs, audited
with the key's name."""

from __future__ import annotations

from datetime import UTC, datetime

from api_harness import Api

from dying import dying
from sluice.model import Attempt, AttemptOutcome, Completion, ErrorCode, Status
from sluice.ops.connections import connection_add
from sluice.secrets import SecretBox, generate_key

SMS = {"channel": "sms", "provider": "null", "recipient": "+15550001111"}


async def dead_message(api: Api) -> str:
    mid = (await api.client.post("/v1/messages", json=SMS, headers=api.acme)).json()["id"]
    now = datetime.now(UTC)
    (claimed,) = await api.store.message_claim("w1", 1, 30, now)
    code = ErrorCode.INVALID_RECIPIENT.value
    attempt = Attempt(
        mid, 1, "w1", "null", now, now, AttemptOutcome.FAILED, error_code=code,
        error_class="permanent",
    )  # fmt: skip
    await api.store.message_complete_many(
        "w1", [Completion(mid, claimed.claim_seq, "w1", Status.DEAD, attempt)], now
    )
    return mid


async def test_status__counts_controls_and_inbox(api: Api) -> None:
    await api.client.post("/v1/messages", json=SMS, headers=api.acme)
    r = await api.client.get("/v1/status", headers=api.ops)
    assert r.status_code == 200
    body = r.json()
    assert body["counts"] == {"queued": 1}
    assert body["controls"] == [] and body["inbox"] == {}


async def test_status__one_moment_while_messages_die(api: Api, store_url: str) -> None:
    """Every answer of ``GET /v1/status?by=tenant`` is read at one moment: while another
    process kills 120 messages two at a time, each counts all 120 (by status and by
    tenant) and its dead count agrees with its dead letters."""
    total, overlapped = 120, 0
    async with dying(api.store, store_url, total, datetime.now(UTC)) as moving:
        while not moving.done():
            r = await api.client.get("/v1/status", params={"by": "tenant"}, headers=api.ops)
            body = r.json()
            counts = body["counts"]
            assert sum(counts.values()) == sum(g["total"] for g in body["groups"]) == total
            assert counts.get("dead", 0) == sum(g["count"] for g in body["dead"]), body
            overlapped += 0 < counts.get("dead", 0) < total
    assert overlapped >= 3  # the answers did overlap the moves


async def test_dlq__list_retry_cancel_audited_as_the_key(api: Api) -> None:
    mid = await dead_message(api)
    groups = (await api.client.get("/v1/dlq", headers=api.ops)).json()
    assert [(g["channel"], g["error_code"], g["count"]) for g in groups] == [
        ("sms", "INVALID_RECIPIENT", 1)
    ]
    dry = await api.client.post("/v1/dlq/retry", json={"dry_run": True}, headers=api.ops)
    assert dry.json()["matched"] == 1 and dry.json()["changed"] == 0
    r = await api.client.post(
        "/v1/dlq/retry", json={"channel": "sms", "reason": "number fixed"}, headers=api.ops
    )
    assert r.json()["ids"] == [mid]
    assert (await api.store.message_get(mid)).status is Status.QUEUED
    (entry,) = [e for e in await api.store.audit_list() if e.action == "dlq.retry"]
    assert (entry.actor, entry.reason) == ("api:oncall", "number fixed")
    bad = await api.client.post("/v1/dlq/explode", json={}, headers=api.ops)
    assert bad.status_code == 422 and bad.json()["field"] == "verb"


async def test_controls__kill_list_clear_and_held_release(api: Api) -> None:
    kill = await api.client.post(
        "/v1/controls",
        json={"tenant": "acme", "mode": "killed", "reason": "incident 42", "timeout": 1},
        headers=api.ops,
    )
    assert kill.status_code == 200, kill.text
    assert kill.json()["control"]["mode"] == "killed"
    assert kill.json()["ack"]["complete"] is True  # no live workers: nothing to wait for
    listed = (await api.client.get("/v1/controls", headers=api.ops)).json()
    assert [(c["tenant"], c["mode"]) for c in listed] == [("acme", "killed")]
    held = (await api.client.get("/v1/held", headers=api.ops)).json()
    assert held == []
    no_reason = await api.client.post(
        "/v1/controls", json={"tenant": "acme", "mode": "paused"}, headers=api.ops
    )
    assert no_reason.status_code == 422 and no_reason.json()["field"] == "reason"
    bad_mode = await api.client.post(
        "/v1/controls", json={"mode": "off", "reason": "x"}, headers=api.ops
    )
    assert bad_mode.status_code == 422 and bad_mode.json()["field"] == "mode"
    cleared = await api.client.post(
        "/v1/controls/clear", json={"tenant": "acme", "reason": "resolved"}, headers=api.ops
    )
    assert cleared.status_code == 200
    again = await api.client.post(
        "/v1/controls/clear", json={"tenant": "acme", "reason": "resolved"}, headers=api.ops
    )
    assert again.status_code == 404


async def test_held__approve_by_id(api: Api) -> None:
    mid = (await api.client.post("/v1/messages", json=SMS, headers=api.acme)).json()["id"]
    now = datetime.now(UTC)
    (claimed,) = await api.store.message_claim("w1", 1, 30, now)
    await api.store.message_complete_many(
        "w1",
        [Completion(mid, claimed.claim_seq, "w1", Status.HELD, None, hold_reason="approval")],
        now,
    )
    listed = (await api.client.get("/v1/held", headers=api.ops)).json()
    assert [m["id"] for m in listed] == [mid]
    r = await api.client.post("/v1/held/approve", json={"ids": [mid]}, headers=api.ops)
    assert r.json()["changed"] == 1
    msg = await api.store.message_get(mid)
    assert (msg.status, msg.approved_by) == (Status.QUEUED, "api:oncall")


async def test_breakers__force_open_and_reset(api: Api) -> None:
    r = await api.client.post(
        "/v1/breakers/twilio/open", json={"reason": "provider incident"}, headers=api.ops
    )
    assert r.status_code == 200 and r.json()["state"] == "open"
    listed = (await api.client.get("/v1/breakers", headers=api.ops)).json()
    assert [(b["key"], b["state"], b["forced"]) for b in listed] == [("p:twilio", "open", True)]
    reset = await api.client.post(
        "/v1/breakers/twilio/reset", json={"reason": "over"}, headers=api.ops
    )
    assert reset.status_code == 200
    missing_reason = await api.client.post("/v1/breakers/twilio/open", json={}, headers=api.ops)
    assert missing_reason.status_code == 422


async def test_breakers__a_key_naming_no_provider_is_422_and_changes_nothing(api: Api) -> None:
    audited = len(await api.store.audit_list())
    cases = {"nosuch": None, "p:twillio": "twilio", "c:acme:sendgird": "sendgrid"}
    for key, meant in cases.items():
        r = await api.client.post(
            f"/v1/breakers/{key}/open", json={"reason": "typo"}, headers=api.ops
        )
        assert r.status_code == 422, r.text
        problem = r.json()
        assert problem["field"] == "key"
        assert "http, null, sendgrid, sluice_events, twilio, webhook, whatsapp" in problem["detail"]
        if meant is not None:
            assert f"did you mean {meant!r}?" in problem["detail"]
    assert (await api.client.get("/v1/breakers", headers=api.ops)).json() == []
    assert len(await api.store.audit_list()) == audited


async def test_connections__listed_without_secrets(api: Api) -> None:
    box = SecretBox(generate_key())
    await connection_add(
        api.store, box, tenant="acme", provider="twilio",
        secrets={"account_sid": "AC1", "auth_token": "very-secret-token"},
        scopes=["messages:send"], actor="test",
    )  # fmt: skip
    r = await api.client.get("/v1/connections", params={"tenant": "acme"}, headers=api.ops)
    assert r.status_code == 200
    (conn,) = r.json()
    assert (conn["tenant"], conn["provider"], conn["state"]) == ("acme", "twilio", "active")
    assert "very-secret-token" not in r.text and "ciphertext" not in r.text


async def test_health_and_readiness(api: Api) -> None:
    assert (await api.client.get("/healthz")).json() == {"status": "ok"}
    r = await api.client.get("/readyz")
    assert r.status_code == 503  # no worker seen
    assert r.json()["checks"]["store"] == "ok" and r.json()["checks"]["migrations"] == "ok"
    await api.store.worker_heartbeat("w1", "host", 1, 0, 0, datetime.now(UTC))
    ready = await api.client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["workers"] == 1
    spec = (await api.client.get("/openapi.json")).json()
    assert "/v1/messages" in spec["paths"] and "/v1/ingress/{provider}" in spec["paths"]


async def test_limits__set_list_clear_and_bad_input(api: Api) -> None:
    r = await api.client.post(
        "/v1/limits",
        json={"kind": "rate", "provider": "twilio", "rate": 5, "burst": 5, "reason": "slow down"},
        headers=api.ops,
    )
    assert r.status_code == 200, r.text
    listed = (await api.client.get("/v1/limits", headers=api.ops)).json()
    assert [(x["kind"], x["provider"], x["rate"]) for x in listed] == [("rate", "twilio", 5.0)]
    bad = await api.client.post(
        "/v1/limits", json={"kind": "rate", "provider": "twilio", "rate": -1, "reason": "x"},
        headers=api.ops,
    )  # fmt: skip
    assert bad.status_code == 422 and bad.json()["field"] == "rate"
    cleared = await api.client.post(
        "/v1/limits/clear", json={"kind": "rate", "provider": "twilio", "reason": "ok"},
        headers=api.ops,
    )  # fmt: skip
    assert cleared.status_code == 200
    gone = await api.client.post(
        "/v1/limits/clear", json={"kind": "rate", "provider": "twilio", "reason": "ok"},
        headers=api.ops,
    )  # fmt: skip
    assert gone.status_code == 404


async def test_bad_input_found_by_fuzzing_is_422_naming_the_field(api: Api) -> None:
    cases = [
        ("POST", "/v1/held/approve", {"json": {"ids": ["not-a-uuid"]}}, "ids[0]"),
        ("POST", "/v1/inbox/retry", {"json": {"ids": [2**63]}}, "ids[0]"),
        ("GET", "/v1/dlq", {"params": {"channel": "\x00"}}, "channel"),
        ("GET", "/v1/held", {"params": {"contains": "a\x00"}}, "contains"),
        ("POST", "/v1/controls", {"json": {"mode": "live", "reason": "\x00"}}, "reason"),
        ("POST", "/v1/breakers/twilio/open", {"json": {"reason": "\x00"}}, "reason"),
        ("GET", "/v1/connections", {"params": {"provider": "\x00"}}, "provider"),
        ("POST", "/v1/limits/clear", {"json": {"kind": "rate", "action": "\x00", "reason": "r"}},
         "action"),
        ("POST", "/v1/limits", {"json": {"kind": "rate", "provider": "\x00", "reason": "r"}},
         "body"),
    ]  # fmt: skip
    for method, path, kw, field in cases:
        r = await api.client.request(method, path, headers=api.ops, **kw)  # type: ignore[arg-type]
        assert r.status_code == 422, (path, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        assert field in r.json()["field"], (path, r.json())


async def test_dlq__list_filters_apply(api: Api) -> None:
    """``GET /v1/dlq`` accepted provider, action, error_code and since and ignored them."""
    await dead_message(api)
    listed = {}
    queries = ("", "?provider=null", "?provider=twilio", "?error_code=INVALID_RECIPIENT",
               "?error_code=TIMEOUT", "?action=other", "?since=2999-01-01T00:00:00Z")  # fmt: skip
    for query in queries:
        groups = (await api.client.get(f"/v1/dlq{query}", headers=api.ops)).json()
        listed[query] = sum(g["count"] for g in groups)
    assert listed == {
        "": 1, "?provider=null": 1, "?provider=twilio": 0, "?error_code=INVALID_RECIPIENT": 1,
        "?error_code=TIMEOUT": 0, "?action=other": 0, "?since=2999-01-01T00:00:00Z": 0,
    }  # fmt: skip
