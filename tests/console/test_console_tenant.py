"""The tenant's view in a real Chromium: a tenant key sees its own messages, why each
one not sent waits and what would release it, its endpoints and connections, and
retries its dead letters within the operator's limits; nothing of another tenant, no
operator page; an operator opens any tenant's view."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from console_rig import ConsoleServer, shot, sign_in
from playwright.sync_api import BrowserContext, Page

from sluice.connections import Connection, ConnectionState, hold_reason
from sluice.flow.controls import Control, Mode, Scope, control_hold_reason
from sluice.model import Attempt, AttemptOutcome, AuditEntry, Completion, NewMessage, Status
from sluice.ops.controls import control_set
from sluice.ops.endpoints import endpoint_disable
from sluice.store import Store, create_store
from sluice.store.endpoints import EndpointReport, hold_text

OPERATOR_PAGES = ["/messages", "/dlq", "/held", "/controls", "/limits", "/connections",
                  "/incidents", "/audit", "/tenants"]  # fmt: skip


@dataclass
class Seeded:
    """The ids of what ``_seed`` made, by what they show."""

    ids: dict[str, str] = field(default_factory=dict)
    dead: list[str] = field(default_factory=list)
    other_tenant: str = ""


def _sms(tenant: str, n: int, provider: str = "null", **more: object) -> NewMessage:
    return NewMessage(tenant=tenant, channel="sms", provider=provider,
                      recipient=f"+1555000{n:04d}", **more)  # type: ignore[arg-type]  # fmt: skip


async def _settle(
    store: Store, msg: NewMessage, status: Status, failed_before: int = 0, **how: object
) -> str:
    """Enqueue ``msg`` and bring it to ``status`` as a worker would (claim, complete),
    after ``failed_before`` failed attempts that put it back in the queue."""
    [mid] = await store.enqueue_many([msg])
    for n in range(failed_before):
        await _complete(store, mid, Status.QUEUED, _failure(n + 1), run_at=datetime.now(UTC))
    code = how.pop("code", None)
    attempt = None
    if code is not None:
        attempt = _failure(failed_before + 1, str(code))
    elif status is Status.SENT:
        attempt = replace(
            _failure(failed_before + 1), outcome=AttemptOutcome.SENT, error_code=None,
            error_class=None, provider_status="accepted",
        )  # fmt: skip
    await _complete(store, mid, status, attempt, **how)
    return mid


def _failure(n: int, code: str = "TIMEOUT") -> Attempt:
    now = datetime.now(UTC)
    return Attempt("", n, "w-test", "", now, now, AttemptOutcome.FAILED, error_code=code,
                   error_class="permanent", provider_status="500", latency_ms=41.0 + n)  # fmt: skip


async def _complete(
    store: Store, mid: str, status: Status, attempt: Attempt | None, **how: object
) -> None:
    now = datetime.now(UTC)
    [claimed] = await store.message_claim("w-test", 1, 30, now)
    assert claimed.id == mid
    if attempt is not None:
        attempt = replace(attempt, message_id=mid, provider=claimed.provider)
    refund = attempt is None  # held, suppressed, expired: no provider call, no attempt spent
    done = Completion(mid, claimed.claim_seq, "w-test", status, attempt, refund_attempt=refund,
                      **how)  # type: ignore[arg-type]  # fmt: skip
    await store.message_complete_many("w-test", [done], now)


def _kill(scope: Scope) -> str:
    control = Control("c", scope, Mode.KILLED, "cli:ann", "globex broke something",
                      datetime.now(UTC), None, 1)  # fmt: skip
    return control_hold_reason(control)


async def _seed(store: Store) -> Seeded:
    s = Seeded()
    now = datetime.now(UTC)
    conn = Connection(
        id="0193f0c2-0000-7000-8000-00000000c0c0", tenant="acme", provider="twilio",
        state=ConnectionState.ACTIVE, state_reason=None, state_changed_at=now,
        scopes=["sms.send"], missing_scopes=[], ciphertext=b"sealed", key_id="k1",
        credential_version=1,
        expires_at=now + timedelta(days=20), last_check_at=None, last_check_ok_at=None,
        last_check_error=None, created_at=now, updated_at=now,
    )  # fmt: skip
    # First: a new connection releases the messages held for want of it.
    await store.connection_insert(conn, AuditEntry(now, "test", "connection.add"))
    await store.connection_set_state(
        "acme", "twilio", ConnectionState.NEEDS_RECONSENT, "403: scope sms.mms missing",
        ["sms.mms"], now, "test",
    )  # fmt: skip
    s.other_tenant = await _settle(store, _sms("globex", 99), Status.DEAD, code="TIMEOUT")
    s.ids["sent"] = await _settle(store, _sms("acme", 1), Status.SENT)
    s.ids["approval"] = await _settle(store, _sms("acme", 2), Status.HELD,
        hold_reason="control:approval (tenant=acme) by cli:ann: new tenant")  # fmt: skip
    s.ids["kill"] = await _settle(store, _sms("acme", 3), Status.HELD, failed_before=2,
                                  hold_reason=_kill(Scope.of(tenant="acme")))  # fmt: skip
    s.ids["limit"] = await _settle(store, _sms("acme", 4), Status.HELD,
        hold_reason="limit: recipient acme 3/1h reached; release or cancel to decide")  # fmt: skip
    s.ids["scope"] = await _settle(store, _sms("acme", 5, "twilio"), Status.HELD,
        hold_reason=hold_reason("scope not granted: sms.mms (re-consent needed)"))  # fmt: skip
    s.ids["endpoint"] = await _settle(
        store, NewMessage(tenant="acme", channel="webhook", provider="webhook",
                          recipient="https://hooks.acme.example/in"),
        Status.HELD, hold_reason=hold_text("hooks.acme.example", "disabled by ops: broken"),
    )  # fmt: skip
    s.ids["suppressed"] = await _settle(store, _sms("acme", 6), Status.SUPPRESSED,
        error_code="RECIPIENT_SUPPRESSED", error="on the list")  # fmt: skip
    s.ids["expired"] = await _settle(store, _sms("acme", 7, ttl=600), Status.EXPIRED)
    for n in range(5):
        s.dead.append(await _settle(store, _sms("acme", 10 + n), Status.DEAD, code="TIMEOUT"))
    s.ids["dead"] = s.dead[0]
    s.ids["invalid"] = await _settle(store, _sms("acme", 20), Status.DEAD,
                                     code="INVALID_RECIPIENT")  # fmt: skip
    report = EndpointReport("acme", "hooks.acme.example", "webhook", failed=3,
                            last_failed_at=now, streak_from=now, error="TIMEOUT")  # fmt: skip
    await store.endpoint_report([report], now, 3600)
    [ep] = await store.endpoint_list(tenant="acme")
    await endpoint_disable(store, ep.id, actor="cli:ann", reason="broken")
    await control_set(store, Scope.of(tenant="acme", channel="push"), Mode.PAUSED,
                      actor="cli:ann", reason="push vendor trouble", wait=False)  # fmt: skip
    s.ids["paused"] = (await store.enqueue_many([NewMessage(
        tenant="acme", channel="push", provider="null", recipient="device-1")]))[0]  # fmt: skip
    return s


@pytest.fixture
def tight(clean_pg_url: str) -> Iterator[ConsoleServer]:
    """A server whose operator lets tenants retry 3 dead letters an act, 4 an hour."""
    server = ConsoleServer(clean_pg_url, tenant_retry_max=3, tenant_retry_per_hour=4)
    server.start()
    yield server
    server.stop()


def _acme(page: Page, console: ConsoleServer) -> Seeded:
    seeded = console.run(_seed)
    sign_in(page, console.url, console.key("acme-key", "tenant", "acme"), name="amy")
    return seeded


def _status(page: Page, url: str) -> int:
    response = page.goto(url)
    assert response is not None
    return response.status


# -- what a tenant sees ----------------------------------------------------------------


def test_a_tenant_sees_and_searches_its_own_messages_with_why_each_is_not_sent(
    tight: ConsoleServer, page: Page
) -> None:
    s = _acme(page, tight)
    assert page.url == f"{tight.url}/tenant/acme"
    rows = page.locator("table.tenant-messages tbody tr")
    shown = {rows.nth(i).get_attribute("data-id") for i in range(rows.count())}
    assert shown == {*s.ids.values(), *s.dead} and s.other_tenant not in shown
    assert "globex" not in page.content()

    def why(kind: str) -> str:
        return page.locator(f"tr[data-id='{s.ids[kind]}'] td.why").inner_text()

    assert why("sent") == ""
    assert "wait for an operator's approval" in why("approval")
    assert "an operator approves it" in why("approval")
    assert "stopped by a kill on your tenant" in why("kill")
    assert "the kill on your tenant is lifted" in why("kill")
    assert "recipient acme 3/1h" in why("limit") and "an operator releases it" in why("limit")
    assert "(sms.mms): re-consent is needed" in why("scope")
    assert "re-consent at twilio: grant Sluice the missing scope (sms.mms)" in why("scope")
    assert "endpoint hooks.acme.example was disabled (by an operator)" in why("endpoint")
    assert "re-enabled once it answers again" in why("endpoint")
    assert "suppression list" in why("suppressed")
    assert "never sends late" in why("expired")
    assert "the provider did not answer in time (TIMEOUT)" in why("dead")
    assert "retry it from your dead letters" in why("dead")
    assert "correct the recipient and send a new message" in why("invalid")
    assert "sending is paused on your tenant's channel push" in why("paused")
    assert "globex broke something" not in page.content()  # an operator's words stay theirs
    shot(page, "tenant")
    # The search: by status, channel and time.
    page.select_option("select[name=status]", "held")
    page.click("form.filters button[type=submit]")
    page.wait_for_load_state()
    ids = page.locator("table.tenant-messages tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.id)"
    )
    assert set(ids) == {s.ids[k] for k in ("approval", "kill", "limit", "scope", "endpoint")}
    page.goto(f"{tight.url}/tenant/acme?channel=webhook&since=1h")
    assert page.locator("table.tenant-messages tbody tr").count() == 1
    page.goto(f"{tight.url}/tenant/acme?since=yesterday")
    assert "since: 'yesterday' is neither an ISO time" in page.locator(".error").inner_text()
    page.goto(f"{tight.url}/tenant/acme?status=lost")
    assert "status: 'lost' is not one of" in page.locator(".error").inner_text()


def test_a_message_timeline_what_releases_it_and_the_endpoints_and_connections(
    tight: ConsoleServer, page: Page
) -> None:
    s = _acme(page, tight)
    page.click(f"tr[data-id='{s.ids['scope']}'] a")
    page.wait_for_url(f"**/tenant/acme/messages/{s.ids['scope']}")
    box = page.locator(".why-box").inner_text()
    assert "Why it is not sent: your twilio connection lacks a permission" in box
    assert "What would release it: re-consent at twilio" in box
    assert "Enqueued" in page.locator("ol.timeline").inner_text()
    assert "hold (operator)" not in page.content()  # the raw hold text is the operator's
    page.goto(f"{tight.url}/tenant/acme/messages/{s.ids['kill']}")
    timeline = page.locator("ol.timeline").inner_text()
    assert "Attempt 1" in timeline and "Attempt 2" in timeline and "Held" in timeline
    assert "the kill on your tenant is lifted" in page.locator(".why-box").inner_text()
    shot(page, "tenant-message")
    page.goto(f"{tight.url}/tenant/acme/messages/{s.ids['dead']}")
    timeline = page.locator("ol.timeline").inner_text()
    assert "Attempt 1" in timeline and "TIMEOUT: the provider did not answer in time" in timeline
    assert "Dead letter" in timeline
    # Its endpoints and connections: what to do, and never a secret.
    page.click("nav.tabs >> text=Endpoints and connections")
    page.wait_for_url("**/tenant/acme/health")
    endpoint = page.locator("tr[data-endpoint='hooks.acme.example']").inner_text()
    assert "disabled" in endpoint and "an operator then re-enables it" in endpoint
    conn = page.locator("tr[data-provider='twilio']").inner_text()
    assert "needs_reconsent" in conn and "missing: sms.mms" in conn
    assert "Re-consent at twilio: grant Sluice the scope sms.mms" in conn
    assert "sealed" not in page.content() and "k1" not in page.content()
    shot(page, "tenant-health")


# -- nothing of another tenant, no operator page -----------------------------------------


def test_another_tenants_things_are_404_operator_pages_403_bad_searches_422(
    tight: ConsoleServer, page: Page, context: BrowserContext
) -> None:
    s = _acme(page, tight)
    assert _status(page, f"{tight.url}/tenant/globex") == 404
    for sub in ("/dlq", "/health", f"/messages/{s.other_tenant}"):
        assert _status(page, f"{tight.url}/tenant/globex{sub}") == 404
    assert _status(page, f"{tight.url}/tenant/acme/messages/{s.other_tenant}") == 404
    assert "no such message" in page.locator(".error").inner_text()
    assert _status(page, f"{tight.url}/tenant/acme/messages/not-an-id") == 404
    assert _status(page, f"{tight.url}/") == 403
    for path in OPERATOR_PAGES:  # pages other helpers build: 404 until they are merged
        assert _status(page, tight.url + path) in (403, 404), path
    assert _status(page, f"{tight.url}/tenants") == 403  # this one is ours: exactly 403
    assert page.locator("nav.tabs").count() == 0
    # No operator control on its own pages: the only forms are its search and DLQ retry.
    for sub in ("", "/dlq", "/health"):
        page.goto(f"{tight.url}/tenant/acme{sub}")
        forms = page.locator("main form").evaluate_all("fs => fs.map(f => f.action)")
        assert all("/tenant/acme/dlq/" in a or a.endswith("/tenant/acme") for a in forms), forms
    # Bad searches: a clear error, no listing.
    cookies = _cookies(context)
    for query in ("channel=%ED%A0%80", "channel=" + "x" * 10_000, "cursor=zz",
                  "since=99999999999d", "status=%00"):  # fmt: skip
        r = httpx.get(f"{tight.url}/tenant/acme?{query}", cookies=cookies)
        assert r.status_code == 422 and 'class="error"' in r.text, query[:40]


# -- dead letters: the tenant's own retry ------------------------------------------------


def _preview(page: Page, limit: str, group: str = "") -> None:
    page.select_option("select[name=group]", group)
    page.fill("input[name=limit]", limit)
    page.click("section.retry button.secondary")
    page.wait_for_load_state()


def test_a_tenant_retries_dead_letters_within_the_limit(tight: ConsoleServer, page: Page) -> None:
    s = _acme(page, tight)
    page.goto(f"{tight.url}/tenant/acme/dlq")
    assert "Up to 3 at a time and 4 an hour" in page.locator("section.retry").inner_text()
    _preview(page, "2", "sms|TIMEOUT")
    previewed = page.locator("ul.ids li").all_inner_texts()
    assert previewed == s.dead[:2]  # the oldest first, exactly these
    shot(page, "tenant-dlq")
    page.fill("input[name=reason]", "our receiver is back")
    page.click("section.retry form.stack button")
    page.wait_for_load_state()
    assert "Retried 2 dead letter(s)" in page.locator(".notice").inner_text()
    assert "console:amy" in page.locator(".notice").inner_text()

    async def after(store: Store) -> tuple[list[Status], list[AuditEntry]]:
        from sluice.store.base import AuditFilter

        statuses = [(await store.message_get(i)).status for i in s.dead]
        return statuses, await store.audit_list(10, AuditFilter(action="dlq.retry"))

    statuses, audit = tight.run(after)
    assert statuses == [Status.QUEUED] * 2 + [Status.DEAD] * 3
    assert [(e.actor, e.reason, e.detail["count"]) for e in audit] == [
        ("console:amy", "our receiver is back", 2)
    ]
    assert audit[0].detail["filter"]["tenant"] == "acme"
    page.goto(f"{tight.url}/tenant/acme/messages/{s.dead[0]}")
    assert "Retried by you" in page.locator("ol.timeline").inner_text()


def test_a_retry_above_the_limits_is_refused_and_changes_nothing(
    tight: ConsoleServer, page: Page, context: BrowserContext
) -> None:
    s = _acme(page, tight)
    page.goto(f"{tight.url}/tenant/acme/dlq")
    _preview(page, "4")
    assert "at most 3 dead letters per retry" in page.locator(".error").inner_text()
    assert page.locator("ul.ids").count() == 0
    _preview(page, "3", "sms|TIMEOUT")
    page.fill("input[name=reason]", "first go")
    page.click("section.retry form.stack button")
    page.wait_for_load_state()
    assert "Retried 3" in page.locator(".notice").inner_text()
    _preview(page, "2", "sms|TIMEOUT")  # 3 + 2 > 4 an hour: the preview says so
    error = page.locator(".error").inner_text()
    assert "at most 4 dead letters may be retried an hour" in error and "1 more" in error
    assert page.locator("ul.ids").count() == 0
    csrf = page.locator("section.retry input[name=csrf]").first.get_attribute("value") or ""
    ids = ",".join(s.dead[3:])
    form = {"csrf": csrf, "group": "sms|TIMEOUT", "limit": "2", "ids": ids, "reason": "x"}
    r = httpx.post(f"{tight.url}/tenant/acme/dlq/retry", data=form, cookies=_cookies(context))
    assert r.status_code == 422 and "at most 4 dead letters may be retried an hour" in r.text
    dead = tight.run(lambda store: _statuses(store, s.dead))
    assert dead == [Status.QUEUED] * 3 + [Status.DEAD] * 2


async def _statuses(store: Store, ids: list[str]) -> list[Status]:
    return [(await store.message_get(i)).status for i in ids]


def _cookies(context: BrowserContext) -> dict[str, str]:
    return {c["name"]: c["value"] for c in context.cookies()}


def test_hostile_retry_forms_are_refused_with_nothing_changed(
    tight: ConsoleServer, page: Page, context: BrowserContext
) -> None:
    s = _acme(page, tight)
    page.goto(f"{tight.url}/tenant/acme/dlq")
    csrf = page.locator("section.retry input[name=csrf]").first.get_attribute("value") or ""
    cookies = _cookies(context)
    url = f"{tight.url}/tenant/acme/dlq/retry"

    def post(path: str = url, **fields: str) -> httpx.Response:
        return httpx.post(path, cookies=cookies, data={"csrf": csrf, **fields})

    ids = ",".join(s.dead[:1])
    base = {"group": "sms|TIMEOUT", "limit": "1", "reason": "why not", "ids": ids}
    cases = {
        "limit": (422, {**base, "limit": "lots"}, "whole number"),
        "limit ": (422, {**base, "limit": "9" * 5000}, "longer than"),
        "reason": (422, {**base, "reason": "x" * 10_000}, "longer than 500"),
        "reason  ": (422, {**base, "reason": ""}, "reason: is required"),
        "group ": (422, {**base, "group": "nope"}, "not one of your dead-letter groups"),
        "ids": (404, {**base, "ids": s.other_tenant}, "no such message"),
        "ids ": (404, {**base, "ids": "../../etc"}, "no such message"),
        "ids  ": (422, {**base, "ids": ""}, "preview the retry first"),
    }
    for name, (code, fields, words) in cases.items():
        r = post(**fields)
        assert r.status_code == code, (name, r.status_code, r.text[-400:])
        assert words in r.text, name
    surrogate = httpx.post(  # a lone surrogate, as raw UTF-8 bytes no codec accepts
        url,
        cookies=cookies,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        content=f"csrf={csrf}&limit=1&ids={ids}&reason=%ED%A0%80&group=%ED%A0%80%7CTIMEOUT",
    )
    assert surrogate.status_code == 422 and 'class="error"' in surrogate.text
    r = post(f"{tight.url}/tenant/globex/dlq/retry", **base)
    assert r.status_code == 404
    r = httpx.post(url, cookies=cookies, data=base)  # no CSRF token
    assert r.status_code == 403
    assert tight.run(lambda store: _statuses(store, s.dead)) == [Status.DEAD] * 5
    assert tight.run(lambda store: _statuses(store, [s.other_tenant])) == [Status.DEAD]
    # A used form, replayed: the previewed letters are no longer dead; refused.
    assert post(**base).status_code == 200
    replay = post(**base)
    assert replay.status_code == 422 and "changed since your preview" in replay.text
    assert tight.run(lambda store: _statuses(store, s.dead)) == [Status.QUEUED] + [Status.DEAD] * 4


def test_the_listing_pages_50_at_a_time(tight: ConsoleServer, page: Page) -> None:
    s = _acme(page, tight)

    async def more(store: Store) -> None:
        await store.enqueue_many([_sms("acme", 100 + n) for n in range(40)])

    tight.run(more)
    page.goto(f"{tight.url}/tenant/acme")
    first = page.locator("table.tenant-messages tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.id)"
    )
    page.click("text=Next page")
    page.wait_for_load_state()
    second = page.locator("table.tenant-messages tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.id)"
    )
    assert len(first) == 50 and len(second) == 40 + len(s.ids) + len(s.dead) - 1 - 50
    assert not set(first) & set(second) and page.locator("text=Next page").count() == 0


@pytest.fixture
def sqlite_file(tmp_path: Path) -> str:
    """A migrated SQLite store (migrated in a thread: Chromium's loop runs in this one)."""
    url = f"sqlite:///{tmp_path / 'sluice.db'}"

    async def migrate() -> None:
        store = create_store(url)
        await store.open()  # type: ignore[attr-defined]
        try:
            await store.migrate()
        finally:
            await store.close()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, migrate()).result()
    return url


def test_the_view_works_on_sqlite_too(sqlite_file: str, page: Page) -> None:
    server = ConsoleServer(sqlite_file, tenant_retry_max=3)
    server.start()
    try:
        s = _acme(page, server)
        why = page.locator(f"tr[data-id='{s.ids['scope']}'] td.why").inner_text()
        assert "re-consent at twilio" in why
        page.goto(f"{server.url}/tenant/acme/dlq")
        _preview(page, "2", "sms|TIMEOUT")
        page.fill("input[name=reason]", "on sqlite")
        page.click("section.retry form.stack button")
        page.wait_for_load_state()
        assert "Retried 2 dead letter(s)" in page.locator(".notice").inner_text()
        assert _status(page, f"{server.url}/tenant/globex") == 404
    finally:
        server.stop()


# -- the operator -------------------------------------------------------------------------


def test_the_operator_lists_tenants_and_opens_one_read_only(
    tight: ConsoleServer, page: Page
) -> None:
    s = tight.run(_seed)
    sign_in(page, tight.url, tight.key("ops"), name="ann")
    page.goto(f"{tight.url}/tenants")
    assert page.locator("table.tenants tbody tr").count() == 2
    shot(page, "tenants")
    page.click("table.tenants >> text=acme")
    page.wait_for_url(f"{tight.url}/tenant/acme")
    assert "operator's view" in page.locator("h1").inner_text()
    rows = page.locator("table.tenant-messages tbody tr").count()
    assert rows == len(s.ids) + len(s.dead) - 1  # ids["dead"] is dead[0]
    page.goto(f"{tight.url}/tenant/acme/dlq")
    assert page.locator("section.retry").count() == 0
    r = page.goto(f"{tight.url}/tenant/globex/messages/{s.other_tenant}")
    assert r is not None and r.status == 200
    assert _status(page, f"{tight.url}/tenant/%ED%A0%80") == 404  # not a tenant's name
    assert _status(page, f"{tight.url}/tenant/{'x' * 10_000}") == 404


def test_a_retry_a_two_person_rule_holds_waits_for_an_operator(
    clean_pg_url: str, page: Page
) -> None:
    server = ConsoleServer(clean_pg_url, two_person=("dlq.retry>1",))
    server.start()
    try:
        s = _acme(page, server)
        page.goto(f"{server.url}/tenant/acme/dlq")
        _preview(page, "2", "sms|TIMEOUT")
        page.fill("input[name=reason]", "receiver fixed")
        page.click("section.retry form.stack button")
        page.wait_for_load_state()
        assert "waits for an operator's approval (request " in page.locator(".notice").inner_text()
        assert server.run(lambda store: _statuses(store, s.dead[:2])) == [Status.DEAD] * 2
    finally:
        server.stop()
