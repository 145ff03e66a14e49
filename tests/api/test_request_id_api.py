"""The request id: echoed, bound to the messages a request enqueues (as their correlation
id when they have none) and found again with ``GET /v1/messages?correlation_id=``."""

from __future__ import annotations

from api_harness import Api

SMS = {"channel": "sms", "provider": "null", "recipient": "+15550001111"}


async def test_request_id__echoed_and_becomes_the_correlation_id(api: Api) -> None:
    r = await api.client.post(
        "/v1/messages", json=SMS, headers={**api.acme, "X-Request-Id": "req-42"}
    )
    assert r.status_code == 201 and r.headers["x-request-id"] == "req-42"
    assert r.json()["correlation_id"] == "req-42"
    assert (await api.store.message_get(r.json()["id"])).correlation_id == "req-42"


async def test_request_id__made_up_when_missing(api: Api) -> None:
    r = await api.client.post("/v1/messages", json=SMS, headers=api.acme)
    rid = r.headers["x-request-id"]
    assert len(rid) == 32 and r.json()["correlation_id"] == rid
    other = await api.client.get("/healthz")
    assert other.headers["x-request-id"] not in ("", rid)


async def test_request_id__the_clients_correlation_id_wins(api: Api) -> None:
    body = {"messages": [{**SMS, "correlation_id": "order-7"}, SMS]}
    r = await api.client.post(
        "/v1/messages", json=body, headers={**api.acme, "X-Request-Id": "req-9"}
    )
    assert [m["correlation_id"] for m in r.json()["messages"]] == ["order-7", "req-9"]


async def test_messages__listed_by_correlation_id(api: Api) -> None:
    for rid in ("req-a", "req-b", "req-a"):
        await api.client.post("/v1/messages", json=SMS, headers={**api.acme, "X-Request-Id": rid})
    r = await api.client.get("/v1/messages", params={"correlation_id": "req-a"}, headers=api.acme)
    assert [m["correlation_id"] for m in r.json()["items"]] == ["req-a", "req-a"]
    # Another tenant's key finds nothing under the same id.
    r = await api.client.get("/v1/messages", params={"correlation_id": "req-a"}, headers=api.other)
    assert r.json()["items"] == []
    r = await api.client.get("/v1/messages", params={"correlation_id": ""}, headers=api.acme)
    assert r.status_code == 422 and r.json()["field"] == "correlation_id"


async def test_request_id__a_bad_header_is_422_and_enqueues_nothing(api: Api) -> None:
    for bad in (b"x" * 256, b"has space", "é".encode()):
        r = await api.client.post(
            "/v1/messages", json=SMS, headers={**api.acme, "X-Request-Id": bad}
        )  # type: ignore[dict-item]  # httpx sends bytes headers as they are
        assert r.status_code == 422, bad
        assert r.json()["field"] == "X-Request-Id"
    assert (await api.client.get("/v1/messages", headers=api.acme)).json()["items"] == []
