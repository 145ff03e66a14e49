"""The Store contract for annotations (issue 15): every test runs against PostgreSQL and
SQLite."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sluice.model import AuditEntry
from sluice.store import Store
from sluice.store.base import Annotation

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def audit(text: str) -> AuditEntry:
    return AuditEntry(at=NOW, actor="ann", action="annotation.add", detail={"text": text})


async def add(store: Store, text: str, minutes: int, **kw: str) -> Annotation:
    a = Annotation(at=NOW + timedelta(minutes=minutes), actor="ann", kind=kw.pop("kind", "note"),
                   text=text, detail={"v": "1.4.2", "n": [1, 2]}, **kw)  # fmt: skip
    return await store.annotation_add(a, audit(text))


async def test_add__keeps_every_field_and_audits_in_the_same_transaction(store: Store) -> None:
    got = await add(store, "deployed v1.4.2 ünïcode", 0, kind="deploy", tenant="acme")
    assert got.id is not None
    [back] = await store.annotation_list()
    assert back == got
    assert (back.kind, back.tenant, back.detail, back.at) == (
        "deploy",
        "acme",
        {"v": "1.4.2", "n": [1, 2]},
        NOW,
    )
    [entry] = await store.audit_list(10)
    assert (entry.action, entry.detail["text"]) == ("annotation.add", "deployed v1.4.2 ünïcode")


async def test_list__window_is_since_inclusive_until_exclusive_newest_first(store: Store) -> None:
    for n in range(5):
        await add(store, f"a{n}", n)
    got = await store.annotation_list(NOW + timedelta(minutes=1), NOW + timedelta(minutes=4))
    assert [a.text for a in got] == ["a3", "a2", "a1"]
    assert [a.text for a in await store.annotation_list(until=NOW)] == []


async def test_list__filters_by_tenant_and_kind(store: Store) -> None:
    await add(store, "global deploy", 0, kind="deploy")
    await add(store, "acme config", 1, kind="config", tenant="acme")
    await add(store, "beta note", 2, tenant="beta")
    assert [a.text for a in await store.annotation_list(tenant="acme")] == ["acme config"]
    assert [a.text for a in await store.annotation_list(tenant="")] == ["global deploy"]
    assert [a.text for a in await store.annotation_list(kind="deploy")] == ["global deploy"]


async def test_list__pages_by_time_then_id_even_when_ids_are_out_of_time_order(
    store: Store,
) -> None:
    # Recorded late, marking earlier times: the order is by `at`, the cursor an id.
    for n in (3, 1, 4, 0, 2, 2):
        await add(store, f"t{n}", n)
    seen: list[str] = []
    before: int | None = None
    while True:
        page = await store.annotation_list(before_id=before, limit=2)
        seen += [a.text for a in page]
        if len(page) < 2:
            break
        before = page[-1].id
    assert seen == ["t4", "t3", "t2", "t2", "t1", "t0"]
    assert await store.annotation_list(limit=1) != []
