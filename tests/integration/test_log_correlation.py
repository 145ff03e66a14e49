"""Every log line a worker writes about a message carries its id, tenant and
correlation id: one search finds a request's messages through every attempt."""

from __future__ import annotations

import base64
import os

import httpx
from structlog.testing import capture_logs

from sluice.clock import FrozenClock
from sluice.config import Settings
from sluice.model import NewMessage
from sluice.netguard import static_resolver
from sluice.providers.webhook import WebhookProvider
from sluice.store import Store
from sluice.worker import Dispatcher, RetryPolicy

SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()


async def test_dispatcher_log_lines__carry_tenant_and_correlation_id(store: Store) -> None:
    clock = FrozenClock()
    new = NewMessage(
        tenant="acme", channel="webhook", provider="webhook",
        recipient="https://receiver.example/fails", payload={}, max_attempts=2,
        correlation_id="req-77",
    )  # fmt: skip
    [mid] = await store.enqueue_many([new], clock.now())
    settings = Settings(database_url="sqlite:///unused.db", poll_interval=0.05, flush_interval=0,
                        reaper_interval=3600)  # fmt: skip
    transport = httpx.MockTransport(lambda request: httpx.Response(503))
    async with httpx.AsyncClient(transport=transport) as client:
        provider = WebhookProvider(
            client, SECRET, clock=clock, resolve=static_resolver("93.184.216.34")
        )
        with capture_logs() as logs:
            for _ in range(2):
                d = Dispatcher(store, {"webhook": provider}, settings, clock=clock,
                               retry=RetryPolicy(base=1, cap=1), worker_id="w-log")  # fmt: skip
                await d.run(until_idle=True)
                clock.advance(5)
    about = [e for e in logs if e.get("message_id") == mid]
    assert [e["event"] for e in about] == ["attempt failed", "attempt failed"]
    for line in about:
        assert (line["tenant"], line["correlation_id"]) == ("acme", "req-77"), line
