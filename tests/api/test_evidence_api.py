"""``/v1/annotations`` and ``/v1/incidents/{id}/evidence`` (issue 15): operator keys
only, bad input answered 422 naming the field with nothing written, acts audited with
the key's name."""

from __future__ import annotations

import io
import json
import tarfile
from datetime import UTC, datetime

from api_harness import Api

from sluice.store.base import Firing


async def opened(api: Api) -> str:
    incident, _ = await api.store.incident_fire(
        Firing("SluiceDeadLetters", {"channel": "sms"}, "P2", ("QUEUE",), "002#2",
               "3 dead letters on sms", 3.0),
        datetime.now(UTC),
    )  # fmt: skip
    return incident.id


async def test_annotations__add_and_list_in_the_one_listing_shape(api: Api) -> None:
    r = await api.client.post("/v1/annotations", headers=api.ops, json={
        "text": "deployed v1.4.2", "kind": "deploy", "detail": {"sha": "abc123"},
    })  # fmt: skip
    assert r.status_code == 201, r.text
    first = r.json()
    assert (first["kind"], first["actor"], first["tenant"]) == ("deploy", "api:oncall", "")
    r = await api.client.post("/v1/annotations", headers=api.ops, json={
        "text": "acme config", "kind": "config", "tenant": "acme",
        "at": "2026-01-01T09:00:00Z",
    })  # fmt: skip
    assert r.status_code == 201 and r.json()["at"].startswith("2026-01-01T09:00:00")
    page = (await api.client.get("/v1/annotations?limit=1", headers=api.ops)).json()
    assert set(page) == {"items", "count", "next_cursor"}
    assert ([a["text"] for a in page["items"]], page["count"]) == (["deployed v1.4.2"], 1)
    rest = await api.client.get(f"/v1/annotations?limit=1&cursor={page['next_cursor']}",
                                headers=api.ops)  # fmt: skip
    assert [a["text"] for a in rest.json()["items"]] == ["acme config"]
    assert rest.json()["next_cursor"] is None
    only = await api.client.get("/v1/annotations?kind=config&tenant=acme", headers=api.ops)
    assert [a["text"] for a in only.json()["items"]] == ["acme config"]
    day = {"since": "2025-12-31T00:00:00Z", "until": "2026-01-02T00:00:00Z"}
    window = await api.client.get("/v1/annotations", params=day, headers=api.ops)
    assert [a["text"] for a in window.json()["items"]] == ["acme config"]
    audit = [a for a in await api.store.audit_list(10) if a.action == "annotation.add"]
    assert [a.actor for a in audit] == ["api:oncall", "api:oncall"]


async def test_annotations__refused_input_names_the_field_and_writes_nothing(api: Api) -> None:
    cases = [
        (b'{"text": ""}', "text"),
        (b'{"text": "   "}', "text"),
        (json.dumps({"text": "x" * 2001}).encode(), "text"),
        (b'{"text": "\\ud800 half a pair"}', "text"),
        (b'{"text": "x", "kind": "party"}', "kind"),
        (b'{"text": "x", "at": "yesterday"}', "at"),
        (b'{"text": "x", "at": "2026-01-01T09:00:00"}', "at"),  # no timezone
        (b'{"text": "x", "tenant": ""}', "tenant"),
        (b'{"text": "x", "detail": {"n": NaN}}', "detail"),
        (b'{"text": "x", "detail": {"big": "' + b"y" * 9000 + b'"}}', "detail"),
        (b'{"text": "x", "extra": 1}', "extra"),
    ]
    for body, field in cases:
        r = await api.client.post(
            "/v1/annotations", content=body,
            headers={**api.ops, "content-type": "application/json"},
        )  # fmt: skip
        assert r.status_code == 422, (body[:60], r.text)
        assert field in r.text, (body[:60], r.text)
    backwards = "since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z"
    for query, field in (("limit=0", "limit"), ("kind=party", "kind"), ("since=nope", "since"),
                         ("cursor=abc", "cursor"), (backwards, "until")):  # fmt: skip
        r = await api.client.get(f"/v1/annotations?{query}", headers=api.ops)
        assert r.status_code == 422 and field in r.text, (query, r.text)
    assert await api.store.annotation_list() == []
    assert not [a for a in await api.store.audit_list(50) if a.action == "annotation.add"]
    # Operators only: a tenant's key neither reads nor writes them.
    assert (await api.client.get("/v1/annotations", headers=api.acme)).status_code == 403
    r = await api.client.post("/v1/annotations", json={"text": "x"}, headers=api.acme)
    assert r.status_code == 403


async def test_evidence__the_archive_over_http(api: Api) -> None:
    iid = await opened(api)
    await api.client.post("/v1/annotations", json={"text": "deployed"}, headers=api.ops)
    r = await api.client.get(f"/v1/incidents/{iid}/evidence", headers=api.ops)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/gzip"
    assert f"evidence-{iid}.tar.gz" in r.headers["content-disposition"]
    with tarfile.open(fileobj=io.BytesIO(r.content), mode="r:gz") as tar:
        names = {m.name.split("/", 1)[1] for m in tar.getmembers()}
        member = tar.extractfile(f"evidence-{iid}/annotations.json")
        assert member is not None
        notes = json.loads(member.read())
    assert {"manifest.json", "incident.json", "audit.json", "settings.json"} <= names
    assert [a["text"] for a in notes["items"]] == ["deployed"]
    # No key of the test's is in it (the settings hold none; the audit rows name keys only).
    for token in (api.ops, api.acme, api.other):
        assert token["Authorization"].split()[1].encode() not in r.content
    last = (await api.store.audit_list(1))[0]
    assert (last.action, last.actor, last.target) == ("incident.evidence", "api:oncall", iid)


async def test_evidence__unknown_incident_bad_margin_and_tenant_keys(api: Api) -> None:
    iid = await opened(api)
    missing = await api.client.get(
        "/v1/incidents/00000000-0000-0000-0000-000000000000/evidence", headers=api.ops
    )
    assert missing.status_code == 404
    assert (await api.client.get("/v1/incidents/nope/evidence", headers=api.ops)).status_code == 404
    bad = await api.client.get(f"/v1/incidents/{iid}/evidence?margin=-5", headers=api.ops)
    assert bad.status_code == 422 and "margin" in bad.text
    tenant = await api.client.get(f"/v1/incidents/{iid}/evidence", headers=api.acme)
    assert tenant.status_code == 403
