"""How long a message is kept once it is final, per final status: the retention policy
as data, and the spans (``30d``) operators write it in.

The worker that holds the store's ``retention`` lead removes final messages older than
their status's retention, with their attempts and receipts (``sluice.ops.retention``);
``sluice purge`` does the same by hand. A message that is not final (``NON_FINAL``) is
never removed, whatever a rule says. Audit rows and incidents are never removed.

Adding a final status is one line in ``RETENTION_DAYS``. Overrides come from
``SLUICE_RETENTION`` / ``[sluice] retention`` as ``status=span`` entries (``dead=90d``,
``sent=36h``, ``cancelled=keep``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping

from sluice.errors import ConfigError, ValidationError

__all__ = ["KEEP", "NON_FINAL", "RETENTION_DAYS", "parse_span", "retention_policy"]

#: Statuses of messages still at work or waiting for a person: never removed.
NON_FINAL = ("queued", "sending", "held", "needs_confirm")  # needs_confirm: issue 15

#: Days a final message is kept after its last change, by status (the defaults).
RETENTION_DAYS: Mapping[str, float] = {
    "sent": 7,
    "delivered": 7,
    "read": 7,
    "bounced": 7,
    "shadowed": 7,
    "dead": 30,
    "cancelled": 30,
    "expired": 30,  # a message not sent before its expiry (message expiry, issue 14)
    "suppressed": 30,  # a message to a suppressed recipient (suppression lists, issue 14)
}

#: A retention of ``keep``: the status is never removed.
KEEP = math.inf

_SPAN = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}


def parse_span(text: str, field: str) -> float:
    """``90s``, ``15m``, ``36h``, ``30d``, ``2w`` → seconds (finite, > 0);
    ``ValidationError`` naming ``field`` for anything else (``-1d``, ``nan``, ``0d``,
    ``5y``, a bare number)."""
    match = _SPAN.fullmatch(text.strip().lower()) if isinstance(text, str) else None
    if match is None:
        raise ValidationError(
            field, f"{text!r} is not a span like 90s, 15m, 36h, 30d or 2w (number, then unit)"
        )
    seconds = float(match[1]) * _UNITS[match[2]]
    if not (seconds > 0 and math.isfinite(seconds)) or seconds > 100 * 365 * 86_400:
        raise ValidationError(field, f"{text!r} must be more than 0 and at most 100 years")
    return seconds


def retention_policy(overrides: Iterable[str] = ()) -> dict[str, float]:
    """Seconds each final status is kept (``KEEP``: forever): the defaults with
    ``overrides`` (``status=span`` or ``status=keep``) over them. ``ConfigError`` naming
    ``SLUICE_RETENTION`` and the entry for an unknown status or a bad span."""
    if isinstance(overrides, str):
        raise ConfigError(f"SLUICE_RETENTION must be a list of status=span, not {overrides!r}")
    policy = {status: days * 86_400.0 for status, days in RETENTION_DAYS.items()}
    for entry in overrides:
        status, sep, span = entry.partition("=")
        status, span = status.strip().lower(), span.strip()
        if not sep or status not in policy:
            known = ", ".join(policy)
            raise ConfigError(
                f"SLUICE_RETENTION: {entry!r} is not status=span with a final status ({known})"
            )
        try:
            policy[status] = KEEP if span.lower() == "keep" else parse_span(span, "retention")
        except ValidationError as exc:
            raise ConfigError(f"SLUICE_RETENTION: {status}: {exc.problem}") from None
    return policy
