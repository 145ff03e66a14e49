"""The two-person rule through ``sluice.ops.requests`` on both stores: an act a rule
names is filed, not done; another operator's approval does exactly it; the requester
never approves their own; denial and expiry leave everything as it was."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sluice.clock import FrozenClock
from sluice.config import Settings
from sluice.errors import ConfigError, Conflict, NotFound, ValidationError
from sluice.flow.controls import Mode, Scope
from sluice.model import Attempt, AttemptOutcome, Completion, NewMessage, Status
from sluice.ops import controls, endpoints, suppressions
from sluice.ops.requests import (
    Filed,
    message_args,
    perform,
    request_approve,
    request_deny,
    request_get,
    request_page,
    scope_args,
)
from sluice.store import AuditEntry, MessageFilter, Store
from sluice.store.endpoints import EndpointReport
from sluice.twoperson import parse_rules

START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def settings(*rules: str, expiry: float = 86_400.0) -> Settings:
    return Settings(database_url="sqlite:///unused.db", two_person=rules, two_person_expiry=expiry)


async def dead(store: Store, clock: FrozenClock, n: int, tenant: str = "acme") -> list[str]:
    ids = await store.enqueue_many(
        [
            NewMessage(
                tenant=tenant,
                channel="sms",
                provider="null",
                recipient="+15550001111",
                payload={"i": i},
            )
            for i in range(n)
        ],
        clock.now(),
    )
    now = clock.now()
    claimed = await store.message_claim("w1", n, 30, now)
    await store.message_complete_many(
        "w1",
        [
            Completion(
                m.id,
                m.claim_seq,
                "w1",
                Status.DEAD,
                Attempt(
                    m.id,
                    1,
                    "w1",
                    "null",
                    now,
                    now,
                    AttemptOutcome.FAILED,
                    error_code="INVALID_RECIPIENT",
                ),
            )
            for m in claimed
        ],
        now,
    )
    return ids


async def statuses(store: Store, ids: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for mid in ids:
        s = (await store.message_get(mid)).status.value
        out[s] = out.get(s, 0) + 1
    return out


async def test_without_rules__every_act_is_done_at_once(store: Store) -> None:
    clock = FrozenClock(START)
    ids = await dead(store, clock, 3)
    done = await perform(
        store,
        settings(),
        "dlq.retry",
        message_args(MessageFilter()),
        actor="cli:alice",
        clock=clock,
    )
    assert done.changed == 3 and await statuses(store, ids) == {"queued": 3}
    assert await store.request_list(None, 10) == []


async def test_over_the_threshold__filed_then_done_by_another_operator(store: Store) -> None:
    clock = FrozenClock(START)
    ids = await dead(store, clock, 3)
    rules = settings("dlq.retry>2")
    filed = await perform(
        store,
        rules,
        "dlq.retry",
        message_args(MessageFilter()),
        actor="cli:alice",
        reason="provider back",
        clock=clock,
    )
    assert isinstance(filed, Filed) and filed.rules == ["dlq.retry>2"]
    req = filed.request
    assert (req.act, req.state, req.affected, req.scope, req.requester) == (
        "dlq.retry",
        "pending",
        3,
        "global",
        "cli:alice",
    )
    assert await statuses(store, ids) == {"dead": 3}  # nothing changed yet

    # The requester can never approve their own request.
    with pytest.raises(ValidationError, match="actor"):
        await request_approve(store, rules, req.id, actor="cli:alice", clock=clock)
    assert (await request_get(store, req.id, clock)).state == "pending"

    # Two more dead letters arrive meanwhile: the approval does what was requested, 3.
    later = await dead(store, clock, 2)
    clock.advance(60)
    decided = await request_approve(store, rules, req.id, actor="api:bob", reason="ok", clock=clock)
    assert decided.result.changed == 3
    assert await statuses(store, ids + later) == {"queued": 3, "dead": 2}
    got = decided.request
    assert (got.state, got.decided_by, got.result["changed"]) == ("approved", "api:bob", 3)

    entries = await store.audit_list(10)
    assert [e.action for e in entries] == ["dlq.retry", "request.approved", "request.filed"]
    retry, approved, filed_row = entries
    assert (filed_row.actor, filed_row.detail["affected"]) == ("cli:alice", 3)
    assert (approved.detail["requester"], approved.detail["approver"]) == ("cli:alice", "api:bob")
    assert approved.detail["affected_at_approval"] == 5
    assert retry.actor == "api:bob" and req.id in (retry.reason or "")

    with pytest.raises(Conflict, match="approved"):
        await request_approve(store, rules, req.id, actor="api:carol", clock=clock)


async def test_at_or_under_the_threshold__done_at_once(store: Store) -> None:
    clock = FrozenClock(START)
    ids = await dead(store, clock, 2)
    done = await perform(
        store,
        settings("dlq.retry>2"),
        "dlq.retry",
        message_args(MessageFilter()),
        actor="cli:alice",
        clock=clock,
    )
    assert done.changed == 2 and await statuses(store, ids) == {"queued": 2}


async def test_a_dry_run_is_never_held_back(store: Store) -> None:
    clock = FrozenClock(START)
    await dead(store, clock, 3)
    done = await perform(
        store,
        settings("dlq.retry"),
        "dlq.retry",
        message_args(MessageFilter(), dry_run=True),
        actor="a",
        clock=clock,
    )
    assert (done.dry_run, done.matched) == (True, 3)


async def test_deny__nothing_happens_and_it_cannot_be_approved_after(store: Store) -> None:
    clock = FrozenClock(START)
    ids = await dead(store, clock, 2)
    rules = settings("dlq.cancel")
    filed = await perform(
        store, rules, "dlq.cancel", message_args(MessageFilter()), actor="cli:alice", clock=clock
    )
    denied = await request_deny(store, filed.request.id, actor="cli:bob", reason="no", clock=clock)
    assert (denied.request.state, denied.request.decided_by) == ("denied", "cli:bob")
    with pytest.raises(Conflict, match="denied"):
        await request_approve(store, rules, filed.request.id, actor="cli:carol", clock=clock)
    assert await statuses(store, ids) == {"dead": 2}
    [entry] = [e for e in await store.audit_list(10) if e.action == "request.denied"]
    assert (entry.actor, entry.detail["requester"]) == ("cli:bob", "cli:alice")


async def test_expiry__a_request_not_decided_in_time_expires(store: Store) -> None:
    clock = FrozenClock(START)
    ids = await dead(store, clock, 1)
    rules = settings("dlq.retry", expiry=3600)
    filed = await perform(
        store, rules, "dlq.retry", message_args(MessageFilter()), actor="cli:alice", clock=clock
    )
    clock.advance(3601)
    with pytest.raises(Conflict, match="expired"):
        await request_approve(store, rules, filed.request.id, actor="cli:bob", clock=clock)
    page, cursor = await request_page(store, None, 10, clock=clock)
    assert [(r.id, r.state) for r in page] == [(filed.request.id, "expired")] and cursor is None
    assert await statuses(store, ids) == {"dead": 1}


async def test_scope__resume_global_waits_a_tenant_resume_does_not(store: Store) -> None:
    clock = FrozenClock(START)
    rules = settings("resume:global")
    for scope in (Scope(), Scope.of("acme")):
        await controls.control_set(
            store, scope, Mode.KILLED, actor="a", reason="r", wait=False, clock=clock
        )
    args = {"scope": scope_args(Scope.of("acme")), "wait": False}
    done = await perform(store, rules, "resume", args, actor="a", reason="fixed", clock=clock)
    assert not isinstance(done, Filed)
    args = {"scope": scope_args(Scope()), "wait": False}
    filed = await perform(store, rules, "resume", args, actor="a", reason="fixed", clock=clock)
    assert isinstance(filed, Filed) and filed.request.scope == "global"
    assert [c.scope for c in await store.control_list()] == [Scope()]
    await request_approve(store, rules, filed.request.id, actor="b", clock=clock)
    assert await store.control_list() == []


async def test_a_kill_never_waits__control_set_killed_acts_at_once(store: Store) -> None:
    clock = FrozenClock(START)
    rules = settings("control.set")
    args = {"scope": scope_args(Scope()), "mode": "killed", "wait": False}
    change = await perform(store, rules, "control.set", args, actor="a", reason="r", clock=clock)
    assert not isinstance(change, Filed) and change.control.mode is Mode.KILLED
    args = {"scope": scope_args(Scope()), "mode": "live", "wait": False}
    assert isinstance(
        await perform(store, rules, "control.set", args, actor="a", reason="r", clock=clock),
        Filed,
    )


async def test_bad_arguments_are_refused_before_anything_is_filed(store: Store) -> None:
    clock = FrozenClock(START)
    rules = settings("breaker.*", "resume")
    with pytest.raises(ValidationError, match="key"):
        await perform(
            store,
            rules,
            "breaker.force",
            {"key": "x:y:z:", "state": "open"},
            actor="a",
            reason="r",
            clock=clock,
        )
    with pytest.raises(ValidationError, match="reason"):
        await perform(store, rules, "resume", {"scope": {}}, actor="a", clock=clock)
    with pytest.raises(ValidationError, match="act"):
        await perform(store, rules, "kill", {}, actor="a", clock=clock)
    assert await store.request_list(None, 10) == []


async def test_apikeys_create__the_token_goes_to_the_approver_and_is_never_stored(
    store: Store,
) -> None:
    clock = FrozenClock(START)
    rules = settings("apikeys.create")
    args = {"name": "ci", "role": "operator", "tenant": None}
    filed = await perform(store, rules, "apikeys.create", args, actor="a", clock=clock)
    assert isinstance(filed, Filed)
    with pytest.raises(ValidationError, match="role"):
        await perform(store, rules, "apikeys.create", {**args, "role": "root"}, actor="a")
    decided = await request_approve(store, rules, filed.request.id, actor="b", clock=clock)
    assert decided.result.token.startswith("sk_")
    stored = (await store.request_get(filed.request.id)).result
    assert "token" not in stored and "secret_hash" not in stored["key"]
    assert decided.result.token not in str(stored)
    assert [k.name for k in await store.api_key_list()] == ["ci"]


async def test_an_act_that_changes_nothing_is_done_at_once(store: Store) -> None:
    clock = FrozenClock(START)
    done = await perform(store, settings("dlq.retry"), "dlq.retry",
                         message_args(MessageFilter()), actor="a", clock=clock)  # fmt: skip
    assert not isinstance(done, Filed) and done.matched == 0


async def test_hostile_ids_name_no_request(store: Store) -> None:
    for bad in ("\ud800", "x" * 10_000, "'; DROP TABLE sluice_requests; --", ""):
        with pytest.raises(NotFound):
            await request_get(store, bad)
        with pytest.raises(NotFound):
            await request_approve(store, settings(), bad, actor="b")
    with pytest.raises(ValidationError, match="before"):
        await request_page(store, None, 10, before="\ud800")
    with pytest.raises(ValidationError, match="limit"):
        await request_page(store, None, 0)


# -- issue 14's operator acts, through the same door ---------------------------------------


async def file_it(
    store: Store, rules: Settings, act: str, args: dict[str, Any], clock: FrozenClock
) -> Filed:
    """``act`` filed as cli:alice (that nothing is done yet is the caller's to check),
    and her own approval refused."""
    filed = await perform(store, rules, act, args, actor="cli:alice", reason="why", clock=clock)
    assert isinstance(filed, Filed) and filed.request.act == act
    with pytest.raises(ValidationError, match="actor"):
        await request_approve(store, rules, filed.request.id, actor="cli:alice", clock=clock)
    return filed


async def approve(store: Store, rules: Settings, filed: Filed, clock: FrozenClock) -> Any:
    decided = await request_approve(store, rules, filed.request.id, actor="api:bob", clock=clock)
    assert decided.request.state == "approved" and decided.request.decided_by == "api:bob"
    return decided.result


async def waiting(store: Store, clock: FrozenClock, n: int) -> list[str]:
    """``n`` queued messages waiting out a retry backoff, due in ten minutes."""
    now = clock.now()
    ids = await store.enqueue_many(
        [NewMessage(tenant="acme", channel="sms", provider="null", recipient="+15550001111",
                    payload={"i": i}) for i in range(n)],
        now,
    )  # fmt: skip
    claimed = await store.message_claim("w1", n, 30, now)
    later = now + timedelta(minutes=10)
    await store.message_complete_many(
        "w1",
        [Completion(m.id, m.claim_seq, "w1", Status.QUEUED,
                    Attempt(m.id, m.claim_seq, "w1", "null", now, now, AttemptOutcome.FAILED,
                            error_code="TIMEOUT"), run_at=later)
         for m in claimed],
        now,
    )  # fmt: skip
    return ids


async def due(store: Store, ids: list[str], now: datetime) -> int:
    return sum([(await store.message_get(i)).run_at <= now for i in ids])


async def test_messages_retry_now__counts_so_a_threshold_files_it(store: Store) -> None:
    clock = FrozenClock(START)
    ids = await waiting(store, clock, 3)
    rules = settings("messages.retry_now:tenant>2")
    args = message_args(MessageFilter(tenant="acme"))
    filed = await file_it(store, rules, "messages.retry_now", args, clock)
    req = filed.request
    assert (req.affected, req.scope, req.tenant) == (3, "tenant", "acme")
    assert await due(store, ids, clock.now()) == 0  # nothing moved yet
    # A dry run and a move under the threshold are never held back.
    dry = await perform(store, rules, "messages.retry_now", {**args, "dry_run": True},
                        actor="cli:alice", clock=clock)  # fmt: skip
    assert not isinstance(dry, Filed) and dry.matched == 3
    result = await approve(store, rules, filed, clock)
    assert result.changed == 3 and await due(store, ids, clock.now()) == 3
    actions = [e.action for e in await store.audit_list(10)]
    assert actions[:3] == ["message.retry_now", "request.approved", "request.filed"]


async def test_throttles_clear__filed_then_cleared_by_another_operator(store: Store) -> None:
    clock = FrozenClock(START)
    now = clock.now()
    await store.throttle_set("acme", "twilio", now + timedelta(minutes=5), "429", now)
    rules = settings("throttles.clear")
    args = {"tenant": "acme", "wait": False}
    with pytest.raises(ValidationError, match="reason"):  # checked before anything is filed
        await perform(store, rules, "throttles.clear", args, actor="cli:alice", clock=clock)
    other = await perform(store, rules, "throttles.clear", {**args, "tenant": "other"},
                          actor="cli:alice", reason="r", clock=clock)  # fmt: skip
    assert not isinstance(other, Filed) and other.throttles == []  # nothing to clear: at once
    filed = await file_it(store, rules, "throttles.clear", args, clock)
    assert filed.request.affected is None  # throttle marks, not messages: it does not count
    assert len(await store.throttle_list(now)) == 1
    result = await approve(store, rules, filed, clock)
    assert [t.provider for t in result.throttles] == ["twilio"]
    assert await store.throttle_list(now) == []


async def test_endpoint_enable_waits__disable_never_does(store: Store) -> None:
    clock = FrozenClock(START)
    url = "https://hooks.example.com/in"
    fail = EndpointReport("acme", url, "webhook", failed=2, last_failed_at=START,
                          streak_from=START, error="TIMEOUT")  # fmt: skip
    await store.endpoint_report([fail], START, 3600)
    [row] = await store.endpoint_list()
    with pytest.raises(ConfigError, match=r"endpoint\.disable is containment"):
        parse_rules(["endpoint.disable"])
    rules = settings("endpoint.*")
    # Disabling is not an act a rule can name: the operator's containment acts at once.
    await endpoints.endpoint_disable(store, row.id, actor="cli:alice", reason="429s", clock=clock)
    assert (await store.endpoint_get(row.id)).state == "disabled"
    filed = await file_it(store, rules, "endpoint.enable", {"id": row.id}, clock)
    req = filed.request
    assert (req.scope, req.tenant, req.args["endpoint"]) == ("tenant", "acme", url)
    assert (await store.endpoint_get(row.id)).state == "disabled"
    change = await approve(store, rules, filed, clock)
    assert change.endpoint.state == "healthy" == (await store.endpoint_get(row.id)).state
    with pytest.raises(NotFound):  # an endpoint that is not there files nothing
        await perform(store, rules, "endpoint.enable", {"id": "nope"}, actor="a", clock=clock)
    assert [r.id for r in await store.request_list(None, 10)] == [req.id]


async def test_suppression_remove_waits__add_never_does(store: Store) -> None:
    clock = FrozenClock(START)
    with pytest.raises(ConfigError, match=r"suppression\.add is containment"):
        parse_rules(["suppression.add"])
    rules = settings("suppression.*")
    await suppressions.suppression_add(store, tenant="acme", channel="sms",
                                       recipient="+14155550100", actor="cli:alice",
                                       reason="asked by phone", clock=clock)  # fmt: skip
    args = {"tenant": "acme", "channel": "sms", "recipient": "+14155550100"}
    filed = await file_it(store, rules, "suppression.remove", args, clock)
    assert (filed.request.scope, filed.request.tenant) == ("tenant", "acme")
    assert len((await suppressions.suppression_list(store, tenant="acme")).items) == 1
    lifted = await approve(store, rules, filed, clock)
    assert lifted.recipient == "+14155550100"
    assert (await suppressions.suppression_list(store, tenant="acme")).items == []
    # Nothing to lift, another tenant's entry, a hostile value: refused, nothing filed.
    for bad, error in (
        (args, NotFound),
        ({**args, "tenant": "other"}, NotFound),
        ({**args, "recipient": "\ud800"}, ValidationError),
    ):
        with pytest.raises(error):
            await perform(store, rules, "suppression.remove", bad, actor="a", clock=clock)
    assert len(await store.request_list(None, 10)) == 1


async def test_events_url_clear__filed_then_cleared(store: Store) -> None:
    clock = FrozenClock(START)
    url = "https://events.example.com/sluice"
    audit = AuditEntry(at=START, actor="op", action="tenant.events_url.set", target="acme")
    await store.tenant_events_set("acme", url, START, audit)
    rules = settings("events_url.clear")
    filed = await file_it(store, rules, "events_url.clear", {"tenant": "acme"}, clock)
    assert filed.request.tenant == "acme"
    assert (await store.tenant_events_get("acme")).events_url == url  # type: ignore[union-attr]
    assert (await approve(store, rules, filed, clock)).events_url is None
    assert (await store.tenant_events_get("acme")).events_url is None  # type: ignore[union-attr]
    with pytest.raises(ValidationError, match="tenant"):  # nothing to clear: nothing filed
        await perform(store, rules, "events_url.clear", {"tenant": "acme"}, actor="a")
    assert len(await store.request_list(None, 10)) == 1


async def test_purge__counts_and_an_approval_removes_no_more_than_the_request_saw(
    store: Store,
) -> None:
    from sluice.ops.requests import purge_args
    from sluice.ops.retention import purge_rule

    clock = FrozenClock(START)
    old = await dead(store, clock, 3)
    clock.advance(timedelta(days=20).total_seconds())
    young = await dead(store, clock, 2)
    clock.advance(timedelta(days=11).total_seconds())
    rules = settings("purge>2")
    rule = purge_rule(clock.now(), older_than="30d")
    args = purge_args(rule, batch=100)
    under = await perform(store, settings("purge>3"), "purge", {**args, "dry_run": True},
                          actor="cli:alice", clock=clock)  # fmt: skip
    assert not isinstance(under, Filed) and under.total == 3
    filed = await file_it(store, rules, "purge", args, clock)
    assert (filed.request.affected, filed.request.scope) == (3, "global")
    assert await statuses(store, old + young) == {"dead": 5}  # nothing removed yet
    # Weeks later the young ones are past 30 days too; the request's cut-off still holds.
    clock.advance(timedelta(days=15).total_seconds())
    clock_expiry = settings("purge>2", expiry=timedelta(days=30).total_seconds())
    filed = await file_it(store, clock_expiry, "purge", args, clock)
    clock.advance(timedelta(days=15).total_seconds())
    result = await approve(store, clock_expiry, filed, clock)
    assert result.counts == {"dead": 3}
    for mid in old:
        with pytest.raises(NotFound):
            await store.message_get(mid)
    assert await statuses(store, young) == {"dead": 2}
    actions = [e.action for e in await store.audit_list(10)]
    assert actions[:3] == ["message.purge", "request.approved", "request.filed"]
