"""The Store contract for canaries (``canary_record``, ``canary_list``,
``canary_latest``): every test runs against PostgreSQL and SQLite."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from sluice.errors import ValidationError
from sluice.store import Store
from sluice.store.canaries import CanaryRun

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def run(n: int, target: str = "twilio", provider: str = "twilio", **kw: object) -> CanaryRun:
    fields: dict[str, object] = {
        "id": f"c{n:03d}", "target": target, "provider": provider, "tenant": "_sluice",
        "recipient": "+15005550006", "message_id": None,
        "sent_at": T0 + timedelta(minutes=n), "outcome": "pending", "actor": "sluice:canary",
    }  # fmt: skip
    fields.update(kw)
    return CanaryRun(**fields)  # type: ignore[arg-type]


async def test_canary_record__writes_then_updates_its_outcome(store: Store) -> None:
    first = run(1)
    await store.canary_record(first)
    done = replace(
        first, message_id="m-1", outcome="ok", receipt_at=T0 + timedelta(minutes=1, seconds=3)
    )
    await store.canary_record(done)

    assert await store.canary_list(None, 10) == [done]


async def test_canary_record__refuses_an_unknown_outcome(store: Store) -> None:
    with pytest.raises(ValidationError) as err:
        await store.canary_record(run(1, outcome="great"))
    assert err.value.field == "outcome"
    assert await store.canary_list(None, 10) == []


async def test_canary_list__newest_first_by_provider_and_limited(store: Store) -> None:
    for n in range(5):
        await store.canary_record(run(n, outcome="ok"))
    await store.canary_record(run(9, target="sendgrid", provider="sendgrid", outcome="failed",
                                  error="dead (INVALID_RECIPIENT: no)"))  # fmt: skip

    assert [r.id for r in await store.canary_list(None, 3)] == ["c009", "c004", "c003"]
    assert [r.id for r in await store.canary_list("twilio", 10)] == [
        f"c{n:03d}" for n in (4, 3, 2, 1, 0)
    ]
    only = await store.canary_list("sendgrid", 10)
    assert [(r.outcome, r.error) for r in only] == [("failed", "dead (INVALID_RECIPIENT: no)")]


async def test_canary_latest__each_targets_newest_or_newest_finished(store: Store) -> None:
    await store.canary_record(run(1, outcome="failed", error="x"))
    await store.canary_record(run(2, outcome="ok"))
    await store.canary_record(run(3))  # pending
    await store.canary_record(run(4, target="sendgrid", provider="sendgrid", outcome="missing"))

    latest = await store.canary_latest()
    assert [(r.target, r.id, r.outcome) for r in latest] == [
        ("sendgrid", "c004", "missing"), ("twilio", "c003", "pending"),
    ]  # fmt: skip
    finished = await store.canary_latest(finished=True)
    assert [(r.target, r.id) for r in finished] == [("sendgrid", "c004"), ("twilio", "c002")]
