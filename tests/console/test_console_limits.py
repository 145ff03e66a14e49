"""The Limits page in a real Chromium: limits with their use as bars coloured at
70/85/95 %, set and clear; breakers with their window's figures, forced open and
closed, reset; throttles active now, cleared — each act audited as ``console:<name>``,
and bad input refused with nothing changed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
import structlog
from console_rig import ConsoleServer, shot, sign_in
from playwright.sync_api import BrowserContext, Page

from sluice.clock import SystemClock
from sluice.config import Settings
from sluice.flow.limits import parse_limits
from sluice.model import Message, NewMessage, Status
from sluice.store import Store
from sluice.store.base import AuditFilter
from sluice.worker.limits import Limiter

QUOTA = {"kind": "quota", "provider": "null", "limit": 100, "window": "1d"}


def _message(n: int) -> Message:
    return Message(
        id=f"m{n:05d}", tenant="acme", channel="sms", provider="null", action="send",
        recipient=f"+1555000{n:04d}", payload={}, priority=0, status=Status.SENDING,
        run_at=datetime.now(UTC), attempts=1, max_attempts=5,
    )  # fmt: skip


def _use_quota(console: ConsoleServer, count: int) -> None:
    """Spend ``count`` of the quota as a worker's limiter would."""

    async def go(store: Store) -> None:
        limiter = Limiter(
            store, Settings(database_url=console.database_url), parse_limits([QUOTA]),
            clock=SystemClock(), logger=structlog.get_logger("test"), worker_id="w1",
        )  # fmt: skip
        go_, _, _ = await limiter.admit([_message(n) for n in range(count)])
        assert len(go_) == count

    console.run(go)


def _audit(console: ConsoleServer, prefix: str) -> list[tuple[str, str, str | None]]:
    async def go(store: Store) -> list[tuple[str, str, str | None]]:
        rows = await store.audit_list(100, AuditFilter(action=prefix))
        return [(r.action, r.actor, r.reason) for r in rows]

    return console.run(go)


def _breaker_and_throttle(console: ConsoleServer) -> None:
    """A provider breaker with 10 outcomes (4 failed) in its window, and a throttle."""
    now = datetime.now(UTC)

    async def go(store: Store) -> None:
        await store.breaker_report({("p:null", int(now.timestamp())): (6, 4)}, {}, now)
        until = now + timedelta(minutes=10)
        await store.throttle_set("acme", "null", until, "429 from provider", now)

    console.run(go)


@pytest.fixture
def limits_page(console: ConsoleServer, page: Page) -> Page:
    async def seed(store: Store) -> None:
        await store.enqueue_many(
            [NewMessage(tenant="acme", channel="sms", provider="null", recipient="+15550001111")]
        )

    console.run(seed)
    sign_in(page, console.url, console.key("ops"), name="bo")
    page.goto(console.url + "/limits")
    return page


def _submit(page: Page, form: str, **values: str) -> None:
    f = page.locator(form)
    for name, value in values.items():
        if name == "kind":
            f.locator("select[name=kind]").select_option(value)
        else:
            f.locator(f"input[name={name}]").fill(value)
    f.locator("button[type=submit]").first.click()
    page.wait_for_load_state()


def test_set_a_quota_see_its_use_as_a_coloured_bar_and_clear_it(
    console: ConsoleServer, limits_page: Page
) -> None:
    page = limits_page
    assert page.locator("#no-limits").is_visible()
    _submit(page, "#set-limit", kind="quota", provider="null", limit="100", window="1d",
            reason="provider quota 100/day")  # fmt: skip
    assert "quota(provider=null) set" in page.locator(".notice").inner_text()
    _submit(page, "#set-limit", kind="rate", tenant="acme", rate="5", reason="acme is noisy")
    for used, band in ((72, "b70"), (14, "b85"), (10, "b95")):
        _use_quota(console, used)
        page.goto(console.url + "/limits")
        bar = page.locator("tr[data-limit='quota(provider=null)'] .bar")
        assert band in (bar.get_attribute("class") or ""), (used, bar.get_attribute("class"))
    row = page.locator("tr[data-limit='quota(provider=null)']")
    assert "96 / 100 (96 %)" in row.inner_text()
    assert "5/s, burst 5" in page.locator("tr[data-limit='rate(tenant=acme)']").inner_text()
    _breaker_and_throttle(console)
    page.goto(console.url + "/limits")
    shot(page, "limits")
    row.locator("input[name=reason]").fill("quota raised by the provider")
    row.locator("button").click()
    page.wait_for_load_state()
    assert "run-time quota limit cleared" in page.locator(".notice").inner_text()
    assert page.locator("tr[data-limit='quota(provider=null)']").count() == 0
    assert [a for a in _audit(console, "limit.") if a[1] == "console:bo"] == [
        ("limit.clear", "console:bo", "quota raised by the provider"),
        ("limit.set", "console:bo", "acme is noisy"),
        ("limit.set", "console:bo", "provider quota 100/day"),
    ]


@pytest.mark.parametrize(
    ("values", "says"),
    [
        ({"kind": "quota", "limit": "abc", "window": "1d"}, "limit: 'abc' is not a whole number"),
        ({"kind": "quota", "limit": "-5", "window": "1d"}, "must be a positive, finite number"),
        ({"kind": "rate", "rate": "1e309"}, "must be a positive, finite number"),
        ({"kind": "quota", "limit": "10", "window": "soon"}, "is not a duration"),
        ({"kind": "quota", "limit": "10"}, "a quota limit needs window"),
        ({"kind": "rate", "rate": "5", "tenant": "nobody<b>x</b>"}, "knows no tenant"),
        ({"kind": "rate", "rate": "5", "reason": "r" * 10_000}, "at most 1,000"),
    ],
)
def test_bad_limits_are_refused_and_nothing_changes(
    console: ConsoleServer, limits_page: Page, values: dict[str, str], says: str
) -> None:
    values = {"reason": "why", **values}
    _submit(limits_page, "#set-limit", **values)
    error = limits_page.locator(".error").inner_text()
    assert says in error and "Nothing was changed" in error
    assert console.run(lambda s: s.limit_list()) == []


def test_breakers_force_open_close_and_reset_with_their_window_figures(
    console: ConsoleServer, limits_page: Page
) -> None:
    page = limits_page
    _breaker_and_throttle(console)
    page.goto(console.url + "/limits")
    row = page.locator("tr[data-breaker='p:null']")
    cells = row.locator("td")
    assert [cells.nth(i).inner_text() for i in (2, 3, 4)] == ["10", "4", "40 %"]
    row.locator("input[name=reason]").fill("provider says outage")
    row.locator("button[value=open]").click()
    page.wait_for_load_state()
    assert "breaker p:null: open (forced)" in page.locator(".notice").inner_text()
    assert page.locator("tr[data-breaker='p:null']").get_attribute("data-state") == "open"
    row = page.locator("tr[data-breaker='p:null']")
    row.locator("input[name=reason]").fill("outage over")
    row.locator("button[value=reset]").click()
    page.wait_for_load_state()
    assert page.locator("tr[data-breaker='p:null']").get_attribute("data-state") == "closed"
    _submit(page, "#force-breaker", key="twillio", reason="typo")
    assert "is not a breaker of any provider" in page.locator(".error").inner_text()
    _submit(page, "#force-breaker", key="p:null", reason="x" * 10_000)
    assert "at most 1,000" in page.locator(".error").inner_text()
    actions = [(a, who) for a, who, _ in _audit(console, "breaker.")]
    assert actions == [("breaker.reset", "console:bo"), ("breaker.force_open", "console:bo")]


def test_throttles_active_now_are_listed_and_cleared(
    console: ConsoleServer, limits_page: Page
) -> None:
    page = limits_page
    _breaker_and_throttle(console)
    page.goto(console.url + "/limits")
    row = page.locator("tr[data-throttle='acme/null']")
    assert "429 from provider" in row.inner_text()
    row.locator("input[name=reason]").fill("provider lifted it")
    row.locator("button").click()
    page.wait_for_load_state()
    assert "1 throttles cleared, audited as console:bo" in page.locator(".notice").inner_text()
    assert page.locator("#no-throttles").is_visible()


def test_an_act_a_two_person_rule_holds_is_filed_not_done(clean_pg_url: str, page: Page) -> None:
    console = ConsoleServer(clean_pg_url, two_person=("limit.set",))
    console.start()
    try:
        sign_in(page, console.url, console.key("ops"), name="fay")
        page.goto(console.url + "/limits")
        _submit(page, "#set-limit", kind="rate", provider="null", rate="5", reason="slow down")
        notice = page.locator(".notice").inner_text()
        assert "Filed as request" in notice and "waits for a second operator" in notice
        assert console.run(lambda s: s.limit_list()) == []
        assert page.locator("#no-limits").is_visible()
    finally:
        console.stop()


def test_raw_posts_with_broken_text_change_nothing(
    console: ConsoleServer, limits_page: Page, context: BrowserContext
) -> None:
    cookies = {c["name"]: c["value"] for c in context.cookies()}
    csrf = limits_page.locator("#set-limit input[name=csrf]").get_attribute("value")
    cases = [
        ("/limits", "kind=rate&rate=5&tenant=%ED%A0%80&reason=x", "tenant: must be valid Unicode"),
        ("/limits", "kind=rate&rate=5&reason=a%00b", "reason: must not contain NUL"),
        ("/limits", "kind=nonsense&reason=x", "kind: must be one of"),
        ("/limits/clear", "kind=rate&reason=x", "no run-time rate limit"),
        ("/breakers", "key=p:null&verb=explode&reason=x", "verb: must be open, close or reset"),
        ("/breakers", "key=&verb=open&reason=x", "key: is required"),
        ("/throttles/clear", "reason=x", "name a tenant and/or a provider"),
    ]
    for path, body, says in cases:
        r = httpx.post(console.url + path, cookies=cookies, content=f"csrf={csrf}&{body}",
                       headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
        assert r.status_code in (400, 404) and says in r.text, (path, body, r.text[:300])
    assert console.run(lambda s: s.limit_list()) == []
    assert _audit(console, "breaker.") == [] and _audit(console, "limit.") == []
