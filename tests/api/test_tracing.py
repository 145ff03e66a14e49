"""Tracing: one trace per message, from the API request (or a Python enqueue) through
each attempt's provider call to its receipt, read from the SDK's in-memory exporter.

The API runs in-process on the test's real store, a real ``Dispatcher`` sends through
the real webhook adapter (HTTP faked at the wire), and a real ``Projector`` applies a
signed receipt that came in through ``/v1/ingress``. Between the enqueue, the sends
and the receipt the test starts tracing afresh (a new ``TracerProvider``), as a new
process would: the spans still join one trace, because its ids come from the message.
"""

from __future__ import annotations

import base64
import json
import os
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from api_harness import Api
from standardwebhooks import Webhook
from structlog.testing import capture_logs

from sluice import enqueue_many_async, tracing
from sluice.clock import FrozenClock
from sluice.config import Settings, load_settings
from sluice.errors import ConfigError
from sluice.ingress.config import IngressConfig, IngressSource
from sluice.ingress.projector import Projector
from sluice.model import NewMessage, Status
from sluice.netguard import static_resolver
from sluice.providers.webhook import WebhookProvider
from sluice.store import Store
from sluice.worker import Dispatcher, RetryPolicy

# The dev environment has the extra (requirements.lock); an install without it skips.
pytest.importorskip("opentelemetry.sdk.trace", reason="needs the extra: sluice[otel]")
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, StatusCode

SIGNING = "whsec_" + base64.b64encode(os.urandom(24)).decode()
PARTNER = "whsec_" + base64.b64encode(b"p" * 32).decode()
COLLECTOR = Settings(otel_endpoint="http://collector.test:4318")
CALLER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def ingress_config() -> IngressConfig:
    return IngressConfig(
        sources={"partner": IngressSource("partner", "webhook", secrets=(PARTNER,))}
    )


class Collector:
    """What a collector received from every "process" of a test, each with its own
    tracing (a ``TracerProvider`` and an in-memory exporter)."""

    def __init__(self) -> None:
        self.exporters: list[InMemorySpanExporter] = []
        self.restart()

    def restart(self) -> None:
        """Tracing as a new process starts it: a new provider, nothing carried over."""
        tracing.reset()
        self.exporters.append(InMemorySpanExporter())
        assert tracing.configure(COLLECTOR, env={}, exporter=self.exporters[-1])

    def spans(self) -> tuple[ReadableSpan, ...]:
        return tuple(s for e in self.exporters for s in e.get_finished_spans())


@pytest.fixture
def exported() -> Iterator[Collector]:
    """Tracing on, as a collector's URL turns it on, with spans kept in memory."""
    yield Collector()
    tracing.reset()


async def deliver(store: Store, clock: FrozenClock, answers: list[int]) -> None:
    """Run a worker until idle, the receiver answering ``answers`` in turn (the last one
    repeating), moving the clock past each backoff."""
    seen: list[int] = []

    def receiver(request: httpx.Request) -> httpx.Response:
        seen.append(1)
        return httpx.Response(answers[min(len(seen), len(answers)) - 1])

    settings = Settings(database_url="sqlite:///unused.db", poll_interval=0.05,
                        flush_interval=0, reaper_interval=3600)  # fmt: skip
    async with httpx.AsyncClient(transport=httpx.MockTransport(receiver)) as client:
        provider = WebhookProvider(
            client, SIGNING, clock=clock, resolve=static_resolver("93.184.216.34")
        )
        for _ in answers:
            d = Dispatcher(store, {"webhook": provider}, settings, clock=clock,
                           retry=RetryPolicy(base=1, cap=1), worker_id="w-trace")  # fmt: skip
            await d.run(until_idle=True)
            clock.advance(5)


async def apply_receipt(api: Api, config: IngressConfig, mid: str) -> None:
    """A partner's signed receipt for ``mid`` through the API, applied by a projector."""
    doc = {"type": "message.delivered", "timestamp": "2026-01-01T00:00:00Z",
           "data": {"message_id": mid}}  # fmt: skip
    body = json.dumps(doc)
    now = datetime.now(UTC)
    headers = {
        "webhook-id": f"evt-{mid}",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(PARTNER).sign(f"evt-{mid}", now, body),
        "content-type": "application/json",
    }
    r = await api.client.post("/v1/ingress/partner", content=body.encode(), headers=headers)
    assert r.status_code == 200, r.text
    settings = Settings(database_url="sqlite:///unused.db")
    await Projector(api.store, settings, config, worker_id="p-trace").drain()


def message(path: str, **kw: object) -> dict[str, object]:
    return {"channel": "webhook", "provider": "webhook",
            "recipient": f"https://receiver.example/{path}", "payload": {"n": 1}, **kw}  # fmt: skip


def trace_of(spans: tuple[ReadableSpan, ...], mid: str) -> list[ReadableSpan]:
    return [s for s in spans if (s.attributes or {}).get("sluice.message_id") == mid]


def names(spans: list[ReadableSpan]) -> list[str]:
    return [s.name for s in sorted(spans, key=lambda s: s.start_time or 0)]


def later(clock_start: datetime | None = None) -> FrozenClock:
    # The API stamps messages with real time; the worker's clock starts just after.
    return FrozenClock((clock_start or datetime.now(UTC)) + timedelta(seconds=1))


# -- one trace per message ---------------------------------------------------------------


async def test_trace__joins_the_api_request_each_attempt_its_provider_call_and_the_receipt(
    api: Api, ingress_config: IngressConfig, exported: Collector
) -> None:
    r = await api.client.post(
        "/v1/messages",
        json={"messages": [message("flaky"), message("fine")]},
        headers={**api.acme, "X-Request-Id": "req-trace-1", "traceparent": CALLER},
    )
    assert r.status_code == 201, r.text
    flaky, fine = (m["id"] for m in r.json()["messages"])

    exported.restart()  # the worker: another process
    clock = later()
    await deliver(api.store, clock, [503, 200])
    exported.restart()  # the worker whose projector applies the receipt
    await apply_receipt(api, ingress_config, flaky)
    assert (await api.store.message_get(flaky)).status is Status.DELIVERED

    spans = exported.spans()
    mine = trace_of(spans, flaky)
    assert names(mine) == [
        "sluice.message", "sluice.enqueue",
        "sluice.attempt", "sluice.provider.webhook",
        "sluice.attempt", "sluice.provider.webhook",
        "sluice.receipt",
    ]  # fmt: skip
    # One trace, and nothing of another message in it.
    assert {s.context.trace_id for s in mine} == {tracing.ids_of(flaky)[0]}
    assert {s.context.trace_id for s in trace_of(spans, fine)} == {tracing.ids_of(fine)[0]}
    assert {s.context.trace_id for s in spans} == {
        tracing.ids_of(flaky)[0],
        tracing.ids_of(fine)[0],
    }
    for s in mine:
        assert s.attributes is not None
        assert s.attributes["sluice.tenant"] == "acme"
        assert s.attributes["sluice.correlation_id"] == "req-trace-1"  # the X-Request-Id

    by_name: dict[str, list[ReadableSpan]] = {}
    for s in sorted(mine, key=lambda s: s.start_time or 0):
        by_name.setdefault(s.name, []).append(s)
    [root], [enqueue], [receipt] = (
        by_name["sluice.message"],
        by_name["sluice.enqueue"],
        by_name["sluice.receipt"],
    )
    assert root.parent is None and root.context.span_id == tracing.ids_of(flaky)[1]
    for s in [enqueue, *by_name["sluice.attempt"], receipt]:
        assert s.parent is not None and s.parent.span_id == root.context.span_id, s.name
    for attempt, call in zip(
        by_name["sluice.attempt"], by_name["sluice.provider.webhook"], strict=True
    ):
        assert call.parent is not None and call.parent.span_id == attempt.context.span_id

    assert enqueue.attributes is not None
    assert enqueue.attributes["sluice.via"] == "api"
    assert enqueue.attributes["sluice.request_id"] == "req-trace-1"
    assert enqueue.attributes["sluice.duplicate"] is False
    assert [format(link.context.trace_id, "032x") for link in enqueue.links] == [CALLER[3:35]]

    first, second = by_name["sluice.attempt"]
    assert first.attributes is not None and second.attributes is not None
    assert (first.attributes["sluice.outcome"], first.attributes["sluice.error_code"]) == (
        "throttled",
        "PROVIDER_UNAVAILABLE",
    )
    assert first.attributes["sluice.next_status"] == "queued"
    assert first.status.status_code is StatusCode.ERROR
    assert (second.attributes["sluice.outcome"], second.attributes["sluice.next_status"]) == (
        "sent",
        "sent",
    )
    assert (first.attributes["sluice.attempt"], second.attributes["sluice.attempt"]) == (1, 2)
    failed_call, sent_call = by_name["sluice.provider.webhook"]
    assert failed_call.kind is SpanKind.CLIENT
    assert failed_call.attributes is not None and sent_call.attributes is not None
    assert failed_call.attributes["sluice.outcome"] == "error"
    assert failed_call.attributes["sluice.provider.status"] == "HTTP 503"
    assert failed_call.attributes["sluice.error_code"] == first.attributes["sluice.error_code"]
    assert sent_call.attributes["sluice.outcome"] == "ok"
    assert sent_call.attributes["sluice.provider.status"] == "HTTP 200"
    assert "sluice.error_code" not in sent_call.attributes
    for call in (failed_call, sent_call):
        assert isinstance(call.attributes["sluice.latency_ms"], float)
        assert call.attributes["sluice.latency_ms"] >= 0

    assert receipt.attributes is not None
    assert receipt.attributes["sluice.receipt.status"] == "delivered"
    assert receipt.attributes["sluice.receipt.source"] == "partner"
    assert receipt.attributes["sluice.receipt.result"] == "applied"


async def test_trace__an_idempotent_repeat_lands_in_the_first_messages_trace(
    api: Api, exported: Collector
) -> None:
    body = message("once", idempotency_key="order-1")
    first = await api.client.post("/v1/messages", json=body, headers=api.acme)
    again = await api.client.post("/v1/messages", json=body, headers=api.acme)
    mid = first.json()["id"]
    assert again.json()["id"] == mid
    spans = trace_of(exported.spans(), mid)
    assert names(spans) == ["sluice.message", "sluice.enqueue", "sluice.enqueue"]
    enqueues = [s for s in spans if s.name == "sluice.enqueue"]
    assert [(s.attributes or {})["sluice.duplicate"] for s in enqueues] == [False, True]
    assert {s.context.trace_id for s in spans} == {tracing.ids_of(mid)[0]}
    # Each request's own correlation id (its X-Request-Id, made up here).
    ids = {(s.attributes or {})["sluice.correlation_id"] for s in enqueues}
    assert ids == {first.headers["X-Request-Id"], again.headers["X-Request-Id"]}


async def test_trace__a_python_enqueue_starts_the_trace_too(
    store: Store, exported: Collector
) -> None:
    new = NewMessage(tenant="acme", channel="webhook", provider="webhook",
                     recipient="https://receiver.example/py", correlation_id="order-9")  # fmt: skip
    [mid] = await enqueue_many_async(store, [new])
    exported.restart()
    await deliver(store, later(), [200])
    spans = trace_of(exported.spans(), mid)
    assert names(spans) == [
        "sluice.message",
        "sluice.enqueue",
        "sluice.attempt",
        "sluice.provider.webhook",
    ]
    assert {(s.attributes or {})["sluice.correlation_id"] for s in spans} == {"order-9"}
    [enqueue] = [s for s in spans if s.name == "sluice.enqueue"]
    assert (enqueue.attributes or {})["sluice.via"] == "python"
    assert {s.context.trace_id for s in spans} == {tracing.ids_of(mid)[0]}


# -- off unless configured ---------------------------------------------------------------


async def test_tracing__records_nothing_when_not_configured(
    api: Api, ingress_config: IngressConfig
) -> None:
    memory = InMemorySpanExporter()
    try:
        assert not tracing.configure(Settings(), env={}, exporter=memory)
        assert not tracing.enabled()
        r = await api.client.post("/v1/messages", json=message("quiet"), headers=api.acme)
        mid = r.json()["id"]
        await deliver(api.store, later(), [200])
        await apply_receipt(api, ingress_config, mid)
        assert (await api.store.message_get(mid)).status is Status.DELIVERED
        assert memory.get_finished_spans() == ()
    finally:
        tracing.reset()


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector.test:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector.test:4318/v1/traces"}, True),
        ({"SLUICE_OTEL_ENDPOINT": "http://collector.test:4318"}, True),
        ({"SLUICE_OTEL_ENDPOINT": "http://c.test:4318", "OTEL_SDK_DISABLED": "true"}, False),
    ],
    ids=[
        "nothing-set",
        "standard-endpoint",
        "standard-traces-endpoint",
        "sluice-endpoint",
        "sdk-disabled",
    ],
)
def test_tracing__is_on_only_when_an_endpoint_is_configured(env: dict[str, str], on: bool) -> None:
    memory = InMemorySpanExporter()
    try:
        assert tracing.configure(load_settings(env), env=env, exporter=memory) is on
        assert tracing.enabled() is on
    finally:
        tracing.reset()


def test_tracing__sends_to_the_collectors_traces_url() -> None:
    assert tracing.traces_endpoint("http://c.test:4318") == "http://c.test:4318/v1/traces"
    assert tracing.traces_endpoint("http://c.test:4318/") == "http://c.test:4318/v1/traces"
    assert tracing.traces_endpoint("https://c.test/v1/traces") == "https://c.test/v1/traces"
    try:
        assert tracing.configure(COLLECTOR, env={})  # the real OTLP exporter, never called
    finally:
        tracing.reset()


def test_settings__a_tracing_endpoint_must_be_an_http_url() -> None:
    with pytest.raises(ConfigError, match="SLUICE_OTEL_ENDPOINT 'collector:4318'"):
        load_settings({"SLUICE_OTEL_ENDPOINT": "collector:4318"})


def test_tracing__configured_without_the_extra_stops_a_process_and_never_an_enqueue(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As if `pip install sluice` without [otel]: the SDK cannot be imported.
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)
    with pytest.raises(ConfigError, match=r"pip install 'sluice\[otel\]'"):
        tracing.configure(COLLECTOR, env={})
    monkeypatch.setenv("SLUICE_OTEL_ENDPOINT", "http://collector.test:4318")
    tracing.reset()
    try:
        with capture_logs() as logs:
            assert not tracing.enabled()  # an application's process: decided on first use
        assert [e["event"] for e in logs] == ["tracing is off"]
        assert "sluice[otel]" in logs[0]["reason"]
    finally:
        tracing.reset()


def test_ids__are_the_same_for_a_message_everywhere_and_differ_between_messages() -> None:
    a, b = "0190a0b0-0000-7000-8000-000000000001", "0190a0b0-0000-7000-8000-000000000002"
    assert tracing.ids_of(a) == tracing.ids_of(a)
    assert tracing.ids_of(a)[0] != tracing.ids_of(b)[0]
    trace_id, span_id = tracing.ids_of(a)
    assert 0 < trace_id < 2**128 and 0 < span_id < 2**64
