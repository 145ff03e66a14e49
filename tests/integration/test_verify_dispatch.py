"""Post-send verification with a real dispatcher and the worker's control sweep on both
stores (issue 15, seed 003 RB-03): a message sent with ``verify_within`` and no receipt
moves to ``needs_confirm`` once its time is up (not a second before), counted; enough of
them open the ``SluiceNeedsConfirmGrowing`` incident in the built-in evaluator. The
receiver is faked at the wire (``httpx.MockTransport``); time is a ``FrozenClock``."""

from __future__ import annotations

import base64
import os
from datetime import UTC, datetime

import httpx
import structlog

from sluice import metrics
from sluice.alerts.rules import RULES
from sluice.clock import FrozenClock
from sluice.config import Settings
from sluice.model import NewMessage, Status
from sluice.netguard import static_resolver
from sluice.ops.alerts import Evaluator
from sluice.ops.state_metrics import StateMetrics
from sluice.providers.webhook import WebhookProvider
from sluice.store import Store
from sluice.worker import Dispatcher
from sluice.worker.controls import ControlWatch

SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()
PUBLIC = static_resolver("93.184.216.34")
SETTINGS = Settings(
    database_url="sqlite:///unused.db", poll_interval=0.05, flush_interval=0,
    reaper_interval=3600, worker_concurrency=8, breaker_min_volume=1000, alerts_clear_for=300,
)  # fmt: skip


def hook(name: str, **kw: object) -> NewMessage:
    return NewMessage(
        tenant="acme", channel="webhook", provider="webhook",
        recipient=f"https://receiver.example/hook/{name}", payload={}, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


async def drain(store: Store, clock: FrozenClock) -> list[str]:
    """Send everything due; the ids the receiver saw."""
    seen: list[str] = []

    async def receiver(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["webhook-id"])
        return httpx.Response(200)

    async with httpx.AsyncClient(transport=httpx.MockTransport(receiver)) as client:
        provider = WebhookProvider(client, SECRET, clock=clock, resolve=PUBLIC)
        d = Dispatcher(store, {"webhook": provider}, SETTINGS, clock=clock, worker_id="w")
        await d.run(until_idle=True)
    return seen


async def control_sweep(store: Store, clock: FrozenClock) -> None:
    """One round of the worker's control loop (it sweeps on its first round)."""
    watch = ControlWatch(
        store, SETTINGS, worker_id="w", clock=clock, logger=structlog.get_logger("test")
    )
    await watch.poll()


def timed_out() -> float:
    counter = metrics.of(metrics.NEEDS_CONFIRM, "acme", "webhook", "webhook", "timeout")
    return counter._value.get()  # type: ignore[no-any-return]


async def test_no_receipt__needs_confirm_once_the_time_is_up_and_counted(store: Store) -> None:
    clock = FrozenClock(datetime.now(UTC))
    before = timed_out()
    verified, plain = await store.enqueue_many(
        [hook("a", verify_within=600), hook("b")], clock.now()
    )
    assert sorted(await drain(store, clock)) == sorted([verified, plain])
    assert (await store.message_get(verified)).status is Status.SENT
    clock.advance(599)
    await control_sweep(store, clock)
    assert (await store.message_get(verified)).status is Status.SENT  # not yet
    clock.advance(1)
    await control_sweep(store, clock)
    m = await store.message_get(verified)
    assert (m.status, m.last_error_code) == (Status.NEEDS_CONFIRM, "NOT_CONFIRMED")
    assert (await store.message_get(plain)).status is Status.SENT  # asked for nothing
    assert timed_out() == before + 1
    counts = (await store.status_report(clock.now())).counts
    assert (counts.get("needs_confirm"), counts.get("sent")) == (1, 1)
    # The state metric shows it.
    samples = await StateMetrics(store, SETTINGS, clock=clock).samples(clock.now())
    waiting = [v for labels, v in samples["sluice_messages"] if labels["status"] == "needs_confirm"]
    assert waiting == [1.0]


async def test_growing__the_rule_opens_an_incident_pointing_to_rb_03(store: Store) -> None:
    clock = FrozenClock(datetime.now(UTC))
    rule = [r for r in RULES if r.name == "SluiceNeedsConfirmGrowing"]
    state = StateMetrics(store, SETTINGS, clock=clock)
    ev = Evaluator(store, SETTINGS, state, rules=rule, clock=clock)
    ids = await store.enqueue_many(
        [hook(f"m{i}", verify_within=60) for i in range(11)], clock.now()
    )
    assert len(await drain(store, clock)) == 11
    clock.advance(61)
    await control_sweep(store, clock)
    assert (await store.status_report(clock.now())).counts.get("needs_confirm") == len(ids)
    await ev.evaluate()
    assert await store.incident_list() == []  # not yet for 10 minutes
    clock.advance(600)
    await state.refresh(force=True)
    await ev.evaluate()
    [incident] = await store.incident_list()
    assert (incident.rule, incident.runbook, incident.types) == (
        "SluiceNeedsConfirmGrowing", "003#RB-03", ["PUBLISH"],
    )  # fmt: skip
    assert (incident.scope, incident.value) == ({"channel": "webhook", "provider": "webhook"}, 11)
