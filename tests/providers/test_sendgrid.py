"""The SendGrid adapter over ``httpx.MockTransport``: the request it makes, every error rule."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from _wire import Wire, json_of, message, raising, respond

from sluice.clock import FrozenClock
from sluice.model import ErrorCode, Message, Outcome
from sluice.providers._errors import CheckResult
from sluice.providers.sendgrid import (
    ERROR_RULES,
    MAIL_SEND_SCOPE,
    STATUS_CODES,
    ErrorRule,
    SendGridProvider,
)

CREDENTIALS = {"api_key": "SG.k3y", "from_email": "shop@acme.example"}
NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)


def _email(action: str = "order.shipped", **payload: Any) -> Message:
    return message(
        channel="email",
        provider="sendgrid",
        recipient="ann@example.com",
        action=action,
        payload=payload or {"subject": "Shipped", "text": "Your order shipped"},
    )


async def _send(
    wire: Wire, msg: Message | None = None, *, credentials: dict[str, str] | None = None
) -> Outcome:
    async with wire.client() as client:
        provider = SendGridProvider(client, clock=FrozenClock(NOW))
        return await provider.send(
            msg or _email(), CREDENTIALS if credentials is None else credentials
        )


async def _check(wire: Wire, credentials: dict[str, str] | None = None) -> CheckResult:
    async with wire.client() as client:
        return await SendGridProvider(client).check(credentials or CREDENTIALS)


def _accepted(message_id: str = "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0") -> Wire:
    return Wire(respond(202, headers={"x-message-id": message_id}))


def _errors(status: int, *errors: tuple[str | None, str], **headers: str) -> Wire:
    document = {"errors": [{"field": f, "message": m, "help": None} for f, m in errors]}
    return Wire(respond(status, json=document, headers=headers))


# -- the request ---------------------------------------------------------------------


async def test_send__posts_json_with_a_bearer_key_to_mail_send() -> None:
    wire, msg = _accepted(), _email(subject="Shipped", text="plain", html="<b>rich</b>")

    outcome = await _send(wire, msg, credentials={**CREDENTIALS, "from_name": "Acme Shop"})

    assert outcome.ok
    request = wire.only
    assert request.method == "POST"
    assert str(request.url) == "https://api.sendgrid.com/v3/mail/send"
    assert request.headers["authorization"] == "Bearer SG.k3y"
    assert request.headers["content-type"] == "application/json"
    tags = {"sluice_message_id": msg.id, "tenant": "acme"}
    assert json_of(request) == {
        "personalizations": [{"to": [{"email": "ann@example.com"}], "custom_args": tags}],
        "from": {"email": "shop@acme.example", "name": "Acme Shop"},
        "subject": "Shipped",
        "content": [
            {"type": "text/plain", "value": "plain"},
            {"type": "text/html", "value": "<b>rich</b>"},
        ],
        "categories": ["order.shipped"],
        "custom_args": tags,
    }


async def test_send__dynamic_template_with_its_data() -> None:
    wire = _accepted()
    msg = _email(
        template_id="d-123", dynamic_template_data={"name": "Ann"}, reply_to="help@acme.example"
    )

    await _send(wire, msg)

    body = json_of(wire.only)
    assert body["template_id"] == "d-123"
    assert body["personalizations"][0]["dynamic_template_data"] == {"name": "Ann"}
    assert body["reply_to"] == {"email": "help@acme.example"}
    assert "content" not in body
    assert "subject" not in body


async def test_send__categories_fit_sendgrids_limits() -> None:
    wire = _accepted()
    extra = ["order.shipped", "x" * 300, *[f"c{i}" for i in range(20)]]

    await _send(wire, _email("order.shipped", subject="s", text="t", categories=extra))

    categories = json_of(wire.only)["categories"]
    assert categories[0] == "order.shipped"
    assert len(categories) == 10
    assert len(set(categories)) == 10
    assert max(len(c) for c in categories) == 255


@pytest.mark.parametrize(
    "payload",
    [
        {"text": "no subject"},
        {"subject": "no content"},
        {"subject": "s", "text": ""},
        {"template_id": ""},
        {"template_id": "d-1", "dynamic_template_data": ["not", "an", "object"]},
    ],
    ids=repr,
)
async def test_send__incomplete_payload_is_a_bad_request_without_io(
    payload: dict[str, Any],
) -> None:
    wire = _accepted()
    msg = message(channel="email", provider="sendgrid", recipient="a@b.example", payload=payload)

    outcome = await _send(wire, msg)

    assert outcome.code is ErrorCode.BAD_REQUEST
    assert wire.requests == []


@pytest.mark.parametrize("missing", ["api_key", "from_email"])
async def test_send__missing_credential_is_auth_revoked_without_io(missing: str) -> None:
    wire = _accepted()

    outcome = await _send(wire, credentials={k: v for k, v in CREDENTIALS.items() if k != missing})

    assert outcome.code is ErrorCode.AUTH_REVOKED
    assert missing in outcome.detail
    assert wire.requests == []


# -- answers ---------------------------------------------------------------------------


async def test_send__202_is_success_with_the_x_message_id() -> None:
    outcome = await _send(_accepted("abc123"))

    assert outcome.ok
    assert outcome.provider_message_id == "abc123"
    assert outcome.provider_status == "HTTP 202"


async def test_send__202_without_x_message_id_is_success_marked_malformed() -> None:
    outcome = await _send(Wire(respond(202)))

    assert outcome.ok
    assert outcome.provider_message_id is None
    assert "X-Message-Id" in outcome.detail


@pytest.mark.parametrize("rule", ERROR_RULES, ids=lambda rule: rule.why)
async def test_send__maps_every_error_rule(rule: ErrorRule) -> None:
    status = rule.status or 400

    outcome = await _send(_errors(status, rule.example))

    assert outcome.code is rule.code
    assert outcome.provider_status == f"HTTP {status}"
    assert rule.example[1] in outcome.detail


@pytest.mark.parametrize("rule", ERROR_RULES, ids=lambda rule: rule.why)
async def test_error_rule__needs_its_status(rule: ErrorRule) -> None:
    # The same error under another status is that status's business.
    if rule.status is None:
        pytest.skip("rule applies to every status")
    other = 422 if rule.status != 422 else 400

    outcome = await _send(_errors(other, rule.example))

    assert outcome.code is ErrorCode.BAD_REQUEST


@pytest.mark.parametrize(("status", "code"), sorted(STATUS_CODES.items()))
async def test_send__maps_every_status_no_rule_covers(status: int, code: ErrorCode) -> None:
    outcome = await _send(_errors(status, (None, "something unusual")))

    assert outcome.code is code
    assert outcome.provider_code == str(status)
    assert "something unusual" in outcome.detail


@pytest.mark.parametrize(
    ("status", "code"),
    [(400, ErrorCode.BAD_REQUEST), (413, ErrorCode.BAD_REQUEST), (500, ErrorCode.PROVIDER_ERROR)],
)
async def test_send__other_statuses_fall_back_by_range(status: int, code: ErrorCode) -> None:
    outcome = await _send(
        _errors(status, ("content.0.value", "The content value must be a string"))
    )

    assert outcome.code is code
    assert "content.0.value: The content value must be a string" in outcome.detail


async def test_send__one_recipient_error_among_several_makes_it_invalid_recipient() -> None:
    wire = _errors(
        400,
        ("subject", "The subject is required."),
        ("personalizations.0.to.1.email", "Does not contain a valid address."),
    )

    outcome = await _send(wire)

    assert outcome.code is ErrorCode.INVALID_RECIPIENT


async def test_send__from_address_error_is_not_a_recipient_error() -> None:
    outcome = await _send(
        _errors(400, ("from.email", "The from email does not contain a valid address."))
    )

    assert outcome.code is ErrorCode.BAD_REQUEST


async def test_send__403_names_the_missing_scope() -> None:
    outcome = await _send(_errors(403, (None, "access forbidden")))

    assert outcome.code is ErrorCode.SCOPE_MISSING
    assert MAIL_SEND_SCOPE in outcome.detail
    assert "access forbidden" in outcome.detail


async def test_send__429_prefers_retry_after() -> None:
    reset = str(int(NOW.timestamp()) + 60)
    wire = _errors(
        429, (None, "too many requests"), **{"retry-after": "5", "x-ratelimit-reset": reset}
    )

    outcome = await _send(wire)

    assert outcome.retry_after == 5.0


async def test_send__429_without_retry_after_waits_for_the_rate_limit_reset() -> None:
    reset = str(int(NOW.timestamp()) + 42)

    outcome = await _send(_errors(429, (None, "too many requests"), **{"x-ratelimit-reset": reset}))

    assert outcome.code is ErrorCode.RATE_LIMITED
    assert outcome.retry_after == 42.0


@pytest.mark.parametrize("reset", ["soon", "nan", ""])
async def test_send__429_with_a_garbage_reset_leaves_the_wait_to_the_dispatcher(reset: str) -> None:
    outcome = await _send(_errors(429, (None, "too many requests"), **{"x-ratelimit-reset": reset}))

    assert outcome.code is ErrorCode.RATE_LIMITED
    assert outcome.retry_after is None


# -- check -----------------------------------------------------------------------------


async def test_check__lists_scopes_with_the_bearer_key() -> None:
    wire = Wire(respond(200, json={"scopes": ["mail.send", "alerts.read"]}))

    result = await _check(wire)

    assert result.ok
    assert result.granted_scopes == ["mail.send", "alerts.read"]
    assert str(wire.only.url) == "https://api.sendgrid.com/v3/scopes"
    assert wire.only.headers["authorization"] == "Bearer SG.k3y"


async def test_check__without_mail_send_is_scope_missing() -> None:
    result = await _check(Wire(respond(200, json={"scopes": ["alerts.read"]})))

    assert not result.ok
    assert result.code is ErrorCode.SCOPE_MISSING
    assert result.granted_scopes == ["alerts.read"]
    assert MAIL_SEND_SCOPE in result.detail


async def test_check__needs_only_the_api_key() -> None:
    result = await _check(Wire(respond(200, json={"scopes": ["mail.send"]})), {"api_key": "SG.x"})

    assert result.ok


async def test_check__rejected_key_is_auth_revoked() -> None:
    result = await _check(_errors(401, (None, "authorization required")))

    assert result.code is ErrorCode.AUTH_REVOKED


async def test_check__malformed_answer_is_a_provider_error() -> None:
    result = await _check(Wire(respond(200, json={"scopes": "mail.send"})))

    assert result.code is ErrorCode.PROVIDER_ERROR


async def test_check__timeout_is_reported() -> None:
    result = await _check(Wire(raising(httpx.ConnectTimeout("slow"))))

    assert result.code is ErrorCode.TIMEOUT
