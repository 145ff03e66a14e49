"""Controls: the operator's switches over every side effect.

A control is a *scope* — any combination of tenant, channel, provider and action, each
either named or "any" — and a *mode*. Where several controls cover a message, the most
restrictive mode wins; where none does, the configured default applies (``live``, or
``approval`` to fail closed).

Modes, least to most restrictive:

- ``live``: send.
- ``approval``: hold each message until an operator approves it (``sluice approve``).
- ``shadow``: send nothing, record what would have been sent (status ``shadowed``).
  More restrictive than approval: a shadowed scope never produces a real side effect,
  an approved one does.
- ``paused``: leave messages queued; nothing is claimed.
- ``killed``: hold messages; nothing leaves. Held messages wait for ``sluice resume`` or
  an explicit release or cancel.

Killed and paused scopes are excluded in the claim query itself (atomically, in the
database). Every worker also checks the mode of each message immediately before its
provider call against its latest snapshot of the controls, and acknowledges each new
snapshot only once the sends it admitted under the old one in a newly restricted
scope have finished — so when ``sluice kill`` returns, no new side effect in that
scope starts anywhere.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sluice.errors import ValidationError
from sluice.model import AuditEntry

__all__ = [
    "CONTROL_PREFIX",
    "FENCE_SECONDS",
    "LIVE_WINDOW_SECONDS",
    "OPERATOR_TENANT",
    "Control",
    "ControlSnapshot",
    "Mode",
    "Scope",
    "control_audit",
    "control_hold_reason",
]

#: A worker not seen for this long is not live: a control change does not wait for it.
LIVE_WINDOW_SECONDS = 15.0
#: A worker that has not reached the store for this long starts no send (it fences
#: itself), and after reconnecting loads the controls in force before it sends again.
#: Shorter than ``LIVE_WINDOW_SECONDS``: by the time a kill stops waiting for a worker it
#: cannot reach, that worker has stopped starting sends on its own.
FENCE_SECONDS = 10.0

#: The reserved tenant of Sluice's own notifications (incidents to on-call). Global and
#: fail-closed controls leave it alone; a control naming it stops it.
OPERATOR_TENANT = "_sluice"

#: ``hold_reason`` of messages held by a control starts with this.
CONTROL_PREFIX = "control:"


class Mode(enum.StrEnum):
    """What a control does to the messages in its scope."""

    LIVE = "live"
    APPROVAL = "approval"
    SHADOW = "shadow"
    PAUSED = "paused"
    KILLED = "killed"

    @property
    def rank(self) -> int:
        """Higher is more restrictive."""
        return _RANK[self]

    @classmethod
    def parse(cls, raw: str) -> Mode:
        try:
            return cls(raw.strip().lower())
        except ValueError:
            raise ValidationError(
                "mode", f"must be one of {', '.join(m.value for m in cls)}, not {raw!r}"
            ) from None


_RANK = {Mode.LIVE: 0, Mode.APPROVAL: 1, Mode.SHADOW: 2, Mode.PAUSED: 3, Mode.KILLED: 4}


@dataclass(frozen=True, slots=True)
class Scope:
    """Which messages a control covers; ``""`` in a field means any."""

    tenant: str = ""
    channel: str = ""
    provider: str = ""
    action: str = ""

    def __post_init__(self) -> None:
        for name in ("tenant", "channel", "provider", "action"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise ValidationError(name, f"must be text, not {type(value).__name__}")
            if len(value) > 200:
                raise ValidationError(name, "must be at most 200 characters")
            if "\x00" in value:
                raise ValidationError(name, "must not contain NUL characters")
            if value != value.strip():
                raise ValidationError(
                    name, f"{value!r} must not start or end with whitespace (or control characters)"
                )

    @classmethod
    def of(
        cls,
        tenant: str | None = None,
        channel: str | None = None,
        provider: str | None = None,
        action: str | None = None,
    ) -> Scope:
        return cls(tenant or "", channel or "", provider or "", action or "")

    @property
    def is_global(self) -> bool:
        return not (self.tenant or self.channel or self.provider or self.action)

    def covers(self, tenant: str, channel: str, provider: str, action: str) -> bool:
        # Sluice's own notifications to on-call are not a tenant's side effects: only a
        # control that names the operator tenant stops them (a global kill does not).
        if tenant == OPERATOR_TENANT and self.tenant != OPERATOR_TENANT:
            return False
        return (
            (not self.tenant or self.tenant == tenant)
            and (not self.channel or self.channel == channel)
            and (not self.provider or self.provider == provider)
            and (not self.action or self.action == action)
        )

    def __str__(self) -> str:
        parts = [
            f"{name}={value}"
            for name, value in (
                ("tenant", self.tenant),
                ("channel", self.channel),
                ("provider", self.provider),
                ("action", self.action),
            )
            if value
        ]
        return " ".join(parts) or "global"

    def params(self) -> dict[str, str]:
        """The scope as query parameters (``""`` for any)."""
        return {
            "tenant": self.tenant,
            "channel": self.channel,
            "provider": self.provider,
            "action": self.action,
        }

    def as_dict(self) -> dict[str, str | None]:
        return {
            "tenant": self.tenant or None,
            "channel": self.channel or None,
            "provider": self.provider or None,
            "action": self.action or None,
        }


@dataclass(frozen=True, slots=True)
class Control:
    """One scope's mode, who set it, why, and until when."""

    id: str
    scope: Scope
    mode: Mode
    actor: str
    reason: str
    created_at: datetime
    expires_at: datetime | None
    version: int

    def active(self, now: datetime) -> bool:
        return self.expires_at is None or self.expires_at > now

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "scope": str(self.scope),
            **self.scope.as_dict(),
            "mode": self.mode.value,
            "actor": self.actor,
            "reason": self.reason,
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "version": self.version,
        }


def control_hold_reason(control: Control) -> str:
    """The ``hold_reason`` of a message held by ``control``."""
    return (
        f"{CONTROL_PREFIX}{control.mode.value} ({control.scope}) by {control.actor}: "
        f"{control.reason}"
    )[:500]


@dataclass(frozen=True, slots=True)
class ControlSnapshot:
    """The controls as of one flow epoch, and the mode they give each message."""

    version: int
    controls: tuple[Control, ...] = ()
    default: Mode = Mode.LIVE

    def decide(
        self, tenant: str, channel: str, provider: str, action: str, now: datetime
    ) -> tuple[Mode, Control | None]:
        """The most restrictive mode covering the message, and the control that set it
        (``None`` when the default applies)."""
        default = Mode.LIVE if tenant == OPERATOR_TENANT else self.default
        if not self.controls:
            return default, None
        best: Control | None = None
        for control in self.controls:
            if not control.active(now) or not control.scope.covers(
                tenant, channel, provider, action
            ):
                continue
            if best is None or control.mode.rank > best.mode.rank:
                best = control
        if best is None:
            return default, None
        return best.mode, best

    def restricted_since(
        self, older: ControlSnapshot, keys: Iterable[tuple[str, str, str, str]], now: datetime
    ) -> list[tuple[str, str, str, str]]:
        """The (tenant, channel, provider, action) of ``keys`` whose mode is now more
        restrictive than under ``older``: sends admitted under ``older`` there must
        finish before this snapshot is acknowledged."""
        out = []
        for key in keys:
            new, _ = self.decide(*key, now)
            old, _ = older.decide(*key, now)
            if new.rank > old.rank:
                out.append(key)
        return out


def control_audit(
    action: str, control: Control, now: datetime, actor: str, reason: str, **extra: Any
) -> AuditEntry:
    """The audit row of a change to ``control`` (``control.set``, ``control.expired``)."""
    return AuditEntry(
        at=now,
        actor=actor,
        action=action,
        target=str(control.scope),
        reason=reason,
        detail={
            "scope": control.scope.as_dict(),
            "mode": control.mode.value,
            "expires_at": control.expires_at.isoformat() if control.expires_at else None,
            "version": control.version,
            **extra,
        },
    )
