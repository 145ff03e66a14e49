"""``/v1/runbooks``: list, show, diagnose (POST with a body, GET with a query) and an
incident's diagnosis — operator keys only; bad runbook ids 404, bad windows and scopes
422 naming the field, tenant keys 403."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from api_harness import Api

from sluice.model import Attempt, AttemptOutcome, Completion, NewMessage, Status
from sluice.store.base import Firing


async def dead_letters(api: Api) -> None:
    """Four sms messages of acme dead with INVALID_RECIPIENT a few minutes ago."""
    now = datetime.now(UTC)
    at = now - timedelta(minutes=2)
    msgs = [NewMessage(tenant="acme", channel="sms", provider="null", recipient="+14155550100",
                       payload={}) for _ in range(4)]  # fmt: skip
    await api.store.enqueue_many(msgs, now - timedelta(minutes=5))
    done = []
    for m in await api.store.message_claim("w1", 4, 30, at):
        a = Attempt(m.id, m.claim_seq, "w1", "null", at, at, AttemptOutcome.FAILED,
                    error_code="INVALID_RECIPIENT")  # fmt: skip
        done.append(Completion(m.id, m.claim_seq, "w1", Status.DEAD, a))
    await api.store.message_complete_many("w1", done, at)


async def test_runbooks__list_and_show(api: Api) -> None:
    r = await api.client.get("/v1/runbooks", headers=api.ops)
    assert r.status_code == 200
    body = r.json()
    assert body["count"] == len(body["items"]) and body["next_cursor"] is None
    assert "dlq-growth" in {i["id"] for i in body["items"]}
    shown = (await api.client.get("/v1/runbooks/002%232", headers=api.ops)).json()
    assert shown["id"] == "dlq-growth" and "SluiceDeadLettersHigh" in shown["rules"]
    assert shown["recovery"][0]["dry_run"] is True


async def test_runbooks__diagnose_post_and_get(api: Api) -> None:
    await dead_letters(api)
    r = await api.client.post("/v1/runbooks/dlq-growth/diagnose",
                              json={"tenant": "acme", "since": "30m"}, headers=api.ops)  # fmt: skip
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["causes"][0] == "4 dead letters, most INVALID_RECIPIENT on sms (4)"
    assert d["scope"] == {"tenant": "acme"}
    assert "sluice dlq list --channel sms --error-code INVALID_RECIPIENT" in [
        c["command"] for c in d["containment"]
    ]
    g = await api.client.get("/v1/runbooks/dlq-growth/diagnose?since=1h&channel=sms",
                             headers=api.ops)  # fmt: skip
    assert g.status_code == 200 and g.json()["causes"] == d["causes"]
    empty = await api.client.post("/v1/runbooks/dlq-growth/diagnose", headers=api.ops)
    assert empty.status_code == 200 and empty.json()["runbook"] == "dlq-growth"


async def test_runbooks__incident_diagnosis(api: Api) -> None:
    await dead_letters(api)
    incident, _ = await api.store.incident_fire(
        Firing("SluiceDeadLetters", {"channel": "sms"}, "P2", ("QUEUE",), "000#remediation",
               "4 dead letters on sms", 4.0),
        datetime.now(UTC),
    )  # fmt: skip
    r = await api.client.get(f"/v1/incidents/{incident.id}/diagnosis", headers=api.ops)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["diagnosis"]["runbook"] == "scope-revoked"
    assert body["diagnosis"]["scope"] == {"channel": "sms"}
    assert any("INVALID_RECIPIENT" in c for c in body["diagnosis"]["causes"])


async def test_runbooks__bad_input(api: Api) -> None:
    cases = [
        ("GET", "/v1/runbooks/no-such", None, 404),
        ("POST", "/v1/runbooks/no-such/diagnose", {}, 404),
        ("POST", "/v1/runbooks/dlq-growth/diagnose", {"since": "yesterday"}, 422),
        ("POST", "/v1/runbooks/dlq-growth/diagnose", {"since": "30d"}, 422),
        ("POST", "/v1/runbooks/dlq-growth/diagnose", {"since": ""}, 422),
        ("POST", "/v1/runbooks/dlq-growth/diagnose", {"tenant": "x" * 500}, 422),
        ("POST", "/v1/runbooks/dlq-growth/diagnose", {"extra": 1}, 422),
        ("GET", "/v1/runbooks/dlq-growth/diagnose?since=-1h", None, 422),
        ("GET", "/v1/incidents/00000000-0000-0000-0000-000000000000/diagnosis", None, 404),
    ]
    for method, path, body, status in cases:
        r = await api.client.request(method, path, json=body, headers=api.ops)
        assert r.status_code == status, (path, body, r.status_code, r.text)
    surrogate = await api.client.post(
        "/v1/runbooks/dlq-growth/diagnose",
        content=b'{"tenant": "\\ud800"}',
        headers={**api.ops, "content-type": "application/json"},
    )  # a lone surrogate
    assert surrogate.status_code == 422
    bad = await api.client.post("/v1/runbooks/dlq-growth/diagnose", json={"since": "30d"},
                                headers=api.ops)  # fmt: skip
    assert "since" in bad.text
    # A tenant's key reads no runbook and diagnoses nothing, its own tenant or another's.
    for headers in (api.acme, api.other):
        r = await api.client.post("/v1/runbooks/dlq-growth/diagnose", json={"tenant": "acme"},
                                  headers=headers)  # fmt: skip
        assert r.status_code == 403
        assert (await api.client.get("/v1/runbooks", headers=headers)).status_code == 403
