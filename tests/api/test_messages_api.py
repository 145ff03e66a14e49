"""``/v1/messages`` over HTTP: enqueue, Idempotency-Key, read, list, cancel, errors."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from api_harness import Api

from sluice.api.idempotency import fingerprint
from sluice.api.schemas import MessageIn
from sluice.model import Attempt, AttemptOutcome, Completion, Status

SMS = {"channel": "sms", "provider": "null", "recipient": "+15550001111", "payload": {"body": "hi"}}


async def count(api: Api, tenant: str = "acme") -> int:
    from sluice.store import MessageFilter

    return len(await api.store.message_list(MessageFilter(tenant=tenant), None, None, 10_000))


# -- enqueue --------------------------------------------------------------------------


async def test_post__one_message_is_stored_for_the_keys_tenant(api: Api) -> None:
    r = await api.client.post("/v1/messages", json=SMS, headers=api.acme)
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["tenant"], body["status"], body["recipient"]) == (
        "acme",
        "queued",
        SMS["recipient"],
    )
    stored = await api.store.message_get(body["id"])
    assert (stored.tenant, stored.payload) == ("acme", {"body": "hi"})


async def test_post__a_batch_is_stored_together(api: Api) -> None:
    batch = {"messages": [{**SMS, "recipient": f"+1555000{i:04d}"} for i in range(3)]}
    r = await api.client.post("/v1/messages", json=batch, headers=api.acme)
    assert r.status_code == 201, r.text
    assert [m["recipient"] for m in r.json()["messages"]] == [
        m["recipient"] for m in batch["messages"]
    ]
    assert await count(api) == 3


async def test_post__one_bad_message_refuses_the_whole_batch_naming_it(api: Api) -> None:
    batch = {"messages": [SMS, {**SMS, "payload": {"x": float("nan")}}]}
    r = await api.client.post(
        "/v1/messages",
        content=__import__("json").dumps(batch, allow_nan=True),
        headers={**api.acme, "content-type": "application/json"},
    )
    assert r.status_code == 422
    problem = r.json()
    assert r.headers["content-type"] == "application/problem+json"
    assert problem["field"] == "messages[1].payload" and problem["status"] == 422
    assert await count(api) == 0


async def test_post__tenant_comes_from_the_key_never_the_body(api: Api) -> None:
    r = await api.client.post("/v1/messages", json={**SMS, "tenant": "other"}, headers=api.acme)
    assert r.status_code == 422 and r.json()["field"] == "tenant"
    assert await count(api, "other") == 0
    same = await api.client.post("/v1/messages", json={**SMS, "tenant": "acme"}, headers=api.acme)
    assert same.status_code == 201


async def test_post__operator_keys_must_name_the_tenant(api: Api) -> None:
    r = await api.client.post("/v1/messages", json=SMS, headers=api.ops)
    assert r.status_code == 422 and r.json()["field"] == "tenant"
    ok = await api.client.post("/v1/messages", json={**SMS, "tenant": "other"}, headers=api.ops)
    assert ok.status_code == 201 and ok.json()["tenant"] == "other"


async def test_post__bad_input_names_the_field_and_stores_nothing(api: Api) -> None:
    cases = [
        ({**SMS, "recipient": ""}, "recipient"),
        ({**SMS, "priority": 5000}, "priority"),
        ({**SMS, "surprise": 1}, "surprise"),
        ({**SMS, "run_at": "2026-01-01T00:00:00"}, "run_at"),
        ({**SMS, "max_attempts": 0}, "max_attempts"),
        ({k: v for k, v in SMS.items() if k != "channel"}, "channel"),
    ]
    for body, field in cases:
        r = await api.client.post("/v1/messages", json=body, headers=api.acme)
        assert r.status_code == 422, (body, r.text)
        problem = r.json()
        assert field in problem["field"], (field, problem)
        assert "Traceback" not in r.text
    not_json = await api.client.post(
        "/v1/messages",
        content=b"{not json",
        headers={**api.acme, "content-type": "application/json"},
    )
    assert not_json.status_code == 422
    assert await count(api) == 0


METADATA_HOOK = {
    "channel": "webhook",
    "provider": "webhook",
    "recipient": "http://169.254.169.254/latest/meta-data/",
}


async def test_post__a_destination_that_cannot_work_is_422_naming_field_and_forms(
    api: Api,
) -> None:
    cases = [
        ({**SMS, "recipient": "bob"}, "recipient", "E.164"),
        ({**SMS, "provider": "twillio"}, "provider", "did you mean 'twilio'?"),
        ({**SMS, "provider": "sendgrid"}, "channel", "use 'email'"),
        (
            {**SMS, "channel": "email", "provider": "sendgrid", "recipient": "ann@example"},
            "recipient",
            "like ann@example.com",
        ),
        ({**SMS, **METADATA_HOOK}, "recipient", "cloud metadata"),
        ({**SMS, "action": "order.created "}, "action", "whitespace"),
    ]
    for body, field, says in cases:
        r = await api.client.post("/v1/messages", json=body, headers=api.acme)
        assert r.status_code == 422, (body, r.text)
        problem = r.json()
        assert problem["field"] == field, (body, problem)
        assert says in problem["detail"], problem
    batch = {"messages": [SMS, SMS, SMS, {**SMS, "recipient": "+1 415 555 0100"}]}
    r = await api.client.post("/v1/messages", json=batch, headers=api.acme)
    assert r.status_code == 422
    assert r.json()["field"] == "messages[3].recipient"
    assert await count(api) == 0


async def test_post__an_http_action_value_that_would_climb_the_path_is_422(
    api: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "sluice.toml"
    config.write_text(
        '[actions."sessions.revoke"]\nmethod = "DELETE"\n'
        'url = "https://api.example/api/users/{payload.user_id}/sessions/{payload.session_id}"\n'
    )
    monkeypatch.setenv("SLUICE_CONFIG", str(config))
    body = {
        "channel": "crm", "provider": "http", "recipient": "acme",
        "action": "sessions.revoke", "payload": {"user_id": "..", "session_id": "abc"},
    }  # fmt: skip
    r = await api.client.post("/v1/messages", json={"messages": [body]}, headers=api.acme)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "messages[0].payload.user_id"
    assert "another path" in r.json()["detail"]
    assert await count(api) == 0
    body["payload"] = {"user_id": "u-7", "session_id": "abc"}
    assert (await api.client.post("/v1/messages", json=body, headers=api.acme)).status_code == 201


def test_create_app__refuses_a_sluice_toml_it_cannot_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sluice.api import create_app
    from sluice.config import Settings
    from sluice.errors import ConfigError

    config = tmp_path / "sluice.toml"
    config.write_text('[providers."b"]\nkind = "pigeon"\n')
    monkeypatch.setenv("SLUICE_CONFIG", str(config))
    with pytest.raises(ConfigError, match=r"providers\.b\.kind"):
        create_app(Settings(database_url="sqlite:///unused.db"))


async def test_post__a_body_over_the_limit_is_413(api: Api) -> None:
    big = {**SMS, "payload": {"blob": "x" * 70_000}}
    r = await api.client.post("/v1/messages", json=big, headers=api.acme)
    assert r.status_code == 413 and r.json()["status"] == 413
    assert await count(api) == 0


async def test_auth__missing_malformed_unknown_and_revoked_keys_are_401(api: Api) -> None:
    from sluice.ops.apikeys import api_key_create, api_key_revoke

    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"},
                    {"Authorization": "Bearer sk_0123456789abcdef." + "A" * 43}):  # fmt: skip
        r = await api.client.post("/v1/messages", json=SMS, headers=headers)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    key = await api_key_create(api.store, "short-lived", "tenant", "acme", actor="test")
    await api_key_revoke(api.store, key.key.id, actor="test")
    r = await api.client.post(
        "/v1/messages", json=SMS, headers={"Authorization": f"Bearer {key.token}"}
    )
    assert r.status_code == 401
    assert await count(api) == 0


# -- Idempotency-Key ---------------------------------------------------------------------


async def test_idempotency__same_key_same_body_replays_the_first_response(api: Api) -> None:
    headers = {**api.acme, "Idempotency-Key": '"order-7-confirmation"'}
    first = await api.client.post("/v1/messages", json=SMS, headers=headers)
    again = await api.client.post("/v1/messages", json=dict(reversed(SMS.items())), headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert await count(api) == 1


async def test_idempotency__same_key_different_body_is_422(api: Api) -> None:
    headers = {**api.acme, "Idempotency-Key": "k-1"}
    await api.client.post("/v1/messages", json=SMS, headers=headers)
    r = await api.client.post(
        "/v1/messages", json={**SMS, "payload": {"body": "bye"}}, headers=headers
    )
    assert r.status_code == 422 and r.json()["field"] == "Idempotency-Key"
    assert await count(api) == 1


async def test_idempotency__while_the_first_is_in_progress_409(api: Api) -> None:
    body = MessageIn(**SMS).model_dump(mode="json")  # type: ignore[arg-type]
    fp = fingerprint("POST", "/v1/messages", body)
    now = datetime.now(UTC)
    assert (await api.store.idem_begin("t:acme", "k-2", fp, now, 60, 86400)).state == "new"
    r = await api.client.post(
        "/v1/messages", json=SMS, headers={**api.acme, "Idempotency-Key": "k-2"}
    )
    assert r.status_code == 409 and r.headers["retry-after"] == "1"
    assert await count(api) == 0


async def test_idempotency__concurrent_retries_enqueue_once(api: Api) -> None:
    headers = {**api.acme, "Idempotency-Key": "k-3"}
    replies = await asyncio.gather(
        *(api.client.post("/v1/messages", json=SMS, headers=headers) for _ in range(6))
    )
    codes = sorted(r.status_code for r in replies)
    assert set(codes) <= {201, 409} and 201 in codes
    assert len({r.json()["id"] for r in replies if r.status_code == 201}) == 1
    assert await count(api) == 1


async def test_idempotency__keys_are_per_tenant_and_a_failed_request_frees_its_key(
    api: Api,
) -> None:
    a = await api.client.post(
        "/v1/messages", json=SMS, headers={**api.acme, "Idempotency-Key": "k"}
    )
    b = await api.client.post(
        "/v1/messages", json=SMS, headers={**api.other, "Idempotency-Key": "k"}
    )
    assert a.json()["id"] != b.json()["id"]
    bad = {**api.acme, "Idempotency-Key": "k-4"}
    r = await api.client.post("/v1/messages", json={**SMS, "recipient": " "}, headers=bad)
    assert r.status_code == 422
    fixed = await api.client.post("/v1/messages", json=SMS, headers=bad)
    assert fixed.status_code == 201


async def test_idempotency__a_malformed_key_is_422(api: Api) -> None:
    for key in ("", "x" * 300, "has space"):
        r = await api.client.post(
            "/v1/messages", json=SMS, headers={**api.acme, "Idempotency-Key": key}
        )
        assert r.status_code == 422, key
    assert await count(api) == 0


# -- read, list, cancel, isolation ---------------------------------------------------------


async def test_get__a_message_with_attempts_and_receipts(api: Api) -> None:
    r = await api.client.post("/v1/messages", json=SMS, headers=api.acme)
    mid = r.json()["id"]
    now = datetime.now(UTC)
    (claimed,) = await api.store.message_claim("w1", 1, 30, now)
    attempt = Attempt(mid, 1, "w1", "null", now, now, AttemptOutcome.SENT, latency_ms=3.0)
    await api.store.message_complete_many(
        "w1", [Completion(mid, claimed.claim_seq, "w1", Status.SENT, attempt)], now
    )
    got = await api.client.get(f"/v1/messages/{mid}", headers=api.acme)
    assert got.status_code == 200
    body = got.json()
    assert body["status"] == "sent" and body["payload"] == {"body": "hi"}
    assert [a["outcome"] for a in body["attempt_log"]] == ["sent"]
    assert body["receipts"] == []


async def test_list__pages_newest_first_with_a_cursor_and_filters(api: Api) -> None:
    batch = {"messages": [{**SMS, "recipient": f"+1555000{i:04d}"} for i in range(5)]}
    await api.client.post("/v1/messages", json=batch, headers=api.acme)
    await api.client.post("/v1/messages", json=SMS, headers=api.other)
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await api.client.get("/v1/messages", params=params, headers=api.acme)).json()
        seen += [m["id"] for m in page["items"]]
        assert all(m["tenant"] == "acme" for m in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 5 and seen == sorted(seen, reverse=True)
    queued = await api.client.get("/v1/messages", params={"status": "sent"}, headers=api.acme)
    assert queued.json()["items"] == []
    bad = await api.client.get("/v1/messages", params={"cursor": "zzz"}, headers=api.acme)
    assert bad.status_code == 422 and bad.json()["field"] == "cursor"
    bad_status = await api.client.get("/v1/messages", params={"status": "nope"}, headers=api.acme)
    assert bad_status.status_code == 422 and bad_status.json()["field"] == "status"


async def test_cancel__a_queued_message_then_409_when_not_cancellable(api: Api) -> None:
    mid = (await api.client.post("/v1/messages", json=SMS, headers=api.acme)).json()["id"]
    r = await api.client.post(
        f"/v1/messages/{mid}/cancel", json={"reason": "typo"}, headers=api.acme
    )
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    again = await api.client.post(f"/v1/messages/{mid}/cancel", headers=api.acme)
    assert again.status_code == 200  # cancelling twice is not an error
    sent = (await api.client.post("/v1/messages", json=SMS, headers=api.acme)).json()["id"]
    now = datetime.now(UTC)
    assert len(await api.store.message_claim("w1", 1, 30, now)) == 1
    r = await api.client.post(f"/v1/messages/{sent}/cancel", headers=api.acme)
    assert r.status_code == 409 and "sending" in r.json()["detail"]
    audit = [e.action for e in await api.store.audit_list()]
    assert audit.count("message.cancel") == 1


async def test_isolation__another_tenants_message_is_404_exactly_like_a_missing_one(
    api: Api,
) -> None:
    theirs = (await api.client.post("/v1/messages", json=SMS, headers=api.other)).json()["id"]
    missing = "01900000-0000-7000-8000-000000000000"
    for mid in (theirs, missing):
        got = await api.client.get(f"/v1/messages/{mid}", headers=api.acme)
        cancel = await api.client.post(f"/v1/messages/{mid}/cancel", headers=api.acme)
        assert got.status_code == cancel.status_code == 404
        assert got.json()["detail"] == f"no message with id {mid!r}"
    listed = await api.client.get("/v1/messages", headers=api.acme)
    assert listed.json()["items"] == []
    spy = await api.client.get("/v1/messages", params={"tenant": "other"}, headers=api.acme)
    assert spy.status_code == 422 and spy.json()["field"] == "tenant"
    assert (await api.store.message_get(theirs)).status is Status.QUEUED
    # the operator sees both
    assert (await api.client.get(f"/v1/messages/{theirs}", headers=api.ops)).status_code == 200
    assert (
        await api.client.get("/v1/messages", params={"tenant": "other"}, headers=api.ops)
    ).json()["items"][0]["id"] == theirs


async def test_isolation__tenant_keys_cannot_use_operator_endpoints(api: Api) -> None:
    operator_only = [
        ("GET", "/v1/status"),
        ("GET", "/v1/dlq"),
        ("GET", "/v1/connections"),
        ("POST", "/v1/dlq/retry"),
        ("GET", "/v1/controls"),
        ("GET", "/v1/inbox"),
    ]
    for method, path in operator_only:
        r = await api.client.request(method, path, json={}, headers=api.acme)
        assert r.status_code == 403, (method, path, r.text)


async def test_post__values_no_store_can_hold_are_422_and_store_nothing(api: Api) -> None:
    cases = [
        ({**SMS, "scopes": ["\x00"]}, "scopes"),
        ({**SMS, "run_at": "2000-01-01T00:00:00+16:00"}, "run_at"),
        ({**SMS, "run_at": "9999-12-31T23:59:59-15:00"}, "run_at"),
        ({**SMS, "channel": "sms\x00"}, "channel"),
    ]
    for body, field in cases:
        r = await api.client.post("/v1/messages", json=body, headers=api.acme)
        assert r.status_code == 422, (body, r.text)
        assert field in r.json()["field"]
    listed = await api.client.get("/v1/messages", params={"action": "\x00"}, headers=api.acme)
    assert listed.status_code == 422 and listed.json()["field"] == "action"
    assert await count(api) == 0


async def test_list__a_since_without_time_zone_is_422(api: Api) -> None:
    for path, headers in (("/v1/messages", api.acme), ("/v1/dlq", api.ops)):
        r = await api.client.get(path, params={"since": "2026-01-01T00:00:00"}, headers=headers)
        assert r.status_code == 422 and r.json()["field"] == "since", (path, r.text)
    ok = await api.client.get("/v1/messages", params={"since": "2026-01-01T00:00:00Z"},
                              headers=api.acme)  # fmt: skip
    assert ok.status_code == 200


# -- input a store cannot hold, and lax types (issue 10) --------------------------------


def _raw(api: Api) -> dict[str, str]:
    return {**api.acme, "content-type": "application/json"}


def _sms_with(extra: str) -> bytes:
    """SMS as JSON text with ``extra`` (raw JSON members) added, so that escapes such as
    a lone ``\\ud800`` reach the server exactly as a client wrote them."""
    return (json.dumps(SMS)[:-1] + ", " + extra + "}").encode()


async def test_post__a_lone_surrogate_is_422_naming_the_field_and_stores_nothing(
    api: Api,
) -> None:
    cases = [
        ('"payload": {"\\ud800": 1}', "payload"),
        ('"payload": {"k": ["ok", {"deep": "\\udfff"}]}', "payload"),
        ('"idempotency_key": "k-\\ud800"', "idempotency_key"),
        ('"correlation_id": "\\ud800"', "correlation_id"),
        ('"scopes": ["read", "\\ud800"]', "scopes[1]"),
    ]
    for extra, field in cases:
        r = await api.client.post("/v1/messages", content=_sms_with(extra), headers=_raw(api))
        assert r.status_code == 422, (extra, r.text)
        assert r.json()["field"] == field, (extra, r.json())
        assert "Unicode" in r.json()["detail"]
    batch = b'{"messages": [' + _sms_with('"correlation_id": "ok"') + b", "
    batch += _sms_with('"payload": {"a": "\\ud800"}') + b"]}"
    r = await api.client.post("/v1/messages", content=batch, headers=_raw(api))
    assert r.status_code == 422 and r.json()["field"] == "messages[1].payload", r.text
    unknown = await api.client.post(
        "/v1/messages", content=_sms_with('"\\ud800": 1'), headers=_raw(api)
    )
    assert unknown.status_code == 422, unknown.text
    assert await count(api) == 0


async def test_post__a_payload_nested_too_deep_is_422_and_stores_nothing(api: Api) -> None:
    # Past about a thousand levels Python's JSON parser itself gives up: that is the body.
    for depth, field in ((300, "payload"), (65, "payload"), (10_000, "body")):
        nested = "[" * depth + "]" * depth if depth > 1000 else '{"a": ' * depth + "1" + "}" * depth
        r = await api.client.post(
            "/v1/messages", content=_sms_with(f'"payload": {nested}'), headers=_raw(api)
        )
        assert r.status_code == 422, (depth, r.text)
        assert r.json()["field"] == field and "deep" in r.json()["detail"], (depth, r.json())
    assert await count(api) == 0
    fine = '{"a": ' * 64 + "1" + "}" * 64
    ok = await api.client.post(
        "/v1/messages", content=_sms_with(f'"payload": {fine}'), headers=_raw(api)
    )
    assert ok.status_code == 201, ok.text


async def test_post__numbers_and_switches_are_strict_but_times_may_be_iso_text(
    api: Api,
) -> None:
    for body, field in (
        ({**SMS, "priority": "5"}, "priority"),
        ({**SMS, "priority": True}, "priority"),
        ({**SMS, "priority": 1.5}, "priority"),
        ({**SMS, "max_attempts": "3"}, "max_attempts"),
    ):
        r = await api.client.post("/v1/messages", json=body, headers=api.acme)
        assert r.status_code == 422 and r.json()["field"] == field, (body, r.text)
    assert await count(api) == 0
    for body, field in (
        ({"dry_run": "yes"}, "dry_run"),
        ({"dry_run": 1}, "dry_run"),
        ({"limit": "5"}, "limit"),
    ):
        r = await api.client.post("/v1/dlq/retry", json=body, headers=api.ops)
        assert r.status_code == 422 and r.json()["field"] == field, (body, r.text)
    r = await api.client.post("/v1/inbox/retry", json={"ids": ["1"]}, headers=api.ops)
    assert r.status_code == 422 and r.json()["field"] == "ids[0]", r.text
    timed = {**SMS, "priority": 5, "run_at": "2030-01-01T00:00:00Z"}
    ok = await api.client.post("/v1/messages", json=timed, headers=api.acme)
    assert ok.status_code == 201 and ok.json()["priority"] == 5, ok.text


async def test_post__a_batch_names_the_failing_item_not_a_missing_channel(api: Api) -> None:
    batch = {"messages": [SMS, {**SMS, "recipient": ""}, {**SMS, "priority": "5"}]}
    r = await api.client.post("/v1/messages", json=batch, headers=api.acme)
    assert r.status_code == 422, r.text
    problem = r.json()
    assert problem["field"] == "messages[1].recipient", problem
    assert [e["field"] for e in problem["errors"]] == [
        "messages[1].recipient",
        "messages[2].priority",
    ]
    assert await count(api) == 0


async def test_post__malformed_json_says_where_it_broke(api: Api) -> None:
    r = await api.client.post(
        "/v1/messages", content=b'{"channel": "sms"\n "x": 1}', headers=_raw(api)
    )
    assert r.status_code == 422, r.text
    problem = r.json()
    assert problem["field"] == "body"
    assert problem["detail"] == (
        "body: is not valid JSON: Expecting ',' delimiter at line 2 column 2"
    )
    assert await count(api) == 0


async def test_post__a_chunked_body_over_the_limit_is_413_not_400(api: Api) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        # No Content-Length: the size shows only as the body streams in.
        yield b'{"channel": "sms", "provider": "null", "recipient": "+1555", "payload": {"x": "'
        for _ in range(100):
            yield b"x" * 1000
        yield b'"}}'

    r = await api.client.post("/v1/messages", content=chunks(), headers=_raw(api))
    assert r.status_code == 413, r.text
    assert r.json()["status"] == 413 and "larger than" in r.json()["detail"]
    assert await count(api) == 0


# -- a store that cannot take the write now ---------------------------------------------


async def test_post__a_sqlite_file_locked_by_another_writer_is_503_with_retry_after(
    sqlite_url: str,
) -> None:
    # Another process on the same file (a CLI command, a second worker) holds the write
    # lock past the busy timeout: the client must hear "retry later", not "we broke".
    import sqlite3

    import httpx
    from api_harness import bearer

    from sluice.api import create_app
    from sluice.clock import SystemClock
    from sluice.config import Settings
    from sluice.ops.apikeys import api_key_create
    from sluice.store import MessageFilter
    from sluice.store.sqlite import SqliteStore, sqlite_path

    store = SqliteStore(sqlite_url, timeout=0.2)
    await store.open()
    key = await api_key_create(store, "shop", "tenant", "acme", actor="test")
    app = create_app(Settings(database_url=sqlite_url), store=store, clock=SystemClock())
    headers = bearer(key.token)
    holder = sqlite3.connect(sqlite_path(sqlite_url), isolation_level=None)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://sluice.test"
        ) as client:
            holder.execute("BEGIN IMMEDIATE")
            plain = await client.post("/v1/messages", json=SMS, headers=headers)
            keyed = await client.post(
                "/v1/messages", json=SMS, headers={**headers, "Idempotency-Key": "k-locked"}
            )
            holder.execute("ROLLBACK")
            for r in (plain, keyed):
                assert r.status_code == 503, r.text
                assert r.headers["retry-after"] == "1"
                assert r.headers["content-type"] == "application/problem+json"
                assert r.json()["detail"] == "the store is unavailable; retry later"
            assert await store.message_list(MessageFilter(tenant="acme"), None, None, 10) == []

            # The refused request took nothing: its retry, key and all, goes through.
            retried = await client.post(
                "/v1/messages", json=SMS, headers={**headers, "Idempotency-Key": "k-locked"}
            )
            assert retried.status_code == 201, retried.text
            assert len(await store.message_list(MessageFilter(tenant="acme"), None, None, 10)) == 1
    finally:
        holder.close()
        await store.close()
