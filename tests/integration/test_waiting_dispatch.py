"""Acting on what waits, with a real running dispatcher on both stores (issue 14): a
receiver's 429 throttles its endpoint in the worker's memory; ``throttle_clear`` takes it
out of the running worker too, so the endpoint gets sends again without waiting out the
hour it asked for; ``retry_now`` brings in what the throttle had deferred. The receiver
is faked at the wire (``httpx.MockTransport``); every message is counted."""

from __future__ import annotations

import asyncio
import base64
import os
from collections import Counter
from collections.abc import Awaitable, Callable

import httpx

from sluice import ops
from sluice.config import Settings
from sluice.model import NewMessage, Status
from sluice.netguard import static_resolver
from sluice.providers.webhook import WebhookProvider
from sluice.store import MessageFilter, Store
from sluice.worker import Dispatcher

SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()
PUBLIC = static_resolver("93.184.216.34")
URL = "https://receiver.example/hook"


class Receiver:
    """Answers 429 with ``Retry-After: 3600`` to the first request, then 200."""

    def __init__(self) -> None:
        self.seen: Counter[str] = Counter()

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        name = request.headers.get("x-test-name") or request.content.decode()
        self.seen[name] += 1
        if sum(self.seen.values()) == 1:
            return httpx.Response(429, headers={"Retry-After": "3600"})
        return httpx.Response(200)


def hook(n: int) -> NewMessage:
    return NewMessage(
        tenant="acme", channel="webhook", provider="webhook", recipient=URL, payload={"n": n}
    )


async def until(check: Callable[[], Awaitable[bool]], what: str, seconds: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.02)


async def test_throttle_clear__a_running_worker_sends_there_again_and_retry_now_drains(
    store: Store,
) -> None:
    settings = Settings(
        database_url="sqlite:///unused.db", poll_interval=0.05, flush_interval=0,
        control_poll=0.05, worker_concurrency=4,
    )  # fmt: skip
    receiver = Receiver()
    async with httpx.AsyncClient(transport=httpx.MockTransport(receiver)) as client:
        d = Dispatcher(
            store, {"webhook": WebhookProvider(client, SECRET, resolve=PUBLIC)}, settings,
            worker_id="w-act",
        )  # fmt: skip
        runner = asyncio.create_task(d.run())
        try:
            [first] = await store.enqueue_many([hook(1)])
            store.wake()

            async def throttled() -> bool:
                return bool(await ops.throttles_list(store, provider="webhook"))

            await until(throttled, "the 429 throttles the endpoint")
            [mark] = await ops.throttles_list(store)
            assert (mark.tenant, mark.provider) == ("acme", f"webhook@{URL}")
            # The worker that got the 429 holds the mark itself; a second message waits.
            [second] = await store.enqueue_many([hook(2)])
            store.wake()

            async def deferred() -> bool:
                m = await store.message_get(second)
                return m.status is Status.QUEUED and m.claim_seq >= 1

            await until(deferred, "the throttle defers the next message")
            assert sum(receiver.seen.values()) == 1

            cleared = await ops.throttle_clear(
                store, provider="webhook", actor="ops:ana", reason="receiver is back", timeout=10
            )
            assert [t.provider for t in cleared.throttles] == [f"webhook@{URL}"]
            assert cleared.ack is not None and cleared.ack.complete
            assert "w-act" in cleared.ack.acked
            assert d.limiter.throttles == {}  # gone from the running worker's memory

            # A new message to the same endpoint goes out without waiting out the hour.
            [third] = await store.enqueue_many([hook(3)])
            store.wake()

            async def sent(mid: str) -> bool:
                return (await store.message_get(mid)).status is Status.SENT

            await until(lambda: sent(third), "the endpoint gets sends again")
            for mid in (first, second):  # what the throttle deferred still waits its hour
                assert (await store.message_get(mid)).status is Status.QUEUED

            moved = await ops.retry_now(
                store, MessageFilter(provider="webhook"), actor="ops:ana", reason="drain"
            )
            assert sorted(moved.ids) == sorted([first, second])
            store.wake()
            await until(lambda: sent(first), "the first is retried now")
            await until(lambda: sent(second), "the second is retried now")
        finally:
            d.stop()
            await runner
    # Nothing lost, nothing twice: 3 messages, 4 requests (the 429 and three 200s).
    statuses = [(await store.message_get(m)).status for m in (first, second, third)]
    assert statuses == [Status.SENT] * 3
    assert sum(receiver.seen.values()) == 4
