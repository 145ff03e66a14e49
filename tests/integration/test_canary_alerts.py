"""The built-in evaluator and canaries (issue 15): ``SluiceCanaryFailed`` holds while a
target's newest finished canary failed or went missing (the state metric
``sluice_canary_failing``), and the incident a failed canary opened resolves once that
target's newest canary is ok. Runs against PostgreSQL and SQLite."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sluice.alerts.rules import RULES
from sluice.config import Settings
from sluice.ops.alerts import Evaluator
from sluice.ops.canary import CANARY_RULE
from sluice.ops.state_metrics import StateMetrics
from sluice.store import Store
from sluice.store.canaries import CanaryRun

T0 = datetime.now(UTC)


def run(n: int, outcome: str, target: str = "twilio") -> CanaryRun:
    return CanaryRun(
        id=f"c{n}", target=target, provider="twilio", tenant="_sluice",
        recipient="+15005550006", message_id=None, sent_at=T0 + timedelta(minutes=n),
        outcome=outcome, actor="sluice:canary", error=None if outcome == "ok" else "x",
    )  # fmt: skip


async def test_evaluator__a_failing_canary_opens_and_an_ok_one_resolves(store: Store) -> None:
    settings = Settings(alerts_clear_for=0)
    rules = [r for r in RULES if r.name == CANARY_RULE]
    evaluator = Evaluator(store, settings, StateMetrics(store, settings), rules=rules)
    await store.canary_record(run(1, "ok", target="sendgrid"))
    await store.canary_record(run(2, "missing"))
    await store.canary_record(run(3, "pending"))  # not finished: the missing one counts

    judged = await evaluator.evaluate(T0 + timedelta(minutes=5))

    assert judged.holding[CANARY_RULE] == {(("provider", "twilio"), ("target", "twilio")): 1.0}
    (incident,) = await store.incident_list("open", 10)
    assert (incident.rule, incident.scope_key, incident.runbook) == (
        CANARY_RULE, "provider=twilio target=twilio", "003#RB-09",
    )  # fmt: skip

    await store.canary_record(run(3, "ok"))
    await evaluator.evaluate(T0 + timedelta(minutes=6))
    await evaluator.evaluate(T0 + timedelta(minutes=7))

    assert await store.incident_list("open", 10) == []
    assert [i.rule for i in await store.incident_list("resolved", 10)] == [CANARY_RULE]
