"""The seed incidents replayed end to end with real processes (issue 15, "Replay the seed
incidents"): (1) seed 000, a scope removed mid-load; (2) seed 002 §2, invalid recipients
grow the dead-letter queue; (3) seed 002 §3 / 003 RB-09, a provider outage with failover.

Each runs ``sluice worker`` processes with the built-in evaluator on PostgreSQL against
the provider simulator, from the first fault to the postmortem draft: the right incident
opens with the right runbook; ``sluice incidents show --json`` diagnoses the cause; the
containment commands it prints, run as printed through the CLI, contain it; the incident
resolves after recovery; the draft's counts equal the store's and the simulator's, and
nothing is lost (every message in a final state, each effect at most once). Only the
rules' ``for`` (``[alerts.for]``), the evaluation interval and the clear period are
shortened. The figures each prints are the ones in ``docs/incidents.md``.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from replay_harness import (
    Replay,
    effects_of,
    now,
    on_store,
    requests_after,
    seconds,
    wait_for,
)

from conftest import SimulatorProcess, Workers
from sluice.model import NewMessage
from sluice.ops.connections import connection_add
from sluice.secrets import SecretBox, generate_key

pytestmark = pytest.mark.slow


def _fast(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config: str, rules: dict[str, float]
) -> dict[str, str]:
    """Worker environment: the evaluator every 0.3 s, clearing after 1 s, the rules'
    ``for`` as given; ``config`` is the rest of the ``sluice.toml``, in effect here too
    (the drafts read ``[alerts.for]``, the setup the providers it declares)."""
    path = tmp_path / "sluice.toml"
    lines = "".join(f"{name} = {s:g}\n" for name, s in rules.items())
    path.write_text(config + "[alerts.for]\n" + lines)
    monkeypatch.setenv("SLUICE_CONFIG", str(path))
    return {
        "SLUICE_CONFIG": str(path), "SLUICE_ALERTS_INTERVAL": "0.3",
        "SLUICE_ALERTS_CLEAR_FOR": "1", "SLUICE_METRICS_REFRESH": "0.1",
    }  # fmt: skip


def _credential(sim: SimulatorProcess, **spec: Any) -> None:
    httpx.post(f"{sim.url}/_sim/credentials", json=spec, timeout=5).raise_for_status()


def _scopes(sim: SimulatorProcess, token: str, scopes: list[str]) -> None:
    httpx.post(
        f"{sim.url}/_sim/credentials/scopes",
        json={"provider": "sendgrid", "token": token, "scopes": scopes},
        timeout=5,
    ).raise_for_status()


Conn = tuple[str, str, dict[str, str], list[str]]  # tenant, provider, secrets, scopes


def _connect(r: Replay, box: SecretBox, rows: list[Conn]) -> None:
    async def go(store: Any) -> None:
        for tenant, provider, secrets, scopes in rows:
            await connection_add(
                store, box, tenant=tenant, provider=provider, secrets=secrets, scopes=scopes,
                actor="setup",
            )  # fmt: skip

    on_store(r.url, go)


def _enqueue(r: Replay, messages: list[NewMessage]) -> list[str]:
    return list(on_store(r.url, lambda s: s.enqueue_many(messages)))


def _report(name: str, figures: dict[str, Any]) -> None:
    print(f"\nreplay {name}: " + json.dumps(figures, default=str))


# -- (1) seed 000: a scope removed mid-load ------------------------------------------------

TENANTS = ("acme-demo", "northern-labs", "globex")


def _emails(wave: int, per: int) -> list[NewMessage]:
    return [
        NewMessage(
            tenant=tenant, channel="email", provider="sendgrid",
            recipient=f"user{wave}-{i}@{tenant}.example", action="approval.requested",
            payload={"subject": "Approval waiting", "text": f"wave {wave} item {i}"},
            scopes=["mail.send"], max_attempts=3,
        )
        for tenant in TENANTS
        for i in range(per)
    ]  # fmt: skip


def test_seed_000__scope_removed_mid_load(
    clean_pg_url: str,
    tmp_path: Path,
    simulator: SimulatorProcess,
    workers: Workers,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = generate_key()
    r = Replay(clean_pg_url, tmp_path, env={"SLUICE_SECRET_KEY": key})
    r.sluice("migrate")
    for tenant in TENANTS:
        _credential(simulator, provider="sendgrid", api_key=f"SG.{tenant}", scopes=["mail.send"])
    _connect(r, SecretBox(key), [
        (t, "sendgrid", {"api_key": f"SG.{t}", "from_email": f"ops@{t}.example"}, ["mail.send"])
        for t in TENANTS
    ])  # fmt: skip
    env = _fast(tmp_path, monkeypatch, "", {})
    r.env.update(env)
    ids = _enqueue(r, _emails(1, 20))
    workers.start(
        r.url, simulator.secret, SLUICE_SECRET_KEY=key,
        SLUICE_SENDGRID_BASE_URL=f"{simulator.url}/sendgrid", SLUICE_WORKER_CONCURRENCY="10",
        **env,
    )  # fmt: skip
    wait_for("the first deliveries", lambda: simulator.summary()["unique"] >= 20)

    # The fault: the tenant admin's rotation drops the mail scope; load keeps coming.
    fault_at = now()
    _scopes(simulator, "SG.acme-demo", [])
    ids += _enqueue(r, _emails(2, 20))
    incident = r.wait_incident("SluiceConnectionNeedsReauth")
    assert incident.runbook == "001#token-revocation"
    assert incident.scope == {"provider": "sendgrid", "state": "needs_reconsent"}

    # Its diagnosis names the tenant whose grant is gone.
    shown = r.show(incident.id)
    d = shown["diagnosis"]
    assert d["runbook"] == "token-revoked"
    assert any("acme-demo" in c for c in d["causes"]), d["causes"]
    assert d["filled"]["tenant"] == "acme-demo" and d["filled"]["provider"] == "sendgrid"
    assert not any(t in " ".join(d["causes"]) for t in ("northern-labs", "globex"))

    # Containment, as printed: see the connection, revoke the grant.
    contain = [c["command"] for c in d["containment"]]
    assert contain == [
        "sluice connections list --tenant acme-demo",
        'sluice connections revoke --tenant acme-demo --provider sendgrid --reason "grant revoked"',
    ]
    assert "needs_reconsent" in r.run_printed(contain[0])
    r.run_printed(contain[1])
    contained_at = r.audit_at("connection.revoked")
    ids += _enqueue(r, _emails(3, 10))  # still more load after containment

    acme = {
        i for i, m in zip(ids, _emails(1, 20) + _emails(2, 20) + _emails(3, 10), strict=True)
        if m.tenant == "acme-demo"
    }  # fmt: skip

    def others_sent_acme_waiting() -> bool:
        s = r.statuses(ids)
        return all(s[i] == "sent" for i in ids if i not in acme) and all(
            s[i] in ("held", "sent") for i in acme
        )

    wait_for("the other tenants delivered, acme-demo held", others_sent_acme_waiting)
    statuses = r.statuses(ids)
    held = sum(1 for i in acme if statuses[i] == "held")
    assert held > 0 and sum(1 for s in statuses.values() if s == "dead") == 0
    after = requests_after(simulator.url, "/sendgrid", contained_at)
    sends_after = [q for q in after if q["status"] == 403 or q["key"] in acme]

    # Recovery, as printed: the admin re-consents, the credential is installed, the held
    # messages go out.
    _scopes(simulator, "SG.acme-demo", ["mail.send"])
    (tmp_path / "new-credentials.json").write_text(
        json.dumps({"api_key": "SG.acme-demo", "from_email": "ops@acme-demo.example"})
    )
    recover = [c["command"] for c in r.show(incident.id)["diagnosis"]["recovery"]]
    recovered_at = now()
    for line in recover:
        r.run_printed(line)
    wait_for("every message sent", lambda: set(r.statuses(ids).values()) == {"sent"})
    resolved = r.wait_resolved(incident.id)

    effects = effects_of(simulator.url, ids)
    assert sorted(effects) == sorted(ids) and set(effects.values()) == {1}  # lost 0, dup 0
    facts = r.check_postmortem(incident.id)
    assert facts.contained_at == contained_at  # the revoke is the draft's containment
    _report("seed-000", {
        "messages_in": len(ids), "effects_out": sum(effects.values()), "held": held,
        "dead": 0, "detect_s": seconds(fault_at, incident.opened_at),
        "sends_after_containment": len(sends_after),
        "resolve_s": seconds(incident.opened_at, resolved.resolved_at),
        "resolved_before_recovery": resolved.resolved_at < recovered_at,
        "draft": {c: n for c, n in facts.by_category.items() if n},
        "draft_contain_s": facts.contain_seconds, "draft_detect_s": facts.detect_seconds,
    })  # fmt: skip


# -- (2) seed 002 §2: invalid recipients grow the dead-letter queue ------------------------

N_DLQ, BAD = 150, 120  # SluiceDeadLettersHigh fires past 100 dead letters


def test_seed_002_2__invalid_recipients_grow_the_dlq(
    clean_pg_url: str,
    tmp_path: Path,
    simulator: SimulatorProcess,
    workers: Workers,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = generate_key()
    r = Replay(clean_pg_url, tmp_path, env={"SLUICE_SECRET_KEY": key})
    r.sluice("migrate")
    _credential(simulator, provider="sendgrid", api_key="SG.acme", scopes=["mail.send"])
    _connect(r, SecretBox(key), [
        ("acme", "sendgrid", {"api_key": "SG.acme", "from_email": "ops@acme.example"},
         ["mail.send"]),
    ])  # fmt: skip
    # A tenant imports a contact list whose addresses mostly do not exist.
    bad = [f"nobody{i}@gone.example" for i in range(BAD)]
    simulator.faults(provider="sendgrid", invalid_recipients=bad)
    env = _fast(tmp_path, monkeypatch, "", {"SluiceDeadLettersHigh": 1})
    r.env.update(env)
    messages = [
        NewMessage(
            tenant="acme", channel="email", provider="sendgrid",
            recipient=bad[i] if i < BAD else f"user{i}@acme.example", action="digest.weekly",
            payload={"subject": "Your week", "text": f"item {i}"}, max_attempts=3,
        )
        for i in range(N_DLQ)
    ]  # fmt: skip
    ids = _enqueue(r, messages)
    bad_ids = set(ids[:BAD])
    workers.start(
        r.url, simulator.secret, SLUICE_SECRET_KEY=key,
        SLUICE_SENDGRID_BASE_URL=f"{simulator.url}/sendgrid", SLUICE_WORKER_CONCURRENCY="20",
        **env,
    )  # fmt: skip

    incident = r.wait_incident("SluiceDeadLettersHigh")
    assert (incident.runbook, incident.severity, incident.scope) == ("002#2", "P1", {})
    refused = [q for q in requests_after(simulator.url, "/sendgrid")
               if q["status"] is not None and q["status"] >= 400]  # fmt: skip
    fault_at = min(datetime.fromisoformat(q["at"]) for q in refused)  # the first refusal

    # The diagnosis names the code and the channel; the containment lists what died.
    d = r.show(incident.id)["diagnosis"]
    assert d["runbook"] == "dlq-growth"
    assert any("INVALID_RECIPIENT" in c for c in d["causes"]), d["causes"]
    assert d["filled"]["error_code"] == "INVALID_RECIPIENT" and d["filled"]["channel"] == "email"
    contain = [c["command"] for c in d["containment"]]
    assert contain[0] == "sluice dlq list --channel email --error-code INVALID_RECIPIENT"
    for line in contain:
        r.run_printed(line)
    r.sluice("annotate", "tenant asked to clean its contact list", "--actor", "oncall:replay")
    contained_at = now()
    wait_for("every message final",
             lambda: not {"queued", "sending"} & set(r.statuses(ids).values()))  # fmt: skip
    statuses = r.statuses(ids)
    assert {statuses[i] for i in bad_ids} == {"dead"}
    assert {s for i, s in statuses.items() if i not in bad_ids} == {"sent"}
    # A dead letter is not tried again: nothing more reaches a bad address.
    again = [q for q in requests_after(simulator.url, "/sendgrid", contained_at)
             if q["status"] is not None and q["status"] >= 400]  # fmt: skip

    # Recovery, as printed: the letters no retry can deliver are closed (dry run first);
    # retrying them (the runbook's steps 1-2, for a cause fixed) is not what this needs.
    recover = [c["command"] for c in d["recovery"] if c["command"].startswith("sluice dlq cancel")]
    assert len(recover) == 2 and "--dry-run" in recover[0]
    assert str(BAD) in r.run_printed(recover[0])
    recovered_at = now()
    r.run_printed(recover[1])
    resolved = r.wait_resolved(incident.id)
    assert resolved.resolved_at > recovered_at

    statuses = r.statuses(ids)
    assert sum(1 for s in statuses.values() if s == "cancelled") == BAD
    effects = effects_of(simulator.url, ids)
    assert sorted(effects) == sorted(set(ids) - bad_ids) and set(effects.values()) == {1}
    facts = r.check_postmortem(incident.id)
    # Every letter is in the draft: its window starts at (not after) the first failure.
    cancelled = facts.by_category.get("cancelled", 0)
    assert cancelled == BAD and facts.by_category.get("dead", 0) == 0
    assert facts.top_errors[0][0] == "INVALID_RECIPIENT"
    # Detection is reckoned from the first failure, not the rule's own 5 min ``for``.
    assert facts.first_evidence is not None and facts.started == facts.first_evidence
    _report("seed-002-2", {
        "messages_in": len(ids), "effects_out": sum(effects.values()), "dead_peak": BAD,
        "cancelled": BAD, "draft_cancelled": cancelled,
        "detect_s": seconds(fault_at, incident.opened_at),
        "sends_after_containment": len(again),
        "resolve_s": seconds(incident.opened_at, resolved.resolved_at),
        "draft": {c: n for c, n in facts.by_category.items() if n},
        "draft_detect_s": facts.detect_seconds, "draft_contain_s": facts.contain_seconds,
    })  # fmt: skip


# -- (3) seed 002 §3 / 003 RB-09: a provider outage with failover ------------------------

PRIMARY, BACKUP = "AC" + "1" * 32, "AC" + "2" * 32


def _sms(wave: int, n: int) -> list[NewMessage]:
    return [
        NewMessage(tenant="acme", channel="sms", provider="twilio",
                   recipient=f"+1555{wave:03d}{i:04d}", payload={"body": f"code {wave}-{i}"})
        for i in range(n)
    ]  # fmt: skip


def test_seed_002_3__provider_outage_with_failover(
    clean_pg_url: str,
    tmp_path: Path,
    simulator: SimulatorProcess,
    workers: Workers,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = generate_key()
    r = Replay(clean_pg_url, tmp_path, env={"SLUICE_SECRET_KEY": key})
    r.sluice("migrate")
    env = _fast(
        tmp_path, monkeypatch,
        '[providers."twilio-backup"]\nkind = "twilio"\n\n'
        '[routes]\nsms = ["twilio", "twilio-backup"]\n\n',
        {"SluiceBreakerOpen": 1},
    )  # fmt: skip
    r.env.update(env)
    for sid in (PRIMARY, BACKUP):
        _credential(simulator, provider="twilio", account_sid=sid, auth_token=f"tok-{sid[-1]}")
    _connect(r, SecretBox(key), [
        ("acme", provider, {"account_sid": sid, "auth_token": f"tok-{sid[-1]}",
                            "from": "+15550001"}, [])
        for provider, sid in (("twilio", PRIMARY), ("twilio-backup", BACKUP))
    ])  # fmt: skip
    primary = f"/twilio/2010-04-01/Accounts/{PRIMARY}"
    ids = _enqueue(r, _sms(1, 20))
    workers.start(
        r.url, simulator.secret, SLUICE_SECRET_KEY=key,
        SLUICE_TWILIO_BASE_URL=f"{simulator.url}/twilio",
        SLUICE_STATUS_CALLBACK_URL=f"{simulator.url}/_sim/health",
        SLUICE_BREAKER_WINDOW="60", SLUICE_BREAKER_MIN_VOLUME="10",
        SLUICE_BREAKER_COOLDOWN="4", SLUICE_BREAKER_PROBES="2",
        SLUICE_RETRY_BASE="0.2", SLUICE_RETRY_CAP="1", SLUICE_WORKER_CONCURRENCY="5",
        **env,
    )  # fmt: skip
    wait_for("the first wave delivered", lambda: set(r.statuses(ids).values()) == {"sent"})

    # The fault: the primary account answers 503 for everything; load keeps coming.
    fault_at = now()
    simulator.faults(path_prefix=primary, status=503)
    ids += _enqueue(r, _sms(2, 40))
    # The provider's breaker and the tenant connection's both open; either may page first.
    incident = r.wait_incident("SluiceBreakerOpen")
    assert incident.scope["key"] in ("p:twilio", "c:acme:twilio"), incident.scope
    assert (incident.severity, incident.runbook) == ("P2", "001#provider-outage")

    # The diagnosis: twilio fails with 503s, its breaker is open, the backup carries.
    d = r.show(incident.id)["diagnosis"]
    assert d["runbook"] == "provider-outage"
    assert d["filled"]["provider"] == "twilio"
    causes = " ".join(d["causes"])
    assert "provider twilio is failing" in causes and "PROVIDER_UNAVAILABLE" in causes, causes
    assert re.search(r"breaker \S*twilio is open", causes), causes
    failover = next(f for f in d["findings"] if f["probe"] == "failover")
    assert failover["headline"] == "a failover route carries traffic", failover
    assert "twilio-backup sent" in failover["lines"][0], failover

    # Containment, as printed: hold the breaker open (no probe while the provider is down).
    contain = [c["command"] for c in d["containment"]]
    assert contain[0] == 'sluice breakers open p:twilio --reason "provider outage"'
    r.run_printed(contain[0])
    contained_at = r.audit_at("breaker.force_open")
    ids += _enqueue(r, _sms(3, 20))  # after containment: all of it through the backup
    wait_for("every message delivered through the backup",
             lambda: set(r.statuses(ids).values()) == {"sent"})  # fmt: skip
    to_primary = requests_after(simulator.url, primary, contained_at)

    # Recovery, as printed: the provider is back; the breaker is reset and closes.
    simulator.clear_faults()
    reset = next(c["command"] for c in d["recovery"] if "breakers reset" in c["command"])
    assert reset == 'sluice breakers reset p:twilio --reason "provider back up"'
    recovered_at = now()
    r.run_printed(reset)
    # The connection's breaker (c:acme:twilio) is not the one reset: it half-opens after
    # its cooldown and closes on its probes, which need traffic; load keeps coming.
    breaker_incidents = [i for i in r.incidents() if i.rule == "SluiceBreakerOpen"]
    wave = 4

    def all_resolved() -> bool:
        nonlocal wave
        if all(r.incident(i.id).state == "resolved" for i in breaker_incidents):
            return True
        ids.extend(_enqueue(r, _sms(wave, 2)))
        wave += 1
        return False

    wait_for("every breaker incident resolved", all_resolved)
    resolved = r.incident(incident.id)
    assert all(r.incident(i.id).resolved_at > recovered_at for i in breaker_incidents)
    ids += _enqueue(r, _sms(wave, 10))  # and the primary carries again
    wait_for("the last wave delivered", lambda: set(r.statuses(ids).values()) == {"sent"})
    back = [q for q in requests_after(simulator.url, primary, recovered_at) if q["status"] == 201]

    effects = effects_of(simulator.url, ids)
    assert sorted(effects) == sorted(ids) and set(effects.values()) == {1}  # lost 0, dup 0
    assert back, "the primary carries again after recovery"
    facts = r.check_postmortem(incident.id)
    failed_primary = [q for q in requests_after(simulator.url, primary) if q["status"] == 503]
    # The draft's window starts when the breaker opened (its rule's first signal); the
    # failures that tripped it came just before, the ones after it are the probes'.
    assert {code for code, _ in facts.top_errors} <= {"PROVIDER_UNAVAILABLE"}
    _report("seed-002-3", {
        "messages_in": len(ids), "effects_out": sum(effects.values()),
        "refused_by_primary": len(failed_primary),
        "detect_s": seconds(fault_at, incident.opened_at),
        "sends_after_containment": len(to_primary),
        "resolve_s": seconds(incident.opened_at, resolved.resolved_at),
        "incidents": [(i.scope["key"], seconds(fault_at, i.opened_at)) for i in breaker_incidents],
        "draft": {c: n for c, n in facts.by_category.items() if n},
        "draft_top_errors": facts.top_errors, "draft_detect_s": facts.detect_seconds,
        "draft_contain_s": facts.contain_seconds,
    })  # fmt: skip
