"""Controls and held messages: kill, pause, shadow, approval, resume; approve, release,
cancel. Shared by the CLI and the Python API (and the HTTP API after it).

A change of controls returns once every live worker has acknowledged the new flow
epoch — from then on no worker starts a send the change forbids — or once ``timeout``
passes, naming the workers that did not acknowledge.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sluice.clock import Clock, SystemClock
from sluice.errors import NotFound, ValidationError
from sluice.flow.controls import FENCE_SECONDS, LIVE_WINDOW_SECONDS, Control, Mode, Scope
from sluice.metrics import RELEASED
from sluice.model import Message, Status
from sluice.ops.actions import DlqAction, filter_dict, require_actor
from sluice.store.base import AuditEntry, MessageFilter, Store, WorkerInfo

__all__ = [
    "AckReport",
    "ControlChange",
    "control_clear",
    "control_list",
    "control_set",
    "held_approve",
    "held_cancel",
    "held_list",
    "held_release",
    "live_workers",
    "parse_duration",
    "wait_for_ack",
]

#: A worker not seen for this long is not waited for (three heartbeats): it has fenced
#: itself by then (``FENCE_SECONDS``), or it is dead.
LIVE_WINDOW = timedelta(seconds=LIVE_WINDOW_SECONDS)
#: How far back ``wait_for_ack`` looks for workers that are running but not live.
_STALE_HORIZON = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class AckReport:
    """Which live workers applied flow epoch ``version``, and how long that took."""

    version: int
    acked: list[str]
    missing: list[str]
    elapsed_seconds: float
    #: Workers that never stopped but have not been seen within the live window, and
    #: since when each has fenced itself (starts no send): not waited for.
    fenced: list[tuple[str, datetime]] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.missing

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "acked": self.acked,
            "missing": self.missing,
            "elapsed_ms": round(self.elapsed_seconds * 1000, 1),
            "complete": self.complete,
            "not_live": [{"worker": w, "fenced_since": at.isoformat()} for w, at in self.fenced],
        }

    def summary(self) -> str:
        n = len(self.acked) + len(self.missing)
        took = f"{self.elapsed_seconds * 1000:.0f} ms"
        left_out = "".join(
            f"; {w} not live (fenced since {at:%H:%M:%S}): it starts no send before it "
            "has loaded this change"
            for w, at in self.fenced
        )
        if not n:
            return "no live workers: the change applies to every worker as it starts" + left_out
        if self.complete:
            return f"acknowledged by {len(self.acked)}/{n} live workers in {took}{left_out}"
        return (
            f"acknowledged by {len(self.acked)}/{n} live workers in {took}; NOT acknowledged "
            f"by: {', '.join(self.missing)} (the claim query still excludes killed and "
            f"paused scopes; check those workers){left_out}"
        )


@dataclass(frozen=True, slots=True)
class ControlChange:
    """The outcome of setting or clearing a control."""

    control: Control | None
    released: list[str] = field(default_factory=list)
    ack: AckReport | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "control": self.control.as_dict() if self.control else None,
            "released": len(self.released),
            "ack": self.ack.as_dict() if self.ack else None,
        }


def parse_duration(text: str) -> float:
    """``90s``, ``15m``, ``2h``, ``1d`` or plain seconds → seconds (> 0)."""
    raw = text.strip().lower()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        seconds = float(raw[:-1]) * units[raw[-1]] if raw and raw[-1] in units else float(raw)
    except ValueError:
        raise ValidationError(
            "expires", f"{text!r} is not a duration like 90s, 15m, 2h, 1d"
        ) from None
    if not seconds > 0 or seconds == float("inf"):
        raise ValidationError("expires", f"{text!r} must be a positive duration")
    return seconds


async def live_workers(store: Store, now: datetime) -> list[WorkerInfo]:
    """Workers running and seen within the last three heartbeats."""
    return [
        w
        for w in await store.worker_list(now - LIVE_WINDOW)
        if w.stopped_at is None and w.last_seen_at >= now - LIVE_WINDOW
    ]


async def wait_for_ack(
    store: Store,
    version: int,
    *,
    timeout: float = 10.0,
    clock: Clock | None = None,
    poll: float = 0.02,
) -> AckReport:
    """Wait until every live worker has applied flow epoch ``version`` (or ``timeout``)."""
    clock = clock or SystemClock()
    t0 = time.monotonic()
    while True:
        now = clock.now()
        running = [w for w in await store.worker_list(now - _STALE_HORIZON) if w.stopped_at is None]
        workers = [w for w in running if w.last_seen_at >= now - LIVE_WINDOW]
        acked = sorted(w.id for w in workers if w.flow_version >= version)
        missing = sorted(w.id for w in workers if w.flow_version < version)
        elapsed = time.monotonic() - t0
        if not missing or elapsed >= timeout:
            fenced = sorted(
                (w.id, w.last_seen_at + timedelta(seconds=FENCE_SECONDS))
                for w in running
                if w.last_seen_at < now - LIVE_WINDOW
            )
            return AckReport(version, acked, missing, elapsed, fenced)
        await asyncio.sleep(poll)


async def control_set(
    store: Store,
    scope: Scope,
    mode: Mode | str,
    *,
    actor: str,
    reason: str,
    expires_in: float | None = None,
    wait: bool = True,
    timeout: float = 10.0,
    clock: Clock | None = None,
) -> ControlChange:
    """Set ``scope`` to ``mode`` (audited); with ``wait``, return once every live worker
    has acknowledged it. ``expires_in`` seconds later the control reverts by itself."""
    mode = Mode.parse(mode) if isinstance(mode, str) else mode
    require_actor(actor, reason, need_reason=True)
    if expires_in is not None and not expires_in > 0:
        raise ValidationError("expires", "must be a positive number of seconds")
    clock = clock or SystemClock()
    now = clock.now()
    expires_at = now + timedelta(seconds=expires_in) if expires_in is not None else None
    control = await store.control_set(
        scope, mode, actor=actor, reason=reason, expires_at=expires_at, now=now
    )
    detail = {"control": "set", "mode": mode.value, "scope": str(scope), "reason": reason}
    await _on_timelines(store, scope, actor, detail, now)
    ack = await wait_for_ack(store, control.version, timeout=timeout, clock=clock) if wait else None
    return ControlChange(control, [], ack)


async def _on_timelines(
    store: Store, scope: Scope, actor: str, detail: dict[str, Any], now: datetime
) -> None:
    """Note a control on the timeline of every open incident whose scope it touches
    (``sluice incidents show`` then tells what on-call did about it, and when)."""
    for incident in await store.incident_list("active", 1000):
        if _touches(scope, incident.scope):
            await store.incident_log(incident.id, "control", actor, detail, now)


def _touches(scope: Scope, incident_scope: Mapping[str, str]) -> bool:
    for name in ("tenant", "channel", "provider", "action"):
        mine, theirs = getattr(scope, name), incident_scope.get(name, "")
        if mine and theirs and mine != theirs:
            return False
    return True


async def control_clear(
    store: Store,
    scope: Scope,
    *,
    actor: str,
    reason: str,
    release: bool = True,
    wait: bool = True,
    timeout: float = 10.0,
    clock: Clock | None = None,
) -> ControlChange:
    """Remove the control of ``scope`` and (``release``) put the messages controls held
    in it back in the queue — ``sluice resume``. ``NotFound`` if nothing was there."""
    require_actor(actor, reason, need_reason=True)
    clock = clock or SystemClock()
    now = clock.now()
    control, released = await store.control_clear(
        scope, actor=actor, reason=reason, release=release, now=now
    )
    if control is None and not released:
        raise NotFound(f"no control is set on scope {scope} and nothing is held by one")
    detail = {"control": "cleared", "scope": str(scope), "reason": reason,
              "released": len(released)}  # fmt: skip
    await _on_timelines(store, scope, actor, detail, now)
    RELEASED.labels("control").inc(len(released))
    ack = None
    if wait:
        ack = await wait_for_ack(store, await store.flow_version(), timeout=timeout, clock=clock)
    return ControlChange(control, released, ack)


async def control_list(store: Store, clock: Clock | None = None) -> list[Control]:
    """Controls in force (expired ones are left out; a worker removes them)."""
    now = (clock or SystemClock()).now()
    return [c for c in await store.control_list() if c.active(now)]


# -- held messages --------------------------------------------------------------------


def _check(flt: MessageFilter, ids: list[str] | None) -> None:
    if flt.limit is not None and flt.limit < 1:
        raise ValidationError("limit", "must be at least 1")
    if ids is not None and not ids:
        raise ValidationError("ids", "an empty list of ids matches nothing")
    for n, value in enumerate(ids or []):
        try:
            uuid.UUID(value)
        except (ValueError, TypeError, AttributeError):
            raise ValidationError(f"ids[{n}]", f"{value!r} is not a message id") from None


async def held_list(store: Store, flt: MessageFilter) -> list[Message]:
    """Held messages matching ``flt`` (oldest first; 100 unless ``flt.limit`` says)."""
    _check(flt, None)
    if flt.limit is None:
        flt = MessageFilter(**{**_as_kwargs(flt), "limit": 100})
    return [await store.message_get(i) for i in await store.message_select(Status.HELD, flt)]


def _as_kwargs(flt: MessageFilter) -> dict[str, Any]:
    return {name: getattr(flt, name) for name in MessageFilter.__slots__}


async def _held_move(
    store: Store,
    verb: str,
    flt: MessageFilter,
    ids: list[str] | None,
    *,
    dry_run: bool,
    actor: str,
    reason: str | None,
    clock: Clock | None,
) -> DlqAction:
    _check(flt, ids)
    require_actor(actor)
    matched = list(ids) if ids is not None else await store.message_select(Status.HELD, flt)
    if dry_run or not matched:
        return DlqAction(verb, dry_run, len(matched), 0, matched)
    now = (clock or SystemClock()).now()
    audit = AuditEntry(
        at=now,
        actor=actor,
        action=f"held.{verb}",
        target="messages",
        reason=reason,
        detail={"filter": filter_dict(flt), "by_id": ids is not None},
    )
    move = {
        "approve": store.message_approve,
        "release": store.message_requeue,
        "cancel": store.message_cancel,
    }[verb]
    changed = await move(matched, Status.HELD, now, audit)
    if verb != "cancel":
        RELEASED.labels("approval" if verb == "approve" else "held_release").inc(len(changed))
        store.wake()
    return DlqAction(verb, False, len(matched), len(changed), changed)


async def held_approve(
    store: Store,
    flt: MessageFilter,
    ids: list[str] | None = None,
    *,
    dry_run: bool = False,
    actor: str,
    reason: str | None = None,
    clock: Clock | None = None,
) -> DlqAction:
    """Approve held messages: each passes an approval control once and is queued."""
    return await _held_move(
        store, "approve", flt, ids, dry_run=dry_run, actor=actor, reason=reason, clock=clock
    )


async def held_release(
    store: Store,
    flt: MessageFilter,
    ids: list[str] | None = None,
    *,
    dry_run: bool = False,
    actor: str,
    reason: str | None = None,
    clock: Clock | None = None,
) -> DlqAction:
    """Put held messages back in the queue. Controls still apply: a message of a killed
    scope is held again, one needing approval waits for ``approve``."""
    return await _held_move(
        store, "release", flt, ids, dry_run=dry_run, actor=actor, reason=reason, clock=clock
    )


async def held_cancel(
    store: Store,
    flt: MessageFilter,
    ids: list[str] | None = None,
    *,
    dry_run: bool = False,
    actor: str,
    reason: str | None = None,
    clock: Clock | None = None,
) -> DlqAction:
    """Cancel held messages for good (they stay visible as cancelled)."""
    return await _held_move(
        store, "cancel", flt, ids, dry_run=dry_run, actor=actor, reason=reason, clock=clock
    )
