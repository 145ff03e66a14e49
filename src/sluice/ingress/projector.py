"""The projector: applies what ingress stored, after the provider has its 2xx.

Each inbox event is leased like a message. A receipt is applied to its message in
one transaction with marking the event done; an inbound event becomes an outbound
webhook to its tenant's ``inbound_url`` through the outbox (with an idempotency key
derived from the event, so a projector that dies half-way never forwards twice), and
so inherits retries, controls and the dead-letter queue. A failure puts the event
back with backoff; after ``projector_max_attempts`` it goes to the inbox's own dead
state, where ``sluice inbox retry`` finds it. Nothing already committed is undone.

Before anything is applied, the event must be one its source may speak of
(``sluice.ingress.binding``): a receipt or inbound event naming another tenant's
message, a message sent through another kind of provider, or another provider message
id is refused for good — kept in the inbox as ``rejected`` with the reason, audited as
``tenancy.violation`` and logged at critical, as the dispatcher's tenancy guard does.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import structlog

from sluice import metrics, tracing
from sluice.clock import Clock, SystemClock
from sluice.config import Settings
from sluice.errors import NotFound, SluiceError
from sluice.ingress.binding import message_binding_problem, route_binding_problem
from sluice.ingress.config import IngressConfig
from sluice.ingress.hygiene import InboundHygiene
from sluice.model import Message, NewMessage, Status, new_message_id
from sluice.store._receipts import NOT_READY
from sluice.store.base import AuditEntry, InboxItem, Receipt, Store

__all__ = ["Projector", "inbound_message"]

#: Leased events per round trip (the lease lasts ``lease_seconds``, as claims do).
BATCH = 100
#: Events applied at once (bounded by the store's pool).
CONCURRENCY = 8


class _NotYet(Exception):
    """Try again later (the message has no outcome yet, say)."""


class _Refused(Exception):
    """The event may not apply to what it names: reject it for good."""

    def __init__(self, reason: str, message: Message | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.message = message


def _unconfirmed(msg: Message, receipt_status: str) -> bool:
    """Did this failed receipt move ``msg`` to ``needs_confirm`` (post-send verification,
    issue 15: the store's ``receipt_advance`` decides; this only counts it)?"""
    return (
        msg.verify_within is not None
        and msg.status is Status.SENT
        and receipt_status in ("failed", "undelivered")
    )


def inbound_message(item: InboxItem, tenant: str, url: str) -> NewMessage:
    """The outbound webhook that hands an inbound event to its tenant."""
    payload: dict[str, Any] = {
        "type": f"inbound.{item.provider}",
        "provider": item.provider,
        "event_id": item.event_id,
        "received_at": item.received_at.isoformat(),
        "message_id": item.message_id,
        "address": item.address,
        "data": item.data,
    }
    return NewMessage(
        tenant=tenant,
        channel="webhook",
        provider="webhook",
        recipient=url,
        payload=payload,
        action=f"inbound.{item.provider}",
        idempotency_key=f"inbound:{item.provider}:{item.event_id}",
        id=new_message_id(),
    )


class Projector:
    """Drains the inbox; run it in the worker (``sluice worker``) beside the dispatcher."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        config: IngressConfig,
        *,
        worker_id: str,
        clock: Clock | None = None,
        logger: Any = None,
        provider_kinds: Mapping[str, str] | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.config = config
        #: Provider name (aliases included) -> its kind, to tell what a source may speak of.
        self.provider_kinds = dict(provider_kinds or {})
        self.worker_id = worker_id
        self.clock = clock or SystemClock()
        self.log = logger or structlog.get_logger("sluice.projector")
        #: Recipient hygiene (issue 14): opt-outs, bounces, the WhatsApp window.
        self.hygiene = InboundHygiene(store, config, self.provider_kinds, self.log)
        self.counts = {"applied": 0, "stale": 0, "unmatched": 0, "forwarded": 0,
                       "retried": 0, "dead": 0, "rejected": 0}  # fmt: skip

    async def run(self, stopping: asyncio.Event) -> None:
        """Until ``stopping``: drain what is due, then wait a poll interval."""
        idle = min(self.settings.poll_interval, 0.2)
        while not stopping.is_set():
            try:
                done = await self.run_once()
            except SluiceError as exc:  # the store is down: keep trying, never crash
                self.log.warning("projector cannot reach the store", error=str(exc))
                done = 0
            if done == 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), idle)

    async def run_once(self) -> int:
        """Apply one batch of due events; how many were leased."""
        items = await self.store.inbox_claim(
            self.worker_id, BATCH, self.settings.lease_seconds, self.clock.now()
        )
        # Several at once (each its own transaction); receipts for one message serialise
        # on its row lock, and their rank order makes the result the same in any order.
        lanes = asyncio.Semaphore(max(1, min(CONCURRENCY, self.settings.pool_size)))

        async def one(item: InboxItem) -> None:
            async with lanes:
                await self._one(item)

        await asyncio.gather(*(one(i) for i in items))
        return len(items)

    async def drain(self) -> None:
        """Apply everything due now (``--until-idle``)."""
        while await self.run_once():
            pass

    async def _one(self, item: InboxItem) -> None:
        try:
            result = await self._apply(item)
        except _Refused as refused:
            try:
                await self._reject(item, refused)
            except SluiceError as exc:  # tried again on the next claim
                await self._failed(item, str(exc))
            return
        except (_NotYet, SluiceError) as exc:
            await self._failed(item, str(exc))
            return
        key = "forwarded" if result.startswith("forwarded") else result
        self.counts[key] = self.counts.get(key, 0) + 1

    async def _apply(self, item: InboxItem) -> str:
        now = self.clock.now()
        if item.kind == "receipt":
            if not item.message_id or not item.status:
                return await self.store.inbox_finish(item.id, item.attempts, "unmatched", now)
            msg = await self._message(item.message_id)
            if msg is None:
                return await self.store.inbox_finish(item.id, item.attempts, "unmatched", now)
            self._check(item, msg)
            await self.hygiene.receipt(item, msg, now)  # recipient hygiene (issue 14)
            if msg.status in NOT_READY:
                raise _NotYet(f"message {item.message_id} has no sending outcome yet")
            receipt = Receipt(
                message_id=item.message_id,
                provider=item.provider,
                status=item.status,
                occurred_at=item.occurred_at,
                received_at=item.received_at,
                error_code=item.error_code,
                detail=item.detail,
            )
            with tracing.receipt(
                msg, source=item.provider, status=item.status, error_code=item.error_code
            ) as span:
                result = await self.store.inbox_finish(item.id, item.attempts, "", now, receipt)
                span.result(result)
            if result == "applied" and _unconfirmed(msg, item.status):  # issue 15
                labels = (metrics.tenant_label(msg.tenant), msg.channel, msg.provider, "receipt")
                metrics.of(metrics.NEEDS_CONFIRM, *labels).inc()
            if result == "not_ready":
                raise _NotYet(f"message {item.message_id} has no sending outcome yet")
            return result
        tenant = await self._tenant(item)
        await self.hygiene.inbound(item, tenant, now)  # recipient hygiene (issue 14)
        url = self.config.inbound_urls.get(tenant)
        if url is None:
            raise _NotYet(
                f"tenant {tenant!r} has no inbound_url: set [tenants.{tenant}] in sluice.toml"
            )
        (mid,) = await self.store.enqueue_many([inbound_message(item, tenant, url)])
        return await self.store.inbox_finish(item.id, item.attempts, f"forwarded {mid}", now)

    async def _message(self, message_id: str) -> Message | None:
        try:
            return await self.store.message_get(message_id)
        except NotFound:
            return None

    def _check(self, item: InboxItem, msg: Message) -> None:
        source = self.config.sources.get(item.provider)
        problem = message_binding_problem(
            item,
            msg,
            source_kind=source.kind if source is not None else None,
            provider_kinds=self.provider_kinds,
        )
        if problem is not None:
            raise _Refused(problem, msg)

    async def _tenant(self, item: InboxItem) -> str:
        if item.message_id:
            msg = await self._message(item.message_id)
            if msg is not None:
                self._check(item, msg)
                return msg.tenant
            # Not one of ours: route by address like any inbound event.
        source = self.config.sources.get(item.provider)
        routed = None
        if source is not None and item.address is not None:
            routed = source.routes.get(item.address)
        problem = route_binding_problem(item, routed)
        if problem is not None:
            raise _Refused(problem)
        tenant = routed or item.source_tenant or (source.tenant if source else None)
        if tenant is None:
            raise _NotYet(
                f"no tenant for inbound address {item.address!r}: add it to "
                f"[ingress.{item.provider}].routes or set [ingress.{item.provider}].tenant"
            )
        return tenant

    async def _reject(self, item: InboxItem, refused: _Refused) -> None:
        # RB-01: a tenant's account speaking of another tenant's message is an attack or
        # a crossed configuration; either way nothing is applied, and a human must look.
        now = self.clock.now()
        msg = refused.message
        self.log.critical(
            "TENANCY VIOLATION refused",
            alert="SEV0",
            runbook="RB-01",
            source=item.provider,
            source_tenant=item.source_tenant,
            event_id=item.event_id,
            message_id=item.message_id,
            message_tenant=msg.tenant if msg else None,
            reason=refused.reason,
        )
        audit = AuditEntry(
            at=now,
            actor=f"projector:{self.worker_id}",
            action="tenancy.violation",
            target=item.message_id or f"inbox:{item.id}",
            reason=refused.reason,
            detail={
                "severity": "SEV0",
                "inbox_id": item.id,
                "source": item.provider,
                "source_tenant": item.source_tenant,
                "event_id": item.event_id,
                "kind": item.kind,
                "message_id": item.message_id,
                "message_tenant": msg.tenant if msg else None,
                "message_provider": msg.provider if msg else None,
                "address": item.address,
            },
        )
        if await self.store.inbox_reject(item.id, item.attempts, refused.reason, now, audit):
            self.counts["rejected"] += 1

    async def _failed(self, item: InboxItem, error: str) -> None:
        now = self.clock.now()
        if item.attempts >= self.settings.projector_max_attempts:
            await self.store.inbox_dead(item.id, item.attempts, error, now)
            self.counts["dead"] += 1
            self.log.error("inbox event dead", event_id=item.event_id, provider=item.provider,
                           attempts=item.attempts, error=error)  # fmt: skip
            return
        # Full jitter over 1 s, 2 s, 4 s … capped at 5 minutes.
        delay = random.uniform(0, min(300.0, 2.0 ** (item.attempts - 1)))
        await self.store.inbox_retry(
            item.id, item.attempts, now + timedelta(seconds=delay), error, now
        )
        self.counts["retried"] += 1
