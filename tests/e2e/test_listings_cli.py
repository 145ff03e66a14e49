"""On-call listings from the shell (issue 14): ``messages list`` with every filter and
``--ids`` piped into ``dlq retry -``, ``attempts list``, ``status --by``, ``top``, and
one JSON shape for every listing — real subprocesses on real databases."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sluice.model import Attempt, AttemptOutcome, Completion, NewMessage, Status
from sluice.store import Store, create_store


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    return subprocess.run(
        [sys.executable, "-m", "sluice.cli", *args], input=stdin,
        capture_output=True, text=True, env={**env, "COLUMNS": "200"}, timeout=60, check=False,
    )  # fmt: skip


def ok_json(url: str, *args: str) -> Any:
    done = cli(*args, "--database-url", url, "--json")
    assert done.returncode == 0, (args, done.stderr)
    return json.loads(done.stdout)


def on_store(url: str, fn):  # type: ignore[no-untyped-def]
    async def go():  # type: ignore[no-untyped-def]
        store: Store = create_store(url)
        await store.open()  # type: ignore[attr-defined]
        try:
            return await fn(store)
        finally:
            await store.close()

    return asyncio.run(go())


def new(tenant: str, **kw: Any) -> NewMessage:
    return NewMessage(tenant=tenant, channel="sms", provider="null", recipient="+15550001111",
                      payload={}, **kw)  # fmt: skip


def seed(url: str) -> dict[str, list[str]]:
    """acme: three messages, two of them dead after one failed attempt by w-dead;
    globex: one queued."""

    async def go(store: Store) -> dict[str, list[str]]:
        later = datetime.now(UTC) + timedelta(hours=1)
        acme = await store.enqueue_many([new("acme"), new("acme"), new("acme")])
        globex = await store.enqueue_many([new("globex", run_at=later)])
        now = datetime.now(UTC)
        claimed = await store.message_claim("w-dead", 10, 30, now)
        failed = AttemptOutcome.FAILED
        await store.message_complete_many("w-dead", [
            Completion(m.id, m.claim_seq, "w-dead", Status.DEAD,
                       Attempt(m.id, 1, "w-dead", "null", now, now, failed,
                               error_code="INVALID_RECIPIENT"))
            for m in claimed if m.id in acme[:2]
        ], now)  # fmt: skip
        back = [(m.id, m.claim_seq) for m in claimed if m.id not in acme[:2]]
        await store.message_release("w-dead", back, now)
        return {"acme": acme, "globex": globex, "dead": sorted(acme[:2])}

    result: dict[str, list[str]] = on_store(url, go)
    return result


def test_messages_list__filters_pages_and_ids_piped_into_dlq_retry(store_url: str) -> None:
    ids = seed(store_url)
    dead = cli("messages", "list", "--status", "dead", "--ids", "--database-url", store_url)
    assert dead.returncode == 0, dead.stderr
    assert sorted(dead.stdout.split()) == ids["dead"]

    first = ok_json(store_url, "messages", "list", "--limit", "2")
    assert (first["count"], len(first["items"])) == (2, 2) and first["next_cursor"]
    rest = ok_json(store_url, "messages", "list", "--limit", "2", "--cursor", first["next_cursor"])
    assert rest["next_cursor"] is None
    seen = [m["id"] for m in first["items"] + rest["items"]]
    assert sorted(seen) == sorted(ids["acme"] + ids["globex"])
    globex = ok_json(
        store_url, "messages", "list", "--tenant", "globex", "--until", "2099-01-01T00:00Z",
        "--updated-since", "1h", "--status", "queued",
    )  # fmt: skip
    assert [m["id"] for m in globex["items"]] == ids["globex"]
    assert ok_json(store_url, "messages", "list", "--updated-until", "1h")["items"] == []
    coded = ok_json(store_url, "messages", "list", "--error-code", "INVALID_RECIPIENT")
    assert sorted(m["id"] for m in coded["items"]) == ids["dead"]

    assert ok_json(store_url, "dlq", "list", "--since", "1h")["total"] == 2
    assert ok_json(store_url, "dlq", "list", "--since", "2099-01-01T00:00Z")["items"] == []
    retried = cli("dlq", "retry", "-", "--database-url", store_url, stdin=dead.stdout)
    assert retried.returncode == 0, retried.stderr
    assert "2 of 2 dead letters requeued" in retried.stdout
    assert ok_json(store_url, "dlq", "list") == {"items": [], "count": 0, "next_cursor": None,
                                                 "total": 0}  # fmt: skip


def test_attempts_list__by_message_worker_outcome_and_window(store_url: str) -> None:
    ids = seed(store_url)
    page = ok_json(store_url, "attempts", "list", "--outcome", "failed", "--since", "1h")
    assert page["count"] == 2 and page["next_cursor"] is None
    assert sorted(a["message_id"] for a in page["items"]) == ids["dead"]
    one = ok_json(store_url, "attempts", "list", "--message", ids["dead"][0], "--worker", "w-dead")
    assert [(a["message_id"], a["attempt_no"]) for a in one["items"]] == [(ids["dead"][0], 1)]
    paged = ok_json(store_url, "attempts", "list", "--limit", "1")
    assert paged["count"] == 1 and paged["next_cursor"] is not None
    older = ok_json(store_url, "attempts", "list", "--limit", "1", "--cursor", paged["next_cursor"])
    assert older["items"][0]["message_id"] != paged["items"][0]["message_id"]
    table = cli("attempts", "list", "--provider", "null", "--database-url", store_url)
    assert table.returncode == 0 and "INVALID_RECIPIENT" in table.stdout


def test_status_by_tenant_and_top(store_url: str) -> None:
    ids = seed(store_url)
    on_store(
        store_url, lambda s: s.worker_heartbeat("w-box", "box-7", 4321, 3, 9, datetime.now(UTC))
    )
    status = ok_json(store_url, "status", "--by", "tenant")
    groups = {g["group"]: g for g in status["groups"]}
    assert groups["acme"]["counts"]["dead"] == 2 and groups["acme"]["total"] == 3
    assert groups["globex"]["counts"] == {"queued": 1}
    assert status["inbox"] == {} and "oldest_queued_created_age_seconds" in status
    [w] = [w for w in status["workers"] if w["id"] == "w-box"]
    assert (w["host"], w["pid"], w["in_flight"]) == ("box-7", 4321, 3)
    text = cli("status", "--by", "provider", "--database-url", store_url).stdout
    assert "inbox events: empty" in text and "box-7" in text and "4321" in text
    assert "by provider:" in text

    top = ok_json(store_url, "top", "--by", "tenant", "--since", "1h")
    assert [(r["group"], r["created"], r["dead"], r["failed"]) for r in top["items"]] == [
        ("acme", 3, 2, 2), ("globex", 1, 0, 0),
    ]  # fmt: skip
    assert (top["count"], top["next_cursor"], top["by"]) == (2, None, "tenant")
    one = ok_json(store_url, "top", "--by", "channel", "--limit", "1")
    assert [(r["group"], r["created"]) for r in one["items"]] == [("sms", 4)]
    assert len(ids["acme"]) == 3


def test_every_listing_prints_items_count_and_next_cursor(sqlite_url: str) -> None:
    listings = [
        ("held", "list"), ("dlq", "list"), ("connections", "list"), ("inbox", "list"),
        ("messages", "list"), ("attempts", "list"), ("audit", "list"), ("incidents", "list"),
        ("limits", "list"), ("breakers", "list"), ("controls", "list"), ("apikeys", "list"),
        ("top",),
    ]  # fmt: skip
    for args in listings:
        doc = ok_json(sqlite_url, *args)
        assert {"items", "count", "next_cursor"} <= set(doc), args
        assert doc["count"] == len(doc["items"]), args


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("messages", "list", "--status", "lost"), "status: 'lost' is not one of"),
        (("messages", "list", "--limit", "0"), "limit: must be between 1 and 10000"),
        (("messages", "list", "--limit", "-5"), "limit: must be between 1 and 10000"),
        (("messages", "list", "--since", "yesterday"), "since: 'yesterday' is neither"),
        (("messages", "list", "--updated-until", "soon"), "updated_until: 'soon'"),
        (("messages", "list", "--since", "1h", "--until", "2h"), "until: must be after since"),
        (("messages", "list", "--cursor", "not-a-cursor"), "cursor: is not a cursor"),
        (("messages", "list", "--ids", "--json"), "--ids: cannot be combined with --json"),
        (("attempts", "list", "--outcome", "exploded"), "outcome: 'exploded' is not one of"),
        (("attempts", "list", "--cursor", "x1"), "cursor: is not a cursor"),
        (("attempts", "list", "--message", "nope"), "message_id: 'nope' is not a message id"),
        (("attempts", "list", "--limit", "99999999"), "limit: must be between 1 and 10000"),
        (("inbox", "list", "--cursor", "-3"), "cursor: is not a cursor"),
        (("inbox", "list", "--limit", "20000"), "limit: must be between 1 and 10000"),
        (("audit", "list", "--cursor", "abc"), "cursor: is not a cursor"),
        (("status", "--by", "recipient"), "--by: 'recipient' is not one of"),
        (("top", "--by", "recipient"), "by: 'recipient' is not one of"),
        (("top", "--since", "0h"), "since: must be a window"),
        (("top", "--since", "400d"), "since: must be a window"),
        (("top", "--since", "1 hour"), "--since: '1 hour' is not a span"),
        (("top", "--limit", "0"), "limit: must be between 1 and 1000"),
        (("dlq", "retry", "-", "--tenant", "acme"), "ids: name ids or a filter, not both"),
        (("dlq", "retry", "not-an-id"), "ids[0]: 'not-an-id' is not a message id"),
        (("dlq", "retry", "-"), "ids: none were given on standard input"),
    ],
)
def test_bad_input__exit_2_naming_the_option(
    sqlite_url: str, args: tuple[str, ...], needle: str
) -> None:
    stdin = "01a24433-a2cf-70fb-af44-044a666df97a\n" if "--tenant" in args else ""
    done = cli(*args, "--database-url", sqlite_url, stdin=stdin)
    assert done.returncode == 2, (args, done.stdout, done.stderr)
    assert needle in done.stderr, (args, done.stderr)
