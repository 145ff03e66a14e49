"""The held page in a real Chromium: messages waiting by reason (approval, control,
limit, connection, endpoint) with counts and the oldest, the list of one reason, and
approve, release or cancel of exactly what a preview showed, with a reason, audited as
the person; hostile input changes nothing."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from bulk_seed import audit, dead, held, post, statuses
from console_rig import ConsoleServer, shot, sign_in
from playwright.sync_api import BrowserContext, Page

from sluice.store import Store

APPROVAL = "control:approval (tenant=acme) by cli:ann: first send of the spring campaign"
KILLED = "control:killed (tenant=beta) by cli:bob: reply loop with a customer bot"
LIMIT = "limit: daily quota of acme (10,000) reached; release or cancel to decide"
CAP = "limit: recipient_cap of acme reached; release or cancel to decide"
CONNECTION = "connection: pending_reauth: invalid_grant (the refresh token was revoked)"
ENDPOINT = "endpoint disabled: https://hooks.example.com/orders (no success for 5 days)"


def _seed_every_reason(console: ConsoleServer) -> dict[str, list[str]]:
    return {
        "approval": console.run(held(3, APPROVAL)),
        "control": console.run(held(2, KILLED, tenant="beta")),
        "limit": console.run(held(1, LIMIT)) + console.run(held(1, CAP)),
        "connection": console.run(held(1, CONNECTION, channel="email", provider="sendgrid")),
        "endpoint": console.run(held(1, ENDPOINT, channel="webhook", provider="webhook")),
    }


def _kinds(page: Page) -> dict[str, int]:
    cards = page.locator(".held-kinds .card")
    return {
        cards.nth(i).get_attribute("data-kind") or "": int(
            cards.nth(i).locator(".figure").inner_text().replace(",", "")
        )
        for i in range(cards.count())
    }


def _listed(page: Page, table: str = "table.held-messages") -> list[str]:
    rows = page.locator(f"{table} tbody tr")
    return [rows.nth(i).get_attribute("data-id") or "" for i in range(rows.count())]


def _preview(page: Page, verb: str, limit: int) -> list[str]:
    page.select_option("form.bulk select[name=verb]", verb)
    page.fill("form.bulk input[name=limit]", str(limit))
    page.click("form.bulk button[type=submit]")
    page.wait_for_selector("section.preview")
    return _listed(page, "table.preview-ids")


def test_held_by_reason_with_counts_oldest_and_a_list_per_reason(
    console: ConsoleServer, page: Page
) -> None:
    ids = _seed_every_reason(console)
    console.run(dead(2, "PROVIDER_ERROR"))  # not held: counted nowhere here
    sign_in(page, console.url, console.key("ops"), name="ann")
    page.goto(console.url + "/held")
    assert _kinds(page) == {"approval": 3, "control": 2, "limit": 2, "connection": 1,
                            "endpoint": 1, "other": 0}  # fmt: skip
    assert "oldest held" in page.locator(".card[data-kind=approval]").inner_text()
    reasons = page.locator("table.held-reasons tbody tr")
    assert reasons.count() == 6  # one row per distinct reason
    assert sorted(_listed(page)) == sorted(i for kind in ids.values() for i in kind)
    shot(page, "held")
    for kind in ("approval", "control", "limit", "connection", "endpoint"):
        page.click(f".card[data-kind={kind}]")
        page.wait_for_selector("table.held-messages")
        assert sorted(_listed(page)) == sorted(ids[kind]), kind
        page.goto(console.url + "/held")
    page.locator("table.held-reasons tr", has_text=CAP).locator("a").click()
    page.wait_for_selector("table.held-messages")
    assert _listed(page) == ids["limit"][1:]
    page.goto(console.url + "/held?tenant=beta")
    assert sorted(_listed(page)) == sorted(ids["control"])


def test_approve_exactly_the_previewed_then_later_holds_stay(
    console: ConsoleServer, page: Page
) -> None:
    first = sorted(console.run(held(4, APPROVAL)))  # one batch: held at one time
    other = console.run(held(1, KILLED))
    sign_in(page, console.url, console.key("ops"), name="ann")
    page.goto(console.url + "/held")
    page.click(".card[data-kind=approval]")
    previewed = _preview(page, "approve", 3)
    assert previewed == first[:3]
    assert "Preview: approve 3 held messages" in page.locator("section.preview h2").inner_text()
    shot(page, "held-preview")
    later = console.run(held(2, APPROVAL))  # held after the preview: never touched
    page.fill("section.preview textarea[name=reason]", "campaign signed off by marketing")
    page.click("section.preview button[type=submit]")
    notice = page.locator("p.notice[role=status]").inner_text()
    assert re.search(r"3 of the 3 previewed held messages approved\s+by console:ann", notice)
    assert statuses(console, previewed) == dict.fromkeys(previewed, "queued")
    rest = first[3:] + later + other
    assert statuses(console, rest) == dict.fromkeys(rest, "held")

    async def approver(store: Store) -> set[str | None]:
        return {(await store.message_get(i)).approved_by for i in previewed}

    assert console.run(approver) == {"console:ann"}
    [entry] = audit(console, "held.approve")
    assert (entry.actor, entry.reason) == ("console:ann", "campaign signed off by marketing")


def test_release_and_cancel_by_filter(console: ConsoleServer, page: Page) -> None:
    limited = console.run(held(2, LIMIT))
    killed = console.run(held(2, KILLED, tenant="beta"))
    sign_in(page, console.url, console.key("ops"), name="cy")
    page.goto(console.url + "/held?contains=limit%3A")
    assert sorted(_preview(page, "release", 10)) == sorted(limited)
    page.fill("section.preview textarea[name=reason]", "quota raised for today")
    page.click("section.preview button[type=submit]")
    assert "2 of the 2 previewed held messages released" in page.locator(
        "p.notice[role=status]").inner_text()  # fmt: skip
    page.goto(console.url + "/held?tenant=beta")
    assert sorted(_preview(page, "cancel", 10)) == sorted(killed)
    page.fill("section.preview textarea[name=reason]", "the loop's messages must never go")
    page.click("section.preview button.danger")
    assert "cancelled" in page.locator("p.notice[role=status]").inner_text()
    assert statuses(console, limited) == dict.fromkeys(limited, "queued")
    assert statuses(console, killed) == dict.fromkeys(killed, "cancelled")
    assert [e.actor for e in audit(console, "held.release") + audit(console, "held.cancel")] == [
        "console:cy", "console:cy",
    ]  # fmt: skip


def test_hostile_input_changes_nothing(console: ConsoleServer, page: Page,
                                       context: BrowserContext) -> None:  # fmt: skip
    ids = console.run(held(2, APPROVAL))
    [gone] = console.run(dead(1, "PROVIDER_ERROR"))
    sign_in(page, console.url, console.key("ops"))
    page.goto(console.url + "/held?contains=approval")
    url = console.url

    def send(path: str, **fields: str) -> tuple[int, str]:
        r = post(page, context, url + path, {"verb": "approve", **fields})
        return r.status_code, r.text

    act = {"ids": " ".join(ids), "reason": "ok", "contains": "approval"}
    cases = [
        ("/held/preview", {"limit": "abc", "contains": "approval"}, 400, "limit: must be a whole"),
        ("/held/preview", {"limit": "-1", "contains": "approval"}, 400, "limit: must be a whole"),
        ("/held/preview", {"limit": "1e309", "contains": "approval"}, 400, "limit: must be"),
        ("/held/preview", {"limit": "9" * 40, "contains": "approval"}, 400, "limit: must be"),
        ("/held/preview", {"limit": "5"}, 400, "filter: name the messages to approve"),
        ("/held/preview", {"contains": "x" * 10_000}, 400, "must be at most 500 characters"),
        ("/held/preview", {"verb": "explode", "contains": "a"}, 400, "act: must be approve"),
        ("/held/act", {**act, "reason": ""}, 400, "reason: is required"),
        ("/held/act", {**act, "reason": "r" * 10_000}, 400, "reason: must be at most 1,000"),
        ("/held/act", {**act, "ids": f"{ids[0]} {gone}"}, 409, "1 of the 2 messages are not held"),
        ("/held/act", {**act, "ids": "held-ones"}, 400, "is not a message id"),
    ]
    for path, fields, status, words in cases:
        got, text = send(path, **fields)
        assert (got, words in text) == (status, True), (path, fields.keys(), got, text[-500:])
    r = post(
        page,
        context,
        url + "/held/act",
        ("verb=approve&ids=" + "+".join(ids) + "&reason=%ED%A0%80%ED%B0%80").encode(),
    )
    assert r.status_code == 400 and "reason: is not valid text" in r.text
    r = post(page, context, url + "/held/preview", b"verb=approve&contains=%ED%A0%80")
    assert r.status_code == 400 and "reason contains: is not valid text" in r.text
    assert page.goto(url + "/held?since=soon").status == 400  # type: ignore[union-attr]
    assert "since:" in page.locator(".error").inner_text()
    assert statuses(console, ids) == dict.fromkeys(ids, "held")
    assert statuses(console, [gone]) == {gone: "dead"}
    assert audit(console, "held.approve") == []


def test_a_tenant_key_cannot_open_or_act(console: ConsoleServer, page: Page,
                                         context: BrowserContext) -> None:  # fmt: skip
    ids = console.run(held(1, APPROVAL))
    sign_in(page, console.url, console.key("acme-key", "tenant", "acme"))
    assert page.goto(console.url + "/held").status == 403  # type: ignore[union-attr]
    r = post(page, context, console.url + "/held/act",
             {"verb": "approve", "ids": ids[0], "reason": "mine"})  # fmt: skip
    assert r.status_code == 403
    assert statuses(console, ids) == {ids[0]: "held"}


@pytest.fixture
def two_person(clean_pg_url: str) -> Iterator[ConsoleServer]:
    server = ConsoleServer(clean_pg_url, two_person=("held.approve>1",))
    server.start()
    yield server
    server.stop()


def test_an_approval_the_two_person_rule_holds_is_filed_not_done(two_person: ConsoleServer,
                                                                 page: Page) -> None:  # fmt: skip
    ids = two_person.run(held(2, APPROVAL))
    sign_in(page, two_person.url, two_person.key("ops"), name="ann")
    page.goto(two_person.url + "/held?contains=control%3Aapproval")
    assert sorted(_preview(page, "approve", 10)) == sorted(ids)
    page.fill("section.preview textarea[name=reason]", "campaign signed off")
    page.click("section.preview button[type=submit]")
    text = page.locator("p.notice.filed").inner_text()
    assert re.search(r"Request \w+ waits for a second operator", text), text
    assert "nothing has changed yet" in text
    assert statuses(two_person, ids) == dict.fromkeys(ids, "held")
