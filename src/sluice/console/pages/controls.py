"""Controls: what is killed, paused, shadowed or waiting for approval, scope by scope;
kill, pause, shadow, approval and resume with a reason and an expiry; and after each
change, every live worker's acknowledgement of it — the fenced acknowledgement
``sluice kill`` waits for — refreshing until all have given it.

The change itself does not wait for the workers (``wait=False``): the page answers at
once and the acknowledgement panel polls ``/controls/acks/<epoch>``, naming the workers
still to acknowledge and those not live (fenced: they start no send until they have
loaded the change).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from starlette.responses import Response

from sluice.clock import Clock
from sluice.console.pages._operator_acts import (
    Fields,
    Outcome,
    Submitted,
    act,
    check_tenant_known,
    operator,
    refused,
)
from sluice.console.web import Acting, OperatorViewer, render
from sluice.errors import ValidationError
from sluice.flow.controls import CONTROL_PREFIX, Control, Mode, Scope
from sluice.ops.controls import ControlChange, control_list, parse_duration, wait_for_ack
from sluice.ops.requests import scope_args
from sluice.store.base import MessageFilter, Store

__all__ = ["router"]

router = APIRouter()

#: The longest expiry the page takes (as the HTTP API): a year and a day.
MAX_EXPIRY = timedelta(days=366)
#: How far back the acknowledgement panel looks for workers (as ``wait_for_ack`` does).
_HORIZON = timedelta(hours=1)
#: The verbs of the form, most restrictive first, and the mode each sets.
VERBS = {"kill": Mode.KILLED, "pause": Mode.PAUSED, "shadow": Mode.SHADOW,
         "approval": Mode.APPROVAL, "live": Mode.LIVE}  # fmt: skip
_LEVELS = ("global", "tenant", "channel", "provider", "action", "combined")


@dataclass(frozen=True, slots=True)
class ControlRow:
    """A control in force as the table shows it: its level, and what it holds."""

    control: Control
    level: str
    held: int
    left: str


@dataclass(frozen=True, slots=True)
class WorkerAck:
    """One worker's answer to a change: acknowledged (and when), waiting, or not live."""

    id: str
    host: str
    pid: int
    state: str
    at: datetime | None


@dataclass(frozen=True, slots=True)
class AckView:
    """Every worker's answer to flow epoch ``version``; ``complete`` once all live
    workers have acknowledged it."""

    version: int
    what: str
    workers: list[WorkerAck]
    complete: bool

    @property
    def acked(self) -> int:
        return sum(1 for w in self.workers if w.state == "acknowledged")

    @property
    def live(self) -> int:
        return sum(1 for w in self.workers if w.state != "not live")


def _level(scope: Scope) -> str:
    named = [n for n in ("tenant", "channel", "provider", "action") if getattr(scope, n)]
    if not named:
        return "global"
    return named[0] if len(named) == 1 else "combined"


def _left(control: Control, now: datetime) -> str:
    if control.expires_at is None:
        return "never"
    seconds = max(0, int((control.expires_at - now).total_seconds()))
    if seconds >= 86400:
        return f"in {seconds // 86400} d {seconds % 86400 // 3600} h"
    if seconds >= 3600:
        return f"in {seconds // 3600} h {seconds % 3600 // 60} min"
    return f"in {seconds // 60} min {seconds % 60} s"


async def _held_by(store: Store, scope: Scope, now: datetime) -> int:
    """Messages that controls of exactly ``scope`` hold (their hold reason names it)."""
    flt = MessageFilter(
        tenant=scope.tenant or None, channel=scope.channel or None,
        provider=scope.provider or None, action=scope.action or None,
    )  # fmt: skip
    mark = f" ({scope}) by "
    groups = await store.message_breakdown("hold_reason", flt, "held", now)
    return sum(g.count for g in groups if g.group.startswith(CONTROL_PREFIX) and mark in g.group)


async def _rows(store: Store, clock: Clock) -> list[ControlRow]:
    now = clock.now()
    rows = [
        ControlRow(c, _level(c.scope), await _held_by(store, c.scope, now), _left(c, now))
        for c in await control_list(store, clock)
    ]
    return sorted(rows, key=lambda r: (_LEVELS.index(r.level), str(r.control.scope)))


async def _acks(store: Store, clock: Clock, version: int) -> AckView:
    """A snapshot of the workers' answers (``wait_for_ack`` with no wait)."""
    report = await wait_for_ack(store, version, timeout=0, clock=clock)
    known = {w.id: w for w in await store.worker_list(clock.now() - _HORIZON)}

    def answer(worker_id: str, state: str, at: datetime | None) -> WorkerAck:
        w = known[worker_id]
        return WorkerAck(w.id, w.host, w.pid, state, at)

    workers = [answer(i, "acknowledged", known[i].flow_acked_at) for i in report.acked]
    workers += [answer(i, "waiting", None) for i in report.missing]
    workers += [answer(i, "not live", since) for i, since in report.fenced]
    changed = [c for c in await store.control_list() if c.version == version]
    what = f"{changed[0].mode.value} {changed[0].scope}" if changed else "the change"
    return AckView(version, what, workers, report.complete)


async def _page(
    request: Request,
    outcome: Outcome | None = None,
    acks: AckView | None = None,
    form: dict[str, str] | None = None,
) -> Response:
    state = request.app.state
    outcome = outcome or Outcome()
    return render(
        request, "controls.html", outcome.status, outcome=outcome, acks=acks,
        rows=await _rows(state.store, state.clock), levels=_LEVELS, verbs=VERBS,
        default_mode=state.settings.default_mode, form=form or {},
    )  # fmt: skip


@router.get("/controls")
async def controls_page(request: Request, viewer: OperatorViewer) -> Response:
    return await _page(request)


@router.get("/controls/acks/{version}")
async def controls_acks(
    request: Request, viewer: OperatorViewer, version: Annotated[int, Path(ge=1, lt=2**62)]
) -> Response:
    """The acknowledgement panel, which htmx reloads until every live worker has acked."""
    state = request.app.state
    return render(
        request, "_controls_acks.html", acks=await _acks(state.store, state.clock, version)
    )


def _scope(fields: Fields) -> Scope:
    return Scope.of(*(fields.name(n) or None for n in ("tenant", "channel", "provider", "action")))


def _expires_in(fields: Fields) -> float | None:
    raw = fields.text("expires", max_len=40).strip()
    if not raw:
        return None
    seconds = parse_duration(raw)
    if seconds > MAX_EXPIRY.total_seconds():
        raise ValidationError("expires", f"{raw!r} is longer than {MAX_EXPIRY.days} days")
    return seconds


@router.post("/controls")
async def controls_set(request: Request, fields: Submitted, viewer: Acting) -> Response:
    """Kill, pause, shadow, approval or live on a scope, with a reason and an expiry."""
    operator(viewer)
    state = request.app.state
    try:
        verb = fields.text("verb", max_len=20)
        if verb not in VERBS:
            raise ValidationError("verb", f"must be one of {', '.join(VERBS)}, not {verb!r}")
        scope, expires_in, reason = _scope(fields), _expires_in(fields), fields.reason()
        await check_tenant_known(state.store, scope.tenant)
    except ValidationError as exc:
        return await _page(request, refused(exc), form=_echo(fields))
    args: dict[str, Any] = {"scope": scope_args(scope), "mode": VERBS[verb].value,
                            "expires_in": expires_in, "wait": False}  # fmt: skip
    outcome = await act(request, viewer, "control.set", args, reason, _set_notice)
    acks = None
    if outcome.error is None and not outcome.filed:
        version = await state.store.flow_version()
        acks = await _acks(state.store, state.clock, version)
    return await _page(
        request, outcome, acks, form=None if outcome.error is None else _echo(fields)
    )


def _set_notice(change: ControlChange) -> Outcome:
    c = change.control
    assert c is not None  # control_set always returns the control it set
    until = f" until {c.expires_at:%Y-%m-%d %H:%M:%S} UTC" if c.expires_at else ""
    return Outcome(notice=f"{c.scope}: {c.mode.value}{until} (epoch {c.version}), "
                          f"audited as {c.actor}: {c.reason}")  # fmt: skip


@router.post("/controls/resume")
async def controls_resume(request: Request, fields: Submitted, viewer: Acting) -> Response:
    """Lift the control of exactly one scope and release what controls held in it."""
    operator(viewer)
    state = request.app.state
    try:
        scope, reason = _scope(fields), fields.reason()
        release = not fields.checked("keep_held")
    except ValidationError as exc:
        return await _page(request, refused(exc))
    args = {"scope": scope_args(scope), "release": release, "wait": False}
    outcome = await act(
        request, viewer, "resume", args, reason, _resume_notice(scope, viewer.actor)
    )
    acks = None
    if outcome.error is None and not outcome.filed:
        acks = await _acks(state.store, state.clock, await state.store.flow_version())
    return await _page(request, outcome, acks)


def _resume_notice(scope: Scope, actor: str) -> Any:
    def notice(change: ControlChange) -> Outcome:
        was = f" (was {change.control.mode.value})" if change.control else ""
        return Outcome(notice=f"{scope}: control lifted{was}; {len(change.released)} held "
                              f"messages released; audited as {actor}")  # fmt: skip

    return notice


def _echo(fields: Fields) -> dict[str, str]:
    """What the person typed, to fill the form again after a refusal."""
    return fields.echo("verb", "tenant", "channel", "provider", "action", "expires", "reason")
