"""A dead endpoint is disabled after ``endpoint_disable_after`` and its messages held,
not retried forever (issue 14); enabling it sends them. A real dispatcher on both
stores, the receivers faked at the wire (``httpx.MockTransport``), time a
``FrozenClock`` moved across the five days."""

from __future__ import annotations

import base64
import os
from collections import Counter
from datetime import UTC, datetime

import httpx
import pytest
import structlog

from sluice.clock import FrozenClock
from sluice.config import Settings
from sluice.errors import NotFound, ValidationError
from sluice.model import NewMessage, Status
from sluice.netguard import static_resolver
from sluice.ops.endpoints import endpoint_disable, endpoint_enable, endpoints_list
from sluice.providers.webhook import WebhookProvider
from sluice.store import MessageFilter, Store
from sluice.worker import Dispatcher

SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()
PUBLIC = static_resolver("93.184.216.34")
DEAD = "https://dead.example/hook"
LIVE = "https://live.example/hook"
HOUR = 3600.0


class Receiver:
    """Answers 503 from ``DEAD`` while ``down``, 200 otherwise; notes when (by the test's
    clock) each request arrived."""

    def __init__(self, clock: FrozenClock) -> None:
        self.clock = clock
        self.down = True
        self.seen: Counter[str] = Counter()
        self.dead_calls: list[datetime] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        self.seen[url] += 1
        if url == DEAD:
            self.dead_calls.append(self.clock.now())
            if self.down:
                return httpx.Response(503)
        return httpx.Response(200)


def hook(url: str, tenant: str = "acme") -> NewMessage:
    return NewMessage(tenant=tenant, channel="webhook", provider="webhook", recipient=url,
                      payload={}, max_attempts=100)  # fmt: skip


async def drain(store: Store, receiver: Receiver, clock: FrozenClock) -> Dispatcher:
    settings = Settings(
        database_url="sqlite:///unused.db", poll_interval=0.02, flush_interval=0,
        reaper_interval=3600, worker_concurrency=10, retry_base=60, retry_cap=HOUR,
        breaker_min_volume=10_000, max_defer_age=30 * 86400.0,
    )  # fmt: skip
    async with httpx.AsyncClient(transport=httpx.MockTransport(receiver)) as client:
        d = Dispatcher(
            store, {"webhook": WebhookProvider(client, SECRET, clock=clock, resolve=PUBLIC)},
            settings, clock=clock, worker_id="w", logger=structlog.get_logger("test"),
        )  # fmt: skip
        await d.run(until_idle=True)
        return d


async def statuses(store: Store, ids: list[str]) -> Counter[str]:
    return Counter([(await store.message_get(i)).status.value for i in ids])


async def test_dead_endpoint__disabled_after_five_days_held_then_enabled_and_sent(
    store: Store,
) -> None:
    clock = FrozenClock(datetime.now(UTC))
    receiver = Receiver(clock)
    dead_ids: list[str] = []
    live_ids: list[str] = []
    disabled_at = None
    # Six hours at a time for six days: two new messages per endpoint each time.
    for _ in range(24):
        dead_ids += await store.enqueue_many([hook(DEAD), hook(DEAD)], clock.now())
        live_ids += await store.enqueue_many([hook(LIVE), hook(LIVE)], clock.now())
        await drain(store, receiver, clock)
        [dead] = [e for e in await store.endpoint_list(tenant="acme") if e.endpoint == DEAD]
        if dead.state == "disabled" and disabled_at is None:
            disabled_at = dead.disabled_at
        clock.advance(6 * HOUR)
    assert disabled_at is not None
    # Disabled once five days of failures had passed, not before.
    assert (disabled_at - min(receiver.dead_calls)).total_seconds() >= 5 * 86400
    assert (disabled_at - min(receiver.dead_calls)).total_seconds() < 5 * 86400 + 7 * HOUR
    # No request reached it after it was disabled.
    assert max(receiver.dead_calls) <= disabled_at
    # Whatever was waiting for a retry is claimed and held too.
    clock.advance(2 * HOUR)
    await drain(store, receiver, clock)
    counts = await statuses(store, dead_ids)
    assert counts == {"held": len(dead_ids)}, counts  # in = held + sent, none lost
    assert await statuses(store, live_ids) == {"sent": len(live_ids)}
    held = await store.message_get(dead_ids[-1])
    assert held.hold_reason is not None and held.hold_reason.startswith(
        f"endpoint disabled: {DEAD} (failing without a success since"
    )
    assert held.attempts == 0  # a hold spends no attempt
    rows = {e.endpoint: e for e in await endpoints_list(store, tenant="acme")}
    assert rows[LIVE].state == "healthy" and rows[LIVE].failure_rate == 0.0
    assert rows[DEAD].state == "disabled" and rows[DEAD].last_success_at is None
    assert rows[DEAD].failure_rate == 1.0
    audit = [e for e in await store.audit_list() if e.action == "endpoint.disable"]
    assert [(e.actor, e.target) for e in audit] == [("worker:w", rows[DEAD].id)]

    # The receiver is fixed; an operator enables the endpoint: every held message is
    # released, audited, and delivered once.
    receiver.down = False
    calls_before = len(receiver.dead_calls)
    change = await endpoint_enable(store, rows[DEAD].id, actor="op", reason="fixed", clock=clock)
    assert sorted(change.released) == sorted(dead_ids)
    assert change.endpoint.state == "healthy"
    await drain(store, receiver, clock)
    assert await statuses(store, dead_ids) == {"sent": len(dead_ids)}
    assert len(receiver.dead_calls) - calls_before == len(dead_ids)
    actions = [e.action for e in await store.audit_list()]
    assert "endpoint.enable" in actions and "held.release" in actions


async def test_operator_disable__holds_new_messages_until_enabled(store: Store) -> None:
    clock = FrozenClock(datetime.now(UTC))
    receiver = Receiver(clock)
    receiver.down = False
    first = await store.enqueue_many([hook(DEAD)], clock.now())
    await drain(store, receiver, clock)
    [row] = await endpoints_list(store, tenant="acme")
    assert row.state == "healthy" and row.last_success_at is not None
    with pytest.raises(ValidationError, match="reason"):
        await endpoint_disable(store, row.id, actor="op", reason=None)
    change = await endpoint_disable(store, row.id, actor="op", reason="abuse report", clock=clock)
    assert change.endpoint.disabled_reason == "disabled by op: abuse report"
    later = await store.enqueue_many([hook(DEAD) for _ in range(3)], clock.now())
    other = await store.enqueue_many([hook(DEAD, tenant="globex")], clock.now())  # another tenant's
    await drain(store, receiver, clock)
    assert await statuses(store, later) == {"held": 3}
    assert await statuses(store, first + other) == {"sent": 2}
    held = await store.message_select(Status.HELD, MessageFilter(reason="endpoint disabled"))
    assert sorted(held) == sorted(later)
    change = await endpoint_enable(store, row.id, actor="op", clock=clock)
    assert sorted(change.released) == sorted(later)
    await drain(store, receiver, clock)
    assert await statuses(store, later) == {"sent": 3}
    assert receiver.seen[DEAD] == 5


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"state": "broken"}, "state"), ({"tenant": " "}, "tenant")],
)
async def test_list__bad_filters_name_the_field(
    store: Store, kwargs: dict[str, str], field: str
) -> None:
    with pytest.raises(ValidationError) as err:
        await endpoints_list(store, **kwargs)
    assert err.value.field == field


@pytest.mark.parametrize("bad", ["", "x" * 100, "\ud800", "a\x00b"])
async def test_enable__bad_ids_name_the_field(store: Store, bad: str) -> None:
    with pytest.raises(ValidationError) as err:
        await endpoint_enable(store, bad, actor="op")
    assert err.value.field == "id"


async def test_enable__unknown_id_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        await endpoint_enable(store, "no-such-endpoint", actor="op")
