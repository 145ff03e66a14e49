"""Retention as ``sluice.ops.retention`` applies it, on both stores: the policy per final
status, the export, the audit entry, bad input refused by name, one worker at a time."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sluice.clock import FrozenClock
from sluice.config import Settings, load_settings
from sluice.errors import ConfigError, ValidationError
from sluice.metrics import PURGED
from sluice.model import Attempt, AttemptOutcome, Completion, NewMessage, Status
from sluice.ops.render import jsonable
from sluice.ops.retention import Retention, purge, purge_rule, retaining
from sluice.retention import NON_FINAL, RETENTION_DAYS, retention_policy
from sluice.store import MessageFilter, Store

NOW = datetime.now(UTC).replace(microsecond=0)
DAY = timedelta(days=1)


async def finished(store: Store, status: Status, age: timedelta, n: int = 1) -> list[str]:
    """``n`` messages that became ``status`` ``age`` ago, each with one attempt."""
    at = NOW - age
    new = [
        NewMessage(tenant="acme", channel="sms", provider="twilio", recipient="+15550001111",
                   payload={"body": "hi"}, run_at=at - timedelta(minutes=1))
        for _ in range(n)
    ]  # fmt: skip
    ids = await store.enqueue_many(new)
    claimed = await store.message_claim("w1", n, 30, at)
    assert {m.id for m in claimed} == set(ids)
    if status is Status.SENDING:
        return ids
    outcome = AttemptOutcome.SENT if status is Status.SENT else AttemptOutcome.FAILED
    done = [
        Completion(
            m.id, m.claim_seq, "w1", status,
            Attempt(m.id, 1, "w1", m.provider, at, at, outcome, error_code="E1"),
            hold_reason="control: killed" if status is Status.HELD else None,
            run_at=at if status is Status.QUEUED else None,
        )
        for m in claimed
    ]  # fmt: skip
    await store.message_complete_many("w1", done, at)
    return ids


async def remaining(store: Store) -> set[str]:
    return {m.id for m in await store.message_list(MessageFilter(), None, None, 10_000)}


def settings(store_url: str, **kw: object) -> Settings:
    return Settings(database_url=store_url, retention_pause=0, **kw)  # type: ignore[arg-type]


# -- the policy ---------------------------------------------------------------------


def test_policy__every_final_status_has_a_retention() -> None:
    finals = {s.value for s in Status} - set(NON_FINAL)
    assert finals <= set(RETENTION_DAYS)
    assert not set(NON_FINAL) & set(RETENTION_DAYS)
    policy = retention_policy()
    assert policy["sent"] == policy["delivered"] == policy["shadowed"] == 7 * 86_400
    assert policy["dead"] == policy["cancelled"] == policy["expired"] == 30 * 86_400
    assert policy["suppressed"] == 30 * 86_400


def test_policy__overrides_from_the_environment_and_the_file(tmp_path: Path) -> None:
    env = {"SLUICE_RETENTION": "dead=90d, sent=36h cancelled=keep"}
    policy = retention_policy(load_settings(env=env).retention)
    assert (policy["dead"], policy["sent"], policy["delivered"]) == (
        90 * 86_400,
        36 * 3600,
        7 * 86_400,
    )
    assert policy["cancelled"] == float("inf")
    toml = tmp_path / "sluice.toml"
    toml.write_text('[sluice]\nretention = ["read=2w"]\nretention_batch = 500\n')
    got = load_settings(env={}, config_path=toml)
    assert retention_policy(got.retention)["read"] == 14 * 86_400 and got.retention_batch == 500


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"SLUICE_RETENTION": "queued=1d"}, "SLUICE_RETENTION"),
        ({"SLUICE_RETENTION": "sent=-1d"}, "SLUICE_RETENTION"),
        ({"SLUICE_RETENTION": "sent=nan"}, "SLUICE_RETENTION"),
        ({"SLUICE_RETENTION": "sent=0d"}, "SLUICE_RETENTION"),
        ({"SLUICE_RETENTION": "sent"}, "SLUICE_RETENTION"),
        ({"SLUICE_RETENTION": "bogus=1d"}, "SLUICE_RETENTION"),
        ({"SLUICE_RETENTION_BATCH": "0"}, "SLUICE_RETENTION_BATCH"),
        ({"SLUICE_RETENTION_BATCH": "10001"}, "SLUICE_RETENTION_BATCH"),
        ({"SLUICE_RETENTION_INTERVAL": "-1"}, "SLUICE_RETENTION_INTERVAL"),
        ({"SLUICE_RETENTION_PAUSE": "nan"}, "SLUICE_RETENTION_PAUSE"),
    ],
)
def test_policy__bad_settings_are_refused_by_name(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load_settings(env=env)


@pytest.mark.parametrize(
    "older_than", ["-1d", "nan", "inf", "0", "0d", "0.0h", "30", "5y", "thirty days", "", "1e3d"]
)
def test_rule__a_bad_span_is_refused_naming_older_than(older_than: str) -> None:
    with pytest.raises(ValidationError) as err:
        purge_rule(NOW, older_than=older_than)
    assert err.value.field == "older_than"


@pytest.mark.parametrize("statuses", [["queued"], ["held"], ["sending"], ["bogus"], [], ["\udcff"]])
def test_rule__an_unknown_or_unfinished_status_is_refused(statuses: list[str]) -> None:
    with pytest.raises(ValidationError) as err:
        purge_rule(NOW, older_than="1d", statuses=statuses)
    assert err.value.field == "status"


def test_rule__the_policy_per_status_or_one_span_for_those_named() -> None:
    rule = purge_rule(NOW, retention=["cancelled=keep"])
    assert rule.before["sent"] == NOW - 7 * DAY and rule.before["dead"] == NOW - 30 * DAY
    assert "cancelled" not in rule.before
    rule = purge_rule(NOW, older_than="2w", statuses=["dead", "dead"], tenant="acme")
    assert (rule.before, rule.tenant) == ({"dead": NOW - 14 * DAY}, "acme")


# -- purging ------------------------------------------------------------------------


async def test_purge__applies_each_statuses_retention_and_audits_once(store: Store) -> None:
    gone = await finished(store, Status.SENT, 8 * DAY, 3) + await finished(
        store, Status.DEAD, 31 * DAY
    )
    kept = await finished(store, Status.SENT, 6 * DAY) + await finished(
        store, Status.DEAD, 20 * DAY
    )
    # Not final: never removed, however old.
    kept += await finished(store, Status.QUEUED, 400 * DAY) + await finished(
        store, Status.HELD, 400 * DAY
    )
    kept += await finished(store, Status.SENDING, 400 * DAY)
    before = PURGED.labels("sent")._value.get()
    result = await purge(store, purge_rule(NOW), actor="ops:ana", reason="tidy", batch=2)
    assert result.counts == {"sent": 3, "dead": 1} and result.batches == 2
    assert await remaining(store) == set(kept)
    for mid in gone:
        assert await store.attempt_list(mid) == []
    assert PURGED.labels("sent")._value.get() - before == 3
    (entry,) = [e for e in await store.audit_list() if e.action == "message.purge"]
    assert (entry.actor, entry.reason, entry.detail["counts"]) == (
        "ops:ana",
        "tidy",
        {"dead": 1, "sent": 3},
    )
    assert entry.detail["total"] == 4


async def test_purge__dry_run_counts_and_changes_nothing(store: Store) -> None:
    ids = await finished(store, Status.SENT, 8 * DAY, 2) + await finished(
        store, Status.DEAD, 8 * DAY
    )
    result = await purge(store, purge_rule(NOW, older_than="7d"), actor="ops", dry_run=True)
    assert (result.dry_run, result.counts, result.total) == (True, {"sent": 2, "dead": 1}, 3)
    assert await remaining(store) == set(ids)
    assert not [e for e in await store.audit_list() if e.action == "message.purge"]


async def test_purge__export_holds_exactly_the_removed_rows(store: Store, tmp_path: Path) -> None:
    gone = await finished(store, Status.DEAD, 40 * DAY, 5)
    kept = await finished(store, Status.DEAD, 1 * DAY)
    expected = {}
    for mid in gone:
        message, attempts = await store.message_get(mid), await store.attempt_list(mid)
        expected[mid] = jsonable({"message": message, "attempts": attempts, "receipts": []})
    out = tmp_path / "dead.jsonl"
    rule = purge_rule(NOW, older_than="30d", statuses=["dead"])
    result = await purge(store, rule, actor="ops", export=out, batch=2)
    assert result.total == 5 and result.export == str(out)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert {line["message"]["id"]: line for line in lines} == expected
    assert await remaining(store) == set(kept)


async def test_purge__an_existing_export_file_is_refused_and_nothing_removed(
    store: Store, tmp_path: Path
) -> None:
    ids = await finished(store, Status.SENT, 40 * DAY)
    out = tmp_path / "old.jsonl"
    out.write_text("earlier export\n")
    for export, why in ((out, "exists"), (tmp_path / "no" / "such.jsonl", "not a directory")):
        with pytest.raises(ValidationError, match=why) as err:
            await purge(store, purge_rule(NOW), actor="ops", export=export)
        assert err.value.field == "export"
    assert out.read_text() == "earlier export\n" and await remaining(store) == set(ids)


@pytest.mark.parametrize("batch", [0, -5, 10_001, True])
async def test_purge__a_bad_batch_is_refused_by_name(store: Store, batch: int) -> None:
    ids = await finished(store, Status.SENT, 40 * DAY)
    with pytest.raises(ValidationError) as err:
        await purge(store, purge_rule(NOW), actor="ops", batch=batch)
    assert err.value.field == "batch" and await remaining(store) == set(ids)


# -- the worker's passes: one worker at a time ---------------------------------------


async def test_retention__only_one_of_two_workers_purges(
    store: Store, store_url: str, tmp_path: Path
) -> None:
    ids = await finished(store, Status.SENT, 10 * DAY, 4)
    young = await finished(store, Status.SENT, 1 * DAY)
    s = settings(store_url, retention_batch=3, retention_export_dir=str(tmp_path / "exports"))
    one, two = Retention(store, s, FrozenClock(NOW)), Retention(store, s, FrozenClock(NOW))
    try:
        results = await asyncio.gather(one.tick(), two.tick())
        done = [r for r in results if r is not None]
        assert len(done) == 1 and done[0].counts == {"sent": 4}
        assert await remaining(store) == set(young)
        # The other stays out while the first holds the lead, pass after pass.
        follower = two if results[0] is not None else one
        assert await follower.tick() is None
        (export,) = (tmp_path / "exports").iterdir()
        assert {json.loads(x)["message"]["id"] for x in export.read_text().splitlines()} == set(ids)
    finally:
        await one.release()
        await two.release()
    # Released: the next one to try leads.
    assert await Retention(store, s, FrozenClock(NOW)).tick() is not None


async def test_purge__stops_between_batches_when_told(store: Store) -> None:
    ids = await finished(store, Status.SENT, 10 * DAY, 5)
    stop = asyncio.Event()
    stop.set()  # a worker shutting down mid-pass: the batch in hand finishes, no other starts
    result = await purge(store, purge_rule(NOW), actor="ops", batch=2, pause=5, stop=stop)
    assert (result.total, result.batches) == (2, 1)
    assert len(await remaining(store) & set(ids)) == 3
    (entry,) = [e for e in await store.audit_list() if e.action == "message.purge"]
    assert entry.detail["total"] == 2


async def test_retaining__runs_passes_beside_a_worker_until_the_block_ends(
    store: Store, store_url: str
) -> None:
    old = await finished(store, Status.DEAD, 31 * DAY, 3)
    young = await finished(store, Status.DEAD, 29 * DAY)
    async with retaining(store, settings(store_url, retention_batch=2)) as retention:
        assert retention is not None
        for _ in range(200):  # the first pass starts at once; give it up to 10 s
            if not await remaining(store) & set(old):
                break
            await asyncio.sleep(0.05)
    assert await remaining(store) == set(young)
    (entry,) = [e for e in await store.audit_list() if e.action == "message.purge"]
    assert (entry.actor, entry.detail["counts"]) == ("sluice:retention", {"dead": 3})
    # Off: no task at all.
    async with retaining(store, settings(store_url, retention_interval=0)) as none:
        assert none is None
