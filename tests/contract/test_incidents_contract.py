"""The Store contract for incidents: every test runs against PostgreSQL and SQLite."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sluice.errors import NotFound, ValidationError
from sluice.store import Store
from sluice.store.base import Firing

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def firing(value: float = 3.0, **scope: str) -> Firing:
    return Firing(
        rule="SluiceDeadLetters", scope=scope or {"channel": "sms"}, severity="P2",
        types=("QUEUE",), runbook="002#2", summary="dead letters", value=value,
    )  # fmt: skip


async def test_fire__opens_one_incident_per_rule_and_scope(store: Store) -> None:
    first, opened = await store.incident_fire(firing(3), NOW)
    again, opened_again = await store.incident_fire(firing(7), NOW + timedelta(seconds=15))
    other, opened_other = await store.incident_fire(firing(1, channel="email"), NOW)
    assert (opened, opened_again, opened_other) == (True, False, True)
    assert again.id == first.id and other.id != first.id
    assert (again.state, again.value, again.peak, again.scope_key) == ("open", 7, 7, "channel=sms")
    assert (again.severity, again.types, again.runbook) == ("P2", ["QUEUE"], "002#2")
    assert [e.kind for e in again.events] == ["fired", "peak"]
    assert {i.id for i in await store.incident_list()} == {first.id, other.id}


async def test_clear__resolves_only_after_the_condition_stayed_clear(store: Store) -> None:
    incident, _ = await store.incident_fire(firing(), NOW)
    assert (
        await store.incident_clear("SluiceDeadLetters", [], NOW + timedelta(seconds=15), 300) == []
    )
    # Firing again in between restarts the clear period (no flapping).
    await store.incident_fire(firing(), NOW + timedelta(seconds=30))
    assert (
        await store.incident_clear("SluiceDeadLetters", [], NOW + timedelta(seconds=45), 300) == []
    )
    assert (
        await store.incident_clear("SluiceDeadLetters", [], NOW + timedelta(seconds=300), 300) == []
    )
    resolved = await store.incident_clear(
        "SluiceDeadLetters", [], NOW + timedelta(seconds=346), 300
    )
    assert resolved == [incident.id]
    got = await store.incident_get(incident.id)
    assert (got.state, got.resolved_by) == ("resolved", "evaluator")
    assert got.events[-1].kind == "resolved"
    # A new firing after resolution is a new incident.
    again, opened = await store.incident_fire(firing(), NOW + timedelta(seconds=400))
    assert opened and again.id != incident.id


async def test_clear__leaves_scopes_that_still_fire(store: Store) -> None:
    sms, _ = await store.incident_fire(firing(channel="sms"), NOW)
    email, _ = await store.incident_fire(firing(channel="email"), NOW)
    await store.incident_clear("SluiceDeadLetters", ["channel=sms"], NOW, 0)
    assert {i.id for i in await store.incident_list()} == {sms.id}
    assert (await store.incident_get(email.id)).state == "resolved"


async def test_operator_acts__on_the_timeline_and_audited(store: Store) -> None:
    incident, _ = await store.incident_fire(firing(), NOW)
    acked = await store.incident_act(incident.id, "ack", actor="ops:ana", text="looking", now=NOW)
    assert (acked.state, acked.acknowledged_by) == ("acknowledged", "ops:ana")
    noted = await store.incident_act(incident.id, "note", actor="ops:ana", text="DLQ is 410s",
                                     now=NOW)  # fmt: skip
    assert noted.events[-1].detail == {"text": "DLQ is 410s"}
    done = await store.incident_act(incident.id, "resolve", actor="ops:ana", text="fixed", now=NOW)
    assert (done.state, done.resolved_by) == ("resolved", "ops:ana")
    assert [e.kind for e in done.events] == ["fired", "acknowledged", "note", "resolved"]
    actions = [e.action for e in await store.audit_list(3)]
    assert actions == ["incident.resolve", "incident.note", "incident.ack"]
    with pytest.raises(ValidationError, match="resolved already"):
        await store.incident_act(incident.id, "resolve", actor="ops:ana", text="x", now=NOW)
    with pytest.raises(ValidationError, match="only an open one"):
        await store.incident_act(incident.id, "ack", actor="ops:ana", text="x", now=NOW)


async def test_unknown_or_malformed_ids_are_not_found(store: Store) -> None:
    for bad in ("nope", "00000000-0000-0000-0000-000000000000", "'; DROP TABLE x"):
        with pytest.raises(NotFound):
            await store.incident_get(bad)
    with pytest.raises(ValidationError, match="state"):
        await store.incident_list("closed")


async def test_notifications__each_transition_once(store: Store) -> None:
    incident, _ = await store.incident_fire(firing(), NOW)
    assert [i.id for i in await store.incident_unnotified()] == [incident.id]
    await store.incident_notified(incident.id, "opened", NOW)
    assert await store.incident_unnotified() == []
    await store.incident_clear("SluiceDeadLetters", [], NOW, 0)
    [pending] = await store.incident_unnotified()
    assert (pending.state, pending.notified) == ("resolved", "opened")
    await store.incident_notified(incident.id, "resolved", NOW)
    assert await store.incident_unnotified() == []


# -- what the evaluator reads ----------------------------------------------------------


async def test_tally__attempts_in_the_window_by_label(store: Store) -> None:
    from sluice.model import Attempt, AttemptOutcome, Completion, NewMessage, Status

    ids = await store.enqueue_many(
        [NewMessage(tenant="acme", channel="sms", provider="null", recipient="+15550001111",
                    payload={"i": i}) for i in range(3)],
        NOW - timedelta(minutes=1),
    )  # fmt: skip
    claimed = await store.message_claim("w1", 3, 30, NOW)
    outcomes = [AttemptOutcome.SENT, AttemptOutcome.SENT, AttemptOutcome.FAILED]
    await store.message_complete_many(
        "w1",
        [
            Completion(m.id, m.claim_seq, "w1", Status.SENT if o is AttemptOutcome.SENT
                       else Status.DEAD,
                       Attempt(m.id, 1, "w1", "null", NOW, NOW + timedelta(seconds=2), o,
                               error_code=None if o is AttemptOutcome.SENT else "TIMEOUT"))
            for m, o in zip(claimed, outcomes, strict=True)
        ],
        NOW,
    )  # fmt: skip
    assert len(ids) == 3
    rows = await store.tally("attempts", NOW, NOW + timedelta(minutes=5))
    got = {(r["outcome"], r["error_code"]): n for r, n in rows}
    assert got == {("sent", ""): 2, ("failed", "TIMEOUT"): 1}
    assert {(r["tenant"], r["channel"], r["provider"]) for r, _ in rows} == {
        ("acme", "sms", "null")
    }
    assert (
        await store.tally("attempts", NOW + timedelta(seconds=2), NOW + timedelta(minutes=5)) == []
    )
    lat = await store.sent_latencies(NOW, NOW + timedelta(minutes=5))
    assert sorted(round(s) for _, s in lat) == [62, 62]
    with pytest.raises(ValidationError, match="table"):
        await store.tally("messages", NOW, NOW)


async def test_tally__audit_rows_by_action_target_and_tenant(store: Store) -> None:
    # SluiceRecipientCapTripped counts limit.tripped rows whose target is a recipient cap,
    # per tenant (issue 15, replay of seed 003 RB-10): the tally must carry both.
    from sluice.store.base import AuditEntry

    trip = {"tenant": "loopco", "recipient": "+15550001111"}
    for at, action, target, detail in [
        (NOW, "limit.tripped", "recipient(tenant=loopco)", trip),
        (NOW + timedelta(seconds=1), "limit.tripped", "recipient(tenant=loopco)", trip),
        (NOW + timedelta(seconds=2), "control.set", None, {}),
    ]:
        await store.audit_append(
            AuditEntry(at=at, actor="worker:w1", action=action, target=target, reason="r",
                       detail=detail)
        )  # fmt: skip
    rows = await store.tally("audit", NOW - timedelta(seconds=1), NOW + timedelta(minutes=1))
    got = {(r["action"], r["target"], r["tenant"]): n for r, n in rows}
    assert got == {
        ("limit.tripped", "recipient(tenant=loopco)", "loopco"): 2,
        ("control.set", "", ""): 1,
    }


async def test_try_lead__one_holder_at_a_time(store: Store, store_url: str) -> None:
    from sluice.store import create_store

    other = create_store(store_url)
    await other.open()  # type: ignore[attr-defined]
    try:
        lead = await store.try_lead("evaluator")
        assert lead is not None
        assert await other.try_lead("evaluator") is None
        assert await other.try_lead("something-else") is not None
        await lead.release()
        again = await other.try_lead("evaluator")
        assert again is not None
        await again.release()
    finally:
        await other.close()
