"""Signing in and out of the console in a real Chromium: API keys, one-time links,
sessions that end, CSRF on every act, and what a tenant's key cannot open."""

from __future__ import annotations

import httpx
from console_rig import ConsoleServer, shot, sign_in
from playwright.sync_api import BrowserContext, Page

from sluice.console.sessions import login_link
from sluice.store import Store


def test_an_operator_signs_in_sees_the_overview_and_signs_out(
    console: ConsoleServer, page: Page, context: BrowserContext
) -> None:
    page.goto(console.url + "/")
    assert page.url.startswith(console.url + "/login")
    shot(page, "login")
    sign_in(page, console.url, console.key("ops"), name="ann")
    assert page.url == console.url + "/"
    assert page.locator("h1").inner_text() == "Overview"
    assert "console:ann" in page.locator("form.who").inner_text()
    [cookie] = [c for c in context.cookies() if c["name"] == "sluice_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    page.click("form.who button")
    page.wait_for_url(console.url + "/login")
    page.goto(console.url + "/")
    assert page.url.startswith(console.url + "/login")  # refused after signing out


def test_a_stolen_cookie_opens_nothing_after_logout(console: ConsoleServer, page: Page,
                                                    context: BrowserContext) -> None:  # fmt: skip
    sign_in(page, console.url, console.key("ops"))
    [cookie] = [c for c in context.cookies() if c["name"] == "sluice_session"]
    page.click("form.who button")
    page.wait_for_url(console.url + "/login")
    r = httpx.get(console.url + "/", cookies={"sluice_session": cookie["value"]})
    assert r.status_code == 303 and r.headers["location"].startswith("/login")


def test_a_wrong_key_is_refused_with_the_reason(console: ConsoleServer, page: Page) -> None:
    sign_in(page, console.url, "sk_0123456789abcdef." + "x" * 43)
    assert "is not a valid API key" in page.locator(".error").inner_text()
    sign_in(page, console.url, "hunter2")
    assert "is not an API key" in page.locator(".error").inner_text()
    sign_in(page, console.url, console.key("ops"), name="no spaces allowed")
    assert "name" in page.locator(".error").inner_text()


def test_a_revoked_key_ends_its_sessions(console: ConsoleServer, page: Page) -> None:
    token = console.key("ops")
    sign_in(page, console.url, token)
    key_id = token[3:19]

    async def revoke(store: Store) -> None:
        from sluice.ops.apikeys import api_key_revoke

        await api_key_revoke(store, key_id, actor="test")

    console.run(revoke)
    deadline_reloads = 0
    while deadline_reloads < 40:  # the server's key cache forgets within 5 s
        page.goto(console.url + "/")
        if page.url.startswith(console.url + "/login"):
            break
        page.wait_for_timeout(250)
        deadline_reloads += 1
    assert page.url.startswith(console.url + "/login")


def test_the_one_time_link_signs_in_once(console: ConsoleServer, page: Page, browser) -> None:  # type: ignore[no-untyped-def]
    token = console.key("run-key")

    async def link(store: Store) -> str:
        key = await store.api_key_get(token[3:19])
        return await login_link(store, key, "console:operator", (await _now()))

    ticket = console.run(link)
    page.goto(f"{console.url}/login/link?t={ticket}")
    page.click("button[type=submit]")
    page.wait_for_url(console.url + "/")
    assert "console:operator" in page.locator("form.who").inner_text()
    other = browser.new_context().new_page()
    other.goto(f"{console.url}/login/link?t={ticket}")
    other.click("button[type=submit]")
    assert "used already or has expired" in other.locator(".error").inner_text()
    other.context.close()


async def _now():  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    return datetime.now(UTC)


def test_acts_without_the_csrf_token_are_refused(console: ConsoleServer, page: Page,
                                                 context: BrowserContext) -> None:  # fmt: skip
    sign_in(page, console.url, console.key("ops"))
    cookies = {c["name"]: c["value"] for c in context.cookies()}
    r = httpx.post(console.url + "/logout", cookies=cookies, data={"csrf": "forged"})
    assert r.status_code == 403
    r = httpx.post(console.url + "/logout", cookies=cookies,
                   headers={"Origin": "https://evil.example"})  # fmt: skip
    assert r.status_code == 403
    page.goto(console.url + "/")
    assert page.locator("h1").inner_text() == "Overview"  # still signed in


def test_a_tenant_key_gets_403_on_operator_pages(console: ConsoleServer, page: Page) -> None:
    sign_in(page, console.url, console.key("acme-key", "tenant", "acme"))
    response = page.goto(console.url + "/")
    assert response is not None and response.status == 403
    assert "for operators" in page.locator(".error").inner_text()


def test_next_never_leaves_the_site(console: ConsoleServer, page: Page) -> None:
    page.goto(console.url + "/login?next=//evil.example/x")
    page.fill("input[name=key]", console.key("ops"))
    page.click("button[type=submit]")
    page.wait_for_load_state()
    assert page.url == console.url + "/"


def test_docs_render_offline_from_this_server(console: ConsoleServer, page: Page,
                                              context: BrowserContext) -> None:  # fmt: skip
    outside: list[str] = []
    context.route(
        "**/*",
        lambda route: (
            route.continue_()
            if route.request.url.startswith(console.url)
            else (outside.append(route.request.url), route.abort())[1]
        ),
    )
    page.goto(console.url + "/docs")
    page.wait_for_selector(".swagger-ui .info .title", timeout=60_000)  # 1.7 MB of script
    assert "Sluice" in page.locator(".swagger-ui .info .title").inner_text()
    page.goto(console.url + "/redoc")
    page.wait_for_selector("h1")
    assert outside == []
