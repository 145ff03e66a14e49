"""``sluice_workers.in_flight`` is what a worker holds at each heartbeat (issue 14: it was
reported reading 0 for a worker holding 96-100 messages in ``sending``), and ``status``
names the worker's host and pid. A real dispatcher holds real claims against a slow
receiver, faked at the wire (``httpx.MockTransport``)."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
from datetime import timedelta

import httpx

from sluice.config import Settings
from sluice.model import NewMessage, Status
from sluice.netguard import static_resolver
from sluice.ops.listings import status_view
from sluice.providers.webhook import WebhookProvider
from sluice.store import Store
from sluice.worker import Dispatcher

SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()
PUBLIC = static_resolver("93.184.216.34")
N = 100


class SlowReceiver:
    """Holds every request until ``opened``; counts the requests it got."""

    def __init__(self) -> None:
        self.opened = asyncio.Event()
        self.waiting = 0
        self.seen = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen += 1
        self.waiting += 1
        await self.opened.wait()
        self.waiting -= 1
        return httpx.Response(200)


async def until(check, timeout: float = 20.0):  # type: ignore[no-untyped-def]
    """Poll ``check`` (async) until it is truthy; its value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await check()
        if value or loop.time() > deadline:
            return value
        await asyncio.sleep(0.05)


async def test_in_flight__is_what_the_worker_holds_at_each_heartbeat(store: Store) -> None:
    ids = await store.enqueue_many(
        [NewMessage(tenant="acme", channel="webhook", provider="webhook",
                    recipient=f"https://receiver.example/{i}", payload={}) for i in range(N)]
    )  # fmt: skip
    receiver = SlowReceiver()
    # A heartbeat every lease/4 = 1 s; sends start while the 4 s lease outlasts a 1 s call.
    settings = Settings(
        database_url="sqlite:///unused.db", poll_interval=0.05, flush_interval=0,
        reaper_interval=3600, worker_concurrency=N, worker_batch_size=N, lease_seconds=4,
        http_timeout=1,
    )  # fmt: skip
    async with httpx.AsyncClient(transport=httpx.MockTransport(receiver)) as client:
        provider = WebhookProvider(client, SECRET, resolve=PUBLIC)
        d = Dispatcher(store, {"webhook": provider}, settings, worker_id="w-slow")
        run = asyncio.create_task(d.run())
        try:

            async def held_all() -> bool:
                return receiver.waiting == N

            assert await until(held_all), f"{receiver.waiting} of {N} sends started"

            async def reported() -> int | None:
                rows = [w for w in await store.worker_list(d.clock.now()) if w.id == "w-slow"]
                return rows[0].in_flight if rows and rows[0].in_flight == N else None

            # The heartbeat after the sends began says so: every one of them is in flight.
            assert await until(reported) == N
            view = await status_view(store)
            [w] = [w for w in view.workers if w["id"] == "w-slow"]
            assert (w["host"], w["pid"], w["in_flight"], w["running"]) == (
                socket.gethostname(), os.getpid(), N, True,
            )  # fmt: skip
            # Each still holds its claim: in sending, none sent yet.
            statuses = {(await store.message_get(i)).status for i in ids}
            assert statuses == {Status.SENDING}
        finally:
            receiver.opened.set()

        async def all_sent() -> bool:
            return {(await store.message_get(i)).status for i in ids} == {Status.SENT}

        assert await until(all_sent)

        async def drained() -> bool:
            rows = [w for w in await store.worker_list(d.clock.now()) if w.id == "w-slow"]
            return bool(rows) and rows[0].in_flight == 0

        assert await until(drained), "a heartbeat after the sends still counts them"
        d.stop()
        await asyncio.wait_for(run, 20)
    assert receiver.seen == N  # each message sent exactly once
    since = d.clock.now() - timedelta(minutes=1)
    [w] = [w for w in await store.worker_list(since) if w.id == "w-slow"]
    assert (w.in_flight, w.stopped_at is not None, w.sent_total) == (0, True, N)
