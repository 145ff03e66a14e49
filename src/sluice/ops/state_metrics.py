"""State metrics: what is true now, read from the store, the same from every process.

``sluice.metrics.STATE`` lists them. One refresh runs ``Store.observe`` (a few indexed
queries), lists workers, breakers, throttles and quotas, and keeps the result for
``settings.metrics_refresh`` seconds: a scrape inside that time costs no query. A store
that cannot be read leaves the last good values out and says so in
``sluice_state_up 0``, so that a dashboard shows a gap, not a stale flat line.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from datetime import datetime, timedelta

import structlog
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sluice.clock import Clock, SystemClock
from sluice.config import Settings
from sluice.errors import ConfigError, SluiceError
from sluice.flow.controls import LIVE_WINDOW_SECONDS
from sluice.flow.limits import LimitSpec, configured_flow
from sluice.metrics import STATE, StateMetric, tenant_label
from sluice.ops.limits import LimitView, limit_list
from sluice.store.base import Store

__all__ = ["StateMetrics", "exposition", "metrics_server", "state_metrics"]

log = structlog.get_logger("sluice.metrics")

_BY_NAME = {m.name: m for m in STATE}


def _family(name: str) -> GaugeMetricFamily | CounterMetricFamily:
    spec: StateMetric = _BY_NAME[name]
    if spec.kind == "counter":
        return CounterMetricFamily(name.removesuffix("_total"), spec.help, labels=spec.labels)
    return GaugeMetricFamily(name, spec.help, labels=spec.labels)


class StateMetrics(Collector):
    """A prometheus-client collector of the state metrics, refreshed from ``store``."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        limits: Sequence[LimitSpec] = (),
        clock: Clock | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.limits = list(limits)
        self.clock = clock or SystemClock()
        self._families: list[Metric] = []
        self._read_at = float("-inf")
        self._up = 0
        self._lock = asyncio.Lock()

    async def refresh(self, *, force: bool = False) -> None:
        """Read the state again unless the last read is younger than the refresh time."""
        async with self._lock:
            if not force and time.monotonic() - self._read_at < self.settings.metrics_refresh:
                return
            t0 = time.perf_counter()
            try:
                families = await self._read(self.clock.now())
            except SluiceError as exc:
                log.warning("state metrics not read", error=str(exc))
                self._families, self._up = [], 0
            else:
                took = GaugeMetricFamily(
                    "sluice_state_refresh_seconds", _BY_NAME["sluice_state_refresh_seconds"].help
                )
                took.add_metric([], time.perf_counter() - t0)
                self._families, self._up = [*families, took], 1
            self._read_at = time.monotonic()

    async def samples(self, now: datetime) -> dict[str, list[tuple[dict[str, str], float]]]:
        """The state read afresh, as plain samples by name (the alert evaluator's view of
        the same numbers a scrape shows)."""
        out: dict[str, list[tuple[dict[str, str], float]]] = {}
        for family in await self._read(now):
            for s in family.samples:
                out.setdefault(s.name, []).append((dict(s.labels), float(s.value)))
        return out

    def collect(self) -> Iterator[Metric]:
        up = _family("sluice_state_up")
        up.add_metric([], self._up)
        yield up
        yield from self._families

    async def _read(self, now: datetime) -> list[Metric]:
        seen = await self.store.observe(now)
        workers = await self.store.worker_list(now - timedelta(minutes=10))
        breakers = await self.store.breaker_list()
        throttles = await self.store.throttle_list(now)
        quotas = [
            v for v in await limit_list(self.store, self.limits, self.settings, self.clock)
            if v.used is not None
        ]  # fmt: skip
        out: list[Metric] = []

        def add(name: str, rows: Iterable[tuple[Sequence[str], float]]) -> None:
            family = _family(name)
            for labels, value in rows:
                family.add_metric(list(labels), value)
            out.append(family)

        add("sluice_messages", (((s, c, p), n) for s, c, p, n in seen.messages))
        add("sluice_dead_letters", (((c, code), n) for c, code, n in seen.dead))
        add(
            "sluice_oldest_ready_age_seconds",
            [((), _age(now, seen.oldest_ready_created))],
        )
        add("sluice_oldest_ready_wait_seconds", [((), _age(now, seen.oldest_ready_due))])
        add("sluice_retrying_messages", ((((str(k)),), n) for k, n in seen.retrying.items()))
        add("sluice_held_messages", (((kind,), n) for kind, (n, _) in seen.held.items()))
        add(
            "sluice_oldest_held_age_seconds",
            (((kind,), _age(now, since)) for kind, (_, since) in seen.held.items()),
        )
        add("sluice_quota_use_ratio", _quota_rows(quotas))
        add(
            "sluice_breaker_open",
            (((b.key, b.state), 1.0) for b in breakers if b.state != "closed"),
        )
        add("sluice_throttles_active", ((((f"{t.tenant}:{t.provider}"),), 1.0) for t in throttles))
        add("sluice_connections", (((p, s), n) for p, s, n in seen.connections))
        add(
            "sluice_connection_expiry_days",
            (
                ((tenant_label(t), p), (at - now).total_seconds() / 86_400)
                for t, p, at in seen.expiring
            ),
        )
        add("sluice_inbox_events", (((state,), n) for state, n in seen.inbox.items()))
        add("sluice_projector_lag_seconds", [((), _age(now, seen.inbox_oldest_pending))])
        running = [w for w in workers if w.stopped_at is None]
        live = [w for w in running if (now - w.last_seen_at).total_seconds() <= LIVE_WINDOW_SECONDS]
        add("sluice_workers_live", [((), len(live))])
        add(
            "sluice_worker_heartbeat_age_seconds",
            (((w.id,), _age(now, w.last_seen_at)) for w in running),
        )
        add("sluice_tenancy_violations_total", [((), seen.tenancy_violations)])
        suppressions = await self.store.suppression_counts()  # recipient hygiene (issue 14)
        add("sluice_suppressions", (((c,), n) for c, n in suppressions.items()))
        canaries = await self.store.canary_latest(finished=True)  # canaries (issue 15)
        add(
            "sluice_canary_failing",
            (((r.provider, r.target), float(r.outcome != "ok")) for r in canaries),
        )
        return out


def state_metrics(store: Store, settings: Settings, clock: Clock | None = None) -> StateMetrics:
    """The state metrics of ``store``, with the quotas of the ``sluice.toml`` in effect
    (none when it cannot be read: the workers and the server refuse such a file)."""
    try:
        limits, _ = configured_flow()
    except SluiceError:
        limits = []
    return StateMetrics(store, settings, limits=limits, clock=clock)


def _quota_rows(quotas: Sequence[LimitView]) -> Iterator[tuple[Sequence[str], float]]:
    for v in quotas:
        spec = v.spec
        tenant = tenant_label(spec.tenant) if spec.tenant else ""
        ratio = (v.used or 0) / spec.limit if spec.limit else 0.0
        yield (spec.kind, tenant, spec.provider, spec.action), ratio


def _age(now: datetime, since: datetime | None) -> float:
    return 0.0 if since is None else max(0.0, (now - since).total_seconds())


async def exposition(state: StateMetrics | None, registry: CollectorRegistry = REGISTRY) -> bytes:
    """The text a scrape gets: this process's event metrics (``registry``; in a
    multiprocess server, a registry over every process's files) and, once, the state."""
    body = generate_latest(registry)
    if state is not None:
        await state.refresh()
        own = CollectorRegistry(auto_describe=False)
        own.register(state)
        body += generate_latest(own)
    return body


@contextlib.asynccontextmanager
async def metrics_server(
    settings: Settings, state: StateMetrics | None
) -> AsyncIterator[uvicorn.Server | None]:
    """Serve ``GET /metrics`` on ``settings.api_host:settings.metrics_port`` in this event
    loop for the duration of the block (``sluice worker``, ``sluice run``); nothing when
    the port is 0."""
    if not settings.metrics_port:
        yield None
        return

    async def scrape(_request: Request) -> Response:
        return Response(await exposition(state), media_type=CONTENT_TYPE_LATEST)

    app = Starlette(routes=[Route("/metrics", scrape)])
    # Bound here, so that a port in use is an error naming the setting (uvicorn would
    # exit the process from inside its task).
    family = socket.AF_INET6 if ":" in settings.api_host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((settings.api_host, settings.metrics_port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot serve metrics on {settings.api_host}:{settings.metrics_port} "
            f"(SLUICE_METRICS_PORT): {exc.strerror or exc}"
        ) from None
    config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        log.info(
            "metrics served", url=f"http://{settings.api_host}:{settings.metrics_port}/metrics"
        )
        yield server
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await task
        sock.close()
