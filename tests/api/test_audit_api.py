"""``GET /v1/audit``: the audit log for operator keys, filtered and paged like the CLI's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from api_harness import Api

from sluice.store import AuditEntry

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


async def fill(api: Api) -> None:
    """Five entries after the three ``api_key.create`` rows the harness writes."""
    for n, (action, tenant) in enumerate(
        [("control.set", "acme"), ("control.clear", "acme"), ("limit.set", "other"),
         ("control.set", "other"), ("keys.rotate", None)]
    ):  # fmt: skip
        detail = {"scope": {"tenant": tenant}} if action.startswith("control.") else {}
        if action == "limit.set":
            detail = {"tenant": tenant}
        await api.store.audit_append(
            AuditEntry(at=NOW + timedelta(minutes=n), actor=f"cli:u{n}", action=action,
                       detail=detail)
        )  # fmt: skip


async def test_audit__lists_newest_first_with_filters(api: Api) -> None:
    await fill(api)
    r = await api.client.get("/v1/audit", headers=api.ops)
    assert r.status_code == 200
    items = r.json()["items"]
    assert [i["action"] for i in items][:5] == [
        "keys.rotate", "control.set", "limit.set", "control.clear", "control.set",
    ]  # fmt: skip
    assert {"id", "at", "actor", "action", "target", "reason", "detail", "prev_hash", "hash"} <= (
        items[0].keys()
    )
    r = await api.client.get(
        "/v1/audit", params={"action": "control.", "tenant": "acme"}, headers=api.ops
    )
    assert [(i["action"], i["actor"]) for i in r.json()["items"]] == [
        ("control.clear", "cli:u1"), ("control.set", "cli:u0"),
    ]  # fmt: skip
    r = await api.client.get(
        "/v1/audit",
        params={"since": "2026-01-01T12:02:00Z", "until": "2026-01-01T13:04:00+01:00"},
        headers=api.ops,
    )
    assert [i["actor"] for i in r.json()["items"]] == ["cli:u3", "cli:u2"]


async def test_audit__pages_with_next_cursor(api: Api) -> None:
    await fill(api)
    seen, cursor = [], None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (await api.client.get("/v1/audit", params=params, headers=api.ops)).json()
        seen += [i["id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(seen, reverse=True) and len(seen) == len(set(seen)) == 8


async def test_audit__a_tenant_key_is_forbidden(api: Api) -> None:
    r = await api.client.get("/v1/audit", headers=api.acme)
    assert r.status_code == 403
    assert (await api.client.get("/v1/audit")).status_code == 401


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"since": "2026-01-01T12:00:00"}, "since"),  # no timezone
        ({"until": "yesterday"}, "until"),
        ({"since": "2026-01-01T12:00:00Z", "until": "2026-01-01T11:00:00Z"}, "until"),
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"cursor": "abc"}, "cursor"),
        ({"action": ""}, "action"),
        ({"tenant": "a\x00b"}, "tenant"),
    ],
)
async def test_audit__bad_input_is_422_naming_the_field(
    api: Api, params: dict[str, object], field: str
) -> None:
    r = await api.client.get("/v1/audit", params=params, headers=api.ops)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field
