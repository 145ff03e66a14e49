"""The Connections page in a real Chromium — state, scopes, credential version, last
check, days to expiry, a check run from the page against the provider simulator, what to
do about a connection that is not active — and no secret on ANY console page: a crawler
follows every link from every nav entry of a signed-in operator and searches each page's
HTML for every secret configured."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from console_rig import ConsoleServer, shot, sign_in
from playwright.sync_api import BrowserContext, Page

from sluice.connections import ConnectionState
from sluice.model import NewMessage
from sluice.ops.connections import connection_add
from sluice.providers.simulator import SimulatorThread
from sluice.secrets import SecretBox, generate_key
from sluice.store import Store

SID = "AC" + "5" * 32
TOKEN = "tok-twilio-Q7x9-never-shown"
SENDGRID_KEY = "SG.sendgrid-secret-Zz81-never-shown"
WHATSAPP_TOKEN = "EAAG-whatsapp-token-Kp3-never-shown"
WEBHOOK_SECRET = "whsec_" + "c2VjcmV0LXdlYmhvb2stbmV2ZXItc2hvd24="
SECRET_KEY = generate_key()


@pytest.fixture
def sim() -> Iterator[SimulatorThread]:
    with SimulatorThread(WEBHOOK_SECRET) as running:
        httpx.post(f"{running.url}/_sim/credentials", timeout=5,
                   json={"provider": "twilio", "account_sid": SID, "auth_token": TOKEN},
                   ).raise_for_status()  # fmt: skip
        yield running


@pytest.fixture
def console(clean_pg_url: str, sim: SimulatorThread) -> Iterator[ConsoleServer]:
    server = ConsoleServer(
        clean_pg_url, secret_key=SECRET_KEY, webhook_secret=WEBHOOK_SECRET,
        twilio_base_url=f"{sim.url}/twilio", sendgrid_base_url=f"{sim.url}/sendgrid",
    )  # fmt: skip
    server.start()
    yield server
    server.stop()


def _connect(console: ConsoleServer) -> None:
    box = SecretBox(SECRET_KEY)
    expires = datetime.now(UTC) + timedelta(days=3, hours=1)

    async def go(store: Store) -> None:
        await store.enqueue_many(
            [NewMessage(tenant="acme", channel="sms", provider="null", recipient="+15550001111")]
        )
        await connection_add(store, box, tenant="acme", provider="twilio",
                             secrets={"account_sid": SID, "auth_token": TOKEN}, scopes=[],
                             expires_at=expires, actor="test")  # fmt: skip
        await connection_add(store, box, tenant="globex", provider="sendgrid",
                             secrets={"api_key": SENDGRID_KEY, "from_email": "a@globex.example"},
                             scopes=["mail.send", "templates.read"], actor="test")  # fmt: skip
        await store.connection_set_state(
            "globex", "sendgrid", ConnectionState.NEEDS_RECONSENT,
            "403: scope templates.read missing", ["templates.read"], datetime.now(UTC), "test",
        )  # fmt: skip
        await connection_add(store, box, tenant="initech", provider="whatsapp",
                             secrets={"access_token": WHATSAPP_TOKEN, "phone_number_id": "1555"},
                             scopes=["whatsapp_business_messaging"], actor="test")  # fmt: skip
        await store.connection_set_state(
            "initech", "whatsapp", ConnectionState.PENDING_REAUTH, "401 from the provider",
            [], datetime.now(UTC), "test",
        )  # fmt: skip

    console.run(go)


def test_connections_show_state_and_advice_and_a_check_runs_from_the_page(
    console: ConsoleServer, page: Page
) -> None:
    _connect(console)
    sign_in(page, console.url, console.key("ops"), name="cy")
    page.goto(console.url + "/connections")
    acme = page.locator("tr[data-connection='acme/twilio']")
    assert acme.get_attribute("data-state") == "active"
    assert "never" in acme.inner_text() and "3.0" in acme.inner_text()
    assert "expires in 3.0 days" in acme.inner_text()
    globex = page.locator("tr[data-connection='globex/sendgrid']")
    assert globex.get_attribute("data-state") == "needs_reconsent"
    assert "no longer grants templates.read" in globex.inner_text()
    assert "missing: templates.read" in globex.inner_text()
    initech = page.locator("tr[data-connection='initech/whatsapp']")
    assert initech.get_attribute("data-state") == "pending_reauth"
    assert "Ask initech to sign in to whatsapp again" in initech.inner_text()
    acme.locator("button").click()
    page.wait_for_load_state()
    assert page.locator("tr[data-check='acme/twilio']").get_attribute("data-ok") == "yes"
    assert "account active" in page.locator("#checks").inner_text()
    assert "1 checked, 0 failed" in page.locator(".notice").inner_text()
    row = page.locator("tr[data-connection='acme/twilio']")
    assert "ok" in row.locator("td").nth(5).inner_text()
    shot(page, "connections")
    for secret in (TOKEN, SENDGRID_KEY, WHATSAPP_TOKEN, SECRET_KEY, WEBHOOK_SECRET):
        assert secret not in page.content()


def test_check_with_bad_names_is_refused(
    console: ConsoleServer, page: Page, context: BrowserContext
) -> None:
    _connect(console)
    sign_in(page, console.url, console.key("ops"))
    page.goto(console.url + "/connections")
    cookies = {c["name"]: c["value"] for c in context.cookies()}
    csrf = page.locator("#check-all input[name=csrf]").get_attribute("value")
    for tenant, says in (("nobody", "no connection matches"), ("t" * 300, "at most 128"),
                         ("a\x00b", "NUL")):  # fmt: skip
        r = httpx.post(console.url + "/connections/check", cookies=cookies,
                       data={"csrf": csrf, "tenant": tenant})  # fmt: skip
        assert r.status_code in (400, 404) and says in r.text, (tenant, r.text[:300])


# -- no secret on any page ---------------------------------------------------------------

_LINK = re.compile(r'(?:href|hx-get)="([^"]+)"')
_SKIP = ("/static/", "/docs", "/redoc", "/openapi.json", "/logout", "/login")


def _crawl(base: str, cookies: dict[str, str], starts: list[str], cap: int = 400) -> dict[str, str]:
    """Every page reachable from ``starts`` by following links and htmx GETs on this
    site: path → HTML (whatever its status)."""
    seen: dict[str, str] = {}
    todo = list(starts)
    with httpx.Client(base_url=base, cookies=cookies, timeout=20) as client:
        while todo and len(seen) < cap:
            path = todo.pop(0)
            if path in seen:
                continue
            html = client.get(path).text
            seen[path] = html
            for link in _LINK.findall(html):
                target = urlsplit(urljoin(base + path, link.replace("&amp;", "&")))
                if target.netloc != urlsplit(base).netloc or target.path.startswith(_SKIP):
                    continue
                full = target.path + (f"?{target.query}" if target.query else "")
                if full not in seen:
                    todo.append(full)
    return seen


def test_no_console_page_shows_a_secret(console: ConsoleServer, page: Page,
                                        context: BrowserContext) -> None:  # fmt: skip
    _connect(console)
    tenant_token = console.key("acme-key", "tenant", "acme")
    operator_token = console.key("ops")
    sign_in(page, console.url, operator_token, name="dee")
    nav = [a.get_attribute("href") or "" for a in page.locator("header.top nav a").all()]
    assert "/connections" in nav and "/controls" in nav and "/limits" in nav
    cookies = {c["name"]: c["value"] for c in context.cookies()}
    pages = _crawl(console.url, cookies, nav)
    assert {"/connections", "/controls", "/limits"} <= set(pages)
    secrets = {
        "twilio auth token": TOKEN, "sendgrid key": SENDGRID_KEY, "whatsapp": WHATSAPP_TOKEN,
        "SLUICE_SECRET_KEY": SECRET_KEY, "webhook secret": WEBHOOK_SECRET,
        "operator key": operator_token.split(".", 1)[1],
        "tenant key": tenant_token.split(".", 1)[1],
        "session cookie": cookies["sluice_session"],
    }  # fmt: skip
    leaks = [(path, what) for path, html in pages.items() for what, s in secrets.items()
             if s in html]  # fmt: skip
    assert leaks == [], leaks
    assert len(pages) >= 3


def test_a_tenant_key_opens_none_of_the_operator_pages(
    console: ConsoleServer, page: Page, context: BrowserContext
) -> None:
    _connect(console)
    sign_in(page, console.url, console.key("acme-key", "tenant", "acme"))
    for path in ("/controls", "/limits", "/connections"):
        response = page.goto(console.url + path)
        assert response is not None and response.status == 403, path
        assert TOKEN not in page.content()
    cookies = {c["name"]: c["value"] for c in context.cookies()}
    csrf = page.locator("form.who input[name=csrf]").get_attribute("value")
    for path in ("/connections/check", "/limits", "/breakers", "/throttles/clear"):
        r = httpx.post(console.url + path, cookies=cookies, data={"csrf": csrf, "reason": "x"})
        assert r.status_code == 403, path
