"""Tracing: one OpenTelemetry trace per message, across every process that touches it.

Off unless configured, and then only with the optional extra (``pip install
'sluice[otel]'``: the OpenTelemetry SDK and its OTLP/HTTP exporter). Configured means
``SLUICE_OTEL_ENDPOINT`` (``[sluice] otel_endpoint``), or the standard
``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, is set and
``OTEL_SDK_DISABLED`` is not ``true``. ``SLUICE_OTEL_ENDPOINT`` means what
``OTEL_EXPORTER_OTLP_ENDPOINT`` means, the collector's base URL (``/v1/traces`` is
added). The rest of the SDK's standard variables apply as they always do
(``OTEL_SERVICE_NAME``, default ``sluice``; ``OTEL_TRACES_SAMPLER``; headers).

How one trace joins across processes, with no column for it
-----------------------------------------------------------
The API process that enqueues a message, the worker that sends it and the worker whose
projector applies its receipt share nothing but the message id, so the trace is
derived from it: the trace id is the first 128 bits of a BLAKE2b hash of the id, and
the span id of the message's root span (``sluice.message``) the first 64 bits of
another. Enqueue records that root span (its ids pinned by the id generator
``_MessageIds``), and every later span of the message, in any process, names it as
its parent. Hashed rather than the UUID's own bits: message ids are UUIDv7, whose low
64 bits start with the variant bits, and the SDK's ratio sampler reads exactly those
bits, so it would keep nearly all or none. Because every span's parent is known from
the id, a sampler (``OTEL_TRACES_SAMPLER=parentbased_traceidratio``) is asked about the
root once per span, and every process reaches the same answer for the same message.

Spans (every one carries ``sluice.message_id``, ``sluice.tenant`` and, when the message
has one, ``sluice.correlation_id``; the API's ``X-Request-Id`` becomes it)::

    sluice.message                 root, recorded when the message is first written
    ├── sluice.enqueue             the API request or Python call that wrote it
    │                              (again, marked sluice.duplicate, for an idempotent
    │                              repeat: the repeat lands in the first message's trace)
    ├── sluice.attempt             one per attempt that reaches a provider (worker)
    │   └── sluice.provider.<name> the provider call: outcome, status, code, latency
    └── sluice.receipt             a delivery receipt applied (projector)

An API request that carries a W3C ``traceparent`` is linked from its messages'
``sluice.enqueue`` spans: a request may enqueue a batch, and each message keeps a trace
of its own. Enqueue runs inside the caller's transaction, so a transaction rolled back
afterwards still leaves its spans, as it leaves its metrics (``sluice.store._enqueue``).

Sluice keeps a ``TracerProvider`` of its own rather than the global one: it must pin
ids, and an application that enqueues keeps its own tracing as it was. A provider call
is the current span while it runs, so an HTTP client instrumentation nests under it.

Processes configure themselves: ``sluice worker``, ``serve`` and ``run`` call
:func:`configure` at start (a bad value or a missing extra stops them, named); any
other process that enqueues (an application calling ``sluice.enqueue``) reads the same
settings the first time a span could be made, and there a problem is logged once and
tracing stays off, so that tracing can never stop an enqueue. Tests hand
:func:`configure` an exporter (the SDK's ``InMemorySpanExporter``) and call
:func:`reset` after.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import os
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from sluice.config import Settings, load_setting
from sluice.errors import ConfigError
from sluice.outcome import Outcome

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Link, Span, Tracer

__all__ = [
    "AttemptTrace",
    "ProviderCall",
    "ReceiptTrace",
    "Traced",
    "attempt",
    "attempt_off",
    "configure",
    "enabled",
    "enqueued",
    "ids_of",
    "origin",
    "receipt",
    "reset",
    "traces_endpoint",
]

#: The instrumentation scope of every Sluice span.
SCOPE = "sluice"
_EXTRA = "pip install 'sluice[otel]'"


class Traced(Protocol):
    """What a span needs of a message: ``NewMessage`` and ``Message`` both have it."""

    @property
    def tenant(self) -> str: ...
    @property
    def correlation_id(self) -> str | None: ...
    @property
    def channel(self) -> str: ...
    @property
    def provider(self) -> str: ...
    @property
    def action(self) -> str: ...


# -- ids -------------------------------------------------------------------------------


def ids_of(message_id: str) -> tuple[int, int]:
    """(trace id, root span id) of the message ``message_id``: the same in every process."""
    digest = hashlib.blake2b(message_id.encode(), digest_size=24, person=b"sluice.trace").digest()
    # Zero is the invalid id of either kind; a hash that lands on it gets 1 instead.
    return int.from_bytes(digest[:16], "big") or 1, int.from_bytes(digest[16:], "big") or 1


#: Ids the next root span must have (``_MessageIds``); None: random as usual.
_pinned: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar(
    "sluice_tracing_pinned", default=None
)


@dataclass(frozen=True, slots=True)
class _Origin:
    """Who is enqueueing: the API request or Python call around the store's write."""

    via: str
    started_ns: int
    request_id: str | None
    traceparent: str | None


_origin: contextvars.ContextVar[_Origin | None] = contextvars.ContextVar(
    "sluice_tracing_origin", default=None
)


@contextlib.contextmanager
def origin(
    via: str, *, request_id: str | None = None, traceparent: str | None = None
) -> Iterator[None]:
    """Messages enqueued inside this block came ``via`` the API or Python; their
    ``sluice.enqueue`` span starts here, and links to the caller's ``traceparent``.
    Nothing to record while tracing is off (a single enqueue pays for every step)."""
    if not enabled():
        yield
        return
    token = _origin.set(_Origin(via, time.time_ns(), request_id, traceparent))
    try:
        yield
    finally:
        _origin.reset(token)


# -- configuration ---------------------------------------------------------------------


def traces_endpoint(base: str) -> str:
    """The OTLP/HTTP traces URL of a collector at ``base``, as the SDK derives it from
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` (a URL that already names ``/v1/traces`` is kept)."""
    base = base.rstrip("/")
    return base if base.endswith("/v1/traces") else f"{base}/v1/traces"


class _Tracing:
    """The SDK's objects while tracing is on (imported only then)."""

    def __init__(self, provider: TracerProvider) -> None:
        from opentelemetry import context, trace

        self.provider = provider
        self.tracer: Tracer = provider.get_tracer(SCOPE)
        self.trace = trace
        self.context = context

    def empty(self) -> Context:
        return self.context.Context()

    def under_message(self, message_id: str) -> Context:
        """A context whose current span is the message's root, as a remote parent."""
        trace_id, span_id = ids_of(message_id)
        from opentelemetry.sdk.trace.sampling import Decision

        answer = self.provider.sampler.should_sample(self.empty(), trace_id, "sluice.message")
        # Decision.is_sampled is untyped; RECORD_AND_SAMPLE is what it checks for.
        sampled = answer.decision is Decision.RECORD_AND_SAMPLE
        flags = self.trace.TraceFlags(self.trace.TraceFlags.SAMPLED if sampled else 0)
        parent = self.trace.SpanContext(trace_id, span_id, is_remote=True, trace_flags=flags)
        return self.trace.set_span_in_context(self.trace.NonRecordingSpan(parent), self.empty())


_lock = threading.Lock()
#: None: not yet decided (decided on first use); False: off; else on.
_state: _Tracing | bool | None = None


def _provider(
    settings: Settings | None, env: Mapping[str, str], exporter: SpanExporter | None
) -> TracerProvider | None:
    """The provider the configuration asks for, or None when tracing is off."""
    if settings is not None:
        endpoint = settings.otel_endpoint
    else:  # an application's process: this one setting, as enqueue reads its others
        raw = load_setting("otel_endpoint", env)
        endpoint = str(raw) if raw else None
    standard = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true" or not (endpoint or standard):
        return None
    if endpoint is not None and not endpoint.startswith(("http://", "https://")):
        raise ConfigError(f"SLUICE_OTEL_ENDPOINT {endpoint!r} is not an http:// or https:// URL")
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    except ImportError as exc:
        named = "SLUICE_OTEL_ENDPOINT" if endpoint else "OTEL_EXPORTER_OTLP_ENDPOINT"
        raise ConfigError(
            f"tracing is configured ({named} is set) but the OpenTelemetry SDK is not "
            f"installed: {_EXTRA} ({exc})"
        ) from None
    resource = Resource.create({})
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": "sluice"}))
    provider = TracerProvider(resource=resource, id_generator=_message_ids())
    if exporter is not None:
        # A test's exporter sees each span as it ends.
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        return provider
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError as exc:
        raise ConfigError(f"the OTLP exporter is not installed: {_EXTRA} ({exc})") from None
    otlp = OTLPSpanExporter(endpoint=traces_endpoint(endpoint) if endpoint else None)
    provider.add_span_processor(BatchSpanProcessor(otlp))
    return provider


def _message_ids() -> Any:
    """The SDK's random ids, except for a root span whose ids are pinned (a message's)."""
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    class _MessageIds(RandomIdGenerator):
        def generate_trace_id(self) -> int:
            pinned = _pinned.get()
            return pinned[0] if pinned is not None else super().generate_trace_id()

        def generate_span_id(self) -> int:
            pinned = _pinned.get()
            return pinned[1] if pinned is not None else super().generate_span_id()

    return _MessageIds()


def configure(
    settings: Settings | None = None,
    *,
    env: Mapping[str, str] | None = None,
    exporter: SpanExporter | None = None,
) -> bool:
    """Turn tracing on or off for this process as ``settings`` and ``env`` (default:
    the environment) say; return whether it is on. ``ConfigError`` when it is asked
    for but cannot be: a bad endpoint, or the extra not installed.

    ``exporter``: where spans go instead of the OTLP exporter (tests). It changes only
    where spans go, not whether there are any.
    """
    global _state
    provider = _provider(settings, os.environ if env is None else env, exporter)
    with _lock:
        old, _state = _state, (_Tracing(provider) if provider is not None else False)
    if isinstance(old, _Tracing):
        old.provider.shutdown()
    return provider is not None


def reset() -> None:
    """Flush and drop this process's tracing; the next span decides again (tests)."""
    global _state
    with _lock:
        old, _state = _state, None
    if isinstance(old, _Tracing):
        old.provider.shutdown()


def _active() -> _Tracing | None:
    global _state
    state = _state
    if state is None:
        with _lock:
            if _state is None:
                try:
                    provider = _provider(None, os.environ, None)
                except ConfigError as exc:
                    import structlog

                    structlog.get_logger("sluice.tracing").warning(
                        "tracing is off", reason=str(exc)
                    )
                    provider = None
                _state = _Tracing(provider) if provider is not None else False
            state = _state
    return state if isinstance(state, _Tracing) else None


def enabled() -> bool:
    """Is tracing on in this process? (Decides it, the first time.)"""
    return _active() is not None


# -- spans -----------------------------------------------------------------------------


def _about(message_id: str, msg: Traced) -> dict[str, Any]:
    attrs: dict[str, Any] = {"sluice.message_id": message_id, "sluice.tenant": msg.tenant}
    if msg.correlation_id is not None:
        attrs["sluice.correlation_id"] = msg.correlation_id
    return attrs


def _link(t: _Tracing, traceparent: str | None) -> list[Link]:
    if not traceparent:
        return []
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    caller = TraceContextTextMapPropagator().extract({"traceparent": traceparent})
    context = t.trace.get_current_span(caller).get_span_context()
    return [t.trace.Link(context)] if context.is_valid else []


def enqueued(msg: Traced, message_id: str, *, duplicate: bool) -> None:
    """``msg`` was written as ``message_id``, or, ``duplicate``, recognised as an
    idempotent repeat of the message ``message_id``. Records the enqueue, and the root
    span of a new message."""
    t = _active()
    if t is None:
        return
    came = _origin.get()
    now = time.time_ns()
    start = came.started_ns if came is not None else now
    about = _about(message_id, msg)
    if duplicate:
        parent = t.under_message(message_id)
    else:
        token = _pinned.set(ids_of(message_id))
        try:
            root = t.tracer.start_span(
                "sluice.message",
                context=t.empty(),
                start_time=start,
                attributes={
                    **about,
                    "sluice.channel": msg.channel,
                    "sluice.provider": msg.provider,
                    "sluice.action": msg.action,
                },
            )
        finally:
            _pinned.reset(token)
        root.end(now)
        parent = t.trace.set_span_in_context(root, t.empty())
    attrs = {**about, "sluice.via": came.via if came is not None else "python"}
    attrs["sluice.duplicate"] = duplicate
    if came is not None and came.request_id is not None:
        attrs["sluice.request_id"] = came.request_id
    links = _link(t, came.traceparent) if came is not None else []
    span = t.tracer.start_span(
        "sluice.enqueue", context=parent, start_time=start, attributes=attrs, links=links
    )
    span.end(now)


class ProviderCall:
    """The span of one provider call (``sluice.provider.<name>``); this base records
    nothing (tracing off)."""

    def __enter__(self) -> ProviderCall:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def answered(self, outcome: Outcome) -> None:
        """What the provider said: outcome, status, error code (and the latency)."""


class AttemptTrace:
    """The span of one attempt (``sluice.attempt``); this base records nothing."""

    def provider_call(self, name: str) -> ProviderCall:
        """The provider call of this attempt, as a context manager."""
        return _NO_CALL

    def recorded(
        self, outcome: str, *, error_code: str | None, next_status: str, detail: str | None
    ) -> None:
        """The attempt as written back: its outcome and what happens to the message next."""

    def end(self) -> None:
        """End the span (again: nothing)."""


_NO_CALL = ProviderCall()
_NO_ATTEMPT = AttemptTrace()


class _LiveCall(ProviderCall):
    def __init__(self, t: _Tracing, parent: Context, name: str, about: dict[str, Any]) -> None:
        self._t, self._parent, self._name, self._about = t, parent, name, about
        self._span: Span | None = None
        self._token: Any = None
        self._t0 = 0.0

    def __enter__(self) -> ProviderCall:
        t = self._t
        self._span = t.tracer.start_span(
            f"sluice.provider.{self._name}",
            context=self._parent,
            kind=t.trace.SpanKind.CLIENT,
            attributes={**self._about, "sluice.provider": self._name},
        )
        # Current while the call runs, so an HTTP client's own spans nest under it.
        self._token = t.context.attach(t.trace.set_span_in_context(self._span, self._parent))
        self._t0 = time.perf_counter()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        span = self._span
        if span is None:
            return
        self._t.context.detach(self._token)
        if exc is not None:
            span.record_exception(exc)
            span.set_status(self._t.trace.Status(self._t.trace.StatusCode.ERROR, repr(exc)))
        span.end()

    def answered(self, outcome: Outcome) -> None:
        span = self._span
        if span is None:
            return
        attrs: dict[str, Any] = {
            "sluice.outcome": "ok" if outcome.ok else "error",
            "sluice.latency_ms": round((time.perf_counter() - self._t0) * 1000.0, 3),
        }
        if outcome.code is not None:
            attrs["sluice.error_code"] = str(outcome.code)
        if outcome.provider_status is not None:
            attrs["sluice.provider.status"] = outcome.provider_status
        if outcome.provider_code is not None:
            attrs["sluice.provider.code"] = outcome.provider_code
        if outcome.provider_message_id is not None:
            attrs["sluice.provider.message_id"] = outcome.provider_message_id
        if outcome.retry_after is not None:
            attrs["sluice.provider.retry_after"] = outcome.retry_after
        span.set_attributes(attrs)
        if not outcome.ok:
            status = self._t.trace.Status(self._t.trace.StatusCode.ERROR, str(outcome.code))
            span.set_status(status)


class _LiveAttempt(AttemptTrace):
    def __init__(self, t: _Tracing, span: Span, about: dict[str, Any]) -> None:
        self._t, self._span, self._about = t, span, about
        self._context = t.trace.set_span_in_context(span, t.empty())
        self._ended = False

    def provider_call(self, name: str) -> ProviderCall:
        return _LiveCall(self._t, self._context, name, self._about)

    def recorded(
        self, outcome: str, *, error_code: str | None, next_status: str, detail: str | None
    ) -> None:
        attrs: dict[str, Any] = {"sluice.outcome": outcome, "sluice.next_status": next_status}
        if error_code:
            attrs["sluice.error_code"] = error_code
        if detail:
            attrs["sluice.detail"] = detail[:500]
        self._span.set_attributes(attrs)
        if outcome != "sent":
            self._span.set_status(self._t.trace.Status(self._t.trace.StatusCode.ERROR, outcome))

    def end(self) -> None:
        if not self._ended:
            self._ended = True
            self._span.end()


class _Attempted(Traced, Protocol):
    @property
    def id(self) -> str: ...
    @property
    def claim_seq(self) -> int: ...


def attempt_off() -> AttemptTrace:
    """An attempt that records nothing: what a send holds until its span starts."""
    return _NO_ATTEMPT


def attempt(msg: _Attempted, worker_id: str) -> AttemptTrace:
    """Start the span of an attempt at ``msg`` (the caller ends it, always)."""
    t = _active()
    if t is None:
        return _NO_ATTEMPT
    about = _about(msg.id, msg)
    span = t.tracer.start_span(
        "sluice.attempt",
        context=t.under_message(msg.id),
        attributes={
            **about,
            "sluice.attempt": msg.claim_seq,
            "sluice.channel": msg.channel,
            "sluice.provider": msg.provider,
            "sluice.worker_id": worker_id,
        },
    )
    return _LiveAttempt(t, span, about)


class ReceiptTrace:
    """The span of a receipt being applied (``sluice.receipt``); this base records nothing."""

    def result(self, result: str) -> None:
        """What applying it did (``applied``, ``stale``, …)."""


_NO_RECEIPT = ReceiptTrace()


class _LiveReceipt(ReceiptTrace):
    def __init__(self, span: Span) -> None:
        self._span = span

    def result(self, result: str) -> None:
        self._span.set_attribute("sluice.receipt.result", result)


@contextlib.contextmanager
def receipt(
    msg: _Attempted, *, source: str, status: str, error_code: str | None = None
) -> Iterator[ReceiptTrace]:
    """The span of applying a delivery receipt from ``source`` saying ``status`` to
    ``msg``, around the write that applies it."""
    t = _active()
    if t is None:
        yield _NO_RECEIPT
        return
    attrs = {**_about(msg.id, msg), "sluice.receipt.source": source}
    attrs["sluice.receipt.status"] = status
    if error_code is not None:
        attrs["sluice.error_code"] = error_code
    with t.tracer.start_as_current_span(
        "sluice.receipt",
        context=t.under_message(msg.id),
        kind=t.trace.SpanKind.CONSUMER,
        attributes=attrs,
    ) as span:
        yield _LiveReceipt(span)
