"""The seed postmortem (INC-2025-09-18-OUTBOX), replayed against Sluice.

A tenant admin's credential rotation drops a scope while messages flow. In the
incident every action retried three times into the dead-letter queue and on-call
paused the worker by hand. Here: the provider's 403 marks the connection
``needs_reconsent`` and holds that tenant's messages (dead-letter growth 0), the other
tenants keep flowing, and re-consent releases the held messages, each delivered once.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import httpx

from sluice.connections import ConnectionState
from sluice.model import NewMessage
from sluice.ops.connections import connection_add, connection_rotate
from sluice.secrets import SecretBox, generate_key
from sluice.store import create_store

TENANTS = ("acme-demo", "northern-labs", "globex")
PER_WAVE = 100


async def _open(url: str):  # type: ignore[no-untyped-def]
    store = create_store(url)
    await store.open()  # type: ignore[attr-defined]
    return store


async def _setup(url: str, box: SecretBox) -> None:
    store = await _open(url)
    try:
        for tenant in TENANTS:
            await connection_add(
                store, box, tenant=tenant, provider="sendgrid",
                secrets={"api_key": f"SG.{tenant}", "from_email": f"ops@{tenant}.example"},
                scopes=["mail.send"], actor="test",
            )  # fmt: skip
    finally:
        await store.close()


async def _wave(url: str, wave: int) -> list[str]:
    store = await _open(url)
    try:
        return await store.enqueue_many(
            [
                NewMessage(
                    tenant=tenant,
                    channel="email",
                    provider="sendgrid",
                    recipient=f"user{i}@{tenant}.example",
                    action="approval.requested",
                    payload={"subject": "Approval waiting", "text": f"wave {wave} item {i}"},
                    scopes=["mail.send"],
                    max_attempts=3,
                )
                for tenant in TENANTS
                for i in range(PER_WAVE)
            ]
        )
    finally:
        await store.close()


async def _state(url: str) -> tuple[dict[str, int], dict[str, str], dict[str, int]]:
    store = await _open(url)
    try:
        report = await store.status_report(datetime.now(UTC))
        conns = {c.tenant: c.state.value for c in await store.connection_list()}
        held_by_tenant: dict[str, int] = {}
        for tenant in TENANTS:
            held_by_tenant[tenant] = len(
                await store.message_select(
                    "held", __import__("sluice").MessageFilter(tenant=tenant)
                )
            )
        return report.counts, conns, held_by_tenant
    finally:
        await store.close()


async def _reconsent(url: str, box: SecretBox) -> list[str]:
    store = await _open(url)
    try:
        _, released = await connection_rotate(
            store, box, tenant="acme-demo", provider="sendgrid", secrets=None,
            scopes=["mail.send"], actor="oncall:priya", reason="scopes re-authorised",
        )  # fmt: skip
        return released
    finally:
        await store.close()


def wait_for(check, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_scope_revoked_under_load__tenant_held_others_flow_reconsent_delivers_all_once(
    clean_pg_url, simulator, workers
) -> None:  # type: ignore[no-untyped-def]
    key = generate_key()
    box = SecretBox(key)
    for tenant in TENANTS:
        httpx.post(
            f"{simulator.url}/_sim/credentials",
            json={"provider": "sendgrid", "api_key": f"SG.{tenant}", "scopes": ["mail.send"]},
            timeout=5,
        ).raise_for_status()
    asyncio.run(_setup(clean_pg_url, box))
    simulator.faults(provider="sendgrid", latency_ms=3)
    ids = asyncio.run(_wave(clean_pg_url, 1))
    workers.start(
        clean_pg_url,
        simulator.secret,
        SLUICE_SECRET_KEY=key,
        SLUICE_SENDGRID_BASE_URL=f"{simulator.url}/sendgrid",
        SLUICE_WORKER_CONCURRENCY="20",
    )
    wait_for(lambda: simulator.summary()["unique"] >= 60, 60, "the first deliveries")

    # 03:07 — the tenant admin rotates credentials and calendar/mail scope is lost.
    httpx.post(
        f"{simulator.url}/_sim/credentials/scopes",
        json={"provider": "sendgrid", "token": "SG.acme-demo", "scopes": []},
        timeout=5,
    ).raise_for_status()
    ids += asyncio.run(_wave(clean_pg_url, 2))  # load keeps coming

    def _state_sync():  # type: ignore[no-untyped-def]
        return asyncio.run(_state(clean_pg_url))

    def settled_with_acme_held() -> bool:
        counts, conns, held = _state_sync()
        return (
            conns["acme-demo"] == ConnectionState.NEEDS_RECONSENT
            and held["acme-demo"] > 0
            and counts.get("queued", 0) == 0
            and counts.get("sending", 0) == 0
        )

    wait_for(settled_with_acme_held, 90, "acme held, nothing else waiting")
    counts, conns, held = _state_sync()
    assert counts.get("dead", 0) == 0, "dead-letter growth must be 0"
    assert conns == {"acme-demo": "needs_reconsent", "northern-labs": "active", "globex": "active"}
    assert held["northern-labs"] == held["globex"] == 0
    held_acme = held["acme-demo"]
    assert counts == {"sent": len(ids) - held_acme, "held": held_acme}  # the others all went

    # 03:33 — new consent with the scope; Sluice releases what waited.
    httpx.post(
        f"{simulator.url}/_sim/credentials/scopes",
        json={"provider": "sendgrid", "token": "SG.acme-demo", "scopes": ["mail.send"]},
        timeout=5,
    ).raise_for_status()
    released = asyncio.run(_reconsent(clean_pg_url, box))
    assert len(released) == held_acme
    wait_for(lambda: _state_sync()[0] == {"sent": len(ids)}, 90, "every message sent")

    delivered = simulator.ids()
    assert [mid for mid in ids if mid not in delivered] == []  # lost = 0
    assert max(delivered[mid] for mid in ids) == 1  # each delivered once
    print(
        f"\npostmortem replay: {len(ids)} messages, {held_acme} held for acme-demo, "
        f"dead-letter growth 0, {len(released)} released on re-consent, lost 0, duplicates 0"
    )
