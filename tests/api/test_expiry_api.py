"""``POST /v1/messages`` with an expiry (issue 14): ``ttl`` or ``expires_at`` stored and
shown; hostile values 422 naming the field, nothing stored."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from api_harness import Api

from sluice.store import MessageFilter

SMS = {"channel": "sms", "provider": "null", "recipient": "+15550001111", "payload": {}}


async def test_post__ttl_and_expires_at_are_stored_and_shown(api: Api) -> None:
    r = await api.client.post("/v1/messages", json={**SMS, "ttl": 300}, headers=api.acme)
    assert r.status_code == 201, r.text
    body = r.json()
    created = datetime.fromisoformat(body["created_at"])
    assert datetime.fromisoformat(body["expires_at"]) == created + timedelta(seconds=300)
    at = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
    r = await api.client.post(
        "/v1/messages", json={**SMS, "expires_at": at.isoformat()}, headers=api.acme
    )
    assert r.status_code == 201, r.text
    shown = await api.client.get(f"/v1/messages/{r.json()['id']}", headers=api.acme)
    assert datetime.fromisoformat(shown.json()["expires_at"]) == at


async def test_post__hostile_expiry_values_are_422_naming_the_field(api: Api) -> None:
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    far = (datetime.now(UTC) + timedelta(days=800)).isoformat()
    cases = [
        ('"ttl": 0', "ttl"),
        ('"ttl": -5', "ttl"),
        ('"ttl": 1e999', "ttl"),
        ('"ttl": NaN', "ttl"),
        ('"ttl": "300"', "ttl"),
        ('"ttl": true', "ttl"),
        ('"ttl": 100000000', "ttl"),
        ('"expires_at": "2030-01-01T00:00:00"', "expires_at"),  # no timezone
        (f'"expires_at": "{past}"', "expires_at"),
        (f'"expires_at": "{far}"', "expires_at"),
        ('"expires_at": "soon"', "expires_at"),
        (f'"expires_at": "{far}", "ttl": 5', "expires_at"),
    ]
    for extra, field in cases:
        body = json.dumps(SMS)[:-1] + ", " + extra + "}"
        r = await api.client.post(
            "/v1/messages", content=body,
            headers={**api.acme, "content-type": "application/json"},
        )  # fmt: skip
        assert r.status_code == 422, (extra, r.text)
        assert field in r.json()["field"], (extra, r.json())
    assert await api.store.message_list(MessageFilter(tenant="acme"), None, None, 10) == []
