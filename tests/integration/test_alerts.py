"""The built-in evaluator on both stores: dead letters open one incident after the rule's
``for``, on-call hears of it once per target, and the incident resolves by itself once the
dead letters are gone and the condition stayed clear (then one "resolved" notification).
Time is a ``FrozenClock``; the store and the rules are the real ones."""

from __future__ import annotations

import pytest

from sluice.alerts.rules import RULES
from sluice.clock import FrozenClock
from sluice.config import Settings
from sluice.errors import ConfigError
from sluice.flow.controls import Mode, Scope
from sluice.model import Attempt, AttemptOutcome, Completion, NewMessage, Status
from sluice.ops.alerts import Evaluator
from sluice.ops.notify import Target, alert_targets, send_notifications
from sluice.ops.state_metrics import StateMetrics
from sluice.store import AuditEntry, MessageFilter, Store

DLQ = [r for r in RULES if r.name == "SluiceDeadLetters"]
HOOK = Target("oncall", "webhook", url="https://hooks.example.com/sluice", provider="webhook")
MAIL = Target("mail", "email", to="oncall@example.com", provider="sendgrid")


async def dead_letters(store: Store, clock: FrozenClock, n: int) -> list[str]:
    ids = await store.enqueue_many(
        [NewMessage(tenant="acme", channel="sms", provider="null", recipient="+15550001111",
                    payload={"i": i}) for i in range(n)],
        clock.now(),
    )  # fmt: skip
    claimed = await store.message_claim("w1", n, 30, clock.now())
    now = clock.now()
    await store.message_complete_many(
        "w1",
        [Completion(m.id, m.claim_seq, "w1", Status.DEAD,
                    Attempt(m.id, 1, "w1", "null", now, now, AttemptOutcome.FAILED,
                            error_code="INVALID_RECIPIENT"))
         for m in claimed],
        now,
    )  # fmt: skip
    return ids


def evaluator(store: Store, clock: FrozenClock) -> Evaluator:
    settings = Settings(database_url="sqlite:///unused.db", alerts_clear_for=300)
    state = StateMetrics(store, settings, clock=clock)

    async def notify(store: Store, now) -> None:  # type: ignore[no-untyped-def]
        await send_notifications(store, [HOOK, MAIL], now)

    return Evaluator(store, settings, state, rules=DLQ, clock=clock, notify=notify)


async def alert_messages(store: Store) -> list[tuple[str, str]]:
    out = []
    for status in ("queued",):
        for mid in await store.message_select(status, MessageFilter(tenant="_sluice")):
            m = await store.message_get(mid)
            out.append((m.action, m.provider))
    return sorted(out)


async def test_dead_letters__one_incident_one_notification_each_way(store: Store) -> None:
    clock = FrozenClock()
    ev = evaluator(store, clock)
    await ev.evaluate()
    assert await store.incident_list() == []  # nothing dead, nothing open
    ids = await dead_letters(store, clock, 3)

    await ev.evaluate()  # the condition holds, but not yet for 5 minutes
    assert await store.incident_list() == []
    clock.advance(299)
    await ev.evaluate()
    assert await store.incident_list() == []
    clock.advance(1)
    await ev.evaluate()
    [incident] = await store.incident_list()
    assert (incident.rule, incident.severity, incident.types, incident.runbook) == (
        "SluiceDeadLetters",
        "P2",
        ["QUEUE"],
        "000#remediation",
    )
    assert (incident.scope, incident.value, incident.summary) == (
        {"channel": "sms"},
        3.0,
        "3 dead letters on sms",
    )
    assert await alert_messages(store) == [
        ("incident.opened", "sendgrid"),
        ("incident.opened", "webhook"),
    ]
    for _ in range(3):  # later rounds add nothing while it stays the same
        clock.advance(15)
        await ev.evaluate()
    assert len(await store.incident_list("")) == 1
    assert len(await alert_messages(store)) == 2

    # On-call cancels the dead letters; the incident waits out the clear period.
    await store.message_cancel(
        ids,
        Status.DEAD,
        clock.now(),
        AuditEntry(at=clock.now(), actor="ops:ana", action="dlq.cancel"),
    )
    await ev.evaluate()
    assert (await store.incident_get(incident.id)).state == "open"
    clock.advance(300)
    await ev.evaluate()
    resolved = await store.incident_get(incident.id)
    assert (resolved.state, resolved.resolved_by) == ("resolved", "evaluator")
    assert [e.kind for e in resolved.events].count("notified") == 2
    assert await alert_messages(store) == [
        ("incident.opened", "sendgrid"),
        ("incident.opened", "webhook"),
        ("incident.resolved", "sendgrid"),
        ("incident.resolved", "webhook"),
    ]


async def test_a_global_kill_does_not_silence_on_call(store: Store) -> None:
    clock = FrozenClock()
    ev = evaluator(store, clock)
    await dead_letters(store, clock, 1)
    await store.control_set(Scope(), Mode.KILLED, actor="ops", reason="freeze",
                            expires_at=None, now=clock.now())  # fmt: skip
    await ev.evaluate()
    clock.advance(300)
    await ev.evaluate()
    assert len(await store.incident_list()) == 1
    await store.control_hold_queued(clock.now())  # the kill's sweep holds nothing of ours
    claimed = await store.message_claim("w1", 10, 30, clock.now())
    assert [m.tenant for m in claimed] == ["_sluice", "_sluice"]


async def test_a_control_naming_the_operator_tenant_stops_them(store: Store) -> None:
    clock = FrozenClock()
    ev = evaluator(store, clock)
    await dead_letters(store, clock, 1)
    await store.control_set(Scope.of(tenant="_sluice"), Mode.PAUSED, actor="ops",
                            reason="quiet", expires_at=None, now=clock.now())  # fmt: skip
    await ev.evaluate()
    clock.advance(300)
    await ev.evaluate()
    assert len(await alert_messages(store)) == 2  # written, durable
    assert await store.message_claim("w1", 10, 30, clock.now()) == []  # but not sent


async def test_alert_targets__bad_config_is_named(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "sluice.toml"
    path.write_text('[alerts]\ntargets = [{ kind = "pager", url = "x" }]\n')
    with pytest.raises(ConfigError, match=r"targets\[0\].kind must be one of"):
        alert_targets(config_path=path)
    path.write_text('[alerts]\ntargets = [{ kind = "webhook" }]\n')
    with pytest.raises(ConfigError, match="a webhook target needs url"):
        alert_targets(config_path=path)
    path.write_text(
        '[alerts]\ntargets = [{ name = "a", kind = "email", to = "x@example.com" },'
        ' { name = "a", kind = "webhook", url = "https://h.example.com" }]\n'
    )
    with pytest.raises(ConfigError, match="used twice"):
        alert_targets(config_path=path)
    path.write_text('[alerts]\ntargets = [{ kind = "email", to = "x@example.com" }]\n')
    assert alert_targets(config_path=path) == [
        Target("email-0", "email", to="x@example.com", provider="sendgrid")
    ]


async def test_every_builtin_rule_is_judged(store: Store) -> None:
    """All rules with a built-in form run against a store with dead letters, sent and
    failed attempts and a held message: none raises, and the dead-letter rules hold."""
    clock = FrozenClock()
    await dead_letters(store, clock, 120)
    settings = Settings(database_url="sqlite:///unused.db")
    ev = Evaluator(store, settings, StateMetrics(store, settings, clock=clock), clock=clock)
    judged = await ev.evaluate()
    assert set(judged.holding) == {r.name for r in ev.rules}
    assert judged.holding["SluiceDeadLetters"] == {(("channel", "sms"),): 120.0}
    assert judged.holding["SluiceDeadLettersHigh"] == {(): 120.0}
    assert judged.holding["SluiceNoLiveWorker"] == {(): 0.0}


def test_alerts_for__overrides_are_checked(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from sluice.ops.notify import alert_settings

    path = tmp_path / "sluice.toml"
    path.write_text("[alerts.for]\nSluiceDeadLetters = 1\n")
    assert alert_settings(config_path=path) == ([], {"SluiceDeadLetters": 1})
    path.write_text("[alerts.for]\nSluiceDeadLeters = 1\n")
    with pytest.raises(ConfigError, match="no rule is named 'SluiceDeadLeters'"):
        alert_settings(config_path=path)
    for bad in ("-1", "true", '"5m"', "nan"):
        path.write_text(f"[alerts.for]\nSluiceDeadLetters = {bad}\n")
        with pytest.raises(ConfigError, match="must be a number of seconds"):
            alert_settings(config_path=path)


async def test_an_unacknowledged_incident_escalates_once(store: Store) -> None:
    clock = FrozenClock()
    ev = evaluator(store, clock)
    ev.settings = Settings(database_url="sqlite:///unused.db", alerts_escalate_after=900)
    await dead_letters(store, clock, 2)
    await ev.evaluate()
    clock.advance(300)
    await ev.evaluate()  # opened, announced
    clock.advance(900)
    await ev.evaluate()  # escalated, announced
    clock.advance(900)
    await ev.evaluate()  # nothing more
    actions = [a for a, _ in await alert_messages(store)]
    assert sorted(actions) == ["incident.escalated"] * 2 + ["incident.opened"] * 2


async def test_controls_in_an_incidents_scope_go_on_its_timeline(store: Store) -> None:
    from sluice.ops.controls import control_clear, control_set

    clock = FrozenClock()
    ev = evaluator(store, clock)
    await dead_letters(store, clock, 1)
    await ev.evaluate()
    clock.advance(300)
    await ev.evaluate()
    [incident] = await store.incident_list()  # scope: channel=sms
    await control_set(store, Scope.of(tenant="acme"), Mode.KILLED, actor="ops:ana",
                      reason="stop acme", wait=False, clock=clock)  # fmt: skip
    await control_set(store, Scope.of(channel="email"), Mode.PAUSED, actor="ops:ana",
                      reason="not this one", wait=False, clock=clock)  # fmt: skip
    await control_clear(store, Scope.of(tenant="acme"), actor="ops:ana", reason="fixed",
                        wait=False, clock=clock)  # fmt: skip
    events = [e for e in (await store.incident_get(incident.id)).events if e.kind == "control"]
    assert [(e.actor, e.detail["control"], e.detail["scope"]) for e in events] == [
        ("ops:ana", "set", "tenant=acme"),
        ("ops:ana", "cleared", "tenant=acme"),
    ]
    assert events[0].detail["mode"] == "killed"


async def test_a_recipient_cap_trip_opens_the_runaway_loop_incident(store: Store) -> None:
    """Issue 15, replay of seed 003 RB-10: the worker's ``limit.tripped`` audit row (its
    target the cap, its detail the tenant) opens SluiceRecipientCapTripped for that
    tenant; a quota threshold crossed does not."""
    clock = FrozenClock()
    for action, target in [
        ("limit.tripped", "recipient(tenant=loopco action=auto_reply)"),
        ("quota.threshold", "quota(tenant=loopco)"),
    ]:
        await store.audit_append(
            AuditEntry(at=clock.now(), actor="worker:w1", action=action, target=target,
                       reason="reached", detail={"tenant": "loopco"})
        )  # fmt: skip
    rules = [r for r in RULES if r.name == "SluiceRecipientCapTripped"]
    settings = Settings(database_url="sqlite:///unused.db")
    state = StateMetrics(store, settings, clock=clock)
    ev = Evaluator(store, settings, state, rules=rules, clock=clock)
    judged = await ev.evaluate(clock.now())
    assert judged.holding["SluiceRecipientCapTripped"] == {(("tenant", "loopco"),): 1.0}
    [incident] = await store.incident_list("")
    assert (incident.rule, incident.scope, incident.runbook) == (
        "SluiceRecipientCapTripped", {"tenant": "loopco"}, "003#RB-10",
    )  # fmt: skip
