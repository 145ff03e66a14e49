"""Message expiry: a message not sent by its ``expires_at`` ends ``expired``, never sent
late (a one-time code an hour late does harm).

A message's expiry is, first found: its own ``expires_at``, its own ``ttl`` (seconds
from enqueue), the ``ttl`` of its action, of its channel, or the default, from the
``[expiry]`` table of ``sluice.toml``::

    [expiry]
    default = "24h"            # optional: without it, only messages that say so expire
    [expiry.action]
    "otp.send" = "5m"
    [expiry.channel]
    sms = "1h"

Durations are seconds (a number) or text like ``90s``, ``15m``, ``2h``, ``1d``; positive,
finite, at most ``MAX_TTL``. The worker checks it just before each provider call
(``past``) and sweeps what waits (queued, parked, held) past it to ``expired``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from sluice.errors import ConfigError, ValidationError

if TYPE_CHECKING:
    from sluice.config import ConfigLookup

__all__ = [
    "MAX_TTL",
    "Expiring",
    "ExpiryRules",
    "check_ttl",
    "expired_reason",
    "past",
    "rules_in_effect",
]

#: The longest time to live (a year and a day): beyond it, say none.
MAX_TTL = 366 * 86400.0
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
#: ``90``, ``1.5h``: ASCII digits only (``float`` would take other scripts' digits too).
_DURATION = re.compile(r"([0-9]{1,12}(?:\.[0-9]{1,9})?)([smhd]?)")


class Expiring(Protocol):
    """What expiry reads of a message."""

    @property
    def expires_at(self) -> datetime | None: ...


def check_ttl(value: object, field_name: str) -> float:
    """``value`` as seconds to live: a positive, finite number of at most ``MAX_TTL``
    seconds, or text like ``15m``; ``ValidationError`` naming ``field_name`` otherwise."""
    seconds: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:
            seconds = math.inf
    elif isinstance(value, str) and (found := _DURATION.fullmatch(value.strip().lower())):
        seconds = float(found[1]) * _UNITS[found[2] or "s"]
    if seconds is None:
        raise ValidationError(field_name, "must be seconds (a number) or a duration like 15m")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValidationError(field_name, "must be a positive, finite duration")
    if seconds > MAX_TTL:
        raise ValidationError(field_name, f"must be at most {MAX_TTL:.0f} seconds (366 days)")
    return seconds


@dataclass(frozen=True, slots=True)
class ExpiryRules:
    """The ``[expiry]`` table: a default time to live, and one per action and channel."""

    default: float | None = None
    action: dict[str, float] = field(default_factory=dict)
    channel: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_table(cls, table: Any, source: str = "sluice.toml") -> ExpiryRules:
        """Read ``[expiry]``; ``ConfigError`` naming the entry that is wrong."""
        if table is None:
            return cls()
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: [expiry] must be a table")
        unknown = set(table) - {"default", "action", "channel"}
        if unknown:
            raise ConfigError(f"{source}: [expiry] has unknown keys: {', '.join(sorted(unknown))}")
        try:
            default = None
            if table.get("default") is not None:
                default = check_ttl(table["default"], "expiry.default")
            per: dict[str, dict[str, float]] = {}
            for kind in ("action", "channel"):
                entries = table.get(kind, {})
                if not isinstance(entries, dict):
                    raise ValidationError(f"expiry.{kind}", "must be a table of name = duration")
                per[kind] = {
                    str(name): check_ttl(v, f"expiry.{kind}.{name}") for name, v in entries.items()
                }
        except ValidationError as exc:
            raise ConfigError(f"{source}: {exc}") from None
        return cls(default, per["action"], per["channel"])

    def ttl_for(self, channel: str, action: str) -> float | None:
        """The configured time to live of a message of ``channel`` and ``action``."""
        found = self.action.get(action)
        if found is None:
            found = self.channel.get(channel)
        return found if found is not None else self.default


_MADE: dict[Path | None, tuple[object, ExpiryRules]] = {}
#: What applies without a sluice.toml (shared: nothing changes an ExpiryRules).
_NO_RULES = ExpiryRules()


def rules_in_effect(lookup: ConfigLookup | None = None) -> ExpiryRules:
    """The ``[expiry]`` rules of the ``sluice.toml`` in effect (re-read when it changes);
    none when there is no file. ``ConfigError`` when the ``[expiry]`` table is wrong.
    ``lookup``: what ``sluice.config.look_up_config`` found a moment ago (default: look).

    A file that is not TOML at all gives no rules (and a warning): enqueue runs in the
    application's transaction and must not fail for a typo elsewhere in the operator's
    file (as ``sluice.addressing`` decides), and no worker starts on such a file."""
    from sluice.config import look_up_config

    if lookup is None:
        lookup = look_up_config()
    if isinstance(lookup, ConfigError):
        import structlog

        structlog.get_logger("sluice.expiry").warning(
            "sluice.toml unreadable: no [expiry] defaults applied", error=str(lookup)
        )
        return ExpiryRules()
    path, document = lookup
    if path is None or document is None:
        return _NO_RULES
    made = _MADE.get(path)
    if made is None or made[0] is not document:
        made = _MADE[path] = (document, ExpiryRules.from_table(document.get("expiry"), str(path)))
    return made[1]


def past(msg: Expiring, now: datetime) -> bool:
    """Is ``msg`` past its expiry at ``now`` (then it must not be sent)?"""
    return msg.expires_at is not None and msg.expires_at <= now


def expired_reason(msg: Expiring) -> str:
    """What an expired message's ``last_error`` says."""
    at = msg.expires_at.isoformat() if msg.expires_at is not None else "?"
    return f"expired: not sent by its expiry ({at}); never sent late"
