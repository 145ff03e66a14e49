"""Limits and quotas: every limit in force with its use (bars at 70/85/95 %), set and
clear run-time limits; circuit breakers with their window's figures, forced open or
closed, or reset; and the throttles providers asked for, cleared. Every act goes
through the two-person rule as the signed-in person, with a reason."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from sluice.console.pages._operator_acts import (
    MAX_NAME,
    Fields,
    Outcome,
    Submitted,
    act,
    check_tenant_known,
    operator,
    refused,
)
from sluice.console.web import Acting, OperatorViewer, render
from sluice.errors import SluiceError, ValidationError
from sluice.flow.limits import KINDS, QUOTA_THRESHOLDS, LimitSpec, configured_flow
from sluice.ops.breakers import breakers_list
from sluice.ops.limits import LimitView, limit_list
from sluice.ops.waiting import throttle_rows, throttles_list

__all__ = ["router"]

router = APIRouter()

#: The number fields of a limit, and whether each is a whole number.
_NUMBERS = {"rate": False, "burst": False, "limit": True, "max": True,
            "urgent_priority": True, "reserve": False}  # fmt: skip
_DURATIONS = ("window", "cooldown")


@dataclass(frozen=True, slots=True)
class LimitLine:
    """A limit as the table shows it: its setting in words and its use as a bar."""

    view: LimitView
    setting: str
    percent: float | None

    @property
    def band(self) -> str:
        """The bar's colour: ``b95``, ``b85``, ``b70`` past those shares, else ''."""
        if self.percent is None:
            return ""
        for share in sorted(QUOTA_THRESHOLDS, reverse=True):
            if self.percent >= share * 100:
                return f"b{round(share * 100)}"
        return ""


def _setting(s: LimitSpec) -> str:
    if s.kind == "rate":
        return f"{s.rate:g}/s, burst {s.burst:g}"
    if s.kind == "quota":
        resets = f"resets {s.reset} UTC" if s.anchor is not None else "rolling"
        return f"{s.limit:,} per {_span(s.window)} ({resets}), reserve {s.reserve:.0%}"
    if s.kind == "recipient":
        counted = f"max {s.max} per {_span(s.window)}" if s.max else ""
        cooldown = f"cooldown {_span(s.cooldown)}" if s.cooldown else ""
        return ", ".join(p for p in (counted, cooldown) if p)
    if s.kind == "action":
        return f"max {s.max:,} per {_span(s.window)}"
    return f"max {s.max} in flight per worker"


def _span(seconds: float | None) -> str:
    if not seconds:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


def _line(v: LimitView) -> LimitLine:
    limit = v.spec.limit
    percent = None if v.used is None or not limit else min(100.0, 100.0 * v.used / limit)
    return LimitLine(v, _setting(v.spec), percent)


async def _page(request: Request, outcome: Outcome | None = None) -> Response:
    state = request.app.state
    outcome = outcome or Outcome()
    try:
        configured, _ = configured_flow()
        problem = None
    except SluiceError as exc:  # a broken sluice.toml: show the run-time limits and say so
        configured, problem = [], f"sluice.toml: {exc}"
    views = await limit_list(state.store, configured, state.settings, state.clock)
    now = state.clock.now()
    return render(
        request, "limits.html", outcome.status, outcome=outcome, problem=problem,
        limits=[_line(v) for v in views], kinds=KINDS,
        breakers=await breakers_list(state.store, state.settings, now),
        throttles=throttle_rows(await throttles_list(state.store, clock=state.clock), now),
    )  # fmt: skip


@router.get("/limits")
async def limits_page(request: Request, viewer: OperatorViewer) -> Response:
    return await _page(request)


def _limit_fields(fields: Fields) -> dict[str, Any]:
    kind = fields.text("kind", max_len=20)
    if kind not in KINDS:
        raise ValidationError("kind", f"must be one of {', '.join(KINDS)}, not {kind!r}")
    raw: dict[str, Any] = {"kind": kind}
    for name in ("tenant", "provider", "action"):
        raw[name] = fields.name(name)
    for name, integer in _NUMBERS.items():
        value = fields.number(name, integer=integer)
        if value is not None:
            raw[name] = value
    for name in _DURATIONS:
        span = fields.text(name, max_len=40).strip()
        if span:
            raw[name] = span
    reset = fields.text("reset", max_len=20).strip()
    if reset:
        raw["reset"] = reset
    return raw


@router.post("/limits")
async def limits_set(request: Request, fields: Submitted, viewer: Acting) -> Response:
    """Set a run-time limit (it replaces sluice.toml's of the same scope)."""
    operator(viewer)
    try:
        raw, reason = _limit_fields(fields), fields.reason()
        await check_tenant_known(request.app.state.store, raw["tenant"])
    except ValidationError as exc:
        return await _page(request, refused(exc))
    outcome = await act(
        request, viewer, "limit.set", {"limit": raw}, reason,
        lambda spec: Outcome(notice=f"{spec.label()} set ({_setting(spec)}), audited as "
                                    f"{viewer.actor}; workers apply it on their next poll"),
    )  # fmt: skip
    return await _page(request, outcome)


@router.post("/limits/clear")
async def limits_clear(request: Request, fields: Submitted, viewer: Acting) -> Response:
    """Remove a run-time limit (a limit of sluice.toml for that scope applies again)."""
    operator(viewer)
    try:
        kind = fields.text("kind", max_len=20)
        args = {"kind": kind, **{n: fields.name(n) for n in ("tenant", "provider", "action")}}
        reason = fields.reason()
    except ValidationError as exc:
        return await _page(request, refused(exc))
    outcome = await act(
        request, viewer, "limit.clear", args, reason,
        lambda done: Outcome(notice=f"run-time {kind} limit cleared, audited as {viewer.actor}"),
    )  # fmt: skip
    return await _page(request, outcome)


_BREAKER_VERBS = {"open": ("breaker.force", "open"), "close": ("breaker.force", "closed"),
                  "reset": ("breaker.reset", None)}  # fmt: skip


@router.post("/breakers")
async def breakers_act(request: Request, fields: Submitted, viewer: Acting) -> Response:
    """Force a breaker open or closed until reset, or hand it back to the workers."""
    operator(viewer)
    try:
        key = fields.text("key", max_len=300, required=True).strip()
        verb = fields.text("verb", max_len=10)
        if verb not in _BREAKER_VERBS:
            raise ValidationError("verb", f"must be open, close or reset, not {verb!r}")
        reason = fields.reason()
    except ValidationError as exc:
        return await _page(request, refused(exc))
    name, wanted = _BREAKER_VERBS[verb]
    args = {"key": key} if wanted is None else {"key": key, "state": wanted}
    outcome = await act(
        request, viewer, name, args, reason,
        lambda b: Outcome(notice=f"breaker {b.key}: {b.state}"
                                 f"{' (forced)' if b.forced else ''}, audited as {viewer.actor}"),
    )  # fmt: skip
    return await _page(request, outcome)


@router.post("/throttles/clear")
async def throttles_clear(request: Request, fields: Submitted, viewer: Acting) -> Response:
    """Clear the throttles of a tenant and provider (as ``sluice throttles clear``)."""
    operator(viewer)
    try:
        tenant = fields.text("tenant", max_len=MAX_NAME) or None
        provider = fields.text("provider", max_len=2048) or None
        reason = fields.reason()
    except ValidationError as exc:
        return await _page(request, refused(exc))
    args = {"tenant": tenant, "provider": provider, "wait": False}
    outcome = await act(
        request, viewer, "throttles.clear", args, reason,
        lambda done: Outcome(notice=f"{len(done.throttles)} throttles cleared, audited as "
                                    f"{viewer.actor}"),
    )  # fmt: skip
    return await _page(request, outcome)
