"""``sluice.ops.annotations`` on both stores: what it refuses (by name, writing nothing)
and how it pages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sluice.clock import FrozenClock
from sluice.errors import ValidationError
from sluice.ops.annotations import MAX_TEXT, annotation_add, annotation_page
from sluice.store import Store

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


async def test_add__refuses_bad_input_by_name_and_writes_nothing(store: Store) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"text": ""}, "text"),
        ({"text": " \n "}, "text"),
        ({"text": "x" * (MAX_TEXT + 1)}, "text"),
        ({"text": "half \ud800 a pair"}, "text"),
        ({"text": "nul \x00"}, "text"),
        ({"text": "x", "kind": "party"}, "kind"),
        ({"text": "x", "tenant": "\udfff"}, "tenant"),
        ({"text": "x", "tenant": "t" * 129}, "tenant"),
        ({"text": "x", "actor": ""}, "actor"),
        ({"text": "x", "at": datetime(2026, 1, 1)}, "at"),  # no timezone
        ({"text": "x", "detail": {"n": float("nan")}}, "detail"),
        ({"text": "x", "detail": {"n": [float("inf")]}}, "detail"),
        ({"text": "x", "detail": {"s": "\ud800"}}, "detail"),
        ({"text": "x", "detail": {"big": "y" * 9000}}, "detail"),
        ({"text": "x", "detail": ["not", "an", "object"]}, "detail"),
    ]
    for kw, field in cases:
        args = {"actor": "ann", **kw}
        text = args.pop("text")
        with pytest.raises(ValidationError) as err:
            await annotation_add(store, text, clock=FrozenClock(NOW), **args)
        assert err.value.field == field, kw
    assert await store.annotation_list() == []
    assert await store.audit_list(10) == []


async def test_page__walks_every_annotation_once(store: Store) -> None:
    clock = FrozenClock(NOW)
    for n in range(7):
        await annotation_add(store, f"n{n}", actor="ann", at=NOW - timedelta(minutes=n),
                             clock=clock)  # fmt: skip
    seen: list[str] = []
    cursor = None
    while True:
        page = await annotation_page(store, limit=3, cursor=cursor)
        assert page.as_dict()["count"] == len(page.items)
        seen += [a.text for a in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == [f"n{n}" for n in range(7)]


async def test_page__refuses_bad_filters(store: Store) -> None:
    for kw, field in (
        ({"limit": 0}, "limit"), ({"limit": True}, "limit"), ({"limit": 1001}, "limit"),
        ({"cursor": "-1"}, "cursor"), ({"cursor": "\uff11"}, "cursor"),
        ({"cursor": "9" * 30}, "cursor"),
        ({"kind": "party"}, "kind"),
        ({"since": datetime(2026, 1, 1)}, "since"),
        ({"since": NOW, "until": NOW}, "until"),
    ):  # fmt: skip
        with pytest.raises(ValidationError) as err:
            await annotation_page(store, **kw)  # type: ignore[arg-type]
        assert err.value.field == field, kw
