"""An incident built the way the evaluator and on-call build one, for the postmortem and
stats tests (integration, API, CLI): messages, attempts, audit entries and controls in
its window, at times given relative to ``t0``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sluice.clock import FrozenClock
from sluice.flow.controls import Mode, Scope
from sluice.model import (
    Attempt,
    AttemptOutcome,
    AuditEntry,
    Completion,
    Message,
    NewMessage,
    Status,
)
from sluice.ops.controls import control_set
from sluice.store import Store
from sluice.store.base import Firing

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
SENT = ("sent", "delivered", "read", "bounced")


def sms(tenant: str, i: int) -> NewMessage:
    return NewMessage(tenant=tenant, channel="sms", provider="null",
                      recipient=f"+1415555{i:04d}", payload={"body": f"m{i}"})  # fmt: skip


def attempt(m: Message, outcome: AttemptOutcome, at: datetime, code: str | None = None) -> Attempt:
    return Attempt(m.id, m.attempts, "w1", m.provider, at, at, outcome, error_code=code)


async def complete(store: Store, m: Message, status: Status, at: datetime, **kw: Any) -> None:
    await store.message_complete_many("w1", [Completion(m.id, m.claim_seq, "w1", status, **kw)], at)


@dataclass
class Scene:
    incident_id: str
    ids: dict[str, str]
    old: str


async def build(store: Store, t0: datetime = T0) -> Scene:
    """SluiceDeadLetters on sms (for 5 min): the first failure at t0+1m, opened at t0+8m,
    sms paused at t0+10m, a note, resolved at t0+20m."""
    # Before the window: a message that died two hours earlier (a purge may take it).
    early = t0 - timedelta(hours=2)
    [old] = await store.enqueue_many([sms("acme", 99)], early)  # type: ignore[call-arg]
    [m] = await store.message_claim("w1", 1, 30, t0 - timedelta(hours=2))
    at = t0 - timedelta(hours=2)
    await complete(store, m, Status.DEAD, at,
                   attempt=attempt(m, AttemptOutcome.FAILED, at, "INVALID_RECIPIENT"))  # fmt: skip

    names = ["dead", "late", "sent", "held", "delayed", "cancelled"]
    tenants = ["acme", "acme", "acme", "globex", "globex", "globex"]
    new = [sms(t, n) for n, t in enumerate(tenants)]
    email = {"subject": "s", "text": "t"}
    new.append(NewMessage(tenant="acme", channel="email", provider="null",
                          recipient="a@example.com", payload=email))  # fmt: skip
    got = await store.enqueue_many(new, t0)  # type: ignore[call-arg]
    ids = dict(zip([*names, "email"], got, strict=True))
    await store.message_cancel(
        [ids["cancelled"]], "queued", t0,
        AuditEntry(t0, "ops:ana", "message.cancel", ids["cancelled"], "test",
                   {"tenant": "globex"}),
    )  # fmt: skip
    t1 = t0 + timedelta(minutes=1)
    claimed = {m.id: m for m in await store.message_claim("w1", 10, 30, t1)}
    assert set(claimed) == {ids[n] for n in ["dead", "late", "sent", "held", "delayed", "email"]}
    c = {n: claimed[ids[n]] for n in ["dead", "late", "sent", "held", "delayed", "email"]}
    f = AttemptOutcome.FAILED
    await complete(store, c["dead"], Status.DEAD, t1,
                   attempt=attempt(c["dead"], f, t1, "INVALID_RECIPIENT"))  # fmt: skip
    await complete(store, c["late"], Status.QUEUED, t1, run_at=t1 + timedelta(seconds=30),
                   attempt=attempt(c["late"], f, t1, "TIMEOUT"))  # fmt: skip
    await complete(store, c["sent"], Status.SENT, t1,
                   attempt=attempt(c["sent"], AttemptOutcome.SENT, t1))  # fmt: skip
    await complete(store, c["held"], Status.HELD, t1, attempt=None, hold_reason="test hold")
    await complete(store, c["delayed"], Status.QUEUED, t1, run_at=t0 + timedelta(hours=3),
                   attempt=attempt(c["delayed"], f, t1, "TIMEOUT"))  # fmt: skip
    await complete(store, c["email"], Status.SENT, t1,
                   attempt=attempt(c["email"], AttemptOutcome.SENT, t1))  # fmt: skip
    t2 = t0 + timedelta(minutes=2)
    [again] = await store.message_claim("w1", 10, 30, t2)
    assert again.id == ids["late"]
    await complete(store, again, Status.SENT, t2,
                   attempt=attempt(again, AttemptOutcome.SENT, t2))  # fmt: skip

    incident, _ = await store.incident_fire(
        Firing("SluiceDeadLetters", {"channel": "sms"}, "P2", ("QUEUE",), "000#remediation",
               "1 dead letters on sms", 1.0),
        t0 + timedelta(minutes=8),
    )  # fmt: skip
    await control_set(store, Scope.of(channel="sms"), Mode.PAUSED, actor="ops:ana",
                      reason="stop sms", wait=False,
                      clock=FrozenClock(t0 + timedelta(minutes=10)))  # fmt: skip
    # Out of scope: a pause of email is not on this incident's timeline, nor containment.
    await control_set(store, Scope.of(channel="email"), Mode.PAUSED, actor="ops:bo",
                      reason="email too", wait=False,
                      clock=FrozenClock(t0 + timedelta(minutes=9)))  # fmt: skip
    await store.incident_act(incident.id, "note", actor="ops:ana", text="INVALID_RECIPIENT",
                             now=t0 + timedelta(minutes=11))  # fmt: skip
    await store.incident_act(incident.id, "resolve", actor="ops:ana", text="fixed",
                             now=t0 + timedelta(minutes=20))  # fmt: skip
    return Scene(incident.id, ids, old)
