"""Runbooks as data: one per failure mode of the seeds in which Sluice has a part
(``catalog.py``), found by id or by the seed section an alert rule names.

The diagnosis that runs a runbook's checks against the store is ``sluice.ops.runbooks``;
this package is ground (plain data), so the alert rules and the docs can read it too.
"""

from __future__ import annotations

from sluice.alerts.rules import RULES, Rule
from sluice.errors import NotFound
from sluice.runbooks.catalog import NOT_COVERED, RUNBOOKS
from sluice.runbooks.model import PLACEHOLDERS, Check, Command, Runbook, placeholders

__all__ = [
    "NOT_COVERED",
    "PLACEHOLDERS",
    "RUNBOOKS",
    "Check",
    "Command",
    "Runbook",
    "find",
    "placeholders",
    "rules_for",
]

_BY_ID = {r.id: r for r in RUNBOOKS}
_BY_SOURCE = {s: r for r in RUNBOOKS for s in r.sources}


def find(ref: str) -> Runbook:
    """A runbook by its id (``provider-outage``) or by a seed section it answers
    (``003#RB-09``, as an alert rule names it; ``RB-09`` alone for seed 003's);
    ``NotFound`` naming the ids there are."""
    text = ref.strip() if isinstance(ref, str) else ""
    found = _BY_ID.get(text) or _BY_SOURCE.get(text) or _BY_SOURCE.get(f"003#{text}")
    if found is None:
        shown = repr(text[:60]) if text else "(empty)"
        raise NotFound(f"no runbook {shown}; there are: {', '.join(sorted(_BY_ID))}")
    return found


def rules_for(runbook: Runbook) -> list[Rule]:
    """The alert rules that point to ``runbook`` (their ``runbook`` is one of its
    sources)."""
    return [r for r in RULES if r.runbook in runbook.sources]
