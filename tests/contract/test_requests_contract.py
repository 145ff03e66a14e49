"""The Store contract for the two-person rule's requests, on PostgreSQL and SQLite."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sluice.errors import Conflict, NotFound, ValidationError
from sluice.store import AuditEntry, Store
from sluice.store.base import OpRequest

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def request(rid: str, at: datetime = NOW, **kw: object) -> OpRequest:
    fields: dict[str, object] = dict(
        id=rid,
        act="dlq.retry",
        args={"filter": {"tenant": "acme"}, "n": [1, "é"]},
        scope="tenant",
        tenant="acme",
        affected=1500,
        requester="cli:alice",
        reason="replay",
        created_at=at,
        expires_at=at + timedelta(hours=24),
        state="pending",
    )
    fields.update(kw)
    return OpRequest(**fields)  # type: ignore[arg-type]  # the fields above, as the test names them


def audit(action: str, actor: str = "cli:alice", at: datetime = NOW) -> AuditEntry:
    return AuditEntry(at=at, actor=actor, action=action, target="request:x")


async def test_file__keeps_every_field_and_audits_in_one_go(store: Store) -> None:
    filed = await store.request_file(request("r1"), audit("request.filed"))
    assert filed == request("r1")
    assert [e.action for e in await store.audit_list(10)] == ["request.filed"]
    with pytest.raises(Conflict):
        await store.request_file(request("r1"), audit("request.filed"))
    assert len(await store.audit_list(10)) == 1  # the refused one wrote nothing


async def test_get__an_unknown_id_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.request_get("nope")


async def test_list__newest_first_by_state_and_pages(store: Store) -> None:
    for n in range(5):
        await store.request_file(request(f"r{n}", NOW + timedelta(seconds=n)), audit("r"))
    ids = [r.id for r in await store.request_list(None, 10)]
    assert ids == ["r4", "r3", "r2", "r1", "r0"]
    first = await store.request_list("pending", 2)
    assert [r.id for r in first] == ["r4", "r3"]
    assert [r.id for r in await store.request_list("pending", 2, before="r3")] == ["r2", "r1"]
    assert await store.request_list("approved", 10) == []
    with pytest.raises(ValidationError, match="state"):
        await store.request_list("maybe", 10)


async def test_decide__once_only_and_audited_only_when_it_decides(store: Store) -> None:
    await store.request_file(request("r1"), audit("request.filed"))
    later = NOW + timedelta(minutes=5)
    assert await store.request_decide(
        "r1",
        "approved",
        actor="cli:bob",
        decision="ok",
        now=later,
        audit=audit("request.approved", "cli:bob", later),
    )
    again = await store.request_decide(
        "r1",
        "denied",
        actor="cli:carol",
        decision=None,
        now=later,
        audit=audit("request.denied", "cli:carol", later),
    )
    assert again is False
    got = await store.request_get("r1")
    assert (got.state, got.decided_by, got.decided_at, got.decision) == (
        "approved",
        "cli:bob",
        later,
        "ok",
    )
    actions = [e.action for e in await store.audit_list(10)]
    assert actions == ["request.approved", "request.filed"]
    await store.request_result("r1", {"changed": 3, "ids": ["a"]})
    assert (await store.request_get("r1")).result == {"changed": 3, "ids": ["a"]}


async def test_expire__past_expiry_is_expired_and_can_no_longer_be_decided(store: Store) -> None:
    await store.request_file(request("old"), audit("r"))
    await store.request_file(request("new", NOW + timedelta(hours=1)), audit("r"))
    after = NOW + timedelta(hours=24, seconds=1)
    assert not await store.request_decide(
        "old", "approved", actor="cli:bob", decision=None, now=after, audit=audit("x")
    )
    assert await store.request_expire(after) == ["old"]
    assert (await store.request_get("old")).state == "expired"
    assert (await store.request_get("new")).state == "pending"
    with pytest.raises(ValidationError, match="state"):
        await store.request_decide(
            "new", "expired", actor="x", decision=None, now=after, audit=audit("x")
        )


async def test_decide__two_operators_at_once_only_one_decides(store: Store) -> None:
    import asyncio

    await store.request_file(request("r1"), audit("request.filed"))
    later = NOW + timedelta(minutes=1)
    results = await asyncio.gather(
        *[
            store.request_decide(
                "r1", state, actor=who, decision=None, now=later,
                audit=audit(f"request.{state}", who, later),
            )
            for state, who in (("approved", "cli:bob"), ("denied", "cli:carol"))
        ]
    )  # fmt: skip
    assert sorted(results) == [False, True]
    assert len([e for e in await store.audit_list(10) if e.action != "request.filed"]) == 1
