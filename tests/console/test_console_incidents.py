"""Incidents, runbooks and the audit log in a real Chromium: an incident is acknowledged,
noted and resolved from its page (audited as the person), its runbook's diagnosis runs
live, its evidence downloads as the archive the CLI writes, its postmortem draft shows;
the audit log filters, pages and shows its hash chain's verdict; hostile input gets a
clear message, never a 500."""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import psycopg
from console_rig import ConsoleServer, shot, sign_in
from playwright.sync_api import Page

from sluice.model import Attempt, AttemptOutcome, AuditEntry, Completion, NewMessage, Status
from sluice.store import Store
from sluice.store.base import Firing


@dataclass
class Seeded:
    open: str
    resolved: str


def _now() -> datetime:
    return datetime.now(UTC)


async def _dead_sms(store: Store, n: int) -> None:
    """``n`` sms messages dead of INVALID_RECIPIENT (what the incident is about)."""
    await store.enqueue_many([
        NewMessage(tenant="acme", channel="sms", provider="null", recipient=f"+1415555{i:04d}",
                   payload={"body": "x"}) for i in range(n)
    ])  # fmt: skip
    at = _now()
    claimed = await store.message_claim("w-1", n, 30, at)
    done = [Completion(m.id, m.claim_seq, "w-1", Status.DEAD,
                       Attempt(m.id, m.attempts, "w-1", "null", at, at, AttemptOutcome.FAILED,
                               error_code="INVALID_RECIPIENT"))
            for m in claimed]  # fmt: skip
    await store.message_complete_many("w-1", done, at)


async def seed(store: Store) -> Seeded:
    await _dead_sms(store, 3)
    old, _ = await store.incident_fire(
        Firing("SluiceQueueDepthHigh", {}, "P3", ("QUEUE",), "002#1", "queue deep", 900.0),
        _now() - timedelta(hours=2),
    )  # fmt: skip
    await store.incident_act(old.id, "resolve", actor="cli:bo", text="drained",
                             now=_now() - timedelta(hours=1))  # fmt: skip
    opened, _ = await store.incident_fire(
        Firing("SluiceDeadLetters", {"channel": "sms"}, "P2", ("QUEUE",), "000#remediation",
               "3 dead letters on sms", 3.0),
        _now() - timedelta(minutes=5),
    )  # fmt: skip
    await store.incident_notified(opened.id, "opened", _now() - timedelta(minutes=4))
    return Seeded(opened.id, old.id)


def _csrf(page: Page) -> str:
    return page.locator("form.who input[name=csrf]").input_value()


def _kinds(page: Page) -> list[str]:
    return page.locator("ol.timeline > li").evaluate_all("els => els.map(e => e.dataset.kind)")


async def _last_audit(store: Store) -> tuple[str, str, str | None, str | None]:
    [e] = await store.audit_list(1)
    return e.actor, e.action, e.target, e.reason


def test_an_incident_is_acknowledged_noted_and_resolved_from_its_page(
    console: ConsoleServer, page: Page
) -> None:
    s = console.run(seed)
    sign_in(page, console.url, console.key("ops"), name="ann")
    page.goto(console.url + "/incidents")
    assert page.locator("table.incidents").first.locator(f"tr[data-id='{s.open}']").count() == 1
    assert page.locator("table.incidents").nth(1).locator(f"tr[data-id='{s.resolved}']").count()
    shot(page, "incidents")
    page.goto(f"{console.url}/incidents/{s.open}?done=resolve")  # a link cannot fake a notice
    assert page.locator(".notice").count() == 0
    page.goto(console.url + "/incidents")
    page.click(f"tr[data-id='{s.open}'] a")
    page.wait_for_url(f"**/incidents/{s.open}")
    assert _kinds(page) == ["fired", "notified"]
    page.fill("form.act-ack input[name=text]", "on it: looking at sms")
    page.click("form.act-ack button")
    page.wait_for_url(f"**/incidents/{s.open}?done=ack")
    assert "console:ann" in page.locator(".notice").inner_text()
    assert "acknowledged" in page.locator("h1").inner_text()
    assert page.locator("form.act-ack").count() == 0
    assert console.run(_last_audit) == (
        "console:ann", "incident.ack", s.open, "on it: looking at sms"
    )  # fmt: skip
    page.fill("form.act-note textarea", "INVALID_RECIPIENT from one import")
    page.click("form.act-note button")
    page.wait_for_url(f"**/incidents/{s.open}?done=note")
    page.wait_for_selector("#diagnosis .diagnosis")
    shot(page, "incident")
    page.fill("form.act-resolve input[name=text]", "bad numbers cancelled")
    page.click("form.act-resolve button")
    page.wait_for_url(f"**/incidents/{s.open}?done=resolve")
    assert "resolved" in page.locator("h1").inner_text()
    assert _kinds(page) == ["fired", "notified", "acknowledged", "note", "resolved"]
    timeline = page.locator("ol.timeline").inner_text()
    assert "console:ann" in timeline and "bad numbers cancelled" in timeline
    assert console.run(_last_audit)[:2] == ("console:ann", "incident.resolve")
    assert page.locator("form.act-resolve").count() == 0


def test_the_diagnosis_runbook_postmortem_and_evidence(console: ConsoleServer, page: Page) -> None:
    s = console.run(seed)
    sign_in(page, console.url, console.key("ops"), name="ann")
    page.goto(f"{console.url}/incidents/{s.open}")
    page.wait_for_selector("#diagnosis .diagnosis")
    assert page.locator("#diagnosis ul.findings > li").count() >= 1
    # The evidence archive, as a download: it opens and holds the incident.
    with page.expect_download() as info:
        page.click("form[action$='/evidence'] button")
    download = info.value
    assert download.suggested_filename == f"evidence-{s.open}.tar.gz"
    with tarfile.open(download.path(), "r:gz") as tar:
        names = tar.getnames()
        member = tar.extractfile(f"evidence-{s.open}/incident.json")
        assert member is not None and json.load(member)["id"] == s.open
    assert f"evidence-{s.open}/manifest.json" in names
    assert console.run(_last_audit)[:3] == ("console:ann", "incident.evidence", s.open)
    r = page.request.post(f"{console.url}/incidents/{s.open}/evidence",
                          form={"csrf": _csrf(page)})  # fmt: skip
    assert r.status == 200 and r.headers["content-type"] == "application/gzip"
    with tarfile.open(fileobj=io.BytesIO(r.body()), mode="r:gz") as tar:
        assert f"evidence-{s.open}/README.md" in tar.getnames()
    r = page.request.post(f"{console.url}/incidents/{s.open}/evidence", form={"csrf": "forged"})
    assert r.status == 403
    # The postmortem draft.
    page.goto(f"{console.url}/incidents/{s.open}/postmortem")
    draft = page.locator("pre.postmortem").inner_text()
    assert "SluiceDeadLetters" in draft
    # The runbook the incident points to, with its steps and a live diagnosis.
    page.goto(f"{console.url}/incidents/{s.open}")
    page.click("dl.facts a[href^='/runbooks/']")
    page.wait_for_url("**/runbooks/scope-revoked")
    assert page.locator(".steps ol").count() >= 4
    page.fill("form.diagnose input[name=channel]", "sms")
    page.click("form.diagnose button")
    page.wait_for_load_state()
    assert page.locator(".diagnosis ul.findings > li").count() >= 1
    assert "channel=sms" in page.locator(".diagnosis").inner_text()
    shot(page, "runbook")
    page.goto(console.url + "/runbooks")
    assert page.locator("table.runbooks tr[data-id='provider-outage']").count() == 1


def _q(value: str) -> str:
    return quote(value.encode("utf-8", "surrogatepass"), safe="")


def test_hostile_input_on_incidents_and_runbooks_changes_nothing(
    console: ConsoleServer, page: Page
) -> None:
    s = console.run(seed)
    sign_in(page, console.url, console.key("ops"), name="ann")
    page.goto(f"{console.url}/incidents/{s.open}")
    csrf = _csrf(page)
    cases = [
        ("ack", "", 400, "reason: is required"),
        ("ack", "   ", 400, "reason: is required"),
        ("note", "x" * 10_000, 400, "text: is 10000 characters"),
        ("note", "bad\x00byte", 400, "text: must be printable"),
        ("close", "x", 404, "There is no act"),
    ]
    for act, text, status, said in cases:
        r = page.request.post(f"{console.url}/incidents/{s.open}/{act}",
                              form={"csrf": csrf, "text": text})  # fmt: skip
        assert r.status == status and said in r.text(), (act, text[:10], r.status)
    r = page.request.post(f"{console.url}/incidents/{s.resolved}/ack",
                          form={"csrf": csrf, "text": "late"})  # fmt: skip
    assert r.status == 400 and "only an open one is acknowledged" in r.text()
    r = page.request.post(f"{console.url}/incidents/{s.open}/ack", form={"text": "no csrf"})
    assert r.status == 403
    assert console.run(lambda st: st.incident_get(s.open)).state == "open"
    for path in ("/incidents/nope", "/incidents/" + _q("\ud800"), "/incidents/" + "x" * 10_000,
                 "/incidents/00000000-0000-0000-0000-000000000000/postmortem",
                 "/runbooks/nope", "/runbooks/" + _q("\ud800")):  # fmt: skip
        r = page.request.get(console.url + path)
        assert r.status == 404, path
    for query, said in [
        ("since=" + _q("\ud800"), "since: "), ("since=" + "x" * 10_000, "since: "),
        ("since=30d", "since: "), ("since=-5m", "since: "),
        ("tenant=" + "x" * 10_000, "tenant: "), ("provider=bad%00byte", "provider: "),
        ("channel=" + _q("\ud800"), None),
    ]:  # fmt: skip
        r = page.request.get(f"{console.url}/runbooks/provider-outage?diagnose=1&{query}")
        assert r.status in (200, 400), query[:20]
        if said:
            assert r.status == 400 and f'role="alert">{said}' in r.text(), query[:20]


# -- the audit log ---------------------------------------------------------------------


async def seed_audit(store: Store) -> None:
    at = _now() - timedelta(hours=3)
    entries = [
        AuditEntry(at, "cli:bo", "control.set", "tenant=acme", "stop acme", {"tenant": "acme"}),
        AuditEntry(at + timedelta(hours=2), "console:ann", "message.cancel", "message:x",
                   "asked", {"tenant": "globex"}),
    ]  # fmt: skip
    entries += [AuditEntry(at + timedelta(hours=2, seconds=i), "api:ops", "limit.set", f"l{i}",
                           "tune", {"tenant": "initech"}) for i in range(60)]  # fmt: skip
    for e in entries:
        await store.audit_append(e)


def _actors(page: Page) -> list[str]:
    return page.locator("table.audit tbody tr[data-id] td:nth-child(3)").all_inner_texts()


def test_the_audit_log_filters_pages_and_verifies(console: ConsoleServer, page: Page) -> None:
    console.run(seed_audit)
    sign_in(page, console.url, console.key("ops"), name="ann")
    page.goto(console.url + "/audit")
    page.wait_for_selector("#chain .chain-ok")
    assert "63 entries verified" in page.locator("#chain").inner_text()
    assert len(_actors(page)) == 50
    shot(page, "audit")
    page.click("a.next")
    page.wait_for_load_state()
    assert len(_actors(page)) == 13  # 62 and the key's api_key.create
    page.goto(console.url + "/audit")
    page.fill("input[name=actor]", "cli:bo")
    page.click("form.audit-search button")
    page.wait_for_load_state()
    assert _actors(page) == ["cli:bo"]
    for query, expected in [
        ("action=message.", ["console:ann"]),
        ("tenant=globex", ["console:ann"]),
        ("tenant=acme", ["cli:bo"]),
        ("since=2h&actor=cli:bo", []),
        ("action=control.&since=1d", ["cli:bo"]),
    ]:
        page.goto(f"{console.url}/audit?{query}")
        assert _actors(page) == expected, query


def test_a_broken_audit_chain_is_shown(console: ConsoleServer, page: Page) -> None:
    console.run(seed_audit)
    with psycopg.connect(console.database_url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")  # past the append-only trigger
        conn.execute("UPDATE sluice_audit SET reason = 'rewritten' WHERE id = 2")
    sign_in(page, console.url, console.key("ops"))
    page.goto(console.url + "/audit")
    page.wait_for_selector("#chain .chain-broken")
    assert "BROKEN at entry 2" in page.locator("#chain").inner_text()


def test_hostile_audit_filters_get_a_clear_message(console: ConsoleServer, page: Page) -> None:
    sign_in(page, console.url, console.key("ops"))
    for name in ("actor", "action", "tenant", "since", "cursor"):
        for value in ("\ud800", "x" * 10_000, "bad\x00byte", "<b>bold</b>"):
            r = page.request.get(f"{console.url}/audit?{name}={_q(value)}")
            assert r.status in (200, 400), (name, value[:10])
            assert "<b>bold</b>" not in r.text()
            if r.status == 400:
                assert f'role="alert">{name}: ' in r.text() or (
                    name == "cursor" and 'role="alert">cursor: ' in r.text()
                ), (name, value[:10])
    page.goto(console.url + "/audit?since=yesterday")
    assert page.locator(".error").inner_text().startswith("since: ")
    page.goto(console.url + "/audit?since=2026-01-01T00:00:00")
    assert "needs a timezone" in page.locator(".error").inner_text()


def test_a_tenant_key_cannot_open_incidents_runbooks_or_the_audit_log(
    console: ConsoleServer, page: Page
) -> None:
    s = console.run(seed)
    sign_in(page, console.url, console.key("acme-key", "tenant", "acme"))
    for path in ("/incidents", f"/incidents/{s.open}", f"/incidents/{s.open}/postmortem",
                 f"/incidents/{s.open}/diagnosis", "/runbooks", "/runbooks/provider-outage",
                 "/audit", "/audit/verify"):  # fmt: skip
        r = page.request.get(console.url + path)
        assert r.status == 403, path
    page.goto(console.url + "/incidents")
    r = page.request.post(f"{console.url}/incidents/{s.open}/ack",
                          form={"csrf": _csrf(page), "text": "mine now"})  # fmt: skip
    assert r.status == 403
    r = page.request.post(f"{console.url}/incidents/{s.open}/evidence", form={"csrf": _csrf(page)})
    assert r.status == 403
    assert console.run(lambda st: st.incident_get(s.open)).state == "open"
