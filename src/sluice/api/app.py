"""The FastAPI application: ``create_app`` wires the store, the keys and the routers.

``sluice serve`` runs it under uvicorn; tests run it in-process on the same store.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import structlog
from fastapi import FastAPI, Request
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sluice import __version__, console, heap
from sluice.addressing import addressing_in_effect
from sluice.api import (
    canary,  # canaries (issue 15)
    endpoints,
    evidence,
    ingress,
    listings,
    messages,
    operator,
    postmortem,
    problems,
    requests,
    retention,
    runbooks,
    suppressions,
    verify,
    waiting,
)
from sluice.api.auth import KeyCache
from sluice.api.request_id import RequestId
from sluice.clock import Clock, SystemClock
from sluice.config import Settings
from sluice.errors import ConfigError, SluiceError
from sluice.ingress.config import IngressConfig, configured_ingress
from sluice.metrics import configure_tenants
from sluice.ops.controls import live_workers
from sluice.ops.state_metrics import exposition, state_metrics
from sluice.store import Store, open_store

__all__ = ["create_app"]

log = structlog.get_logger("sluice.api")

#: Seconds between sweeps of expired Idempotency-Key records and old inbox events.
PURGE_EVERY = 300.0


class BodyLimit:
    """Reads each request's whole body before the app runs, within ``limit`` bytes and
    ``timeout`` seconds.

    Over the limit, by Content-Length or as a chunked body streams in, the answer is
    413; a body still arriving after ``timeout`` seconds (a client trickling it to hold
    the connection) is 408. Both close the connection, since the rest of the body is
    never read. A client that goes away before its body has arrived gets nothing and
    costs one debug line: there is nobody left to answer, and nothing went wrong here.
    """

    def __init__(self, app: ASGIApp, limit: int, timeout: float) -> None:
        self.app = app
        self.limit = limit
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and (not value.isdigit() or int(value) > self.limit):
                await self._refuse(scope, receive, send, 413)
                return
        chunks: list[bytes] = []
        seen = 0
        refusal: int | None = None
        try:
            async with asyncio.timeout(self.timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        log.debug("client left before sending its body", path=scope["path"])
                        return
                    chunk = message.get("body", b"")
                    seen += len(chunk)
                    if seen > self.limit:
                        refusal = 413
                        break
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            refusal = 408
        if refusal is not None:  # answered outside the deadline: it bounds the read only
            await self._refuse(scope, receive, send, refusal)
            return
        body = b"".join(chunks)
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: only the disconnect is left to wait for

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, status: int) -> None:
        if status == 413:
            detail, kind = f"the request body is larger than {self.limit} bytes", "too-large"
        else:
            detail, kind = f"the request body took longer than {self.timeout:g} s", "timeout"
        response = problems.problem_response(
            status, detail, kind=kind, headers={"Connection": "close"}
        )
        await response(scope, receive, send)


def create_app(
    settings: Settings,
    *,
    store: Store | None = None,
    clock: Clock | None = None,
    ingress_config: IngressConfig | None = None,
) -> FastAPI:
    """The API. Without ``store`` it opens (and closes) one from ``settings``."""
    owned = store is None

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        nonlocal store
        if store is None:
            store = await open_store(settings.database_url, settings, create=False)
        _attach(app, store)
        sweeper = asyncio.create_task(_sweep(app), name="sluice-api-sweep")
        try:
            yield
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            if owned:
                await store.close()

    app = FastAPI(
        title="Sluice",
        version=__version__,
        summary="Deliver outbound side effects durably, under the operator's hand.",
        lifespan=lifespan,
        docs_url=None,  # served by the console, from this process (no CDN)
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.clock = clock or SystemClock()
    app.state.ingress = ingress_config if ingress_config is not None else configured_ingress()
    # Enqueue tolerates a sluice.toml it cannot read (only messages needing it fail);
    # the server, like the workers, refuses to start on one.
    unreadable = addressing_in_effect(settings).problems
    if unreadable:
        raise ConfigError("; ".join(sorted(set(unreadable.values()))))
    configure_tenants(settings.metrics_tenants)
    if store is not None:  # tests hand in an open store and may skip the lifespan
        _attach(app, store)
    problems.install(app)
    app.include_router(waiting.router)  # issue 14: retry-now, throttles
    app.include_router(verify.router)  # issue 15: post-send verification (before messages)
    app.include_router(messages.router)
    app.include_router(postmortem.router)  # issue 15: before operator's /incidents/{id}
    app.include_router(operator.router)
    app.include_router(endpoints.router)  # issue 14: endpoints, tenants' events URL
    app.include_router(requests.router)  # the two-person rule (issue 14)
    app.include_router(listings.router)  # issue 14: /v1/attempts, /v1/top
    app.include_router(retention.router)  # POST /v1/purge (issue 14)
    app.include_router(ingress.router)
    app.include_router(suppressions.router)  # recipient hygiene (issue 14)
    app.include_router(evidence.router)  # issue 15: annotations, evidence archives
    app.include_router(runbooks.router)  # issue 15: runbooks, diagnoses
    app.include_router(canary.router)  # /v1/canary (issue 15)
    app.add_api_route("/healthz", healthz, methods=["GET"], tags=["health"])
    app.add_api_route("/readyz", readyz, methods=["GET"], tags=["health"],
                      responses={503: {"description": "Not ready"}})  # fmt: skip
    app.add_api_route("/metrics", metrics, methods=["GET"], tags=["health"],
                      response_class=Response)  # fmt: skip
    console.install(app)  # the web console at / (issue 16)
    app.add_middleware(BodyLimit, limit=settings.api_max_body, timeout=settings.api_body_timeout)
    # Outermost: even a refused body answers with the request id.
    app.add_middleware(RequestId)
    app.router.routes.insert(0, ingress.first_route())  # issue 17: webhooks skip the walk
    return app


def _attach(app: FastAPI, store: Store) -> None:
    """What the routes need of an open store."""
    app.state.store = store
    app.state.keys = KeyCache(store)
    app.state.inbox = ingress.InboxWriter(store, gather=app.state.settings.ingress_gather)
    app.state.state_metrics = state_metrics(store, app.state.settings, app.state.clock)


async def healthz() -> dict[str, str]:
    """The process is up (nothing else is checked)."""
    return {"status": "ok"}


async def readyz(request: Request) -> Response:
    """Ready to serve: the store answers, its schema is current, a worker was seen."""
    state = request.app.state
    checks: dict[str, Any] = {}
    try:
        pending = await state.store.schema_pending()
        checks["store"] = "ok"
        checks["migrations"] = "ok" if not pending else f"pending {pending}: run sluice migrate"
        workers = await live_workers(state.store, state.clock.now())
        checks["workers"] = len(workers) if workers else "none seen in the last 15 s"
    except SluiceError as exc:
        checks["store"] = f"unreachable: {exc}"[:300]
        for name in ("migrations", "workers"):
            checks.setdefault(name, "not checked: the store is unreachable")
    ready = (
        checks.get("store") == "ok"
        and checks.get("migrations") == "ok"
        and isinstance(checks.get("workers"), int)
    )
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status_code=200 if ready else 503,
    )


async def metrics(request: Request) -> Response:
    """Prometheus exposition: the event metrics of this server (of every process of a
    ``sluice serve --workers N``) and, once, the state read from the store."""
    registry: CollectorRegistry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    state = getattr(request.app.state, "state_metrics", None)
    return Response(await exposition(state, registry), media_type=CONTENT_TYPE_LATEST)


async def _sweep(app: FastAPI) -> None:
    """Forget Idempotency-Key records past the window and done inbox events past the
    dedupe window (a replay later than that is treated as new)."""
    state = app.state
    while True:
        await asyncio.sleep(PURGE_EVERY)
        try:
            now = state.clock.now()
            await state.store.idem_purge(now, state.settings.idempotency_window)
            await state.store.inbox_purge(
                now - timedelta(seconds=state.settings.ingress_dedupe_window)
            )
            await state.store.console_session_purge(now)
        except SluiceError as exc:
            log.warning("purge failed; will retry", error=str(exc))


def app_from_env() -> FastAPI:
    """``create_app`` with settings from the environment (uvicorn's ``--factory``, used
    by ``sluice serve --workers N`` so that every process builds its own app)."""
    from sluice.config import load_settings

    app = create_app(load_settings())
    heap.settle()  # a server process: what start-up built stays (sluice.heap)
    return app
