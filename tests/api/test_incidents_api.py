"""``/v1/incidents`` and the API's ``/metrics``: operator key only, bad input answered
422 naming the field, acts audited with the key's name."""

from __future__ import annotations

from datetime import UTC, datetime

from api_harness import Api
from prometheus_client.parser import text_string_to_metric_families

from sluice.store.base import Firing

SMS = {"tenant": "acme", "channel": "sms", "provider": "null", "recipient": "+14155550100",
       "payload": {"body": "hi"}}  # fmt: skip


async def opened(api: Api) -> str:
    incident, _ = await api.store.incident_fire(
        Firing("SluiceDeadLetters", {"channel": "sms"}, "P2", ("QUEUE",), "000#remediation",
               "3 dead letters on sms", 3.0),
        datetime.now(UTC),
    )  # fmt: skip
    return incident.id


async def test_incidents__list_show_and_act(api: Api) -> None:
    iid = await opened(api)
    listed = (await api.client.get("/v1/incidents", headers=api.ops)).json()
    assert [i["id"] for i in listed] == [iid]
    shown = (await api.client.get(f"/v1/incidents/{iid}", headers=api.ops)).json()
    assert (shown["rule"], shown["severity"], shown["state"]) == ("SluiceDeadLetters", "P2", "open")
    assert [e["kind"] for e in shown["events"]] == ["fired"]
    r = await api.client.post(f"/v1/incidents/{iid}/ack", json={"text": "on it"}, headers=api.ops)
    assert r.status_code == 200 and r.json()["state"] == "acknowledged"
    assert r.json()["acknowledged_by"] == "api:oncall"
    r = await api.client.post(f"/v1/incidents/{iid}/resolve", json={"text": "done"},
                              headers=api.ops)  # fmt: skip
    assert r.json()["state"] == "resolved"
    assert (await api.store.audit_list(1))[0].action == "incident.resolve"
    resolved = (await api.client.get("/v1/incidents?state=resolved", headers=api.ops)).json()
    assert [i["id"] for i in resolved] == [iid]


async def test_incidents__refused_input_changes_nothing(api: Api) -> None:
    iid = await opened(api)
    ack = f"/v1/incidents/{iid}/ack"
    cases = [
        ("GET", "/v1/incidents?state=closed", b"", 422),
        ("GET", "/v1/incidents?limit=0", b"", 422),
        ("GET", "/v1/incidents/not-a-uuid", b"", 404),
        ("GET", "/v1/incidents/00000000-0000-0000-0000-000000000000", b"", 404),
        ("POST", ack, b'{"text": ""}', 422),
        ("POST", ack, b'{"text": "x", "extra": 1}', 422),
        ("POST", ack, b'{"text": "\\ud800"}', 422),  # a lone surrogate
        ("POST", ack, b'{"text": "x"', 422),  # cut off
        ("POST", f"/v1/incidents/{iid}/close", b'{"text": "x"}', 422),
    ]
    for method, path, body, status in cases:
        r = await api.client.request(
            method, path, content=body, headers={**api.ops, "content-type": "application/json"}
        )
        assert r.status_code == status, (path, body, r.text)
    assert (await api.store.incident_get(iid)).state == "open"
    # A tenant's key sees no incidents at all.
    assert (await api.client.get("/v1/incidents", headers=api.acme)).status_code == 403


async def test_metrics__the_api_serves_events_and_state(api: Api) -> None:
    await api.client.post("/v1/messages", json=SMS, headers=api.acme)
    text = (await api.client.get("/metrics")).text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }
    queued = sum(v for (n, ls), v in samples.items()
                 if n == "sluice_messages" and dict(ls).get("status") == "queued")  # fmt: skip
    assert queued == 1
    assert samples[("sluice_state_up", ())] == 1
    assert any(n == "sluice_messages_enqueued_total" for n, _ in samples)
