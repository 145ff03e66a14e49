"""Suppressions and last-inbound times in the store, on PostgreSQL and SQLite alike."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sluice.store import AuditEntry, Store
from sluice.store.base import Suppression

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def entry(tenant: str, channel: str, recipient: str, reason: str = "stop") -> Suppression:
    return Suppression(tenant, channel, recipient, reason, "SM1", "ingress:twilio", NOW)


def audit(action: str, target: str) -> AuditEntry:
    return AuditEntry(at=NOW, actor="test", action=action, target=target, detail={})


async def test_suppression_put__once_per_key_and_audited_only_when_new(store: Store) -> None:
    assert await store.suppression_put(entry("acme", "sms", "+14155550100"), audit("s.add", "a"))
    again = entry("acme", "sms", "+14155550100", reason="operator")
    assert not await store.suppression_put(again, audit("s.add", "a"))

    (kept,) = await store.suppression_list("acme", None, None, None, 10)
    assert (kept.reason, kept.source, kept.actor, kept.created_at) == (
        "stop", "SM1", "ingress:twilio", NOW,
    )  # fmt: skip
    assert [a.action for a in await _audit(store)] == ["s.add"]


async def test_suppression_find__only_the_exact_tenant_channel_and_recipient(store: Store) -> None:
    await store.suppression_put(entry("acme", "sms", "+14155550100"), audit("s.add", "a"))
    await store.suppression_put(entry("acme", "email", "ann@example.com"), audit("s.add", "b"))

    found = await store.suppression_find(
        [
            ("acme", "sms", "+14155550100"),
            ("globex", "sms", "+14155550100"),  # another tenant: never applies
            ("acme", "whatsapp", "+14155550100"),  # another medium
            ("acme", "email", "ann@example.com"),
            ("acme", "email", "bob@example.com"),
        ]
    )

    assert found == {("acme", "sms", "+14155550100"), ("acme", "email", "ann@example.com")}
    assert await store.suppression_find([]) == set()


async def test_suppression_list__filters_and_pages_by_key(store: Store) -> None:
    for tenant in ("acme", "globex"):
        for n in range(3):
            await store.suppression_put(
                entry(tenant, "sms", f"+1415555010{n}"), audit("s.add", f"{tenant}{n}")
            )

    first = await store.suppression_list("acme", "sms", None, None, 2)
    rest = await store.suppression_list(
        "acme", "sms", None, (first[-1].tenant, first[-1].channel, first[-1].recipient), 2
    )
    one = await store.suppression_list(None, None, "+14155550101", None, 10)

    assert [s.recipient for s in first + rest] == ["+14155550100", "+14155550101", "+14155550102"]
    assert {s.tenant for s in first + rest} == {"acme"}
    assert [s.tenant for s in one] == ["acme", "globex"]
    assert await store.suppression_list(None, "email", None, None, 10) == []


async def test_suppression_delete__returns_the_entry_and_audits_only_a_change(store: Store) -> None:
    await store.suppression_put(entry("acme", "sms", "+14155550100"), audit("s.add", "a"))

    removed = await store.suppression_delete("acme", "sms", "+14155550100", audit("s.rm", "a"))
    twice = await store.suppression_delete("acme", "sms", "+14155550100", audit("s.rm", "a"))
    other = await store.suppression_delete("globex", "sms", "+14155550100", audit("s.rm", "a"))

    assert removed is not None and removed.reason == "stop"
    assert twice is None and other is None
    assert await store.suppression_find([("acme", "sms", "+14155550100")]) == set()
    assert [a.action for a in await _audit(store)] == ["s.add", "s.rm"]


async def test_contact_seen__keeps_the_latest_time_per_tenant(store: Store) -> None:
    key = ("acme", "whatsapp", "+14155550100")
    await store.contact_seen(*key, NOW)
    await store.contact_seen(*key, NOW - timedelta(hours=3))  # a late, older event
    await store.contact_seen("globex", "whatsapp", "+14155550199", NOW)

    seen = await store.contact_find([key, ("globex", "whatsapp", "+14155550100")])

    assert seen == {key: NOW}
    await store.contact_seen(*key, NOW + timedelta(hours=1))
    assert await store.contact_find([key]) == {key: NOW + timedelta(hours=1)}
    assert await store.contact_find([]) == {}


async def _audit(store: Store) -> list[AuditEntry]:
    return list(reversed(await store.audit_list(100)))


async def test_suppression_counts__per_medium_across_tenants(store: Store) -> None:
    assert await store.suppression_counts() == {}
    for tenant, channel, recipient in (
        ("acme", "sms", "+14155550100"),
        ("globex", "sms", "+14155550100"),
        ("acme", "email", "ann@example.com"),
    ):
        await store.suppression_put(entry(tenant, channel, recipient), audit("s.add", tenant))

    assert await store.suppression_counts() == {"email": 1, "sms": 2}
