"""The provider simulator: a local HTTP server that plays the receiving end.

It speaks each provider's wire format on 127.0.0.1 so the demo and the tests exercise the
real adapters, counts every effect by its idempotency key (so a test over thousands of
messages can prove each landed exactly once), and injects faults on demand.

Routes::

    POST   /webhook/{path...}    a Standard Webhooks receiver (signature checked)
    POST   /_sim/faults          install a fault set (JSON, see ``Faults``)
    GET    /_sim/faults          the installed fault sets
    DELETE /_sim/faults          remove them (``?path_prefix=`` for one)
    GET    /_sim/effects         counters: unique, total, duplicates, rejected, ...
    GET    /_sim/effects/ids     every effect key with how often it arrived
    GET    /_sim/effects/{id}    the first body and headers received under that key
    DELETE /_sim/effects         forget every effect and reset the counters
    GET    /_sim/health          200 when up

A provider's wire format is a ``_Receiver``: how a request authenticates, what key it
dedupes on and what its answers look like. Faults, effect counting and connection drops
are shared by every receiver, so adding Twilio or SendGrid means adding a receiver.

Run it with ``serve`` (the ``sluice simulator`` command) or, inside a test or
``sluice run``, with ``SimulatorThread``.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import uvicorn
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from sluice.clock import Clock, SystemClock
from sluice.providers.webhook import decode_secret

__all__ = [
    "DEFAULT_PORT",
    "Effect",
    "Faults",
    "SimulatorState",
    "SimulatorThread",
    "create_app",
    "serve",
]

DEFAULT_PORT = 8025
#: Signatures older or newer than this are refused, as the Standard Webhooks spec advises.
SIGNATURE_TOLERANCE = timedelta(minutes=5)
#: Bodies kept per effect; enough to inspect any real payload, bounded for 100k-message runs.
_MAX_KEPT_BODY = 256 * 1024

#: Aborts the connection a request came in on; True if it found and aborted it.
ConnectionAborter = Callable[[Scope], Awaitable[bool]]


@dataclass(slots=True)
class Effect:
    """A side effect the simulator received, keyed by its idempotency key."""

    key: str
    path: str
    headers: dict[str, str]
    body: bytes
    received_at: datetime
    count: int = 1

    def to_json(self) -> dict[str, Any]:
        """The effect as the ``GET /_sim/effects/{id}`` answer."""
        try:
            body: Any = json.loads(self.body)
        except ValueError:
            body = self.body.decode("utf-8", errors="replace")
        return {
            "id": self.key,
            "count": self.count,
            "path": self.path,
            "received_at": self.received_at.isoformat(),
            "headers": self.headers,
            "body": body,
        }


_FAULT_FIELDS = {
    "path_prefix",
    "latency_ms",
    "error_rate",
    "error_status",
    "status",
    "retry_after",
    "drop_after_effect_rate",
    "fail_first",
    "seed",
}


@dataclass(slots=True)
class Faults:
    """One set of injected faults, applying to request paths under ``path_prefix``.

    - ``latency_ms``: wait this long before answering anything.
    - ``status``: answer every request with this status (e.g. 429); nothing is recorded.
    - ``fail_first``: the first N requests per effect key answer ``error_status``, later
      ones go through; makes retry tests deterministic.
    - ``error_rate``: this fraction of requests answers ``error_status``, not recorded.
    - ``retry_after``: ``Retry-After`` on every injected error (seconds, or a string
      sent verbatim, e.g. an HTTP-date).
    - ``drop_after_effect_rate``: this fraction of requests is recorded, then the
      connection is dropped without an answer: the sender cannot know it landed.
    - ``seed``: seeds the random choices, for repeatable runs.
    """

    path_prefix: str = "/"
    latency_ms: float = 0.0
    error_rate: float = 0.0
    error_status: int = 500
    status: int | None = None
    retry_after: float | str | None = None
    drop_after_effect_rate: float = 0.0
    fail_first: int = 0
    seed: int | None = None
    _random: random.Random = field(default_factory=random.Random, repr=False)
    _seen: dict[str, int] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, document: Any) -> Faults:
        """Parse a ``POST /_sim/faults`` body; ``ValueError`` says what is wrong."""
        if not isinstance(document, dict):
            raise ValueError("expected a JSON object")
        unknown = sorted(set(document) - _FAULT_FIELDS)
        if unknown:
            raise ValueError(f"unknown fields {unknown}; known: {sorted(_FAULT_FIELDS)}")
        faults = cls(
            path_prefix=_text(document, "path_prefix", "/"),
            latency_ms=_number(document, "latency_ms", 0.0, 0.0, 600_000.0),
            error_rate=_number(document, "error_rate", 0.0, 0.0, 1.0),
            error_status=_status(document, "error_status") or 500,
            status=_status(document, "status"),
            drop_after_effect_rate=_number(document, "drop_after_effect_rate", 0.0, 0.0, 1.0),
            fail_first=int(_number(document, "fail_first", 0, 0, 1_000_000, integer=True)),
        )
        if not faults.path_prefix.startswith("/"):
            raise ValueError("path_prefix must start with '/'")
        retry_after = document.get("retry_after")
        if isinstance(retry_after, str):
            faults.retry_after = retry_after
        elif retry_after is not None:
            faults.retry_after = _number(document, "retry_after", 0.0, 0.0, 10**9)
        seed = document.get("seed")
        if seed is not None:
            faults.seed = int(_number(document, "seed", 0, -(2**63), 2**63, integer=True))
            faults._random = random.Random(faults.seed)
        return faults

    def to_json(self) -> dict[str, Any]:
        """The fault set as given (without its counters)."""
        return {
            "path_prefix": self.path_prefix,
            "latency_ms": self.latency_ms,
            "error_rate": self.error_rate,
            "error_status": self.error_status,
            "status": self.status,
            "retry_after": self.retry_after,
            "drop_after_effect_rate": self.drop_after_effect_rate,
            "fail_first": self.fail_first,
            "seed": self.seed,
        }

    def retry_after_header(self) -> str | None:
        """The ``Retry-After`` value to send with an injected error."""
        if self.retry_after is None or isinstance(self.retry_after, str):
            return self.retry_after
        if float(self.retry_after).is_integer():
            return str(int(self.retry_after))
        return str(self.retry_after)

    def injected_status(self, key: str) -> int | None:
        """The error status to answer this request with, or ``None`` to let it through."""
        if self.status is not None:
            return self.status
        if self.fail_first:
            seen = self._seen[key] = self._seen.get(key, 0) + 1
            if seen <= self.fail_first:
                return self.error_status
        if self.error_rate and self._random.random() < self.error_rate:
            return self.error_status
        return None

    def drops(self) -> bool:
        """Whether to drop this (recorded) request's connection."""
        return bool(self.drop_after_effect_rate) and (
            self._random.random() < self.drop_after_effect_rate
        )


def _text(document: dict[str, Any], name: str, default: str) -> str:
    value = document.get(name, default)
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string")
    return value


def _number(
    document: dict[str, Any],
    name: str,
    default: float,
    low: float,
    high: float,
    *,
    integer: bool = False,
) -> float:
    value = document.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number")
    if integer and not float(value).is_integer():
        raise ValueError(f"{name} must be an integer")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low:g} and {high:g}")
    return int(value) if integer else float(value)


def _status(document: dict[str, Any], name: str) -> int | None:
    value = document.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 300 <= value <= 599:
        raise ValueError(f"{name} must be an HTTP status between 300 and 599")
    return int(value)


class SimulatorState:
    """Everything the simulator remembers: effects, counters and fault sets.

    Handlers run on one event loop and never await while they change state; the lock is
    for readers on other threads (a test holding a ``SimulatorThread``).
    """

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock: Clock = clock or SystemClock()
        #: Set by whoever runs the app on uvicorn; without it a drop is approximated.
        self.abort_connection: ConnectionAborter | None = None
        self._lock = threading.Lock()
        self._effects: dict[str, Effect] = {}
        self._faults: dict[str, Faults] = {}
        self._total = self._rejected = self._errors_injected = self._dropped = 0

    # -- effects ---------------------------------------------------------------

    def record(self, key: str, path: str, headers: dict[str, str], body: bytes) -> int:
        """Count one arrival of ``key``; the first keeps its body. Returns the count."""
        with self._lock:
            self._total += 1
            effect = self._effects.get(key)
            if effect is None:
                self._effects[key] = Effect(
                    key, path, headers, body[:_MAX_KEPT_BODY], self.clock.now()
                )
                return 1
            effect.count += 1
            return effect.count

    def count_rejected(self) -> None:
        """A request failed authentication."""
        with self._lock:
            self._rejected += 1

    def count_error_injected(self) -> None:
        """A request was answered with an injected error."""
        with self._lock:
            self._errors_injected += 1

    def count_dropped(self) -> None:
        """A recorded request's connection was dropped."""
        with self._lock:
            self._dropped += 1

    def summary(self) -> dict[str, int]:
        """Counters; ``duplicates`` is arrivals beyond the first (``total - unique``)."""
        with self._lock:
            unique = len(self._effects)
            return {
                "unique": unique,
                "total": self._total,
                "duplicates": self._total - unique,
                "rejected": self._rejected,
                "errors_injected": self._errors_injected,
                "dropped": self._dropped,
            }

    def counts(self) -> dict[str, int]:
        """Every effect key with how many times it arrived."""
        with self._lock:
            return {key: effect.count for key, effect in self._effects.items()}

    def effect(self, key: str) -> Effect | None:
        """The effect recorded under ``key``, if any."""
        with self._lock:
            return self._effects.get(key)

    def reset_effects(self) -> None:
        """Forget every effect and zero the counters (fault sets stay)."""
        with self._lock:
            self._effects.clear()
            self._total = self._rejected = self._errors_injected = self._dropped = 0

    # -- faults ----------------------------------------------------------------

    def set_faults(self, faults: Faults) -> None:
        """Install ``faults``, replacing any set with the same ``path_prefix``."""
        with self._lock:
            self._faults[faults.path_prefix] = faults

    def clear_faults(self, path_prefix: str | None = None) -> None:
        """Remove every fault set, or only the one for ``path_prefix``."""
        with self._lock:
            if path_prefix is None:
                self._faults.clear()
            else:
                self._faults.pop(path_prefix, None)

    def faults(self) -> list[Faults]:
        """The installed fault sets."""
        with self._lock:
            return list(self._faults.values())

    def faults_for(self, path: str) -> Faults | None:
        """The fault set with the longest ``path_prefix`` that ``path`` starts with."""
        if not self._faults:  # the common case, without the lock
            return None
        with self._lock:
            best: Faults | None = None
            for prefix, faults in self._faults.items():
                if path.startswith(prefix) and (
                    best is None or len(prefix) > len(best.path_prefix)
                ):
                    best = faults
            return best


# -- receivers: one per provider wire format ----------------------------------


@dataclass(frozen=True, slots=True)
class _Delivery:
    """What a receiver made of an authentic request."""

    key: str  # what the provider would dedupe on (webhook-id, Idempotency-Key, ...)
    headers: dict[str, str]


class _Receiver(Protocol):
    """One provider's wire format, mounted under ``prefix``."""

    prefix: str

    def authenticate(self, request: Request, body: bytes) -> _Delivery | Response:
        """The delivery, or the refusal a real provider would send (counted as rejected)."""
        ...

    def accepted(self, delivery: _Delivery, count: int) -> Response:
        """The answer to a request that was recorded."""
        ...

    def refused(self, status: int, retry_after: str | None) -> Response:
        """The answer to a request failed by an injected fault."""
        ...


class _ClockedWebhook(Webhook):
    """``Webhook`` whose timestamp tolerance is checked against the simulator's clock.

    The library reads the wall clock; a test that moves a ``FrozenClock`` forward (to skip
    a backoff) signs with the moved time, so the receiver must judge by the same clock.
    Overriding the name-mangled private check keeps the library's own signature code.
    """

    def __init__(self, secret: str, clock: Clock) -> None:
        super().__init__(decode_secret(secret))
        self._clock = clock

    def _Webhook__verify_timestamp(self, timestamp_header: str) -> datetime:
        try:
            timestamp = datetime.fromtimestamp(float(timestamp_header), tz=UTC)
        except (ValueError, OverflowError, OSError) as exc:
            raise WebhookVerificationError("Invalid Signature Headers") from exc
        now = self._clock.now()
        if timestamp < now - SIGNATURE_TOLERANCE:
            raise WebhookVerificationError("Message timestamp too old")
        if timestamp > now + SIGNATURE_TOLERANCE:
            raise WebhookVerificationError("Message timestamp too new")
        return timestamp


class _WebhookReceiver:
    """A Standard Webhooks receiver: verifies the signature, dedupes on ``webhook-id``."""

    prefix = "/webhook"

    def __init__(self, secret: str, clock: Clock) -> None:
        self._verifier = _ClockedWebhook(secret, clock)

    def authenticate(self, request: Request, body: bytes) -> _Delivery | Response:
        headers = dict(request.headers)
        try:
            self._verifier.verify(body, headers, json_parse=False)
        # The library lets malformed headers and non-UTF-8 bodies escape as ValueError.
        except (WebhookVerificationError, ValueError) as exc:
            return JSONResponse(
                {"error": "invalid signature", "detail": str(exc)[:200]}, status_code=401
            )
        return _Delivery(key=headers["webhook-id"], headers=headers)

    def accepted(self, delivery: _Delivery, count: int) -> Response:
        return JSONResponse({"id": delivery.key, "received": count})

    def refused(self, status: int, retry_after: str | None) -> Response:
        headers = {"retry-after": retry_after} if retry_after is not None else None
        return JSONResponse(
            {"error": "injected fault", "status": status}, status_code=status, headers=headers
        )


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
    state: SimulatorState, receiver: _Receiver
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
        if isinstance(delivery, Response):
            state.count_rejected()
            return delivery
        if faults is not None:
            status = faults.injected_status(delivery.key)
            if status is not None:
                state.count_error_injected()
                return receiver.refused(status, faults.retry_after_header())
        count = state.record(delivery.key, path, delivery.headers, body)
        if faults is not None and faults.drops():
            state.count_dropped()
            return _DroppedConnection(state.abort_connection)
        return receiver.accepted(delivery, count)

    return endpoint


# -- control endpoints --------------------------------------------------------


def _control_routes(state: SimulatorState) -> list[BaseRoute]:
    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def put_faults(request: Request) -> Response:
        try:
            faults = Faults.from_json(json.loads(await request.body()))
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        state.set_faults(faults)
        return JSONResponse({"faults": [f.to_json() for f in state.faults()]})

    async def get_faults(request: Request) -> Response:
        return JSONResponse({"faults": [f.to_json() for f in state.faults()]})

    async def delete_faults(request: Request) -> Response:
        state.clear_faults(request.query_params.get("path_prefix"))
        return JSONResponse({"faults": [f.to_json() for f in state.faults()]})

    async def summary(request: Request) -> Response:
        return JSONResponse(state.summary())

    async def ids(request: Request) -> Response:
        return JSONResponse({"ids": state.counts()})

    async def one(request: Request) -> Response:
        effect = state.effect(request.path_params["key"])
        if effect is None:
            return JSONResponse({"error": "no such effect"}, status_code=404)
        return JSONResponse(effect.to_json())

    async def reset(request: Request) -> Response:
        state.reset_effects()
        return JSONResponse(state.summary())

    return [
        Route("/_sim/health", health, methods=["GET"]),
        Route("/_sim/faults", put_faults, methods=["POST"]),
        Route("/_sim/faults", get_faults, methods=["GET"]),
        Route("/_sim/faults", delete_faults, methods=["DELETE"]),
        Route("/_sim/effects", summary, methods=["GET"]),
        Route("/_sim/effects", reset, methods=["DELETE"]),
        Route("/_sim/effects/ids", ids, methods=["GET"]),
        Route("/_sim/effects/{key}", one, methods=["GET"]),
    ]


def create_app(secret: str, *, clock: Clock | None = None) -> Starlette:
    """The simulator as an ASGI app; its ``SimulatorState`` is ``app.state.simulator``.

    ``secret`` is the Standard Webhooks secret senders sign with; an invalid one raises
    ``ConfigError``. ``clock`` judges signature timestamps and stamps effects.
    """
    state = SimulatorState(clock)
    receivers: list[_Receiver] = [_WebhookReceiver(secret, state.clock)]
    routes = _control_routes(state)
    for receiver in receivers:
        endpoint = _receiver_endpoint(state, receiver)
        routes.append(Route(receiver.prefix, endpoint, methods=["POST"]))
        routes.append(Route(receiver.prefix + "/{path:path}", endpoint, methods=["POST"]))
    app = Starlette(routes=routes)
    app.state.simulator = state
    return app


# -- running it ---------------------------------------------------------------


def _uvicorn_aborter(server: uvicorn.Server) -> ConnectionAborter:
    """Abort the TCP connection a request arrived on, found by its peer address.

    ASGI has no way to say "drop this connection without answering": uvicorn answers 500
    when an app raises or returns early. Its connection set does hold the transport.
    """

    async def abort(scope: Scope) -> bool:
        client = scope.get("client")
        if not client:
            return False
        peer = (str(client[0]), int(client[1]))
        for connection in list(server.server_state.connections):
            if getattr(connection, "client", None) == peer:
                connection.transport.abort()
                # Let connection_lost run so uvicorn sees a disconnect, not an app that
                # returned without answering (which it would answer with a 500).
                for _ in range(100):
                    if connection not in server.server_state.connections:
                        break
                    await asyncio.sleep(0)
                return True
        return False

    return abort


def _server(
    app: Starlette, host: str, port: int, log_level: str, *, embedded: bool
) -> uvicorn.Server:
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        # Embedded (a test, ``sluice run``): leave the host process's logging alone.
        log_config=None if embedded else uvicorn.config.LOGGING_CONFIG,
        # Embedded, uvicorn must not swap the process-wide event loop policy (uvloop).
        loop="asyncio" if embedded else "auto",
        access_log=False,
        lifespan="off",
        # The peer address must be the socket's, or drops cannot find their connection.
        proxy_headers=False,
        # Longer than httpx's 5 s keep-alive, so the client always closes an idle
        # connection first and never reuses one the server is closing.
        timeout_keep_alive=75,
        timeout_graceful_shutdown=3,
        backlog=4096,
    )
    server = uvicorn.Server(config)
    app.state.simulator.abort_connection = _uvicorn_aborter(server)
    return server


def serve(host: str, port: int, secret: str, log_level: str = "warning") -> None:
    """Run the simulator in the foreground until interrupted (``sluice simulator``)."""
    app = create_app(secret)
    _server(app, host, port, log_level, embedded=False).run()


class SimulatorThread:
    """The simulator on a background thread, for tests and ``sluice run``.

    ::

        with SimulatorThread(secret) as sim:
            url = sim.url + "/webhook/orders"
            ...
            assert sim.state.summary()["unique"] == 1

    ``port=0`` picks a free port. ``start`` returns once the server accepts connections.
    """

    def __init__(
        self,
        secret: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Clock | None = None,
        log_level: str = "warning",
    ) -> None:
        self.app = create_app(secret, clock=clock)
        self.state: SimulatorState = self.app.state.simulator
        self._host = host
        self._port = port
        self._log_level = log_level
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.url = ""

    def start(self, timeout: float = 10.0) -> SimulatorThread:
        """Start serving; raise ``RuntimeError`` if it is not up within ``timeout``."""
        if self._thread is not None:
            raise RuntimeError(f"simulator already running on {self.url}")
        # Binding here, not in the thread, gives port 0 its real number before we return
        # and turns "address in use" into an exception the caller sees.
        # IPPROTO_TCP spelled out: asyncio only sets TCP_NODELAY on accepted sockets whose
        # proto says TCP, and with proto 0 Nagle meets delayed ACK: 40 ms per request.
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self._host, self._port))
        except OSError:
            sock.close()
            raise
        host, port = sock.getsockname()[:2]
        self.url = (
            f"http://[{host}]:{port}" if family == socket.AF_INET6 else f"http://{host}:{port}"
        )
        server = _server(self.app, host, port, self._log_level, embedded=True)
        self._server = server

        def run() -> None:
            try:
                server.run(sockets=[sock])
            except BaseException as exc:  # handed to start() / stop() to re-raise
                self._error = exc
            finally:
                sock.close()

        self._thread = threading.Thread(target=run, name=f"sluice-simulator-{port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"simulator did not start on {self.url}") from self._error
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and wait for the thread; in-flight requests get a moment."""
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(timeout)
        self._server = self._thread = None

    def __enter__(self) -> SimulatorThread:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
