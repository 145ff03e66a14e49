"""Limits: token buckets, windowed quotas, per-recipient caps and cooldowns, action caps.

A *limit* is declared in ``sluice.toml`` (``[[limits]]`` tables) or set at run time
(``sluice limits set``, audited, stored, overriding the file's entry of the same key):

=============  ==========================================  ================================
kind           fields                                      a message over it is …
=============  ==========================================  ================================
``rate``       ``rate`` (per second), ``burst``            deferred to when a token is free
``quota``      ``limit``, ``window`` (``1d``), ``reset``   deferred to when the window has
               (``rolling`` or ``HH:MM`` UTC),             room again; below
               ``urgent_priority``, ``reserve`` (0.05)     ``urgent_priority`` already when
                                                           only ``reserve`` is left
``recipient``  ``max``, ``window`` and/or ``cooldown``     held (a runaway loop, RB-10)
``action``     ``max``, ``window``                         deferred to when the window has
                                                           room again
``concurrency`` ``max`` (sends in flight, per worker)      waits for a free slot
=============  ==========================================  ================================

``tenant``, ``provider`` and ``action`` select the messages a limit applies to; empty
means all of them *together* (a ``rate`` limit with only ``provider = "twilio"`` is one
bucket shared by every tenant). Recipient caps always count per (tenant, action,
recipient), and count each message once: a retry of a message they counted passes as
itself (a per-message marker cell, ``marker_key``).

Windows slide: a recipient cap, an action cap or a quota allows at most its limit in
*any* ``window`` seconds, wherever that span starts — never twice the limit across a
boundary, as windows aligned to the epoch did. A count of at most ``LOG_MAX`` keeps the
time of each use (exact); a larger one keeps ``SLICES`` slices of its window, counting a
slice whole until its latest use is a window old (never over the limit; a use comes back
at most a slice late). A quota with ``reset = "HH:MM"`` instead counts in fixed
windows of its provider's, one of which starts at that time of day (UTC): for a provider
whose quota really does renew at a set time, all of it comes back at that moment.
A ``rate`` bucket has no window to cross: over any ``t`` seconds it lets at most
``burst + rate * t`` through (a token bucket: GCRA by another name).

The shared state — bucket levels, uses, last-send times — lives in Redis
(``SLUICE_REDIS_URL``: one Lua script call per claimed batch, atomic) or in the store.
Both run the same algorithm (``evaluate`` here; ``limits.lua`` for Redis) and pass the
same test suite. A batch is decided message by message, in claim order, each message
all-or-nothing: a refused message takes no token from any of its buckets. What a try
then did not use is given back (``Use``, ``refundable``, ``give_back``).
"""

from __future__ import annotations

import dataclasses
import enum
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from sluice.errors import ConfigError, ValidationError
from sluice.model import ErrorClass, ErrorCode, Message
from sluice.model import Outcome as SendOutcome

__all__ = [
    "KINDS",
    "QUOTA_THRESHOLDS",
    "Cell",
    "Check",
    "Decision",
    "LimitSpec",
    "Refund",
    "Request",
    "Use",
    "evaluate",
    "parse_limits",
    "quota_check",
    "refundable",
    "requests_for",
    "use_of",
    "uses",
]

KINDS = ("rate", "quota", "recipient", "action", "concurrency")
#: Quota use recorded as an event (audit row, log line) when first crossed in a window.
QUOTA_THRESHOLDS = (0.70, 0.85, 0.95)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _seconds(where: str, raw: Any) -> float:
    if isinstance(raw, bool):
        raise ConfigError(f"{where} must be a duration like 90s, 15m, 1h, 1d")
    if isinstance(raw, int | float):
        value = float(raw)
    elif isinstance(raw, str) and raw.strip():
        text = raw.strip().lower()
        try:
            value = float(text[:-1]) * _UNITS[text[-1]] if text[-1] in _UNITS else float(text)
        except ValueError:
            raise ConfigError(f"{where} {raw!r} is not a duration like 90s, 15m, 1h, 1d") from None
    else:
        raise ConfigError(f"{where} must be a duration like 90s, 15m, 1h, 1d")
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError(f"{where} must be positive")
    return value


@dataclass(frozen=True, slots=True)
class LimitSpec:
    """One limit, as declared (see the module docstring for the fields of each kind)."""

    kind: str
    tenant: str = ""
    provider: str = ""
    action: str = ""
    rate: float | None = None
    burst: float | None = None
    limit: int | None = None
    window: float | None = None
    urgent_priority: int | None = None
    reserve: float = 0.05
    max: int | None = None
    cooldown: float | None = None
    #: Quota: ``"rolling"`` (the default) or the provider's reset, ``"HH:MM"`` UTC.
    reset: str | None = None
    source: str = "config"

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.kind, self.tenant, self.provider, self.action)

    @property
    def anchor(self) -> float | None:
        """Seconds into a UTC day at which a fixed quota window starts (None: rolling)."""
        if self.reset is None or self.reset == "rolling":
            return None
        hours, minutes = self.reset.split(":")
        return int(hours) * 3600.0 + int(minutes) * 60.0

    def applies(self, msg: Message) -> bool:
        return (
            (not self.tenant or self.tenant == msg.tenant)
            and (not self.provider or self.provider == msg.provider)
            and (not self.action or self.action == msg.action)
        )

    def label(self) -> str:
        scope = " ".join(
            f"{n}={v}"
            for n, v in (
                ("tenant", self.tenant),
                ("provider", self.provider),
                ("action", self.action),
            )
            if v
        )
        return f"{self.kind}({scope or 'all'})"

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in dataclasses.asdict(self).items() if v not in (None, "")}
        out["kind"] = self.kind
        return out

    def spec_dict(self) -> dict[str, Any]:
        """The fields stored for a run-time limit (scope and source left out)."""
        skip = {"kind", "tenant", "provider", "action", "source"}
        return {
            k: v for k, v in dataclasses.asdict(self).items() if k not in skip and v is not None
        }

    @classmethod
    def parse(cls, raw: Mapping[str, Any], where: str, source: str = "config") -> LimitSpec:
        """A limit from a TOML table or a stored row; ``ConfigError`` naming the field."""
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{where} must be a table")
        allowed = {f.name for f in dataclasses.fields(cls)} - {"source"}
        unknown = sorted(set(raw) - allowed)
        if unknown:
            raise ConfigError(f"{where}: unknown field {unknown[0]!r}")
        kind = raw.get("kind")
        if kind not in KINDS:
            raise ConfigError(f"{where}.kind must be one of {', '.join(KINDS)}, not {kind!r}")
        values: dict[str, Any] = {"kind": kind, "source": source}
        for name in ("tenant", "provider", "action"):
            value = raw.get(name, "")
            if not isinstance(value, str) or len(value) > 200:
                raise ConfigError(f"{where}.{name} must be text")
            values[name] = value

        def number(name: str, *, integer: bool = False, minimum: float = 0) -> Any:
            value = raw.get(name)
            if value is None:
                return None
            bad = isinstance(value, bool) or not isinstance(value, int | float)
            if bad or (integer and isinstance(value, float)) or not math.isfinite(value):
                kind_word = "a whole number" if integer else "a number"
                raise ConfigError(f"{where}.{name} must be {kind_word}, not {value!r}")
            if value <= minimum and not (minimum == 0 and name == "urgent_priority"):
                raise ConfigError(f"{where}.{name} must be greater than {minimum:g}")
            return value

        need: dict[str, tuple[str, ...]] = {
            "rate": ("rate",),
            "quota": ("limit", "window"),
            "recipient": (),
            "action": ("max", "window"),
            "concurrency": ("max",),
        }
        values["rate"] = number("rate")
        values["burst"] = number("burst")
        values["limit"] = number("limit", integer=True)
        values["max"] = number("max", integer=True)
        urgent = raw.get("urgent_priority")
        if urgent is not None and (isinstance(urgent, bool) or not isinstance(urgent, int)):
            raise ConfigError(f"{where}.urgent_priority must be a whole number")
        values["urgent_priority"] = urgent
        if "reserve" in raw:
            reserve = raw["reserve"]
            if isinstance(reserve, bool) or not isinstance(reserve, int | float):
                raise ConfigError(f"{where}.reserve must be a fraction between 0 and 1")
            if not 0 <= reserve < 1:
                raise ConfigError(f"{where}.reserve must be a fraction between 0 and 1")
            values["reserve"] = float(reserve)
        for name in ("window", "cooldown"):
            if raw.get(name) is not None:
                values[name] = _seconds(f"{where}.{name}", raw[name])
        for name in need[kind]:
            if values.get(name) is None:
                raise ConfigError(f"{where}: a {kind} limit needs {name}")
        if raw.get("reset") is not None:
            values["reset"] = _reset(where, kind, raw["reset"], values["window"])
        if kind == "rate" and values["burst"] is None:
            values["burst"] = max(1.0, float(values["rate"]))
        if kind == "rate" and values["burst"] < 1:
            raise ConfigError(f"{where}.burst must be at least 1")
        if kind == "concurrency" and (values["tenant"] or values["action"]):
            raise ConfigError(f"{where}: a concurrency limit is per provider (no tenant, action)")
        counted = values["max"] is not None and values.get("window")
        if kind == "recipient" and values.get("cooldown") is None and not counted:
            raise ConfigError(f"{where}: a recipient limit needs max and window, or cooldown")
        return cls(**values)


_RESET = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]")


def _reset(where: str, kind: str, raw: Any, window: float) -> str:
    if kind != "quota":
        raise ConfigError(f"{where}.reset is for quota limits (the others always slide)")
    if raw == "rolling":
        return "rolling"
    if not isinstance(raw, str) or not _RESET.fullmatch(raw):
        raise ConfigError(
            f'{where}.reset must be "rolling" or the provider\'s reset time as HH:MM (UTC), '
            f"not {raw!r}"
        )
    if 86400 % window:
        raise ConfigError(
            f"{where}.reset needs a window that divides a day (1d, 12h, 1h…), not {window:g}s"
        )
    return raw


def parse_limits(table: Any, source: str = "sluice.toml") -> list[LimitSpec]:
    """The ``[[limits]]`` of a TOML document; ``ConfigError`` naming the entry and field."""
    if table is None:
        return []
    if not isinstance(table, list):
        raise ConfigError(f"{source}: limits must be an array of tables ([[limits]])")
    specs = [LimitSpec.parse(raw, f"{source}: limits[{i}]") for i, raw in enumerate(table)]
    seen: dict[tuple[str, str, str, str], int] = {}
    for i, spec in enumerate(specs):
        if spec.key in seen:
            raise ConfigError(
                f"{source}: limits[{i}] repeats limits[{seen[spec.key]}] ({spec.label()})"
            )
        seen[spec.key] = i
    return specs


def merge(configured: Iterable[LimitSpec], runtime: Iterable[LimitSpec]) -> list[LimitSpec]:
    """Run-time limits replace configured ones of the same key."""
    out = {s.key: s for s in configured}
    out.update({s.key: s for s in runtime})
    return sorted(out.values(), key=lambda s: s.key)


# -- the algorithm ----------------------------------------------------------------------

#: A count limit of at most this many is kept as a log of the times of its uses, one cell
#: each: exact, a use leaves the window the instant it is ``window`` old.
LOG_MAX = 16
#: A larger one is kept in ``SLICES`` slices of its window (one cell each, plus one for
#: the slice the window's start cuts through), each a count and the time of its latest
#: use. A slice counts whole until that latest use is a window old, so no window ever
#: holds more than the limit; a use is given out again at most one slice (1/24 of the
#: window) late, when later uses shared its slice.
SLICES = 24


@dataclass(slots=True)
class Cell:
    """One piece of shared state: a bucket (tokens, last refill), a use or a slice of a
    sliding count (how many, the latest when), a fixed window's count (count, window
    start), a last-send time (value = time) or a mark. ``stamp < 0`` means the cell did
    not exist."""

    value: float
    stamp: float
    expires_at: float | None = None


@dataclass(frozen=True, slots=True)
class Check:
    """One condition a message must meet.

    ``bucket``: take a token (``rate``, ``burst``). ``count``: fewer than ``limit`` uses
    (``low_limit`` for messages below ``urgent``) in the last ``window`` seconds — or,
    with an ``anchor``, in the fixed window in force, one of which starts at ``anchor``.
    ``cooldown``: ``now - last >= cooldown``. ``hold``: refuse by holding, not deferring.
    """

    key: str
    kind: str
    label: str
    rate: float = 0.0
    burst: float = 0.0
    limit: int = 0
    low_limit: int = 0
    urgent: bool = True
    window: float = 0.0
    anchor: float | None = None
    cooldown: float = 0.0
    hold: bool = False
    #: Quota: record threshold crossings.
    quota: bool = False
    #: The cell marking that this very message already passed this check (see
    #: ``marker_key``); empty: a message is checked again on every try.
    marker: str = ""


@dataclass(frozen=True, slots=True)
class Request:
    message_id: str
    checks: tuple[Check, ...]


@dataclass(frozen=True, slots=True)
class Decision:
    """``ok``, or refused: ``retry_at`` (defer) or ``hold`` (a reason)."""

    message_id: str
    ok: bool
    retry_at: float | None = None
    hold: str | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Refund:
    """Uses to give back: what ``check`` took at ``taken_at`` for ``count`` messages."""

    check: Check
    taken_at: float
    count: int = 1


class Use(enum.Enum):
    """What one try at a message used of what the limits gave it on admission.

    What a try did not use is given back (``refundable``): a quota or an action cap
    counts messages the provider took, a rate limit the requests it saw.
    """

    #: No request left (paused, held, deferred, put back at the last look, worker
    #: stopping, no such provider): every token and count it took comes back.
    NOTHING = "nothing"
    #: A request reached the provider, or may have, and the provider did not take the
    #: message (5xx, 429, timeout, a dropped connection, refused credentials): the rate
    #: token stays spent — the provider saw a request — and quota and caps come back.
    REQUEST = "request"
    #: The provider took the message, or refused it for the message's own fault (a
    #: permanent error): everything stays spent.
    MESSAGE = "message"


def use_of(outcome: SendOutcome | None) -> Use:
    """What a try that ended in ``outcome`` used (``None``: no provider was called)."""
    if outcome is None or outcome.code is ErrorCode.UNKNOWN_PROVIDER:
        return Use.NOTHING
    if outcome.ok or (
        outcome.code is not None and outcome.code.error_class is ErrorClass.PERMANENT
    ):
        return Use.MESSAGE
    return Use.REQUEST


def refundable(check: Check, use: Use) -> bool:
    """Does a try that used ``use`` give back what ``check`` took?

    A recipient cap never does: it counts messages the application made for a
    recipient, however they fared, and each only once (``marker_key``)."""
    if use is Use.MESSAGE or check.marker:
        return False
    if check.kind == "bucket":
        return use is Use.NOTHING
    return check.kind == "count"


@dataclass(slots=True)
class Outcome:
    #: When the batch was judged (its uses are stamped with it, for ``Refund``).
    now: float = 0.0
    decisions: list[Decision] = field(default_factory=list)
    #: (label, key, fraction) of every quota threshold first crossed in a window.
    events: list[tuple[str, str, float]] = field(default_factory=list)
    #: (label, key, message id) of the first message a holding cap refused in each of
    #: its windows (a runaway loop just caught: worth one audit row, not one per message).
    trips: list[tuple[str, str, str]] = field(default_factory=list)


def next_key(key: str) -> str:
    """The cell holding a bucket's next free retry slot (see ``evaluate``)."""
    return key + "#next"


def trip_key(key: str) -> str:
    """The cell marking that a holding cap already refused a message in this window."""
    return key + "#trip"


def threshold_key(key: str) -> str:
    """The cell holding the highest quota threshold already reported in this window."""
    return key + "#t"


def marker_key(key: str, message_id: str) -> str:
    """The cell marking that message ``message_id`` passed (and was counted by) the
    check of ``key``: its retries pass it as itself, without counting again."""
    return f"{key}#m:{message_id}"


def window_start(check: Check, now: float) -> float:
    """The start of the fixed window of ``check`` in force at ``now``."""
    assert check.anchor is not None
    return check.anchor + math.floor((now - check.anchor) / check.window) * check.window


def slot_keys(check: Check) -> list[str]:
    """The cells a count keeps its uses in."""
    if check.anchor is not None:
        return [check.key]
    if check.limit <= LOG_MAX:
        return [f"{check.key}#l{i}" for i in range(check.limit)]
    return [f"{check.key}#s{i}" for i in range(SLICES + 1)]


def cells_of(requests: Sequence[Request], refunds: Sequence[Refund] = ()) -> list[str]:
    """Every cell ``evaluate`` reads or writes for ``requests`` and ``refunds``."""
    seen: set[str] = set()
    keys: list[str] = []
    checks = [c for r in requests for c in r.checks] + [r.check for r in refunds]
    for c in checks:
        if c.marker:
            keys.append(c.marker)
        if c.key in seen:  # a quota a whole batch shares: its cells once
            continue
        seen.add(c.key)
        if c.kind == "bucket":
            keys += [c.key, next_key(c.key)]
        elif c.kind == "count":
            keys += slot_keys(c)
            if c.hold:
                keys.append(trip_key(c.key))
            if c.quota:
                keys.append(threshold_key(c.key))
        else:
            keys.append(c.key)
    return keys


def _live(cell: Cell | None) -> TypeGuard[Cell]:
    return cell is not None and cell.stamp >= 0


def _same(a: float, b: float) -> bool:
    """Two window or slice starts computed apart (floating point) are the same one."""
    return abs(a - b) < 1e-6


def uses(check: Check, state: Mapping[str, Cell], now: float) -> list[tuple[float, float]]:
    """``(when it leaves the window, how many)`` of every use ``check`` counts at ``now``.

    A sliding count's cell holds one use (a log) or the uses of one slice of the window
    (``value`` of them, the latest at ``stamp``); either counts until its latest use is
    a whole window old."""
    out: list[tuple[float, float]] = []
    if check.anchor is not None:
        start = window_start(check, now)
        cell = state.get(check.key)
        if _live(cell) and _same(cell.stamp, start) and cell.value > 0:
            out.append((start + check.window, cell.value))
        return out
    for key in slot_keys(check):
        cell = state.get(key)
        if _live(cell) and cell.value > 0 and now - cell.stamp < check.window:
            out.append((cell.stamp + check.window, cell.value))
    return out


def _frees_at(used: list[tuple[float, float]], allowed: int, check: Check, now: float) -> float:
    """When enough of ``used`` has left the window for one more use under ``allowed``."""
    left = sum(n for _, n in used)
    for at, n in sorted(used):
        left -= n
        if left < allowed:
            return at
    # Nothing can ever go under ``allowed`` (a reserve of the whole quota): try again
    # when everything used now has left the window.
    return max((at for at, _ in used), default=now + check.window)


def _take(check: Check, state: dict[str, Cell], now: float, count: float) -> None:
    """Record one use of ``check`` at ``now`` (``count``: its uses before this one)."""
    if check.anchor is not None:
        start = window_start(check, now)
        state[check.key] = Cell(count + 1.0, start, start + check.window + 60.0)
        return
    expires = now + check.window + 60.0
    if check.limit <= LOG_MAX:
        for key in slot_keys(check):
            cell = state.get(key)
            if not _live(cell) or cell.value <= 0 or now - cell.stamp >= check.window:
                state[key] = Cell(1.0, now, expires)
                return
        raise AssertionError("a log with no free slot passed its check")  # pragma: no cover
    # The slice of ``now``; its cell last held the slice SLICES + 1 before, whose uses
    # have all left the window.
    length = check.window / SLICES
    index = math.floor(now / length)
    key = f"{check.key}#s{index % (SLICES + 1)}"
    cell = state.get(key)
    if _live(cell) and math.floor(cell.stamp / length) == index:
        state[key] = Cell(cell.value + 1.0, max(cell.stamp, now), expires)
    else:
        state[key] = Cell(1.0, now, expires)


def _marked(check: Check, marker: Cell | None, now: float) -> bool:
    """Did this message pass ``check`` at the marker's time, and does that still hold
    now (its use still in the window, its cooldown still running)?"""
    if not _live(marker):
        return False
    if check.kind == "cooldown":
        return now - marker.stamp < check.cooldown
    if check.anchor is not None:
        return _same(window_start(check, marker.stamp), window_start(check, now))
    return now - marker.stamp < check.window


def _fresh(check: Check, mark: Cell | None, now: float) -> bool:
    """Was a once-per-window ``mark`` of ``check`` made in the window in force at ``now``
    (for a sliding window: less than a window ago)?"""
    if not _live(mark):
        return False
    if check.anchor is not None:
        return _same(mark.stamp, window_start(check, now))
    return now - mark.stamp < check.window


def _mark(check: Check, value: float, now: float) -> Cell:
    start = window_start(check, now) if check.anchor is not None else now
    return Cell(value, start, start + check.window + 60.0)


def evaluate(
    state: dict[str, Cell],
    requests: Sequence[Request],
    now: float,
    refunds: Sequence[Refund] = (),
) -> Outcome:
    """Give back ``refunds`` (see ``give_back``), then decide ``requests`` in order
    against ``state`` at ``now``, updating ``state`` in place (the caller writes back
    the cells it was given).

    A message a bucket refuses gets the bucket's next free slot, one ``1/rate`` after the
    previous slot handed out (kept in the cell ``next_key``, shared by every worker), so
    refusals queue up behind each other instead of all coming back at once. A message a
    count refuses comes back when enough of the window's uses have left it.
    """
    out = Outcome(now)
    for refund in refunds:
        give_back(state, refund, now)
    #: Uses per count in this round (``uses`` once per count, not once per message).
    counted: dict[str, float] = {}
    for req in requests:
        failed: Check | None = None
        retry_at = now
        levels: dict[str, float] = {}
        # Checks this very message already passed on an earlier try: a retry after a 5xx
        # is the same message, not one more towards a runaway-loop cap.
        passed = [bool(c.marker) and _marked(c, state.get(c.marker), now) for c in req.checks]
        for check, already in zip(req.checks, passed, strict=True):
            if already:
                continue
            cell = state.get(check.key)
            if check.kind == "bucket":
                if cell is None or cell.stamp < 0:
                    tokens = check.burst
                else:
                    tokens = min(check.burst, cell.value + max(0.0, now - cell.stamp) * check.rate)
                levels[check.key] = tokens
                if tokens < 1.0:
                    slots = state.get(next_key(check.key))
                    prev = -1.0 if slots is None or slots.stamp < 0 else slots.value
                    slot = max(now + (1.0 - tokens) / check.rate, prev + 1.0 / check.rate)
                    state[next_key(check.key)] = Cell(slot, now, slot + 60.0)
                    failed, retry_at = check, max(retry_at, slot)
                    break
            elif check.kind == "count":
                if check.key not in counted:
                    counted[check.key] = sum(n for _, n in uses(check, state, now))
                allowed = check.limit if check.urgent else check.low_limit
                if counted[check.key] >= allowed:
                    frees = _frees_at(uses(check, state, now), allowed, check, now)
                    failed, retry_at = check, max(retry_at, frees)
                    break
            elif check.kind == "cooldown":
                last = None if cell is None or cell.stamp < 0 else cell.value
                if last is not None and now - last < check.cooldown:
                    failed, retry_at = check, max(retry_at, last + check.cooldown)
                    break
            else:  # pragma: no cover - the kinds are fixed above
                raise ValueError(f"unknown check kind {check.kind!r}")
        if failed is not None:
            if failed.hold:
                reason = f"limit: {failed.label} reached; release or cancel to decide"
                out.decisions.append(Decision(req.message_id, False, hold=reason, reason=reason))
                if not _fresh(failed, state.get(trip_key(failed.key)), now):
                    state[trip_key(failed.key)] = _mark(failed, 1.0, now)
                    out.trips.append((failed.label, failed.key, req.message_id))
            else:
                out.decisions.append(
                    Decision(req.message_id, False, retry_at=retry_at, reason=failed.label)
                )
            continue
        for check, already in zip(req.checks, passed, strict=True):
            if already:
                continue
            if check.marker:
                state[check.marker] = Cell(1.0, now, now + check.window + check.cooldown + 60.0)
            if check.kind == "bucket":
                ttl = now + check.burst / check.rate + 60.0
                state[check.key] = Cell(levels[check.key] - 1.0, now, ttl)
            elif check.kind == "count":
                before = counted[check.key]
                _take(check, state, now, before)
                counted[check.key] = before + 1.0
                if check.quota:
                    _crossed(check, state, now, before, out)
            elif check.kind == "cooldown":
                state[check.key] = Cell(now, now, now + check.cooldown + 60.0)
        out.decisions.append(Decision(req.message_id, True))
    return out


def give_back(state: dict[str, Cell], refund: Refund, now: float) -> None:
    """Undo the uses ``refund.check`` took at ``refund.taken_at``, as far as they still
    count: never into a window that has ended (a fixed window since replaced, a use
    already out of a sliding one), never below zero, never a bucket over its burst."""
    check, at, n = refund.check, refund.taken_at, float(refund.count)
    if check.kind == "bucket":
        cell = state.get(check.key)
        if _live(cell):  # gone: the bucket was full again, nothing to give back
            tokens = min(check.burst, cell.value + max(0.0, now - cell.stamp) * check.rate)
            ttl = now + check.burst / check.rate + 60.0
            state[check.key] = Cell(min(check.burst, tokens + n), now, ttl)
        return
    if check.kind != "count":
        return
    if check.anchor is not None:
        start = window_start(check, now)
        cell = state.get(check.key)
        if _same(window_start(check, at), start) and _live(cell) and _same(cell.stamp, start):
            left = max(0.0, cell.value - n)
            state[check.key] = Cell(left, cell.stamp, start + check.window + 60.0)
        return
    if now - at >= check.window:  # out of the window already: they count for nothing now
        return
    if check.limit <= LOG_MAX:
        for key in slot_keys(check):
            cell = state.get(key)
            # Uses stamped alike are alike: any of them will do.
            if n > 0 and _live(cell) and abs(cell.stamp - at) < 1e-7:
                state[key] = Cell(0.0, -1.0, now + 60.0)
                n -= 1.0
        return
    length = check.window / SLICES
    index = math.floor(at / length)
    key = f"{check.key}#s{index % (SLICES + 1)}"
    cell = state.get(key)
    if _live(cell) and math.floor(cell.stamp / length) == index:
        # The slice keeps its latest time: the uses left in it count no less long.
        left = max(0.0, cell.value - n)
        state[key] = Cell(left, cell.stamp, cell.stamp + check.window + 60.0)


def _crossed(check: Check, state: dict[str, Cell], now: float, before: float, out: Outcome) -> None:
    """Report the quota thresholds one more use crosses, each once per window: a count
    that falls (a sliding window moving on) and rises again is not news again."""
    mark = state.get(threshold_key(check.key))
    reported = mark.value if mark is not None and _fresh(check, mark, now) else 0.0
    highest = reported
    for t in QUOTA_THRESHOLDS:
        if before < t * check.limit <= before + 1.0 and t > reported:
            out.events.append((check.label, check.key, t))
            highest = t
    if highest > reported:
        state[threshold_key(check.key)] = _mark(check, highest, now)


def quota_check(spec: LimitSpec, urgent: bool = True) -> Check:
    """The check of a ``quota`` limit (``urgent``: the message may use the reserve)."""
    assert spec.limit is not None and spec.window is not None
    return Check(
        f"q:{spec.tenant}|{spec.provider}|{spec.action}",
        "count",
        spec.label(),
        limit=spec.limit,
        low_limit=math.floor(spec.limit * (1.0 - spec.reserve)),
        urgent=urgent,
        window=spec.window,
        anchor=spec.anchor,
        quota=True,
    )


def _shared_checks(spec: LimitSpec) -> tuple[Check, Check] | None:
    """The check of a limit every message it applies to shares (urgent, not urgent);
    None for a recipient limit, whose checks are per message."""
    scope = f"{spec.tenant}|{spec.provider}|{spec.action}"
    if spec.kind == "rate":
        assert spec.rate is not None and spec.burst is not None
        bucket = Check(
            f"b:{scope}", "bucket", spec.label(), rate=float(spec.rate), burst=float(spec.burst)
        )
        return bucket, bucket
    if spec.kind == "quota":
        return quota_check(spec, True), quota_check(spec, False)
    if spec.kind == "action":
        assert spec.max is not None and spec.window is not None
        cap = Check(
            f"a:{scope}", "count", spec.label(), limit=spec.max, low_limit=spec.max,
            window=spec.window,
        )  # fmt: skip
        return cap, cap
    return None


def requests_for(specs: Sequence[LimitSpec], messages: Iterable[Message]) -> list[Request]:
    """The checks every message must pass under ``specs`` (messages with none left out)."""
    # Built once per batch, not once per message: most checks are the same for all.
    prepared = [
        (spec, spec.label(), _shared_checks(spec)) for spec in specs if spec.kind != "concurrency"
    ]
    out = []
    for msg in messages:
        checks: list[Check] = []
        for spec, label, shared in prepared:
            if not spec.applies(msg):
                continue
            if shared is not None:
                urgent = spec.urgent_priority is None or msg.priority >= spec.urgent_priority
                checks.append(shared[0] if urgent else shared[1])
                continue
            scope = f"{spec.tenant}|{spec.provider}|{spec.action}"
            who = f"{msg.tenant}|{msg.action}|{msg.recipient}"
            if spec.max is not None and spec.window:
                key = f"r:{scope}:{who}"
                checks.append(
                    Check(
                        key, "count", label, limit=spec.max, low_limit=spec.max,
                        window=spec.window, hold=True, marker=marker_key(key, msg.id),
                    )
                )  # fmt: skip
            if spec.cooldown:
                key = f"c:{scope}:{who}"
                checks.append(
                    Check(
                        key, "cooldown", label, cooldown=spec.cooldown,
                        marker=marker_key(key, msg.id),
                    )
                )  # fmt: skip
        if checks:
            out.append(Request(msg.id, tuple(checks)))
    return out


def validate_runtime(raw: Mapping[str, Any]) -> LimitSpec:
    """A limit given at run time (CLI, API): ``ValidationError`` naming the field."""
    try:
        return LimitSpec.parse(raw, "limit", source="runtime")
    except ConfigError as exc:
        text = str(exc)
        if text.startswith("limit."):  # "limit.rate must be …": the field, then the problem
            name, _, problem = text.removeprefix("limit.").partition(" ")
            raise ValidationError(name, problem) from None
        raise ValidationError("limit", text.removeprefix("limit: ")) from None


def parse_routes(table: Any, source: str = "sluice.toml") -> dict[str, list[str]]:
    """``[routes]``: per channel, providers in the order to fail over through when a
    circuit breaker is open (``sms = ["twilio", "twilio-backup"]``)."""
    if table is None:
        return {}
    if not isinstance(table, Mapping):
        raise ConfigError(f"{source}: routes must be a table of channel = [providers]")
    out: dict[str, list[str]] = {}
    for channel, providers in table.items():
        ok = isinstance(providers, list) and providers
        if not ok or not all(isinstance(p, str) and p for p in providers):
            raise ConfigError(f"{source}: routes.{channel} must be a non-empty list of providers")
        if len(set(providers)) != len(providers):
            raise ConfigError(f"{source}: routes.{channel} names a provider twice")
        out[str(channel)] = list(providers)
    return out


def configured_flow(
    env: Mapping[str, str] | None = None, config_path: Any = None
) -> tuple[list[LimitSpec], dict[str, list[str]]]:
    """The ``[[limits]]`` and ``[routes]`` of the ``sluice.toml`` in effect (none without)."""
    import tomllib

    from sluice.config import config_file

    path = config_file(env, config_path)
    if path is None:
        return [], {}
    try:
        document = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_limits(document.get("limits"), str(path)), parse_routes(
        document.get("routes"), str(path)
    )
