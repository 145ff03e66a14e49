"""Incidents as on-call works them: list, show, acknowledge, resolve, note — every act
named and audited (``sluice incidents``, ``/v1/incidents``). The evaluator that opens and
resolves them by itself is ``sluice.ops.alerts``."""

from __future__ import annotations

from sluice.clock import Clock, SystemClock
from sluice.errors import ValidationError
from sluice.ops.actions import require_actor
from sluice.store.base import Incident, Store

__all__ = ["incident_act", "incident_list", "incident_show"]

#: Longest note or reason kept on a timeline.
MAX_TEXT = 2000


async def incident_list(store: Store, state: str = "active", limit: int = 50) -> list[Incident]:
    """Incidents newest first: ``active`` (open or acknowledged), ``open``,
    ``acknowledged``, ``resolved``, or ``all``."""
    if limit < 1 or limit > 1000:
        raise ValidationError("limit", "must be 1 to 1000")
    return await store.incident_list("" if state == "all" else state, limit)


async def incident_show(store: Store, incident_id: str) -> Incident:
    """One incident with its timeline (``NotFound``)."""
    return await store.incident_get(incident_id)


async def incident_act(
    store: Store,
    incident_id: str,
    act: str,
    *,
    actor: str,
    text: str,
    clock: Clock | None = None,
) -> Incident:
    """``ack``, ``resolve`` or ``note``: who, and why (or the note) — required."""
    require_actor(actor)
    if not text or not text.strip():
        what = "the note" if act == "note" else "why (it goes on the timeline and the audit log)"
        raise ValidationError("text" if act == "note" else "reason", f"is required: {what}")
    if len(text) > MAX_TEXT:
        raise ValidationError("text", f"is {len(text)} characters; at most {MAX_TEXT}")
    return await store.incident_act(
        incident_id, act, actor=actor, text=text, now=(clock or SystemClock()).now()
    )
