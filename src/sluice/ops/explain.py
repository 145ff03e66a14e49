"""Why a message was not sent, and what would release it, in words a tenant can act on.

The console's tenant view shows this beside every message that is not sent; the API or
the CLI may show the same. One pure function, ``explain``: the message as stored, plus
what it waits on when the caller has it at hand (the controls in force, the message's
connection, its endpoint), gives an ``Explanation`` — a ``kind`` (what stops it), the
``reason`` and the ``remedy``. It reads nothing and never names another tenant: a
control's operator-written reason and a hold's raw text stay out of the words (the
operator sees those on their own pages).

The hold reasons it reads are the ones the worker writes: ``control:<mode> (<scope>)``
(``sluice.flow.controls``), ``limit: <label> reached`` (``sluice.flow.limits``),
``connection: …`` (``sluice.connections``) and ``endpoint disabled: <endpoint> (…)``
(``sluice.store.endpoints``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from sluice.connections import HOLD_PREFIX as CONNECTION_HOLD
from sluice.connections import Connection, ConnectionState
from sluice.flow.controls import CONTROL_PREFIX, Control, Mode
from sluice.model import ErrorCode, Message, Status
from sluice.store.endpoints import HOLD_PREFIX as ENDPOINT_HOLD
from sluice.store.endpoints import EndpointInfo

__all__ = ["ERROR_WORDS", "KINDS", "Explanation", "explain", "explain_error"]

#: What stops a message, one word each (``Explanation.kind``).
KINDS = (
    "sent", "sending", "waiting", "retrying", "paused", "approval", "control", "limit",
    "connection", "endpoint", "held", "suppressed", "expired", "dead", "cancelled",
    "shadowed", "needs_confirm", "bounced",
)  # fmt: skip

#: Each error code in plain words, and what helps (None: retrying may, once it is fixed).
ERROR_WORDS: dict[str, tuple[str, str | None]] = {
    ErrorCode.INVALID_RECIPIENT: (
        "the provider says the recipient address or number is not valid",
        "correct the recipient and send a new message; retrying the same one cannot help",
    ),
    ErrorCode.QUOTA_EXCEEDED: ("the provider account's quota was used up", None),
    ErrorCode.ACCOUNT_SUSPENDED: (
        "the provider suspended the account it was sent with",
        "settle the account with the provider, then retry it",
    ),
    ErrorCode.TEMPLATE_NOT_APPROVED: (
        "the message template is not approved by the provider",
        "get the template approved (or use an approved one) and send a new message",
    ),
    ErrorCode.RATE_LIMITED: ("the provider kept asking to slow down", None),
    ErrorCode.AUTH_REVOKED: (
        "the provider refused the credentials (revoked or expired)",
        "renew the connection's credentials, then retry it",
    ),
    ErrorCode.SCOPE_MISSING: (
        "the credentials lack a permission (scope) this message needs",
        "re-consent the connection with the missing scope, then retry it",
    ),
    ErrorCode.PROVIDER_UNAVAILABLE: ("the provider was unavailable (an outage)", None),
    ErrorCode.PROVIDER_ERROR: ("the provider failed with a server error", None),
    ErrorCode.TIMEOUT: ("the provider did not answer in time", None),
    ErrorCode.CONNECTION_FAILED: ("the provider or endpoint could not be reached", None),
    ErrorCode.BAD_REQUEST: (
        "the provider refused the message's content as malformed",
        "fix the payload and send a new message; retrying the same one cannot help",
    ),
    ErrorCode.ENDPOINT_GONE: (
        "the endpoint answered that it is gone (404 or 410)",
        "fix the endpoint's URL and send a new message, or bring the endpoint back and retry",
    ),
    ErrorCode.UNKNOWN_PROVIDER: (
        "no provider of that name is configured",
        "send a new message naming a configured provider",
    ),
    ErrorCode.LEASE_EXPIRED: ("its sending worker stopped mid-send, again and again", None),
    ErrorCode.INTERNAL: ("an error inside Sluice", None),
    ErrorCode.RECIPIENT_UNSUBSCRIBED: (
        "the recipient opted out with the provider (replied STOP or blocked you)",
        "nothing: do not send to them again unless they opt back in",
    ),
    ErrorCode.RECIPIENT_SUPPRESSED: (
        "the recipient is on your suppression list",
        "nothing, unless they opt back in: then the suppression is removed and you send anew",
    ),
    ErrorCode.WINDOW_CLOSED: (
        "free-form WhatsApp text outside the 24-hour window since the user last wrote",
        "send an approved template instead, or wait until the user writes to you",
    ),
    ErrorCode.NOT_CONFIRMED: (
        "no delivery receipt came and a person marked it as not arrived",
        "retry it to send it again",
    ),
}

_RETRY = "retry it from your dead letters once the cause is gone"


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why a message is where it is (``reason``) and what would move it on (``remedy``;
    None once it was sent: nothing is needed)."""

    kind: str
    reason: str
    remedy: str | None = None

    @property
    def sent(self) -> bool:
        return self.kind == "sent"


def explain_error(code: str | None) -> tuple[str, str]:
    """An error code in plain words, and what helps."""
    if not code:
        return "the last attempt failed without a code", _RETRY
    words, remedy = ERROR_WORDS.get(code, (f"the provider failed ({code})", None))
    return words, remedy or _RETRY


def explain(
    msg: Message,
    now: datetime,
    *,
    controls: Iterable[Control] = (),
    connection: Connection | None = None,
    endpoint: EndpointInfo | None = None,
) -> Explanation:
    """Why ``msg`` is not sent (or that it was), and what would release it.

    ``controls``: those in force (a paused message is queued with no mark of its own);
    ``connection``: the tenant's connection to ``msg.provider`` (the scopes to re-consent);
    ``endpoint``: the endpoint it goes to (why it was disabled)."""
    by_status = _BY_STATUS.get(msg.status)
    if by_status is not None:
        return by_status(msg)
    if msg.status is Status.QUEUED:
        return _queued(msg, now, controls)
    if msg.status is Status.HELD:
        return _held(msg, connection, endpoint)
    if msg.status is Status.DEAD:
        return _dead(msg)
    return Explanation("sending", "a worker is sending it now", "nothing: it settles in seconds")


def _delivered(msg: Message) -> Explanation:
    words = {Status.SENT: "the provider accepted it", Status.DELIVERED: "it was delivered",
             Status.READ: "it was delivered and read"}  # fmt: skip
    return Explanation("sent", words.get(msg.status, "sent"))


def _bounced(msg: Message) -> Explanation:
    return Explanation(
        "bounced", "the provider accepted it, then reported it could not be delivered (bounced)",
        "check the recipient; send a new message to a working address"
    )  # fmt: skip


def _cancelled(msg: Message) -> Explanation:
    return Explanation(
        "cancelled", "it was cancelled before it was sent",
        "nothing: send a new message if it is still wanted"
    )  # fmt: skip


def _expired(msg: Message) -> Explanation:
    at = f" ({_when(msg.expires_at)})" if msg.expires_at else ""
    return Explanation(
        "expired", f"it was not sent by its expiry{at}, and Sluice never sends late",
        "nothing: send a new message (with a later expiry) if it is still wanted"
    )  # fmt: skip


def _suppressed(msg: Message) -> Explanation:
    return Explanation(
        "suppressed",
        "the recipient is on your suppression list (they opted out, or mail to them bounced)",
        "nothing, unless they opt back in: then the suppression is removed and you send anew",
    )


def _shadowed(msg: Message) -> Explanation:
    return Explanation(
        "shadowed", "a shadow control recorded what would have been sent, and sent nothing",
        "nothing: a shadowed message is never sent; send it again once shadow mode is over",
    )  # fmt: skip


def _needs_confirm(msg: Message) -> Explanation:
    return Explanation(
        "needs_confirm",
        "it was sent, but no delivery receipt came within the time it asked for",
        "an operator confirms it arrived, or marks it failed (then you may retry it)",
    )


_BY_STATUS = {
    Status.SENT: _delivered, Status.DELIVERED: _delivered, Status.READ: _delivered,
    Status.BOUNCED: _bounced, Status.CANCELLED: _cancelled, Status.EXPIRED: _expired,
    Status.SUPPRESSED: _suppressed, Status.SHADOWED: _shadowed,
    Status.NEEDS_CONFIRM: _needs_confirm,
}  # fmt: skip


def _queued(msg: Message, now: datetime, controls: Iterable[Control]) -> Explanation:
    control = _strictest(msg, controls, now)
    if control is not None:
        return _queued_under(msg, control)
    if msg.run_at > now and msg.attempts > 0:
        words, _ = explain_error(msg.last_error_code)
        return Explanation(
            "retrying",
            f"attempt {msg.attempts} of {msg.max_attempts} failed: {words}",
            f"nothing: it is tried again at {_when(msg.run_at)}; after attempt "
            f"{msg.max_attempts} it becomes a dead letter",
        )
    if msg.run_at > now and msg.deferrals > 0:
        return Explanation(
            "waiting",
            f"held back {msg.deferrals} time(s) by a rate limit, a quota or the provider "
            "asking to slow down (no attempt spent)",
            f"nothing: it is tried again at {_when(msg.run_at)}",
        )
    if msg.run_at > now:
        return Explanation("waiting", f"it is scheduled for {_when(msg.run_at)}",
                           "nothing: it goes out then")  # fmt: skip
    return Explanation("waiting", "it is in the queue, ready to go",
                       "nothing: a worker takes it shortly")  # fmt: skip


def _held(msg: Message, conn: Connection | None, endpoint: EndpointInfo | None) -> Explanation:
    text = msg.hold_reason or ""
    if text.startswith(CONTROL_PREFIX):
        return _held_by_control(msg, text[len(CONTROL_PREFIX) :])
    if text.startswith("limit: "):
        label = text[len("limit: ") :].split(" reached", 1)[0]
        return Explanation(
            "limit",
            f"it reached the limit {label} (a cap on messages to one recipient, "
            "which stops runaway loops)",
            "an operator releases it (or cancels it); it is not released by itself",
        )
    if text.startswith(CONNECTION_HOLD):
        return _held_by_connection(msg, text[len(CONNECTION_HOLD) :].strip(), conn)
    if text.startswith(ENDPOINT_HOLD):
        return _held_by_endpoint(text[len(ENDPOINT_HOLD) :], endpoint)
    return Explanation("held", "it is held for an operator's decision",
                       "an operator releases or cancels it")  # fmt: skip


_SCOPE = re.compile(r"(?P<mode>\w+) \((?P<scope>[^)]*)\)")


def _held_by_control(msg: Message, rest: str) -> Explanation:
    found = _SCOPE.match(rest)
    mode = found.group("mode") if found else ""
    scope = found.group("scope") if found else ""
    if scope.startswith("default mode"):
        return Explanation(
            "approval",
            "every message waits for an operator's approval here (Sluice runs fail-closed)",
            "an operator approves it; then it is sent",
        )
    where = _scope_words(scope, msg)
    if mode == Mode.APPROVAL:
        return Explanation(
            "approval", f"messages on {where} wait for an operator's approval",
            f"an operator approves it (or lifts approval mode on {where}); then it is sent",
        )  # fmt: skip
    verb = {Mode.KILLED.value: "kill", Mode.PAUSED.value: "pause"}.get(mode, "control")
    return Explanation(
        "control", f"sending was stopped by a {verb} on {where}",
        f"the {verb} on {where} is lifted (an operator resumes it); then it is sent, once",
    )  # fmt: skip


def _scope_words(scope: str, msg: Message) -> str:
    """``tenant=acme channel=sms`` as the tenant reads it: "your tenant's channel sms"."""
    if not scope or scope == "global":
        return "all sending (every tenant)"
    parts = dict(p.split("=", 1) for p in scope.split() if "=" in p)
    rest = ", ".join(f"{n} {parts[n]}" for n in ("channel", "provider", "action") if n in parts)
    if parts.get("tenant") == msg.tenant:
        return f"your tenant's {rest}" if rest else "your tenant"
    return f"{rest} (every tenant)" if rest else "all sending"


def _held_by_connection(msg: Message, detail: str, conn: Connection | None) -> Explanation:
    where = f"your {msg.provider} connection"
    if detail.startswith("tenancy guard"):
        return Explanation(
            "connection",
            "a safety check refused to send it: the credentials found did not belong to you",
            "an operator investigates and fixes the connection; it is not sent until then",
        )
    missing = list(conn.missing_scopes) if conn is not None else []
    if detail.startswith("scope not granted:"):
        missing = missing or [s.strip() for s in detail.split(":", 1)[1].split("(")[0].split(",")]
    state = conn.state if conn is not None else None
    if missing or state is ConnectionState.NEEDS_RECONSENT or "needs_reconsent" in detail:
        scopes = f" ({', '.join(missing)})" if missing else ""
        return Explanation(
            "connection",
            f"{where} lacks a permission this message needs{scopes}: re-consent is needed",
            f"re-consent at {msg.provider}: grant Sluice the missing scope{scopes}; once the "
            "connection is rotated with the new grant, held messages go out oldest first",
        )
    if state is ConnectionState.PENDING_REAUTH or "pending_reauth" in detail:
        return Explanation(
            "connection", f"{where} needs new credentials (the provider refused the old ones)",
            f"sign in to {msg.provider} again and give Sluice the new credentials (the "
            "connection is rotated); held messages then go out oldest first",
        )  # fmt: skip
    if state is ConnectionState.REVOKED or "revoked" in detail:
        return Explanation(
            "connection", f"{where} was revoked",
            "a new connection is added for you; held messages then go out oldest first",
        )  # fmt: skip
    return Explanation(
        "connection", f"there is no {msg.provider} connection for your tenant",
        f"a {msg.provider} connection is added for you; held messages then go out",
    )  # fmt: skip


def _held_by_endpoint(rest: str, endpoint: EndpointInfo | None) -> Explanation:
    name = endpoint.endpoint if endpoint is not None else rest.split(" (", 1)[0]
    failing = endpoint is not None and (endpoint.disabled_reason or "").startswith("failing")
    why = "it kept failing without one success" if failing else "by an operator"
    return Explanation(
        "endpoint", f"your endpoint {name} was disabled ({why})",
        "the endpoint is re-enabled once it answers again (fix your receiver; an operator "
        "enables it) and then held messages go back to the queue",
    )  # fmt: skip


def _dead(msg: Message) -> Explanation:
    words, remedy = explain_error(msg.last_error_code)
    code = f" ({msg.last_error_code})" if msg.last_error_code else ""
    return Explanation("dead", f"it gave up after {msg.attempts} attempt(s): {words}{code}",
                       remedy)  # fmt: skip


def _strictest(msg: Message, controls: Iterable[Control], now: datetime) -> Control | None:
    """The control that decides ``msg`` (the most restrictive covering it, as workers
    decide), when it keeps the message from going: an approval it already has does not."""
    best: Control | None = None
    for c in controls:
        covers = c.active(now) and c.scope.covers(msg.tenant, msg.channel, msg.provider, msg.action)
        if covers and (best is None or c.mode.rank > best.mode.rank):
            best = c
    if best is None or best.mode is Mode.LIVE or (best.mode is Mode.APPROVAL and msg.approved_by):
        return None
    return best


def _queued_under(msg: Message, control: Control) -> Explanation:
    """A queued message a control keeps from going (a pause parks it; a kill or an
    approval holds it when a worker reaches it; a shadow records it unsent)."""
    where = _scope_words(str(control.scope), msg)
    ends = f" (it ends by itself at {_when(control.expires_at)})" if control.expires_at else ""
    if control.mode is Mode.PAUSED:
        lifted = f"the pause on {where} is lifted{ends}; then it goes out in order"
        return Explanation("paused", f"sending is paused on {where}", lifted)
    if control.mode is Mode.KILLED:
        lifted = f"the kill on {where} is lifted{ends}; then it is sent, once"
        return Explanation("control", f"sending was stopped by a kill on {where}", lifted)
    if control.mode is Mode.APPROVAL:
        return Explanation("approval", f"messages on {where} wait for an operator's approval",
                           "an operator approves it; then it is sent")  # fmt: skip
    return Explanation(
        "shadowed", f"shadow mode on {where}: it will be recorded, not sent",
        f"shadow mode on {where} ends{ends} before its turn; otherwise send it again later",
    )  # fmt: skip


def _when(at: datetime | None) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if at is not None else "—"
