"""``POST /v1/purge``: operator keys only, the same ``sluice.ops.retention`` as the CLI,
bad input 422 naming the field and changing nothing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from api_harness import Api

from sluice.model import Attempt, AttemptOutcome, Completion, NewMessage, Status
from sluice.store import MessageFilter, Store

NOW = datetime.now(UTC)


async def dead_long_ago(store: Store, n: int, age: timedelta) -> list[str]:
    at = NOW - age
    new = [
        NewMessage(tenant="acme", channel="sms", provider="twilio", recipient="+15550001111",
                   payload={"body": "hi"}, run_at=at)
        for _ in range(n)
    ]  # fmt: skip
    ids = await store.enqueue_many(new)
    claimed = await store.message_claim("w1", n, 30, at)
    await store.message_complete_many(
        "w1",
        [Completion(m.id, m.claim_seq, "w1", Status.DEAD,
                    Attempt(m.id, 1, "w1", "twilio", at, at, AttemptOutcome.FAILED))
         for m in claimed],
        at,
    )  # fmt: skip
    return ids


async def left(store: Store) -> int:
    return len(await store.message_list(MessageFilter(), None, None, 1000))


async def test_purge__dry_run_then_purge_audited_as_the_key(api: Api) -> None:
    await dead_long_ago(api.store, 3, timedelta(days=40))
    await dead_long_ago(api.store, 1, timedelta(days=2))
    body = {"older_than": "30d", "statuses": ["dead"], "dry_run": True}
    dry = await api.client.post("/v1/purge", json=body, headers=api.ops)
    assert dry.status_code == 200, dry.text
    assert (dry.json()["counts"], dry.json()["total"], await left(api.store)) == ({"dead": 3}, 3, 4)
    done = await api.client.post(
        "/v1/purge", json={"older_than": "30d", "reason": "seed 002 §2 step 5"}, headers=api.ops
    )
    assert done.json()["counts"] == {"dead": 3} and await left(api.store) == 1
    (entry,) = [e for e in await api.store.audit_list() if e.action == "message.purge"]
    assert (entry.actor, entry.detail["total"]) == ("api:oncall", 3)


async def test_purge__tenant_keys_are_refused(api: Api) -> None:
    await dead_long_ago(api.store, 1, timedelta(days=40))
    r = await api.client.post("/v1/purge", json={"older_than": "1d"}, headers=api.acme)
    assert r.status_code == 403 and await left(api.store) == 1


async def test_purge__bad_input_is_422_naming_the_field(api: Api) -> None:
    await dead_long_ago(api.store, 2, timedelta(days=40))
    cases = [
        ({"older_than": "-1d"}, "older_than"),
        ({"older_than": "nan"}, "older_than"),
        ({"older_than": "0"}, "older_than"),
        ({"older_than": "3 fortnights"}, "older_than"),
        ({"statuses": ["queued"]}, "status"),
        ({"statuses": ["bogus"]}, "status"),
        ({"batch": 0}, "batch"),
        ({"batch": "5"}, "batch"),
        ({"tenant": "\udcff"}, "tenant"),
        ({"dry_run": "yes"}, "dry_run"),
        ({"export": "/etc/passwd"}, "export"),
    ]
    for body, field in cases:
        # As JSON text with escapes: a lone surrogate arrives as the client sent it.
        raw = json.dumps(body)
        headers = {**api.ops, "content-type": "application/json"}
        r = await api.client.post("/v1/purge", content=raw, headers=headers)
        assert r.status_code == 422, (body, r.text)
        assert field in r.json()["field"], (body, r.json())
    assert await left(api.store) == 2
