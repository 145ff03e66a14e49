"""The dead-letter page in a real Chromium: groups by channel and error code, a group's
messages, and retry or cancel of exactly what a preview showed, with a reason, audited
as the person; hostile input changes nothing."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from bulk_seed import audit, dead, post, queued, statuses
from console_rig import ConsoleServer, shot, sign_in
from playwright.sync_api import BrowserContext, Page

from sluice.store import Store


def _group_rows(page: Page) -> dict[str, int]:
    rows = page.locator("table.dlq-groups tbody tr")
    return {
        rows.nth(i).get_attribute("data-group") or "": int(
            rows.nth(i).locator("td.num").inner_text().replace(",", "")
        )
        for i in range(rows.count())
    }


def _open_group(page: Page, base: str, channel: str, code: str, **filters: str) -> None:
    query = "&".join(
        f"{k}={v}" for k, v in {"channel": channel, "error_code": code, **filters}.items()
    )
    page.goto(f"{base}/dlq/group?{query}")


def _preview(page: Page, verb: str, limit: int) -> list[str]:
    page.select_option("form.bulk select[name=verb]", verb)
    page.fill("form.bulk input[name=limit]", str(limit))
    page.click("form.bulk button[type=submit]")
    page.wait_for_selector("section.preview")
    rows = page.locator("table.preview-ids tbody tr")
    return [rows.nth(i).get_attribute("data-id") or "" for i in range(rows.count())]


def test_groups_by_channel_and_code_with_counts_and_filters(
    console: ConsoleServer, page: Page
) -> None:
    console.run(dead(3, "INVALID_RECIPIENT", tenant="acme"))
    console.run(dead(2, "PROVIDER_ERROR", tenant="beta", channel="email"))
    console.run(dead(1, "PROVIDER_ERROR", tenant="acme", provider="twilio"))
    console.run(queued(2))  # not dead: counted nowhere here
    sign_in(page, console.url, console.key("ops"), name="ann")
    page.goto(console.url + "/dlq")
    assert _group_rows(page) == {
        "sms/INVALID_RECIPIENT": 3, "email/PROVIDER_ERROR": 2, "sms/PROVIDER_ERROR": 1,
    }  # fmt: skip
    assert (
        page.locator("table.dlq-groups tfoot td.num, table.dlq-groups tfoot th.num").inner_text()
        == "6"
    )
    shot(page, "dead-letters")
    page.fill("input[name=tenant]", "beta")
    page.click("form.filters button[type=submit]")
    assert _group_rows(page) == {"email/PROVIDER_ERROR": 2}
    page.goto(console.url + "/dlq?tenant=acme&provider=twilio")
    assert _group_rows(page) == {"sms/PROVIDER_ERROR": 1}
    page.goto(console.url + "/dlq?since=1h")
    assert sum(_group_rows(page).values()) == 6
    page.goto(console.url + "/dlq?tenant=nobody")
    assert "No dead letters match these filters" in page.locator("main").inner_text()


def test_a_group_lists_its_messages_linking_to_each(console: ConsoleServer, page: Page) -> None:
    ids = console.run(dead(3, "ENDPOINT_GONE", channel="webhook", provider="webhook"))
    console.run(dead(2, "ENDPOINT_GONE", tenant="beta", channel="webhook", provider="webhook"))
    sign_in(page, console.url, console.key("ops"))
    page.goto(console.url + "/dlq?tenant=acme")
    page.click("table.dlq-groups a:text('open')")
    page.wait_for_selector("table.dlq-messages")
    listed = page.locator("table.dlq-messages tbody tr")
    assert [listed.nth(i).get_attribute("data-id") for i in range(listed.count())] == sorted(ids)
    assert page.locator(".cards .figure").first.inner_text() == "3"
    link = page.locator(f"table.dlq-messages a[href='/messages/{ids[0]}']")
    assert link.count() == 1
    assert sorted(_preview(page, "retry", 100)) == sorted(ids)  # the tenant filter holds


def test_preview_then_retry_exactly_the_previewed_ids(console: ConsoleServer, page: Page) -> None:
    first = sorted(console.run(dead(5, "PROVIDER_ERROR")))  # one batch: died at one time
    sign_in(page, console.url, console.key("ops"), name="ann")
    _open_group(page, console.url, "sms", "PROVIDER_ERROR")
    previewed = _preview(page, "retry", 3)
    assert previewed == first[:3]  # the oldest three, exactly
    assert "Preview: retry 3 dead letters" in page.locator("section.preview h2").inner_text()
    shot(page, "dead-letter-preview")
    later = console.run(dead(4, "PROVIDER_ERROR"))  # die after the preview: never touched
    assert statuses(console, previewed) == dict.fromkeys(previewed, "dead")
    page.fill("section.preview textarea[name=reason]", "provider fixed the outage (INC-7)")
    page.click("section.preview button[type=submit]")
    notice = page.locator("p.notice[role=status]").inner_text()
    assert re.search(r"3 of the 3 previewed dead letters requeued\s+by console:ann", notice), notice
    assert statuses(console, previewed) == dict.fromkeys(previewed, "queued")
    rest = first[3:] + later
    assert statuses(console, rest) == dict.fromkeys(rest, "dead")
    [entry] = audit(console, "dlq.retry")
    assert (entry.actor, entry.reason) == ("console:ann", "provider fixed the outage (INC-7)")
    assert entry.detail["by_id"] is True


def test_cancel_asks_for_a_reason_and_keeps_the_preview(
    console: ConsoleServer, page: Page, context: BrowserContext
) -> None:
    ids = console.run(dead(2, "INVALID_RECIPIENT"))
    sign_in(page, console.url, console.key("ops"), name="bob")
    _open_group(page, console.url, "sms", "INVALID_RECIPIENT")
    assert sorted(_preview(page, "cancel", 10)) == sorted(ids)
    page.click("section.preview button[type=submit]")  # the browser asks for the reason
    assert page.locator("section.preview textarea:invalid").count() == 1
    r = post(page, context, console.url + "/dlq/act",
             {"verb": "cancel", "ids": " ".join(ids), "reason": "  ", "channel": "sms",
              "error_code": "INVALID_RECIPIENT"})  # fmt: skip
    assert r.status_code == 400 and "reason: is required" in r.text
    assert 'data-id="' + ids[0] in r.text  # the preview is shown again, to act on
    assert statuses(console, ids) == dict.fromkeys(ids, "dead")
    page.fill("section.preview textarea[name=reason]", "recipients are invalid; not retrying")
    page.click("section.preview button[type=submit]")
    assert (
        "2 of the 2 previewed dead letters cancelled"
        in page.locator("p.notice[role=status]").inner_text()
    )
    assert statuses(console, ids) == dict.fromkeys(ids, "cancelled")
    assert [e.actor for e in audit(console, "dlq.cancel")] == ["console:bob"]


def test_a_bad_limit_is_refused_naming_it(console: ConsoleServer, page: Page,
                                          context: BrowserContext) -> None:  # fmt: skip
    ids = console.run(dead(2, "PROVIDER_ERROR"))
    sign_in(page, console.url, console.key("ops"))
    _open_group(page, console.url, "sms", "PROVIDER_ERROR")
    for limit in ("abc", "-1", "0", "1e309", "1001", "99999999999999999999", "2.5", "\u0661"):
        r = post(
            page,
            context,
            console.url + "/dlq/preview",
            {"verb": "retry", "limit": limit, "channel": "sms", "error_code": "PROVIDER_ERROR"},
        )
        assert r.status_code == 400, (limit, r.text)
        assert "limit: must be a whole number from 1 to 1,000" in r.text, limit
    r = post(
        page,
        context,
        console.url + "/dlq/preview",
        {"verb": "retry", "limit": " ", "channel": "sms", "error_code": "PROVIDER_ERROR"},
    )
    assert r.status_code == 200 and "Preview: retry 2 dead letters" in r.text  # the default
    assert statuses(console, ids) == dict.fromkeys(ids, "dead")


def test_hostile_acts_change_nothing(console: ConsoleServer, page: Page,
                                     context: BrowserContext) -> None:  # fmt: skip
    ids = console.run(dead(2, "PROVIDER_ERROR"))
    [waiting] = console.run(queued(1))
    sign_in(page, console.url, console.key("ops"))
    _open_group(page, console.url, "sms", "PROVIDER_ERROR")
    group = {"channel": "sms", "error_code": "PROVIDER_ERROR"}

    def act(**fields: str) -> tuple[int, str]:
        r = post(
            page,
            context,
            console.url + "/dlq/act",
            {"verb": "retry", "ids": " ".join(ids), "reason": "why", **group, **fields},
        )
        return r.status_code, r.text

    cases = {
        "a queued message": (
            {"ids": f"{ids[0]} {waiting}"},
            409,
            "1 of the 2 messages are not dead",
        ),
        "no such message": ({"ids": "0" * 8 + "-0000-4000-8000-" + "0" * 12}, 409, "are not dead"),
        "not an id": ({"ids": f"{ids[0]} not-an-id"}, 400, "is not a message id"),
        "no ids": ({"ids": ""}, 400, "no messages were previewed"),
        "too many ids": ({"ids": " ".join([ids[0]] * 1001)}, 400, "at most 1,000 messages"),
        "a 10 kB reason": ({"reason": "x" * 10_000}, 400, "reason: must be at most 1,000"),
        "an unknown act": ({"verb": "delete"}, 400, "act: must be retry or cancel"),
    }
    for name, (fields, status, words) in cases.items():
        got, text = act(**fields)
        assert (got, words in text) == (status, True), (name, got, text[-600:])
    raw = ("verb=retry&channel=sms&error_code=PROVIDER_ERROR&ids=" + "+".join(ids)).encode()
    r = post(page, context, console.url + "/dlq/act", raw + b"&reason=%ED%A0%80")
    assert r.status_code == 400 and "reason: is not valid text" in r.text
    r = post(
        page,
        context,
        console.url + "/dlq/preview",
        b"verb=retry&channel=sms&error_code=PROVIDER_ERROR&tenant=%ED%A0%80",
    )
    assert r.status_code == 400 and "tenant: is not valid text" in r.text
    assert page.goto(console.url + "/dlq?tenant=%ED%A0%80").status == 400  # type: ignore[union-attr]
    assert "tenant: is not valid text" in page.locator(".error").inner_text()
    assert page.goto(console.url + "/dlq?since=1e309").status == 400  # type: ignore[union-attr]
    assert "since:" in page.locator(".error").inner_text()
    assert page.goto(console.url + "/dlq?since=99999999999d").status == 400  # type: ignore[union-attr]
    assert statuses(console, ids) == dict.fromkeys(ids, "dead")
    assert statuses(console, [waiting]) == {waiting: "queued"}
    assert audit(console, "dlq.retry") == []


@pytest.fixture
def two_person(clean_pg_url: str) -> Iterator[ConsoleServer]:
    server = ConsoleServer(clean_pg_url, two_person=("dlq.retry>2",))
    server.start()
    yield server
    server.stop()


def test_a_retry_the_two_person_rule_holds_is_filed_not_done(two_person: ConsoleServer,
                                                             page: Page) -> None:  # fmt: skip
    ids = two_person.run(dead(3, "PROVIDER_ERROR"))
    sign_in(page, two_person.url, two_person.key("ops"), name="ann")
    _open_group(page, two_person.url, "sms", "PROVIDER_ERROR")
    assert sorted(_preview(page, "retry", 100)) == sorted(ids)
    page.fill("section.preview textarea[name=reason]", "retry after the fix")
    page.click("section.preview button[type=submit]")
    text = page.locator("p.notice.filed").inner_text()
    found = re.search(r"Request (\w+) waits for a second operator", text)
    assert found, text

    async def request(store: Store) -> tuple[str, str, int | None]:
        req = await store.request_get(found.group(1))  # type: ignore[union-attr]
        return req.state, req.requester, req.affected

    assert two_person.run(request) == ("pending", "console:ann", 3)
    assert statuses(two_person, ids) == dict.fromkeys(ids, "dead")


def test_a_tenant_key_cannot_open_or_act(console: ConsoleServer, page: Page,
                                         context: BrowserContext) -> None:  # fmt: skip
    ids = console.run(dead(1, "PROVIDER_ERROR"))
    sign_in(page, console.url, console.key("acme-key", "tenant", "acme"))
    for path in ("/dlq", "/dlq/group?channel=sms&error_code=PROVIDER_ERROR"):
        assert page.goto(console.url + path).status == 403  # type: ignore[union-attr]
    r = post(page, context, console.url + "/dlq/act",
             {"verb": "retry", "ids": ids[0], "reason": "mine"})  # fmt: skip
    assert r.status_code == 403
    assert statuses(console, ids) == {ids[0]: "dead"}


def test_a_stale_preview_is_refused_whole_and_shown_again(console: ConsoleServer,
                                                          page: Page) -> None:  # fmt: skip
    ids = sorted(console.run(dead(3, "PROVIDER_ERROR")))
    sign_in(page, console.url, console.key("ops"), name="ann")
    _open_group(page, console.url, "sms", "PROVIDER_ERROR")
    assert _preview(page, "retry", 10) == ids

    async def cancel_one(store: Store) -> None:  # another operator, meanwhile
        from sluice.ops.actions import message_cancel

        await message_cancel(store, ids[1], actor="cli:bob", reason="not this one")

    console.run(cancel_one)
    page.fill("section.preview textarea[name=reason]", "retry them")
    page.click("section.preview button[type=submit]")
    error = page.locator("p.error[role=alert]").inner_text()
    assert f"1 of the 3 messages are not dead (any more): {ids[1]}" in error
    assert "Nothing was changed; preview again" in error
    assert page.locator(f"table.preview-ids tr[data-id='{ids[1]}'] .badge").inner_text() == (
        "cancelled"
    )
    assert page.locator("section.preview form").count() == 0  # no acting on a stale preview
    shot(page, "dead-letter-stale-preview")
    assert statuses(console, [ids[0], ids[2]]) == {ids[0]: "dead", ids[2]: "dead"}
    assert audit(console, "dlq.retry") == []
