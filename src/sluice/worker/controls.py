"""A worker's view of the controls, and its acknowledgement of each change.

The worker polls the flow epoch every ``control_poll`` seconds. When it changed, it
loads the controls, swaps its snapshot (every send checked from then on sees the new
modes), waits for the sends it admitted under the old snapshot in any scope the change
made more restrictive, and only then records the new epoch as acknowledged. That is
the fence ``sluice kill`` waits on: after every live worker acknowledged, no new side
effect in the killed scope starts anywhere, and none admitted earlier is still in flight.

The same loop removes expired controls (auto-revert, audited) and moves queued messages
under a kill to ``held`` so that operators see them.

Between two polls the snapshot may lag the database. That is safe for sends (a change
that restricts is fenced), but not for the other verdicts: a message ``sluice resume``
just released, claimed before the next poll, would be held again under the kill that was
lifted. So before a claimed message is held, paused or shadowed, the dispatcher calls
``refresh``: the epoch is read, and a newer snapshot is loaded at once (control changes
bump the epoch in the same transaction as the rows they move, so the epoch read after
the claim covers every change the claim could see).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from sluice.clock import Clock
from sluice.config import Settings
from sluice.errors import SluiceError
from sluice.flow.controls import Control, ControlSnapshot, Mode
from sluice.metrics import CONTROL_ACK
from sluice.model import Message
from sluice.store.base import Store
from sluice.worker import expiry, verify

__all__ = ["ControlWatch", "ScopeKey", "scope_key"]

ScopeKey = tuple[str, str, str, str]

#: Seconds between sweeps for expired controls and for queued messages under a kill.
SWEEP_INTERVAL = 1.0
#: Seconds between purges of expired limiter state and throttles.
PURGE_INTERVAL = 60.0


def scope_key(msg: Message, provider: str | None = None) -> ScopeKey:
    """(tenant, channel, provider, action) of a message — ``provider`` when routed."""
    return (msg.tenant, msg.channel, provider or msg.provider, msg.action)


class ControlWatch:
    """The controls as this worker applies them, kept current and acknowledged."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        worker_id: str,
        clock: Clock,
        logger: Any,
    ) -> None:
        self.store = store
        self.settings = settings
        self.worker_id = worker_id
        self.clock = clock
        self.log = logger
        self.snapshot = ControlSnapshot(-1, (), Mode(settings.default_mode))
        self.acked = -1
        #: Sends between their final check and their end, and the futures the fence of a
        #: reload waits on (created only for the sends it has to wait for).
        self._admitted: dict[int, ScopeKey] = {}
        self._fenced: dict[int, asyncio.Future[None]] = {}
        self._seq = itertools.count()
        self._last_sweep = 0.0
        self._last_purge = 0.0
        #: One snapshot swap at a time (the poll loop and ``refresh`` may race).
        self._swapping = asyncio.Lock()
        #: Scopes made more restrictive since the last acknowledgement.
        self._restricted: set[ScopeKey] = set()
        #: The epoch the reload hooks (limits) last ran for.
        self._hooked = -1
        #: Called with the new epoch after each reload (limits reload on the same epoch).
        self.on_reload: list[Callable[[int], Awaitable[None]]] = []
        #: Called with the epoch on every poll (throttle marks, breaker states).
        self.on_poll: list[Callable[[int], Awaitable[None]]] = []

    # -- checking sends ------------------------------------------------------------

    def decide(self, key: ScopeKey, now: datetime) -> tuple[Mode, Control | None]:
        """The mode that applies to a send in ``key`` now."""
        return self.snapshot.decide(*key, now)

    def admit(self, key: ScopeKey) -> int:
        """Register a send about to start under the current snapshot; ``done`` when over.

        Call it in the same step as ``decide`` (no ``await`` between): the fence of the
        next reload then either sees this send or this send saw the new snapshot.
        """
        n = next(self._seq)
        self._admitted[n] = key
        return n

    def done(self, token: int) -> None:
        self._admitted.pop(token, None)
        fence = self._fenced.pop(token, None)
        if fence is not None and not fence.done():
            fence.set_result(None)

    # -- keeping current -----------------------------------------------------------

    async def start(self) -> None:
        """Load the controls and acknowledge them before the first claim (raises)."""
        await self._sweep()
        version = await self.store.flow_version()
        await self._reload(version)
        for hook in self.on_poll:
            await hook(version)

    async def poll(self) -> None:
        """One round: reload and acknowledge if the epoch moved; sweep now and then."""
        try:
            version = await self.store.flow_version()
            if version != self.snapshot.version or self.acked < version:
                await self._reload(version)
            for hook in self.on_poll:
                await hook(version)
            await self._sweep()
        except SluiceError as exc:
            self.log.warning("could not refresh controls", error=str(exc))
        except Exception:  # the loop must outlive any bug: it is what acknowledges kills
            self.log.exception("control refresh failed")

    async def refresh(self) -> bool:
        """Load the controls now if the epoch moved since the snapshot; True if it did.

        Only the snapshot is swapped: the poll loop still runs the reload hooks, waits
        out the fence and acknowledges, so a claim never waits on in-flight sends."""
        version = await self.store.flow_version()
        if version == self.snapshot.version:
            return False
        await self._swap(version)
        return True

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            await self.poll()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), self.settings.control_poll)

    async def _reload(self, version: int) -> None:
        if version != self.snapshot.version:
            await self._swap(version)
        if self._hooked < version:
            for hook in self.on_reload:
                await hook(version)
            self._hooked = version
        await self._acknowledge(version)

    async def _swap(self, version: int) -> None:
        async with self._swapping:
            if version <= self.snapshot.version:
                return  # a newer snapshot landed while this one waited
            now = self.clock.now()
            controls = tuple(await self.store.control_list())
            old = self.snapshot
            self.snapshot = ControlSnapshot(version, controls, Mode(self.settings.default_mode))
            # Right after the swap, before any await: every send admitted under ``old`` is
            # in ``_admitted`` now, and every later one was checked against the new state.
            # Scopes accumulate until an acknowledgement succeeds, so a change arriving
            # while an earlier fence is still waiting cannot drop that fence.
            keys = set(self._admitted.values())
            self._restricted |= set(self.snapshot.restricted_since(old, keys, now))
            if old.version >= 0:
                for control in controls:
                    if control.version > old.version:
                        self.log.warning(
                            "control applied",
                            scope=str(control.scope),
                            mode=control.mode.value,
                            actor=control.actor,
                            reason=control.reason,
                            version=version,
                        )

    async def _acknowledge(self, version: int) -> None:
        loop = asyncio.get_running_loop()
        seen_at = loop.time()
        pending = []
        for token, key in list(self._admitted.items()):
            if key in self._restricted:
                fence = self._fenced.get(token)
                if fence is None:
                    fence = self._fenced[token] = loop.create_future()
                pending.append(fence)
        if pending:
            # Sends that passed an older state in a scope now restricted: acknowledge
            # only once they are over (each is bounded by the HTTP timeout).
            _, still = await asyncio.wait(pending, timeout=self.settings.http_timeout + 1.0)
            if still:
                self.log.error(
                    "sends admitted before a control change are still in flight; "
                    "not acknowledging yet",
                    count=len(still),
                    version=version,
                )
                return
        await self.store.worker_ack(self.worker_id, version, self.clock.now())
        CONTROL_ACK.observe(loop.time() - seen_at)
        self.acked = version
        self._restricted = set()

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() - self._last_sweep < SWEEP_INTERVAL:
            return
        self._last_sweep = loop.time()
        now = self.clock.now()
        expired = await self.store.control_expire(now, f"worker:{self.worker_id}")
        for control in expired:
            self.log.warning(
                "control expired; mode reverted",
                scope=str(control.scope),
                mode=control.mode.value,
            )
        held = await self.store.control_hold_queued(now)
        if held:
            self.log.info("queued messages under a kill moved to held", count=len(held))
        parked = await self.store.control_park_queued(now)
        if parked:
            self.log.info("queued messages under a pause parked", count=parked)
        await expiry.sweep(self.store, now, self.log)  # issue 14: message expiry
        await verify.sweep(self.store, now, self.log)  # issue 15: post-send verification
        if loop.time() - self._last_purge >= PURGE_INTERVAL:
            self._last_purge = loop.time()
            await self.store.flow_state_purge(now)
