"""The simulator as an ASGI app: each receiver's routes, the control routes, the request
log around them all, and the shared path of a request to a provider route (latency,
authentication, injected faults, recording, the status callback, a dropped connection)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from sluice.clock import Clock
from sluice.providers.simulator._base import Callback, ConnectionAborter, Lookup, Receiver, listed
from sluice.providers.simulator._control import control_routes
from sluice.providers.simulator._requests import DEFAULT_CAPACITY, RequestLogMiddleware, note
from sluice.providers.simulator._sendgrid import SendGridReceiver
from sluice.providers.simulator._state import SimulatorState
from sluice.providers.simulator._twilio import TwilioReceiver
from sluice.providers.simulator._webhook import WebhookReceiver
from sluice.providers.simulator._whatsapp import WhatsAppReceiver


class _DroppedConnection(Response):
    """No answer at all: the connection is aborted after the effect was recorded."""

    def __init__(self, abort: ConnectionAborter | None) -> None:
        super().__init__()
        self._abort = abort

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._abort is not None and await self._abort(scope):
            return
        # Not on our uvicorn (e.g. an in-process test client): the nearest we can do is
        # start an answer and break off, which servers turn into a closed connection.
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"1")]}
        )
        raise ConnectionAbortedError("simulator dropped the connection")


def _receiver_endpoint(
    state: SimulatorState, receiver: Receiver
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        path = request.url.path
        try:
            body = await request.body()
        except ClientDisconnect:
            return Response(status_code=499)  # nobody left to answer
        faults = state.faults_for(path)
        if faults is not None and faults.latency_ms:
            # After the body is in, as with a slow real receiver: a sender that times out
            # meanwhile may still have its effect recorded, and must treat it as uncertain.
            await asyncio.sleep(faults.latency_ms / 1000)
        delivery = receiver.authenticate(request, body)
        provider = receiver.provider
        if isinstance(delivery, Response):
            state.count_rejected(provider)
            note(request.scope, outcome="rejected")
            return delivery
        if faults is not None:
            status = faults.injected_status(delivery.key)
            if status is not None:
                state.count_error_injected(provider)
                note(request.scope, outcome="injected", key=delivery.key)
                return receiver.refused(status, faults.retry_after_header())
            if delivery.recipient is not None and listed(
                faults.invalid_recipients, delivery.recipient
            ):
                state.count_error_injected(provider)
                note(request.scope, outcome="injected", key=delivery.key)
                return receiver.invalid_recipient(delivery)
        count = state.record(delivery.key, path, delivery.headers, body, provider)
        note(request.scope, outcome="recorded", key=delivery.key)
        if delivery.callback is not None:
            if state.callbacks.wanted(delivery.callback):
                # In the background: a slow or dead callback receiver must not slow the
                # answer, as with the real provider.
                state.spawn(_callback(state, provider, delivery.callback))
            else:
                state.count_callback(provider, ok=None)
        if faults is not None and faults.drops():
            state.count_dropped(provider)
            note(request.scope, outcome="dropped")
            return _DroppedConnection(state.abort_connection)
        return receiver.accepted(delivery, count)

    return endpoint


def _lookup_endpoint(
    state: SimulatorState, receiver: Receiver, lookup: Lookup
) -> Callable[[Request], Awaitable[Response]]:
    """A read-only route: latency and injected errors apply; nothing is recorded."""

    async def endpoint(request: Request) -> Response:
        path = request.url.path
        faults = state.faults_for(path)
        if faults is not None and faults.latency_ms:
            await asyncio.sleep(faults.latency_ms / 1000)
        answer = lookup(request)
        if answer.status_code >= 400:
            state.count_rejected(receiver.provider)
            note(request.scope, outcome="rejected")
            return answer
        if faults is not None:
            status = faults.injected_status(path)
            if status is not None:
                state.count_error_injected(receiver.provider)
                note(request.scope, outcome="injected")
                return receiver.refused(status, faults.retry_after_header())
        note(request.scope, outcome="answered")
        return answer

    return endpoint


async def _callback(state: SimulatorState, provider: str, callback: Callback) -> None:
    """POST one status callback; best effort, the outcome only counted."""
    state.count_callback(provider, ok=await state.callbacks.post(callback))


def create_app(
    secret: str | None,
    *,
    clock: Clock | None = None,
    callbacks: bool = True,
    request_log_size: int = DEFAULT_CAPACITY,
) -> Starlette:
    """The simulator as an ASGI app; its ``SimulatorState`` is ``app.state.simulator``.

    ``secret`` is the Standard Webhooks secret senders sign with; an invalid one raises
    ``ConfigError``; ``None`` leaves the webhook receiver off (it answers 503 saying so)
    and every provider route on. ``clock`` judges signature timestamps and stamps effects
    and requests. ``callbacks`` False sends no status callback at all (the control route
    ``/_sim/callbacks`` switches it later); ``request_log_size`` bounds the request log.
    """
    state = SimulatorState(clock, callbacks=callbacks, request_log_size=request_log_size)
    receivers: list[Receiver] = [
        WebhookReceiver(secret, state.clock),
        TwilioReceiver(state),
        SendGridReceiver(state),
        WhatsAppReceiver(state),
    ]
    routes = control_routes(state)
    for receiver in receivers:
        endpoint = _receiver_endpoint(state, receiver)
        for path in receiver.effect_paths:
            routes.append(Route(receiver.prefix + path, endpoint, methods=["POST"]))
        for path, lookup in receiver.lookups():
            routes.append(
                Route(
                    receiver.prefix + path,
                    _lookup_endpoint(state, receiver, lookup),
                    methods=["GET"],
                )
            )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await state.callbacks.aclose()  # on the loop that made its client

    app = Starlette(
        routes=routes,
        middleware=[Middleware(RequestLogMiddleware, log=state.requests, clock=state.clock)],
        lifespan=lifespan,
    )
    app.state.simulator = state
    return app
