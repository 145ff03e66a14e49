"""Postmortem drafts and incident statistics (``sluice.ops.postmortem``) on real stores:
an incident built the way the evaluator and on-call build one, with messages, attempts,
audit entries and controls in its window; every number in the draft checked against
counts taken from the store directly."""

from __future__ import annotations

import json
import re
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from incident_scene import T0, attempt, build, complete, sms
from sluice.alerts.rules import Rule
from sluice.clock import FrozenClock
from sluice.errors import NotFound, ValidationError
from sluice.flow.controls import Scope
from sluice.model import AttemptOutcome, AuditEntry, NewMessage, Status
from sluice.ops.controls import control_clear
from sluice.ops.postmortem import (
    CATEGORIES,
    SECTIONS,
    TimelineRow,
    incident_stats,
    postmortem_draft,
    postmortem_facts,
)
from sluice.ops.retention import purge
from sluice.store import Store
from sluice.store.base import Firing, Incident, MessageFilter, PurgeRule
from sluice.store.sqlite import sqlite_path

SENT = ("sent", "delivered", "read", "bounced")


async def direct_counts(store: Store, since: datetime, until: datetime) -> dict[str, int]:
    """What became of the sms messages of the window, counted from the rows themselves."""
    rows = await store.message_list(MessageFilter(channel="sms", since=since, until=until),
                                    None, None, 1000)  # fmt: skip
    out = dict.fromkeys(CATEGORIES, 0)
    named = {"queued": "delayed", "sending": "delayed"}
    for m in rows:
        if m.status in SENT:
            out["sent late" if m.attempts > 1 else "sent"] += 1
        else:
            out[named.get(m.status, m.status)] += 1
    return out


def delete_row(store_url: str, message_id: str) -> None:
    """A message vanishing behind Sluice's back (what the loss check exists for)."""
    if store_url.startswith("postgresql"):
        with psycopg.connect(store_url, autocommit=True) as pg:
            pg.execute("DELETE FROM sluice_messages WHERE id = %s", (message_id,))
        return
    lite = sqlite3.connect(sqlite_path(store_url), isolation_level=None)
    try:
        lite.execute("DELETE FROM sluice_messages WHERE id = ?", (message_id,))
    finally:
        lite.close()


CLOCK = FrozenClock(T0 + timedelta(hours=1))


async def test_draft__sections_in_the_seed_order_with_computed_times(store: Store) -> None:
    scene = await build(store)
    facts = await postmortem_facts(store, scene.incident_id, clock=CLOCK)
    # First signal: the first failed sms attempt (T0+1m), before opened - for (T0+3m).
    assert facts.started == T0 + timedelta(minutes=1)
    assert facts.detect_seconds == 7 * 60
    assert facts.contained_at == T0 + timedelta(minutes=10)
    assert facts.contain_seconds == 120
    assert facts.resolve_seconds == 12 * 60
    assert facts.contained_by is not None and facts.contained_by.owner == "ops:ana"

    text = await postmortem_draft(store, scene.incident_id, clock=CLOCK)
    headings = re.findall(r"^### (.+)$", text, re.M)
    assert headings == list(SECTIONS)
    assert text.startswith(f"## Postmortem: {scene.incident_id} — 1 dead letters on sms")
    assert "Time to detection: 7 min 0 s" in text
    assert "Time to contain: 2 min 0 s" in text and "Time to resolve: 12 min 0 s" in text
    # The timeline: chronological, the scope's acts and the incident's entries, not email's.
    timeline = text.split("### 4) Timeline (UTC)")[1].split("### 5)")[0]
    times = re.findall(r"^\| (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) \|", timeline, re.M)
    assert times == sorted(times) and len(times) >= 5
    assert "incident opened" in timeline and "control.set" in timeline
    assert "incident note: INVALID_RECIPIENT" in timeline and "incident resolved" in timeline
    assert "first signal" in timeline and "email too" not in timeline
    # Root cause and actions are prompts, seeded with the rule's follow-ups.
    assert "_Primary cause._" in text
    assert "Update runbook `000#remediation`" in text and "| proposed |" in text
    assert "`TIMEOUT` (2), `INVALID_RECIPIENT` (1)" in text


async def test_draft__counts_equal_the_store(store: Store) -> None:
    scene = await build(store)
    facts = await postmortem_facts(store, scene.incident_id, clock=CLOCK)
    direct = await direct_counts(store, facts.started, facts.until + timedelta(microseconds=1))
    # The window's messages were accepted at T0, before the first signal: they are in play
    # because attempts of the window name them; the cancelled one was never tried.
    expected = dict.fromkeys(CATEGORIES, 0)
    expected.update({"sent late": 1, "delayed": 1, "held": 0, "dead": 1, "sent": 1})
    assert facts.by_category == expected
    everything = await direct_counts(store, T0, T0 + timedelta(seconds=1))
    assert everything == {**expected, "held": 1, "cancelled": 1}
    assert direct == dict.fromkeys(CATEGORIES, 0)  # none accepted after the first signal
    assert facts.affected == 3
    assert facts.impact["tenant"] == [("acme", 2), ("globex", 1)]
    text = await postmortem_draft(store, scene.incident_id, clock=CLOCK)
    assert "| dead | 1 |" in text and "| sent late | 1 |" in text
    assert "| **in play in the window (in scope)** | **4** |" in text
    assert "No loss: every message is accounted for." in text
    assert facts.loss.tried == 5 and facts.loss.missing == []
    shape = json.loads(json.dumps(facts.as_dict()))
    assert (shape["affected"], shape["by_category"]["dead"], shape["loss"]["missing"]) == (3, 1, [])
    assert (shape["detect_seconds"], shape["contain_seconds"]) == (420.0, 120.0)


async def test_loss__a_purge_outside_the_window_is_no_loss_a_deleted_row_is(
    store: Store, store_url: str
) -> None:
    scene = await build(store)
    later = FrozenClock(T0 + timedelta(minutes=30))
    done = await purge(store, PurgeRule({"dead": T0 - timedelta(hours=1)}), actor="ops:ana",
                       reason="retention", clock=later)  # fmt: skip
    assert done.counts == {"dead": 1}
    with pytest.raises(NotFound):
        await store.message_get(scene.old)
    text = await postmortem_draft(store, scene.incident_id, clock=CLOCK)
    assert "No loss: every message is accounted for." in text and "LOSS" not in text

    delete_row(store_url, scene.ids["dead"])
    facts = await postmortem_facts(store, scene.incident_id, clock=CLOCK)
    assert facts.loss.missing == [scene.ids["dead"]]
    assert (facts.loss.accepted, facts.loss.accounted) == (5, 4)
    text = await postmortem_draft(store, scene.incident_id, clock=CLOCK)
    assert f"**LOSS: 1 message(s) were tried in the window but have no row now: " \
           f"`{scene.ids['dead']}`.**" in text  # fmt: skip
    assert "a purge removes a message's attempts with it" in text
    assert "No loss" not in text


async def test_draft__an_open_incident_without_evidence_uses_the_rules_for(store: Store) -> None:
    opened = T0 + timedelta(minutes=30)
    incident, _ = await store.incident_fire(
        Firing("SluiceQueueDepthHigh", {}, "P2", ("QUEUE",), "002#1", "1500 messages queued",
               1500.0),
        opened,
    )  # fmt: skip
    facts = await postmortem_facts(store, incident.id, clock=CLOCK)
    assert facts.started == opened - timedelta(minutes=10)
    assert facts.first_evidence is None and facts.detect_seconds == 600
    assert facts.contained_by is None and facts.resolve_seconds is None
    assert facts.until == CLOCK.now()
    text = await postmortem_draft(store, incident.id, clock=CLOCK)
    assert "no containing act in scope was recorded" in text and "(not resolved yet)" in text


async def test_draft__uses_the_for_that_alerts_for_configures(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 15 replay of seed 004 §1.3: with [alerts.for] shortening a rule's for, the
    # draft had reckoned the start from the rule's own 10 min and reported that as the
    # time to detect.
    config = tmp_path / "sluice.toml"
    config.write_text("[alerts.for]\nSluiceQueueDepthHigh = 30\n")
    monkeypatch.setenv("SLUICE_CONFIG", str(config))
    opened = T0 + timedelta(minutes=30)
    incident, _ = await store.incident_fire(
        Firing("SluiceQueueDepthHigh", {}, "P2", ("QUEUE",), "002#1", "1500 messages queued",
               1500.0),
        opened,
    )  # fmt: skip
    facts = await postmortem_facts(store, incident.id, clock=CLOCK)
    assert facts.started == opened - timedelta(seconds=30) and facts.detect_seconds == 30
    assert facts.rule is not None and facts.rule.for_seconds == 30


async def test_draft__a_global_kill_contains_a_scoped_incident(store: Store) -> None:
    scene = await build(store)
    # A kill of everything before the sms pause is the first containment.
    await store.audit_append(
        AuditEntry(T0 + timedelta(minutes=9, seconds=30), "ops:cy", "control.set", "*", "all",
                   {"scope": {"tenant": "", "channel": "", "provider": "", "action": ""},
                    "mode": "killed"})
    )  # fmt: skip
    facts = await postmortem_facts(store, scene.incident_id, clock=CLOCK)
    assert facts.contained_at == T0 + timedelta(minutes=9, seconds=30)
    assert facts.contained_by is not None and facts.contained_by.owner == "ops:cy"


async def test_unknown_incident_is_refused_by_name(store: Store) -> None:
    for bad in ("nope", "00000000-0000-0000-0000-000000000000"):
        with pytest.raises(NotFound):
            await postmortem_draft(store, bad, clock=CLOCK)


# -- stats -------------------------------------------------------------------------------


async def test_stats__mttd_mttr_and_containment_per_rule_and_severity(store: Store) -> None:
    scene = await build(store)
    other, _ = await store.incident_fire(
        Firing("SluiceQueueDepthHigh", {}, "P2", ("QUEUE",), "002#1", "queued", 1500.0),
        T0 + timedelta(minutes=30),
    )  # fmt: skip
    await store.incident_act(other.id, "resolve", actor="ops:ana", text="drained",
                             now=T0 + timedelta(minutes=50))  # fmt: skip
    p1, _ = await store.incident_fire(
        Firing("SluiceNoLiveWorker", {}, "P1", ("QUEUE",), "002#5", "no worker", 0.0),
        T0 + timedelta(minutes=40),
    )  # fmt: skip
    # Long ago: outside the period.
    await store.incident_fire(
        Firing("SluiceNoLiveWorker", {"x": "y"}, "P1", ("QUEUE",), "002#5", "old", 0.0),
        T0 - timedelta(days=40),
    )  # fmt: skip
    st = await incident_stats(store, "30d", clock=CLOCK)
    assert st.overall.incidents == 3 and st.overall.open == 1 and st.overall.resolved == 2
    assert st.by_severity == {"P1": 1, "P2": 2}
    rules = {r.rule: r for r in st.by_rule}
    assert set(rules) == {"SluiceDeadLetters", "SluiceQueueDepthHigh", "SluiceNoLiveWorker"}
    dl = rules["SluiceDeadLetters"]
    assert (dl.incidents, dl.mttd_seconds, dl.mttc_seconds, dl.mttr_seconds) == (
        1, 420.0, 120.0, 720.0
    )  # fmt: skip
    qd = rules["SluiceQueueDepthHigh"]
    assert (qd.mttd_seconds, qd.mttc_seconds, qd.mttr_seconds) == (600.0, None, 1200.0)
    nw = rules["SluiceNoLiveWorker"]
    assert (nw.incidents, nw.open, nw.mttd_seconds, nw.mttr_seconds) == (1, 1, 120.0, None)
    assert st.overall.mttd_seconds == round((420 + 600 + 120) / 3, 3)
    assert st.overall.mttr_seconds == (720 + 1200) / 2
    assert st.overall.mttc_seconds == 120.0
    assert st.per_week == round(3 / (30 / 7), 3)
    shape = st.as_dict()
    assert (shape["count"], shape["next_cursor"]) == (3, None)
    assert [i["rule"] for i in shape["items"]] == [r.rule for r in st.by_rule]
    assert p1.id != scene.incident_id


@pytest.mark.parametrize(
    "since", ["", "  ", "yesterday", "0d", "-5d", "400d", "2999-01-01T00:00Z", "1e309d",
              "5\udc00d"],
)  # fmt: skip
async def test_stats__bad_since_is_refused_by_name(store: Store, since: str) -> None:
    with pytest.raises(ValidationError) as err:
        await incident_stats(store, since, clock=CLOCK)
    assert err.value.field == "since"


# -- the first signal of other kinds of rule, the hooks --------------------------------


async def test_draft__the_rules_for_is_the_one_alerts_for_gives_it(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The evaluator waits what ``[alerts.for]`` says; the draft and the stats reckon the
    detection time with that, not the rule's own 10 min (found replaying seed 002 §2)."""
    config = tmp_path / "sluice.toml"
    config.write_text("[alerts.for]\nSluiceQueueDepthHigh = 60\n")
    monkeypatch.setenv("SLUICE_CONFIG", str(config))
    opened = T0 + timedelta(minutes=30)
    incident, _ = await store.incident_fire(
        Firing("SluiceQueueDepthHigh", {}, "P2", ("QUEUE",), "002#1", "1500 messages queued",
               1500.0),
        opened,
    )  # fmt: skip
    facts = await postmortem_facts(store, incident.id, clock=CLOCK)
    assert facts.started == opened - timedelta(seconds=60) and facts.detect_seconds == 60
    stats = await incident_stats(store, "1d", clock=CLOCK)
    assert stats.overall.mttd_seconds == 60
    # A config that cannot be read as alerts config leaves the rule's own.
    config.write_text("[alerts.for]\nSluiceQueueDepthHigh = -1\n")
    facts = await postmortem_facts(store, incident.id, clock=CLOCK)
    assert facts.detect_seconds == 600


async def test_first_signal__never_after_the_first_failure_whatever_its_fraction(
    store: Store,
) -> None:
    """The first signal is found to the second, but never after the first failed attempt:
    the draft's window starts there and must hold every failure (found replaying seed 002
    §2, where the letters that failed in the first second were left out of the counts)."""
    opened = T0 + timedelta(hours=1)
    for i, fraction in enumerate((0.05, 0.3, 0.5, 0.77, 0.99)):
        at = opened - timedelta(minutes=7, seconds=fraction)
        await store.enqueue_many([sms(f"t{i}", i)], at)  # type: ignore[call-arg]
        [m] = await store.message_claim("w1", 1, 30, at)
        await complete(store, m, Status.DEAD, at,
                       attempt=attempt(m, AttemptOutcome.FAILED, at, "TIMEOUT"))  # fmt: skip
        incident, _ = await store.incident_fire(
            Firing("SluiceDeadLetters", {"tenant": f"t{i}"}, "P2", ("QUEUE",),
                   "000#remediation", "1 dead letter", 1.0),
            opened,
        )  # fmt: skip
        facts = await postmortem_facts(store, incident.id, clock=CLOCK)
        assert facts.first_evidence is not None
        assert at - timedelta(seconds=2) < facts.started <= at, (fraction, facts.started, at)
        assert facts.by_category["dead"] == 1, fraction


async def test_first_signal__a_window_rule_looks_back_over_its_for_and_window(
    store: Store,
) -> None:
    """SluiceSuccessRateLow (for 15 min, 5-min window): a failure 18 min before the opening
    starts it; one 25 min before (before for + window) and one on another channel do not."""
    opened = T0 + timedelta(hours=1)
    for minutes, channel in [(25, "sms"), (18, "sms"), (19, "email")]:
        at = opened - timedelta(minutes=minutes)
        msg = sms("acme", minutes) if channel == "sms" else NewMessage(
            tenant="acme", channel="email", provider="null", recipient="a@example.com",
            payload={"subject": "s", "text": "t"})  # fmt: skip
        await store.enqueue_many([msg], at)  # type: ignore[call-arg]
        [m] = await store.message_claim("w1", 1, 30, at)
        await complete(store, m, Status.DEAD, at,
                       attempt=attempt(m, AttemptOutcome.FAILED, at, "TIMEOUT"))  # fmt: skip
    incident, _ = await store.incident_fire(
        Firing("SluiceSuccessRateLow", {"channel": "sms", "provider": "null"}, "P2",
               ("PROVIDER",), "002#3", "sms/null delivers 0 %", 0.0),
        opened,
    )  # fmt: skip
    facts = await postmortem_facts(store, incident.id, clock=CLOCK)
    assert facts.started == opened - timedelta(minutes=18)
    assert facts.detect_seconds == 18 * 60
    assert facts.first_evidence == opened - timedelta(minutes=18)


async def test_first_signal__a_breaker_opening_from_the_audit_log_in_scope(
    store: Store,
) -> None:
    opened = T0 + timedelta(hours=1)
    for minutes, key in [(7, "p:null"), (9, "p:twilio")]:
        await store.audit_append(AuditEntry(opened - timedelta(minutes=minutes), "worker:w1",
                                            "breaker.open", key, "failures"))  # fmt: skip
    incident, _ = await store.incident_fire(
        Firing("SluiceBreakerOpen", {"key": "p:null"}, "P2", ("PROVIDER",), "002#3",
               "Breaker p:null is open", 1.0),
        opened,
    )  # fmt: skip
    facts = await postmortem_facts(store, incident.id, clock=CLOCK)
    assert facts.started == opened - timedelta(minutes=7) and facts.detect_seconds == 420
    # The automatic opening is the first containment, before the incident opened: 0.
    assert facts.contain_seconds == 0 and facts.contained_by is not None
    assert facts.contained_by.owner == "worker:w1"
    text = await postmortem_draft(store, incident.id, clock=CLOCK)
    assert "breaker.open p:null" in text and "p:twilio" not in text


async def test_hooks__annotations_and_follow_ups_appear_where_given(store: Store) -> None:
    scene = await build(store)

    async def annotations(_: Store, since: datetime, until: datetime) -> list[TimelineRow]:
        assert since == T0 + timedelta(minutes=1)
        return [TimelineRow(T0 + timedelta(minutes=5), "annotation: deployed v1.4.2", "ci",
                            "annotation #1")]  # fmt: skip

    def follow_ups(incident: Incident, rule: Rule | None) -> list[str]:
        return [f"Runbook {incident.runbook} step 4: check the receiver ({rule and rule.name})"]

    text = await postmortem_draft(store, scene.incident_id, clock=CLOCK,
                                  annotations=annotations, follow_ups=follow_ups)  # fmt: skip
    timeline = text.split("### 4)")[1].split("### 5)")[0]
    rows = [ln for ln in timeline.splitlines() if ln.startswith("| 2026")]
    assert "annotation: deployed v1.4.2" in rows[1]  # after the first signal, before opening
    assert "| Runbook 000#remediation step 4: check the receiver (SluiceDeadLetters) |" in text


async def test_first_signal__not_looked_for_in_the_previous_incident_of_its_scope(
    store: Store,
) -> None:
    """Dead letters on sms twice: the failures of the first incident do not start the
    second one (its start is its rule's ``for``)."""
    scene = await build(store)  # its first failure at T0+1m; resolved at T0+20m
    at = T0 + timedelta(minutes=15)  # sms resumed, one more failure while it was open
    await control_clear(store, Scope.of(channel="sms"), actor="ops:ana", reason="resume",
                        wait=False, clock=FrozenClock(at))  # fmt: skip
    await store.enqueue_many([sms("acme", 15)], at)  # type: ignore[call-arg]
    [m] = await store.message_claim("w1", 1, 30, at)
    await complete(store, m, Status.DEAD, at,
                   attempt=attempt(m, AttemptOutcome.FAILED, at, "TIMEOUT"))  # fmt: skip
    # Opened at T0+28m: for 5 min and 10 min of look-back would reach T0+13m.
    again, opened = await store.incident_fire(
        Firing("SluiceDeadLetters", {"channel": "sms"}, "P2", ("QUEUE",), "000#remediation",
               "1 dead letters on sms", 1.0),
        T0 + timedelta(minutes=28),
    )  # fmt: skip
    assert opened and again.id != scene.incident_id
    facts = await postmortem_facts(store, again.id, clock=CLOCK)
    assert facts.first_evidence is None
    assert facts.started == T0 + timedelta(minutes=23) and facts.detect_seconds == 300
    # The first incident's own draft does see that failure (inside its window).
    first = await postmortem_facts(store, scene.incident_id, clock=CLOCK)
    assert first.top_errors == [("TIMEOUT", 3), ("INVALID_RECIPIENT", 1)]


async def test_recorded_annotations_appear_in_the_timeline(store: Store) -> None:
    """A deploy marker recorded with ``sluice annotate`` inside the window is on the
    draft's timeline; one outside it is not."""
    from sluice.ops.annotations import annotation_add

    scene = await build(store)
    await annotation_add(store, "deployed v1.4.2", kind="deploy", actor="cli:ci",
                   at=T0 + timedelta(minutes=5), clock=CLOCK)  # fmt: skip
    await annotation_add(store, "deployed v1.3.9", kind="deploy", actor="cli:ci",
                   at=T0 - timedelta(days=2), clock=CLOCK)  # fmt: skip
    text = await postmortem_draft(store, scene.incident_id, clock=CLOCK)
    timeline = text.split("### 4)")[1].split("### 5)")[0]
    assert "annotation (deploy): deployed v1.4.2" in timeline
    assert "v1.3.9" not in timeline


async def test_follow_ups_come_from_the_incidents_runbook(store: Store) -> None:
    """The corrective-actions prompts are the follow-ups of the runbook the incident's
    rule points to (``sluice runbook show``)."""
    from sluice.runbooks import find

    scene = await build(store)
    incident = await store.incident_get(scene.incident_id)
    runbook = find(incident.runbook)
    text = await postmortem_draft(store, scene.incident_id, clock=CLOCK)
    assert runbook.follow_ups
    for follow_up in runbook.follow_ups:
        assert f"{follow_up} (runbook {runbook.id})" in text
