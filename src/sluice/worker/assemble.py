"""One way to build a production dispatcher, shared by ``sluice worker``, ``sluice run``
and the benchmark, so that what is demonstrated and measured is what runs."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Mapping
from typing import Any, TypeVar

import httpx
import structlog
import uvloop

from sluice.clock import Clock, StoreClock
from sluice.config import Settings
from sluice.errors import ConfigError, MigrationError
from sluice.flow.limits import configured_flow
from sluice.metrics import configure_tenants
from sluice.providers.base import Provider
from sluice.secrets import SecretBox, check_key
from sluice.store.base import AuditEntry, Store
from sluice.worker.dispatcher import WORKER_PROBLEM_DELAY, Dispatcher, new_worker_id
from sluice.worker.gate import ConnectionGate
from sluice.worker.limits import Limiter
from sluice.worker.refresh import Refresher

__all__ = [
    "PRIVATE_TARGETS_AUDIT",
    "assemble_dispatcher",
    "note_private_targets",
    "run_worker_loop",
    "secret_box",
]


def secret_box(settings: Settings) -> SecretBox | None:
    """The credentials key of ``settings``, or None when none is configured."""
    if not settings.secret_key:
        return None
    return SecretBox(settings.secret_key, settings.secret_key_previous)


#: The audit action recording ``SLUICE_ALLOW_PRIVATE_TARGETS`` as workers start with it.
PRIVATE_TARGETS_AUDIT = "netguard.private_targets"


async def note_private_targets(
    store: Store, settings: Settings, worker_id: str, clock: Clock, log: Any
) -> AuditEntry | None:
    """Say at start-up which private networks and names this worker may call, and
    write the list to the audit log when it differs from the one last written there.

    The list widens what tenants' URLs may reach, so a change must be visible after the
    fact (``actor`` is the first worker that started with it), not only in the
    deployment's configuration. Returns the audit entry, if one was written.
    """
    listed = settings.private_targets.entries()
    if listed:
        log.info(
            "webhooks and http actions may call these private networks and names; "
            "link-local and cloud metadata addresses stay refused",
            setting="SLUICE_ALLOW_PRIVATE_TARGETS",
            allow=listed,
        )
    entry = await store.audit_append_changed(
        AuditEntry(
            at=clock.now(),
            actor=f"worker:{worker_id}",
            action=PRIVATE_TARGETS_AUDIT,
            target="SLUICE_ALLOW_PRIVATE_TARGETS",
            reason="the list this worker started with differs from the one last audited",
            detail={"allow": listed},
        ),
        initial={"allow": []},
    )
    if entry is not None:
        log.warning(
            "SLUICE_ALLOW_PRIVATE_TARGETS changed (audited)",
            setting="SLUICE_ALLOW_PRIVATE_TARGETS",
            allow=listed,
        )
    return entry


async def assemble_dispatcher(
    store: Store,
    settings: Settings,
    client: httpx.AsyncClient,
    *,
    clock: Clock | None = None,
    providers: Mapping[str, Provider] | None = None,
    logger: Any = None,
) -> Dispatcher:
    """A dispatcher with the connection gate and token refresher, after checking that
    the schema is current and that the key opens every stored credential.

    ``providers`` replaces the configured adapters (the benchmark's no-op provider);
    ``clock`` replaces the store's time (``StoreClock``), for tests.
    """
    from sluice.ingress.config import configured_ingress
    from sluice.ingress.projector import Projector
    from sluice.providers import build_providers

    pending = await store.schema_pending()
    if pending:
        raise MigrationError(f"the schema is missing migrations {pending}; run: sluice migrate")
    box = secret_box(settings)
    check_key(await store.connection_list(), box)
    if clock is None:
        # Leases, due times and windows by the store's time, not this host's (see
        # sluice.clock): the dispatcher re-reads it with every heartbeat.
        store_clock = StoreClock(store.clock_now)
        await store_clock.sync()
        clock = store_clock
    adapters = (
        dict(providers) if providers is not None else build_providers(settings, client, clock)
    )
    worker_id = new_worker_id()
    log = logger or structlog.get_logger("sluice.worker").bind(worker=worker_id)
    if providers is None and not settings.webhook_secret:
        # Said at start-up: found out per message, it looks like a delivery problem.
        log.warning(
            "SLUICE_WEBHOOK_SECRET is not set: this worker signs webhooks only with the "
            "secret of a tenant's webhook connection; messages for provider 'webhook' of "
            f"tenants without one are deferred (every {WORKER_PROBLEM_DELAY:g} s, no "
            "attempt spent) until a worker with the secret sends them",
            setting="SLUICE_WEBHOOK_SECRET",
        )
    if providers is None:
        await note_private_targets(store, settings, worker_id, clock, log)
    refresher = (
        Refresher(store, box, adapters, clock=clock, worker_id=worker_id, logger=log)
        if box is not None
        else None
    )
    configure_tenants(settings.metrics_tenants)
    limits, routes = configured_flow()
    unknown = sorted({p for route in routes.values() for p in route} - set(adapters))
    if unknown and providers is None:
        raise ConfigError(
            f"sluice.toml [routes] names providers this worker does not have: {unknown} "
            f"(configured: {sorted(adapters)})"
        )
    limiter = Limiter(store, settings, limits, clock=clock, logger=log, worker_id=worker_id)
    gate = ConnectionGate(
        store,
        box,
        requires_connection=[
            n for n, p in adapters.items() if getattr(p, "requires_connection", False)
        ],
        worker_id=worker_id,
        logger=log,
        refresher=refresher,
        providers=adapters,
    )
    return Dispatcher(
        store,
        adapters,
        settings,
        clock=clock,
        worker_id=worker_id,
        logger=log,
        gate=gate,
        limiter=limiter,
        routes=routes,
        projector=Projector(
            store,
            settings,
            configured_ingress(),
            worker_id=worker_id,
            clock=clock,
            logger=log,
            provider_kinds={name: adapter.name for name, adapter in adapters.items()},
        ),
    )


T = TypeVar("T")


def run_worker_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run a worker process's coroutine to its end on uvloop, the event loop every
    worker process runs on: a worker pays for tasks, callbacks and socket waits per
    message, and uvloop's cost a fraction of the pure-Python loop's."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)
