"""The shape of a runbook: what it is for, the live checks that diagnose it, the exact
``sluice`` commands that contain and repair it, and when to call someone else.

A runbook is data. Its checks name a *probe* (a query ``sluice.ops.runbooks`` knows how
to run against the store); its commands are ``sluice`` command lines with ``{tenant}``,
``{provider}``, ``{channel}``, ``{error_code}``, ``{since}``, ``{key}`` and ``{incident}``
placeholders that a diagnosis fills from the scope asked for, or from what it found.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["PLACEHOLDERS", "Check", "Command", "Runbook", "placeholders"]

#: What a command template may leave for a diagnosis to fill.
PLACEHOLDERS = frozenset(
    {"tenant", "provider", "channel", "error_code", "since", "key", "incident", "action"}
)

_SLOT = re.compile(r"\{([a-z_]+)\}")


def placeholders(text: str) -> set[str]:
    """The ``{name}`` slots of a command template."""
    return set(_SLOT.findall(text))


@dataclass(frozen=True, slots=True)
class Check:
    """A live query: ``probe`` names it, ``looks_for`` says in words what would be wrong."""

    probe: str
    looks_for: str


@dataclass(frozen=True, slots=True)
class Command:
    """One exact ``sluice`` command line and why it is run. ``dry_run`` marks the dry run
    that comes before an act (the next command of the list is the act itself)."""

    line: str
    why: str
    dry_run: bool = False


@dataclass(frozen=True, slots=True)
class Runbook:
    """One failure mode, from first signal to the checks that say it is over."""

    id: str
    title: str
    #: The seed section it comes from (``003#RB-09``: seed file 003, runbook RB-09), in
    #: the form the alert rules' ``runbook`` field uses.
    source: str
    summary: str
    diagnosis: tuple[Check, ...]
    containment: tuple[Command, ...]
    recovery: tuple[Command, ...]
    verification: tuple[Check, ...]
    escalation: tuple[str, ...]
    #: Further seed sections it answers as well (the same failure told twice).
    also: tuple[str, ...] = ()
    #: Questions to take to the postmortem's corrective actions.
    follow_ups: tuple[str, ...] = field(default=())

    @property
    def sources(self) -> tuple[str, ...]:
        return (self.source, *self.also)

    @property
    def commands(self) -> tuple[Command, ...]:
        return (*self.containment, *self.recovery)
