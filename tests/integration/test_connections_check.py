"""``sluice connections check`` against the provider simulator, with the real adapter.

The postmortem's missing guardrail: a scope that disappeared at the provider is found
by the check, the connection is marked before any message fails, and its queued
messages wait (held) instead of each discovering it at the provider.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from sluice.config import Settings
from sluice.connections import ConnectionState
from sluice.model import NewMessage, Status
from sluice.ops.connections import connection_add, connection_check
from sluice.providers import http_client
from sluice.providers.sendgrid import SendGridProvider
from sluice.providers.simulator import SimulatorThread
from sluice.secrets import SecretBox, generate_key
from sluice.store import Store

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def sim() -> Iterator[SimulatorThread]:
    secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    with SimulatorThread(secret) as s:
        httpx.post(
            f"{s.url}/_sim/credentials",
            json={"provider": "sendgrid", "api_key": "SG.acme", "scopes": ["mail.send"]},
        ).raise_for_status()
        yield s


async def _control(sim: SimulatorThread, path: str, body: dict[str, object]) -> None:
    async with httpx.AsyncClient() as client:
        reply = await client.post(f"{sim.url}{path}", json={"provider": "sendgrid", **body})
        reply.raise_for_status()


async def _setup(store: Store, box: SecretBox):  # type: ignore[no-untyped-def]
    return await connection_add(
        store, box, tenant="acme", provider="sendgrid",
        secrets={"api_key": "SG.acme", "from_email": "ops@acme.example"},
        scopes=["mail.send"], expires_at=NOW + timedelta(days=10), actor="test",
    )  # fmt: skip


async def _check(store: Store, box: SecretBox, sim: SimulatorThread):  # type: ignore[no-untyped-def]
    conn = await store.connection_get("acme", "sendgrid")  # type: ignore[attr-defined]
    async with http_client(Settings()) as client:
        provider = SendGridProvider(client, base_url=f"{sim.url}/sendgrid")

        class Clock:
            def now(self) -> datetime:
                return NOW

        return await connection_check(store, box, provider, conn, Clock())


async def test_check__valid_credentials_record_the_success_and_days_to_expiry(
    store: Store, sim: SimulatorThread
) -> None:
    box = SecretBox(generate_key())
    await _setup(store, box)
    report = await _check(store, box, sim)
    assert report.ok and report.granted_scopes is not None and "mail.send" in report.granted_scopes
    assert report.days_until_expiry == pytest.approx(10)
    conn = await store.connection_get("acme", "sendgrid")  # type: ignore[attr-defined]
    assert conn.last_check_ok_at == NOW and conn.last_check_error is None
    assert "SG.acme" not in repr(report)


async def test_check__scope_gone_at_provider_marks_needs_reconsent_and_holds_queued(
    store: Store, sim: SimulatorThread
) -> None:
    box = SecretBox(generate_key())
    await _setup(store, box)
    [mid] = await store.enqueue_many(
        [NewMessage(tenant="acme", channel="email", provider="sendgrid",
                    recipient="a@b.example", payload={"subject": "s", "text": "t"})],
        NOW,
    )  # fmt: skip
    await _control(sim, "/_sim/credentials/scopes", {"token": "SG.acme", "scopes": []})
    report = await _check(store, box, sim)
    assert not report.ok and report.missing_scopes == ["mail.send"]
    conn = await store.connection_get("acme", "sendgrid")  # type: ignore[attr-defined]
    assert conn.state is ConnectionState.NEEDS_RECONSENT
    assert conn.missing_scopes == ["mail.send"]
    assert conn.last_check_ok_at is None and conn.last_check_error
    m = await store.message_get(mid)
    assert m.status is Status.HELD and "needs_reconsent" in (m.hold_reason or "")


async def test_check__revoked_key_marks_pending_reauth(store: Store, sim: SimulatorThread) -> None:
    box = SecretBox(generate_key())
    await _setup(store, box)
    await _control(sim, "/_sim/credentials/revoke", {"token": "SG.acme"})
    report = await _check(store, box, sim)
    assert not report.ok
    conn = await store.connection_get("acme", "sendgrid")  # type: ignore[attr-defined]
    assert conn.state is ConnectionState.PENDING_REAUTH
