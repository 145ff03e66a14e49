"""The messages pages in a real Chromium: the search narrows by each filter, a message's
timeline shows every kind of event in order, cancel asks for a reason and is audited as
the person, and hostile input gets a clear message, never a 500."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, urlencode

import pytest
from console_rig import ConsoleServer, shot, sign_in
from playwright.sync_api import Page

from sluice.flow.controls import Mode, Scope
from sluice.model import Attempt, AttemptOutcome, Completion, Message, NewMessage, Status
from sluice.ops.controls import control_set, held_release
from sluice.store import MessageFilter, Store
from sluice.store.base import InboxItem, Receipt

SECRET = "sk_live_do_not_show_4f9a1c"


@dataclass
class Seeded:
    timeline: str  # enqueued, failed, held and released, sent, delivered
    order: str  # acme sms order.created corr-A, queued
    invoice: str  # acme email invoice.sent, queued
    globex: str  # globex sms twilio, queued
    dead: str  # acme sms INVALID_RECIPIENT, dead
    held: str  # globex sms, held now


def _now() -> datetime:
    return datetime.now(UTC)


def _sms(tenant: str, n: int, **kw: object) -> NewMessage:
    return NewMessage(tenant=tenant, channel="sms", provider=str(kw.pop("provider", "null")),
                      recipient=f"+1415555{n:04d}", payload={"body": f"m{n}"}, **kw)  # type: ignore[arg-type]  # fmt: skip


async def _claim(store: Store, worker: str) -> tuple[Message, str]:
    [m] = await store.message_claim(worker, 1, 30, _now())
    return m, worker


async def _done(store: Store, claimed: tuple[Message, str], status: Status,
                outcome: AttemptOutcome | None = None, **kw: object) -> None:  # fmt: skip
    """The worker's verdict on a claimed message, with an attempt of ``outcome``."""
    (m, worker), at = claimed, _now()
    attempt = None
    if outcome is not None:
        attempt = Attempt(
            m.id, m.attempts, worker, m.provider, at - timedelta(milliseconds=90), at, outcome,
            error_code=kw.pop("code", None), provider_status=kw.pop("pstatus", None),  # type: ignore[arg-type]
            latency_ms=90.0,
        )  # fmt: skip
    done = Completion(m.id, m.claim_seq, worker, status, attempt, **kw)  # type: ignore[arg-type]
    await store.message_complete_many(worker, [done], at)


async def _receipt(store: Store, mid: str, status: str) -> None:
    at = _now()
    item = InboxItem(
        id=0, provider="null", event_id=f"e-{mid}", kind="receipt", status=status, message_id=mid,
        provider_message_id=f"PM-{mid}", occurred_at=at, error_code=None, detail=None,
        address=None, data={}, received_at=at,
    )  # fmt: skip
    await store.inbox_put([item], at)
    [claimed] = await store.inbox_claim("ingress-1", 1, 30, at)
    await store.inbox_finish(
        claimed.id, claimed.attempts, "", at, Receipt(mid, "null", status, at, at)
    )


async def seed(store: Store) -> Seeded:
    payload = {"body": "<script>alert('x')</script> hello", "api_key": SECRET,
               "link": f"https://user:{SECRET}@example.com/p?token={SECRET}"}  # fmt: skip
    [tl] = await store.enqueue_many([NewMessage(
        tenant="acme", channel="sms", provider="null", recipient="+14155550001", payload=payload,
        action="order.created", correlation_id="corr-T",
    )])  # fmt: skip
    m = await _claim(store, "w-1")
    await _done(store, m, Status.QUEUED, AttemptOutcome.FAILED, code="TIMEOUT", pstatus="503",
                run_at=_now())  # fmt: skip
    m = await _claim(store, "w-1")
    await _done(store, m, Status.HELD, None, hold_reason="approval: acme needs approval")
    await held_release(store, MessageFilter(), [tl], actor="cli:bo", reason="looked at it")
    m = await _claim(store, "w-2")
    await _done(store, m, Status.SENT, AttemptOutcome.SENT, pstatus="accepted",
                provider_message_id=f"PM-{tl}")  # fmt: skip
    await _receipt(store, tl, "delivered")

    [dead] = await store.enqueue_many([_sms("acme", 2)])
    m = await _claim(store, "w-1")
    await _done(store, m, Status.DEAD, AttemptOutcome.FAILED, code="INVALID_RECIPIENT")
    [held] = await store.enqueue_many([_sms("globex", 3)])
    m = await _claim(store, "w-1")  # then the kill, which the worker heeds before sending
    await control_set(store, Scope.of(tenant="globex"), Mode.KILLED, actor="cli:cy",
                      reason="globex loops", wait=False)  # fmt: skip
    await _done(store, m, Status.HELD, None, hold_reason="control: globex killed")
    order, invoice, globex = await store.enqueue_many([
        _sms("acme", 4, action="order.created", correlation_id="corr-A"),
        NewMessage(tenant="acme", channel="email", provider="null", recipient="a@example.com",
                   payload={"subject": "s", "text": "t"}, action="invoice.sent"),
        _sms("globex", 5, provider="twilio"),
    ])  # fmt: skip
    return Seeded(tl, order, invoice, globex, dead, held)


def _ids(page: Page) -> set[str]:
    return set(page.locator("table.messages tbody tr[data-id]").evaluate_all(
        "rows => rows.map(r => r.dataset.id)"))  # fmt: skip


@pytest.fixture
def seeded(console: ConsoleServer, page: Page) -> Seeded:
    s = console.run(seed)
    sign_in(page, console.url, console.key("ops"), name="ann")
    return s


def test_search_narrows_by_each_filter(console: ConsoleServer, page: Page, seeded: Seeded) -> None:
    s = seeded
    everything = {s.timeline, s.order, s.invoice, s.globex, s.dead, s.held}
    page.goto(console.url + "/messages")
    assert _ids(page) == everything
    shot(page, "messages")
    # Through the form, as a person would: tenant, then status too.
    page.fill("input[name=tenant]", "acme")
    page.click("form.messages-search button[type=submit]")
    page.wait_for_load_state()
    assert _ids(page) == {s.timeline, s.order, s.invoice, s.dead}
    page.select_option("select[name=status]", "dead")
    page.click("form.messages-search button[type=submit]")
    page.wait_for_load_state()
    assert _ids(page) == {s.dead}
    later = (_now() + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    cases: list[tuple[dict[str, str], set[str]]] = [
        ({"id": s.order}, {s.order}),
        ({"id": s.order, "tenant": "globex"}, set()),
        ({"channel": "email"}, {s.invoice}),
        ({"provider": "twilio"}, {s.globex}),
        ({"action": "order.created"}, {s.timeline, s.order}),
        ({"error_code": "INVALID_RECIPIENT"}, {s.dead}),
        ({"correlation_id": "corr-A"}, {s.order}),
        ({"status": "held"}, {s.held}),
        ({"status": "delivered"}, {s.timeline}),
        ({"since": "1h"}, everything),
        ({"since": later}, set()),
        ({"until": later}, everything),
        ({"until": "2020-01-01T00:00:00Z"}, set()),
    ]
    for query, expected in cases:
        page.goto(f"{console.url}/messages?{urlencode(query)}")
        assert _ids(page) == expected, query
    page.goto(console.url + "/messages?limit=25")
    assert page.locator("a.next").count() == 0  # six messages: one page


def test_search_pages_by_cursor(console: ConsoleServer, page: Page, seeded: Seeded) -> None:
    async def more(store: Store) -> None:
        await store.enqueue_many([_sms("initech", n) for n in range(30)])

    console.run(more)
    page.goto(console.url + "/messages?tenant=initech&limit=25")
    first = _ids(page)
    assert len(first) == 25
    page.click("a.next")
    page.wait_for_load_state()
    second = _ids(page)
    assert len(second) == 5 and not first & second
    assert "tenant=initech" in page.url


def test_the_timeline_shows_each_kind_of_event_in_order(console: ConsoleServer, page: Page,
                                                        seeded: Seeded) -> None:  # fmt: skip
    page.goto(f"{console.url}/messages/{seeded.timeline}")
    items = page.locator("ol.timeline > li")
    assert _kinds(page) == ["enqueued", "attempt", "audit", "attempt", "receipt"]
    times = items.locator("time").evaluate_all("els => els.map(e => e.getAttribute('datetime'))")
    assert times == sorted(times)
    text = page.locator("ol.timeline").inner_text()
    for expected in ("attempt 1: failed", "TIMEOUT", "503", "90 ms", "w-1",
                     "held.release by cli:bo", "looked at it", ": sent", "w-2",
                     "receipt: delivered"):  # fmt: skip
        assert expected in text, expected
    html = page.content()
    assert SECRET not in html  # a secret-named field, a URL's password and query: redacted
    assert "&lt;script&gt;" in html and "<script>alert" not in html
    assert page.locator("form.cancel").count() == 0  # delivered: nothing to cancel
    shot(page, "message-timeline")
    page.goto(f"{console.url}/messages/{seeded.held}")
    assert _kinds(page) == ["enqueued", "control", "held"]
    held = page.locator("ol.timeline").inner_text()
    assert "control.set (killed) on tenant=globex by cli:cy" in held and "globex loops" in held
    assert "held: control: globex killed" in held
    page.goto(f"{console.url}/messages/{seeded.dead}")
    assert "INVALID_RECIPIENT" in page.locator("ol.timeline").inner_text()


def _kinds(page: Page) -> list[str]:
    return page.locator("ol.timeline > li").evaluate_all("els => els.map(e => e.dataset.kind)")


def _csrf(page: Page) -> str:
    return page.locator("form.who input[name=csrf]").input_value()


def test_cancel_asks_a_reason_and_is_audited_as_the_person(console: ConsoleServer, page: Page,
                                                          seeded: Seeded) -> None:  # fmt: skip
    page.goto(f"{console.url}/messages/{seeded.order}")
    page.fill("form.cancel input[name=reason]", "   ")  # past the browser's check; blank
    page.click("form.cancel button")
    page.wait_for_load_state()
    assert "reason: is required" in page.locator(".error").inner_text()
    assert console.run(lambda st: st.message_get(seeded.order)).status is Status.QUEUED
    page.fill("form.cancel input[name=reason]", "customer asked")
    page.click("form.cancel button")
    page.wait_for_url(f"**/messages/{seeded.order}?done=cancelled")
    assert "console:ann" in page.locator(".notice").inner_text()
    assert "cancelled" in page.locator("h1").inner_text()
    assert page.locator("form.cancel").count() == 0
    events = page.locator("ol.timeline").inner_text()
    assert "message.cancel by console:ann" in events and "customer asked" in events

    async def last_audit(store: Store) -> tuple[str, str, str | None, str | None]:
        [e] = await store.audit_list(1)
        return e.actor, e.action, e.target, e.reason

    assert console.run(last_audit) == (
        "console:ann",
        "message.cancel",
        f"message:{seeded.order}",
        "customer asked",
    )


def test_cancel_is_refused_for_a_sent_message(console: ConsoleServer, page: Page,
                                             seeded: Seeded) -> None:  # fmt: skip
    page.goto(f"{console.url}/messages/{seeded.timeline}")
    assert page.locator("form.cancel").count() == 0
    r = page.request.post(f"{console.url}/messages/{seeded.timeline}/cancel",
                          form={"csrf": _csrf(page), "reason": "try anyway"})  # fmt: skip
    assert r.status == 409
    assert "only queued, held, dead messages can be cancelled" in r.text()
    assert console.run(lambda st: st.message_get(seeded.timeline)).status is Status.DELIVERED
    r = page.request.post(f"{console.url}/messages/{seeded.dead}/cancel",
                          form={"reason": "no csrf"})  # fmt: skip
    assert r.status == 403
    assert console.run(lambda st: st.message_get(seeded.dead)).status is Status.DEAD


HOSTILE = ["\ud800", "x" * 10_000, "bad\x00byte", "' OR 1=1 --", "<b>bold</b>"]
FIELDS = ["id", "tenant", "channel", "provider", "action", "error_code", "correlation_id",
          "status", "since", "until", "limit", "cursor"]  # fmt: skip


def _q(value: str) -> str:
    """Percent-encoded as a browser would send it (a lone surrogate as raw bytes)."""
    return quote(value.encode("utf-8", "surrogatepass"), safe="")


def test_hostile_filters_get_a_clear_message_never_a_500(console: ConsoleServer, page: Page,
                                                         seeded: Seeded) -> None:  # fmt: skip
    for name in FIELDS:
        for value in HOSTILE:
            r = page.request.get(f"{console.url}/messages?{name}={_q(value)}")
            assert r.status in (200, 400), (name, value[:20], r.status)
            body = r.text()
            assert "<b>bold</b>" not in body
            if r.status == 400:
                assert f'<p class="error" role="alert">{name}: ' in body, (name, value[:20])
    bad = {"status": "closed", "since": "yesterday", "until": "2026-13-45", "limit": "abc",
           "cursor": "nope", "id": "not-an-id"}  # fmt: skip
    for name, value in bad.items():
        page.goto(f"{console.url}/messages?{name}={value}")
        assert page.locator(".error").inner_text().startswith(f"{name}: "), name
    for extreme in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "3650d", "0d"):
        for name in ("since", "until"):
            r = page.request.get(f"{console.url}/messages?{name}={_q(extreme)}")
            assert r.status in (200, 400), (name, extreme)
    page.goto(console.url + "/messages?since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z")
    assert "until: must be after since" in page.locator(".error").inner_text()
    page.goto(console.url + "/messages")
    page.fill("input[name=tenant]", "\ud800")
    page.click("form.messages-search button[type=submit]")
    page.wait_for_load_state()
    assert page.locator("h1").inner_text() == "Messages"
    for path in ("/messages/nope", "/messages/" + _q("\ud800"), "/messages/" + "x" * 10_000,
                 "/messages/00000000-0000-0000-0000-000000000000"):  # fmt: skip
        r = page.request.get(console.url + path)
        assert r.status == 404, path
        assert "There is no message" in r.text()
    page.goto(console.url + "/messages/00000000-0000-0000-0000-000000000000")
    assert "There is no message" in page.locator(".error").inner_text()


def test_hostile_cancel_reasons_change_nothing(console: ConsoleServer, page: Page,
                                              seeded: Seeded) -> None:  # fmt: skip
    page.goto(f"{console.url}/messages/{seeded.order}")
    for reason in ["", "x" * 10_000, "bad\x00byte"]:
        r = page.request.post(f"{console.url}/messages/{seeded.order}/cancel",
                              form={"csrf": _csrf(page), "reason": reason})  # fmt: skip
        assert r.status == 400 and "reason: " in r.text(), reason[:10]
    assert console.run(lambda st: st.message_get(seeded.order)).status is Status.QUEUED


def test_a_tenant_key_cannot_open_the_operator_messages_pages(console: ConsoleServer, page: Page,
                                                             seeded: Seeded) -> None:  # fmt: skip
    page.context.clear_cookies()
    sign_in(page, console.url, console.key("acme-key", "tenant", "acme"))
    for path in ("/messages", f"/messages/{seeded.order}"):
        r = page.goto(console.url + path)
        assert r is not None and r.status == 403
