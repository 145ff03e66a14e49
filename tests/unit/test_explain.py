"""``sluice.ops.explain``: every status and every hold reason the worker writes comes
out as a reason and a remedy in plain words, never with another tenant's name or an
operator's free text."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from sluice.connections import Connection, ConnectionState, hold_reason
from sluice.flow.controls import Control, Mode, Scope, control_hold_reason
from sluice.model import ErrorCode, Message, Status
from sluice.ops.explain import ERROR_WORDS, KINDS, explain, explain_error
from sluice.store.endpoints import EndpointInfo, hold_text

NOW = datetime(2026, 12, 5, 6, 0, tzinfo=UTC)


def _msg(status: Status = Status.QUEUED, **changes: object) -> Message:
    base = Message(
        id="0193f0c2-0000-7000-8000-000000000001", tenant="acme", channel="sms",
        provider="twilio", action="send", recipient="+15550001", payload={}, priority=0,
        status=status, run_at=NOW - timedelta(seconds=5), attempts=0, max_attempts=5,
    )  # fmt: skip
    return replace(base, **changes)  # type: ignore[arg-type]  # test data, typed by Message


def _control(mode: Mode, scope: Scope, expires: datetime | None = None) -> Control:
    return Control(
        id="c1", scope=scope, mode=mode, actor="cli:ann",
        reason="globex incident: stop everything", created_at=NOW, expires_at=expires,
        version=1,
    )  # fmt: skip


def _conn(state: ConnectionState, missing: list[str] | None = None) -> Connection:
    return Connection(
        id="k1", tenant="acme", provider="twilio", state=state, state_reason="403 scope",
        state_changed_at=NOW, scopes=["sms.send"], missing_scopes=missing or [],
        ciphertext=b"", key_id="k", credential_version=2, expires_at=None,
        last_check_at=None, last_check_ok_at=None, last_check_error=None,
        created_at=NOW, updated_at=NOW,
    )  # fmt: skip


def _endpoint(reason: str) -> EndpointInfo:
    return EndpointInfo(
        id="e1", tenant="acme", endpoint="hooks.acme.example", provider="webhook",
        state="disabled", failing_since=NOW, last_success_at=None, last_failure_at=NOW,
        last_error="TIMEOUT", disabled_at=NOW, disabled_reason=reason, window_start=NOW,
        window_ok=0, window_failed=9, updated_at=NOW,
    )  # fmt: skip


@pytest.mark.parametrize("status", [Status.SENT, Status.DELIVERED, Status.READ])
def test_explain__a_sent_message_needs_nothing(status: Status) -> None:
    e = explain(_msg(status), NOW)
    assert e.kind == "sent" and e.sent and e.remedy is None


def test_explain__a_ready_message_waits_for_a_worker() -> None:
    e = explain(_msg(), NOW)
    assert e.kind == "waiting" and "queue" in e.reason and "shortly" in (e.remedy or "")


def test_explain__a_scheduled_message_says_when() -> None:
    e = explain(_msg(run_at=NOW + timedelta(hours=1)), NOW)
    assert "scheduled for 2026-12-05 07:00:00 UTC" in e.reason


def test_explain__a_retrying_message_names_the_failure_and_the_next_try() -> None:
    msg = _msg(run_at=NOW + timedelta(minutes=2), attempts=2, last_error_code="TIMEOUT")
    e = explain(msg, NOW)
    assert e.kind == "retrying"
    assert e.reason == "attempt 2 of 5 failed: the provider did not answer in time"
    assert "06:02:00" in (e.remedy or "") and "dead letter" in (e.remedy or "")


def test_explain__a_deferred_message_says_no_attempt_was_spent() -> None:
    e = explain(_msg(run_at=NOW + timedelta(seconds=30), deferrals=3), NOW)
    assert e.kind == "waiting" and "3 time(s)" in e.reason and "no attempt" in e.reason


def test_explain__a_pause_on_the_tenant_keeps_it_queued_until_lifted() -> None:
    pause = _control(Mode.PAUSED, Scope.of(tenant="acme"), NOW + timedelta(minutes=30))
    e = explain(_msg(), NOW, controls=[pause])
    assert e.kind == "paused" and e.reason == "sending is paused on your tenant"
    assert "the pause on your tenant is lifted" in (e.remedy or "")
    assert "06:30:00" in (e.remedy or "")


@pytest.mark.parametrize(
    ("mode", "kind", "words"),
    [
        (Mode.KILLED, "control", "sending was stopped by a kill on your tenant"),
        (Mode.APPROVAL, "approval", "messages on your tenant wait for an operator's approval"),
        (Mode.SHADOW, "shadowed", "shadow mode on your tenant: it will be recorded, not sent"),
    ],
)
def test_explain__a_queued_message_under_a_control_says_so(
    mode: Mode, kind: str, words: str
) -> None:
    control = _control(mode, Scope.of(tenant="acme"))
    e = explain(_msg(), NOW, controls=[control])
    assert (e.kind, e.reason) == (kind, words) and e.remedy


def test_explain__the_strictest_control_decides_and_an_approval_given_counts() -> None:
    controls = [_control(Mode.PAUSED, Scope()), _control(Mode.KILLED, Scope.of(tenant="acme"))]
    assert explain(_msg(), NOW, controls=controls).kind == "control"
    approval = [_control(Mode.APPROVAL, Scope.of(tenant="acme"))]
    assert explain(_msg(approved_by="cli:ann"), NOW, controls=approval).kind == "waiting"
    assert explain(_msg(), NOW, controls=[_control(Mode.LIVE, Scope())]).kind == "waiting"


def test_explain__a_pause_elsewhere_does_not_count() -> None:
    pause = _control(Mode.PAUSED, Scope.of(tenant="globex"))
    assert explain(_msg(), NOW, controls=[pause]).kind == "waiting"


@pytest.mark.parametrize(
    ("scope", "words"),
    [
        (Scope.of(tenant="acme"), "your tenant"),
        (Scope.of(tenant="acme", channel="sms"), "your tenant's channel sms"),
        (Scope(), "all sending (every tenant)"),
        (Scope.of(provider="twilio"), "provider twilio (every tenant)"),
    ],
)
def test_explain__a_kill_says_on_what_and_that_lifting_it_releases(
    scope: Scope, words: str
) -> None:
    msg = _msg(Status.HELD, hold_reason=control_hold_reason(_control(Mode.KILLED, scope)))
    e = explain(msg, NOW)
    assert e.kind == "control"
    assert e.reason == f"sending was stopped by a kill on {words}"
    assert (
        e.remedy == f"the kill on {words} is lifted (an operator resumes it); then it is sent, once"
    )


def test_explain__never_repeats_the_operators_words_or_names() -> None:
    held = control_hold_reason(_control(Mode.KILLED, Scope()))
    e = explain(_msg(Status.HELD, hold_reason=held), NOW)
    for text in (e.reason, e.remedy or ""):
        assert "globex" not in text and "cli:ann" not in text


def test_explain__approval_waits_for_an_operator() -> None:
    held = control_hold_reason(_control(Mode.APPROVAL, Scope.of(tenant="acme")))
    e = explain(_msg(Status.HELD, hold_reason=held), NOW)
    assert e.kind == "approval" and "approval" in e.reason
    assert (e.remedy or "").startswith("an operator approves it")


def test_explain__the_fail_closed_default_mode_waits_for_approval() -> None:
    held = "control:approval (default mode, SLUICE_DEFAULT_MODE): approve to send"
    e = explain(_msg(Status.HELD, hold_reason=held), NOW)
    assert e.kind == "approval" and "fail-closed" in e.reason


def test_explain__a_recipient_cap_is_released_by_an_operator() -> None:
    held = "limit: recipient acme 5/1h reached; release or cancel to decide"
    e = explain(_msg(Status.HELD, hold_reason=held), NOW)
    assert e.kind == "limit" and "recipient acme 5/1h" in e.reason
    assert "an operator releases it" in (e.remedy or "")


def test_explain__a_missing_scope_asks_for_re_consent_with_the_scope() -> None:
    held = hold_reason("scope not granted: sms.mms (re-consent needed)")
    e = explain(_msg(Status.HELD, hold_reason=held), NOW)
    assert e.kind == "connection" and "(sms.mms)" in e.reason and "re-consent" in e.reason
    assert (e.remedy or "").startswith("re-consent at twilio: grant Sluice the missing scope")


def test_explain__needs_reconsent_takes_the_scopes_from_the_connection() -> None:
    held = hold_reason("needs_reconsent: 403 scope")
    conn = _conn(ConnectionState.NEEDS_RECONSENT, ["mail.send"])
    e = explain(_msg(Status.HELD, hold_reason=held), NOW, connection=conn)
    assert "(mail.send)" in e.reason and "re-consent at twilio" in (e.remedy or "")


def test_explain__pending_reauth_asks_for_new_credentials() -> None:
    held = hold_reason("pending_reauth: 401 from provider")
    e = explain(_msg(Status.HELD, hold_reason=held), NOW)
    assert "new credentials" in e.reason and "sign in to twilio again" in (e.remedy or "")


def test_explain__a_revoked_or_missing_connection_needs_a_new_one() -> None:
    revoked = hold_reason("revoked: by operator")
    assert "revoked" in explain(_msg(Status.HELD, hold_reason=revoked), NOW).reason
    none = hold_reason("tenant 'acme' has no twilio connection; add one with: sluice ...")
    e = explain(_msg(Status.HELD, hold_reason=none), NOW)
    assert e.reason == "there is no twilio connection for your tenant"


def test_explain__the_tenancy_guard_names_no_other_tenant() -> None:
    held = hold_reason("tenancy guard refused the send: connection belongs to another tenant")
    e = explain(_msg(Status.HELD, hold_reason=held), NOW)
    assert e.kind == "connection" and "safety check" in e.reason
    assert "another tenant" not in e.reason


def test_explain__a_disabled_endpoint_is_re_enabled_once_it_answers() -> None:
    held = hold_text("hooks.acme.example", "failing without a success since ...")
    ep = _endpoint("failing without a success since 2026-11-30 06:00 UTC")
    e = explain(_msg(Status.HELD, hold_reason=held), NOW, endpoint=ep)
    assert e.kind == "endpoint"
    assert (
        e.reason
        == "your endpoint hooks.acme.example was disabled (it kept failing without one success)"
    )
    assert "re-enabled once it answers again" in (e.remedy or "")
    bare = explain(_msg(Status.HELD, hold_reason=hold_text("hooks.acme.example", None)), NOW)
    assert bare.reason == "your endpoint hooks.acme.example was disabled (by an operator)"


def test_explain__an_unknown_hold_waits_for_an_operator() -> None:
    e = explain(_msg(Status.HELD, hold_reason="something new"), NOW)
    assert e.kind == "held" and "operator" in (e.remedy or "")


def test_explain__suppressed_expired_cancelled_shadowed_bounced_are_not_sent() -> None:
    cases = {
        Status.SUPPRESSED: "suppression list",
        Status.EXPIRED: "expiry (2026-12-05 05:00:00 UTC)",
        Status.CANCELLED: "cancelled",
        Status.SHADOWED: "shadow control",
        Status.BOUNCED: "bounced",
        Status.NEEDS_CONFIRM: "no delivery receipt",
    }
    for status, words in cases.items():
        e = explain(_msg(status, expires_at=NOW - timedelta(hours=1)), NOW)
        assert words in e.reason and e.remedy, status
        assert e.kind in KINDS


@pytest.mark.parametrize("code", list(ErrorCode))
def test_explain__every_error_code_of_a_dead_letter_is_explained(code: ErrorCode) -> None:
    assert code in ERROR_WORDS
    e = explain(_msg(Status.DEAD, attempts=5, last_error_code=str(code)), NOW)
    assert e.kind == "dead" and f"({code})" in e.reason and "after 5 attempt(s)" in e.reason
    assert e.remedy and code not in e.remedy


def test_explain__a_transient_dead_letter_may_be_retried_by_the_tenant() -> None:
    words, remedy = explain_error("PROVIDER_ERROR")
    assert words == "the provider failed with a server error" and "retry it" in remedy
    assert explain_error(None)[0] == "the last attempt failed without a code"
    assert explain_error("SOMETHING_NEW")[0] == "the provider failed (SOMETHING_NEW)"


def test_explain__a_message_being_sent_settles_in_seconds() -> None:
    assert explain(_msg(Status.SENDING), NOW).kind == "sending"
