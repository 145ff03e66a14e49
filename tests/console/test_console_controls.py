"""The Controls page in a real Chromium: controls by scope, kill / pause / shadow /
approval / resume with a reason and an expiry (audited as ``console:<name>``), the
workers' acknowledgements after a change, and hostile input refused with nothing changed."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest
from console_rig import ConsoleServer, shot, sign_in
from playwright.sync_api import BrowserContext, Page

from sluice.model import NewMessage
from sluice.store import Store
from sluice.store.base import AuditFilter


def _seed(console: ConsoleServer, *tenants: str) -> None:
    async def go(store: Store) -> None:
        await store.enqueue_many(
            [NewMessage(tenant=t, channel="sms", provider="null", recipient="+15550001111")
             for t in tenants]
        )  # fmt: skip

    console.run(go)


def _controls(console: ConsoleServer) -> list[tuple[str, str, str, str]]:
    async def go(store: Store) -> list[tuple[str, str, str, str]]:
        return [(str(c.scope), c.mode.value, c.actor, c.reason) for c in await store.control_list()]

    return console.run(go)


def _audit(console: ConsoleServer, prefix: str) -> list[tuple[str, str | None]]:
    async def go(store: Store) -> list[tuple[str, str | None]]:
        rows = await store.audit_list(100, AuditFilter(action=prefix))
        return [(r.actor, r.reason) for r in rows]

    return console.run(go)


def _set(page: Page, verb: str, reason: str, expires: str = "", **scope: str) -> None:
    form = page.locator("form#set-control")
    form.locator("select[name=verb]").select_option(verb)
    for name in ("tenant", "channel", "provider", "action"):
        form.locator(f"input[name={name}]").fill(scope.get(name, ""))
    form.locator("input[name=expires]").fill(expires)
    form.locator("input[name=reason]").fill(reason)
    form.locator("button[type=submit]").click()
    page.wait_for_load_state()


@pytest.fixture
def signed_in(console: ConsoleServer, page: Page) -> Page:
    _seed(console, "acme", "globex")
    sign_in(page, console.url, console.key("ops"), name="ann")
    page.goto(console.url + "/controls")
    return page


def test_kill_pause_shadow_approval_and_resume_from_the_page(
    console: ConsoleServer, signed_in: Page
) -> None:
    page = signed_in
    assert page.locator("#no-controls").is_visible()
    _set(page, "kill", "RB-10 loop at acme", "2h", tenant="acme")
    assert "tenant=acme: killed until" in page.locator(".notice").first.inner_text()
    _set(page, "pause", "provider outage", provider="null")
    _set(page, "shadow", "trying a new template", action="promo")
    _set(page, "approval", "new tenant, fail closed", tenant="globex", channel="sms")
    _set(page, "kill", "stop everything", "15m")
    rows = page.locator("table.controls tbody tr")
    assert [rows.nth(i).get_attribute("data-scope") for i in range(rows.count())] == [
        "global", "tenant=acme", "provider=null", "action=promo", "tenant=globex channel=sms"
    ]  # fmt: skip
    acme = page.locator("tr[data-scope='tenant=acme']")
    assert "killed" in acme.inner_text() and "in 1 h 59 min" in acme.inner_text()
    assert "console:ann" in acme.inner_text() and "RB-10 loop at acme" in acme.inner_text()
    shot(page, "controls")
    assert sorted(_controls(console)) == sorted([
        ("tenant=acme", "killed", "console:ann", "RB-10 loop at acme"),
        ("provider=null", "paused", "console:ann", "provider outage"),
        ("action=promo", "shadow", "console:ann", "trying a new template"),
        ("tenant=globex channel=sms", "approval", "console:ann", "new tenant, fail closed"),
        ("global", "killed", "console:ann", "stop everything"),
    ])  # fmt: skip
    acme.locator("input[name=reason]").fill("loop fixed")
    acme.locator("button").click()
    page.wait_for_load_state()
    assert "tenant=acme: control lifted (was killed)" in page.locator(".notice").inner_text()
    assert page.locator("tr[data-scope='tenant=acme']").count() == 0
    assert ("console:ann", "loop fixed") in _audit(console, "control.")
    assert len(_controls(console)) == 4


def test_after_a_kill_the_page_shows_each_workers_acknowledgement(
    console: ConsoleServer, signed_in: Page
) -> None:
    page = signed_in

    async def two_workers(store: Store) -> None:
        for n in (1, 2):
            await store.worker_heartbeat(f"w-{n}", "host-a", 100 + n, 0, 0, datetime.now(UTC))

    console.run(two_workers)
    _set(page, "kill", "RB-10", tenant="acme")
    panel = page.locator("#acks")
    assert panel.get_attribute("data-complete") == "no"
    assert page.locator("tr[data-worker='w-1'][data-ack='waiting']").is_visible()

    async def ack(store: Store) -> None:
        version = await store.flow_version()
        for n in (1, 2):
            await store.worker_ack(f"w-{n}", version, datetime.now(UTC))

    console.run(ack)
    page.wait_for_selector("#acks[data-complete='yes']")
    assert page.locator("tr[data-ack='acknowledged']").count() == 2
    assert "Acknowledged by 2/2 live workers" in page.locator("#acks").inner_text()


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("expires", "abc", "is not a duration"),
        ("expires", "-5m", "must be a positive duration"),
        ("expires", "1e309", "must be a positive duration"),
        ("expires", "400d", "longer than 366 days"),
        ("reason", "x" * 10_000, "reason: is 10,000 characters; at most 1,000"),
        ("tenant", "acme<script>alert(1)</script>", "knows no tenant"),
        ("tenant", "nobody-ever", "knows no tenant"),
        ("tenant", "t" * 300, "tenant: is 300 characters"),
    ],
)
def test_hostile_values_are_refused_and_nothing_changes(
    console: ConsoleServer, signed_in: Page, field: str, value: str, says: str
) -> None:
    page = signed_in
    fields = {"tenant": "acme", "expires": "1h", "reason": "why not"}
    fields[field] = value
    _set(page, "kill", fields["reason"], fields["expires"], tenant=fields["tenant"])
    assert says in page.locator(".error").inner_text()
    assert "Nothing was changed" in page.locator(".error").inner_text()
    assert _controls(console) == []
    assert page.locator("script:has-text('alert(1)')").count() == 0


def test_raw_posts_with_bad_fields_change_nothing(
    console: ConsoleServer, signed_in: Page, context: BrowserContext
) -> None:
    cookies = {c["name"]: c["value"] for c in context.cookies()}
    csrf = signed_in.locator("form#set-control input[name=csrf]").get_attribute("value")
    post = lambda body: httpx.post(  # noqa: E731
        console.url + "/controls", cookies=cookies, content=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )  # fmt: skip
    base = f"csrf={csrf}&verb=kill&tenant=acme"
    cases = [
        (base + "&reason=", "reason: is required"),
        (base + "&reason=%ED%A0%80", "reason: must be valid Unicode"),  # a lone surrogate
        (base + "&reason=%FF%FE", "reason: must be valid Unicode"),  # not UTF-8 at all
        (base + "&reason=x%00y", "reason: must not contain NUL"),
        (f"csrf={csrf}&verb=obliterate&reason=x", "verb: must be one of"),
        (f"csrf={csrf}&verb=kill&tenant=%20acme&reason=x", "must not start or end with spaces"),
        (base + "&reason=ok&expires=nan", "must be a positive duration"),
    ]
    for body, says in cases:
        r = post(body)
        assert r.status_code == 400 and says in r.text, (body, r.status_code)
    assert _controls(console) == []
    r = httpx.post(console.url + "/controls/resume", cookies=cookies,
                   data={"csrf": csrf, "tenant": "acme", "reason": "x"})  # fmt: skip
    assert r.status_code == 404 and "no control is set on scope tenant=acme" in r.text
    r = httpx.post(console.url + "/controls", cookies=cookies,
                   data={"csrf": "forged", "verb": "kill", "reason": "x"})  # fmt: skip
    assert r.status_code == 403 and _controls(console) == []


def test_a_tenant_key_can_neither_see_nor_set_controls(
    console: ConsoleServer, page: Page, context: BrowserContext
) -> None:
    _seed(console, "acme")
    sign_in(page, console.url, console.key("acme-key", "tenant", "acme"))
    response = page.goto(console.url + "/controls")
    assert response is not None and response.status == 403
    cookies = {c["name"]: c["value"] for c in context.cookies()}
    csrf = page.locator("form.who input[name=csrf]").get_attribute("value")
    r = httpx.post(console.url + "/controls", cookies=cookies,
                   data={"csrf": csrf, "verb": "kill", "reason": "x"})  # fmt: skip
    assert r.status_code == 403 and _controls(console) == []
