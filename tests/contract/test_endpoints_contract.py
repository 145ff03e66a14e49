"""Endpoint health and tenants' event settings in the Store contract (issue 14): every
test runs against PostgreSQL and SQLite."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sluice.errors import NotFound
from sluice.store import AuditEntry, Store
from sluice.store.endpoints import EndpointReport

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
URL = "https://hooks.example.com/in"


def at(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


def audit(action: str) -> AuditEntry:
    return AuditEntry(at=NOW, actor="op", action=action, target="t", detail={})


async def test_report__a_streak_starts_continues_and_ends(store: Store) -> None:
    fail = EndpointReport("a", URL, "webhook", failed=2, last_failed_at=at(5),
                          streak_from=at(1), error="TIMEOUT")  # fmt: skip
    await store.endpoint_report([fail], at(5), 3600)
    [row] = await store.endpoint_list()
    assert (row.state, row.failing_since, row.last_failure_at) == ("failing", at(1), at(5))
    assert row.last_success_at is None and row.failure_rate == 1.0 and row.last_error == "TIMEOUT"
    # Another worker's failures continue the streak: it keeps its first failure.
    more = EndpointReport("a", URL, "webhook", failed=1, last_failed_at=at(9), streak_from=at(8))
    await store.endpoint_report([more], at(9), 3600)
    row = await store.endpoint_get(row.id)
    assert (row.failing_since, row.window_failed) == (at(1), 3)
    ok = EndpointReport("a", URL, "webhook", ok=1, last_ok_at=at(10))
    await store.endpoint_report([ok], at(10), 3600)
    row = await store.endpoint_get(row.id)
    assert (row.state, row.failing_since, row.last_success_at) == ("healthy", None, at(10))
    assert row.failure_rate == 0.75
    # A success then a new failure in one report: the streak starts at that failure.
    mixed = EndpointReport("a", URL, "webhook", ok=1, failed=1, last_ok_at=at(11),
                           last_failed_at=at(12), streak_from=at(12))  # fmt: skip
    await store.endpoint_report([mixed], at(12), 3600)
    row = await store.endpoint_get(row.id)
    assert (row.state, row.failing_since) == ("failing", at(12))


async def test_report__the_window_restarts_when_old(store: Store) -> None:
    await store.endpoint_report(
        [EndpointReport("a", URL, "webhook", failed=4, last_failed_at=at(0), streak_from=at(0))],
        at(0), 60,
    )  # fmt: skip
    await store.endpoint_report([EndpointReport("a", URL, "webhook", ok=1, last_ok_at=at(61))],
                                at(61), 60)  # fmt: skip
    [row] = await store.endpoint_list()
    assert (row.window_ok, row.window_failed, row.window_start) == (1, 0, at(61))


async def test_endpoints__are_per_tenant_and_filtered(store: Store) -> None:
    reports = [
        EndpointReport("a", URL, "webhook", failed=1, last_failed_at=at(0), streak_from=at(0)),
        EndpointReport("b", URL, "webhook", ok=1, last_ok_at=at(0)),
    ]
    await store.endpoint_report(reports, at(0), 60)
    assert [e.tenant for e in await store.endpoint_list()] == ["a", "b"]
    assert [e.tenant for e in await store.endpoint_list(tenant="b")] == ["b"]
    assert [e.tenant for e in await store.endpoint_list(state="failing")] == ["a"]
    assert len(await store.endpoint_list(state="failing", failing_before=at(0))) == 1
    assert await store.endpoint_list(state="failing", failing_before=at(-1)) == []
    with pytest.raises(NotFound):
        await store.endpoint_get("nope")


async def test_move__compare_and_swap_audited_once(store: Store) -> None:
    await store.endpoint_report(
        [EndpointReport("a", URL, "webhook", failed=1, last_failed_at=at(0), streak_from=at(0))],
        at(0), 60,
    )  # fmt: skip
    [row] = await store.endpoint_list()
    moved = await store.endpoint_move(row.id, "failing", "disabled", "dead", at(1), audit("d"))
    assert moved is not None and moved.state == "disabled" and moved.disabled_reason == "dead"
    assert moved.disabled_at == at(1)
    again = await store.endpoint_move(row.id, "failing", "disabled", "dead", at(2), audit("d"))
    assert again is None
    assert len([e for e in await store.audit_list() if e.action == "d"]) == 1
    # Failures and successes reported while disabled leave it disabled.
    await store.endpoint_report([EndpointReport("a", URL, "webhook", ok=1, last_ok_at=at(3))],
                                at(3), 60)  # fmt: skip
    assert (await store.endpoint_get(row.id)).state == "disabled"
    back = await store.endpoint_move(row.id, None, "healthy", None, at(4), audit("e"))
    assert back is not None
    assert (back.state, back.disabled_at, back.disabled_reason, back.failing_since) == (
        "healthy", None, None, None
    )  # fmt: skip


async def test_tenant_events__set_clear_and_dead_mark(store: Store) -> None:
    assert await store.tenant_events_get("a") is None
    await store.tenant_events_set("a", URL, at(0), audit("tenant.events_url.set"))
    got = await store.tenant_events_get("a")
    assert got is not None and got.events_url == URL and got.dead_seen_until == at(0)
    assert [t.tenant for t in await store.tenant_events_list()] == ["a"]
    assert await store.tenant_events_dead_seen("a", at(0), at(60)) is True
    assert await store.tenant_events_dead_seen("a", at(0), at(90)) is False  # moved already
    assert await store.tenant_events_dead_seen("a", at(60), at(30)) is False  # backwards
    assert await store.tenant_events_dead_seen("nobody", None, at(30)) is False
    await store.tenant_events_set("a", None, at(90), audit("tenant.events_url.clear"))
    cleared = await store.tenant_events_get("a")
    assert cleared is not None and cleared.events_url is None and cleared.dead_seen_until == at(60)
    assert await store.tenant_events_list() == []
    actions = [e.action for e in await store.audit_list()]
    assert "tenant.events_url.set" in actions and "tenant.events_url.clear" in actions
