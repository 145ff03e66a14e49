"""The Twilio adapter over ``httpx.MockTransport``: the request it makes, every error row."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from _wire import Wire, form_of, message, raising, respond

from sluice.clock import FrozenClock
from sluice.model import ErrorCode, Message, Outcome
from sluice.providers._errors import CheckResult
from sluice.providers.twilio import ERROR_CODES, STATUS_CODES, TwilioProvider

SID = "AC" + "0123456789abcdef" * 2
CREDENTIALS = {"account_sid": SID, "auth_token": "tok3n", "from": "+15005550006"}
MESSAGES_URL = f"https://api.twilio.com/2010-04-01/Accounts/{SID}/Messages.json"


def _sms(**payload: Any) -> Message:
    return message(
        channel="sms",
        provider="twilio",
        recipient="+15558675310",
        payload=payload or {"body": "Your order shipped"},
    )


async def _send(
    wire: Wire,
    msg: Message | None = None,
    *,
    credentials: dict[str, str] | None = None,
    **options: Any,
) -> Outcome:
    async with wire.client() as client:
        provider = TwilioProvider(client, clock=FrozenClock(), **options)
        return await provider.send(
            msg or _sms(), CREDENTIALS if credentials is None else credentials
        )


async def _check(wire: Wire, credentials: dict[str, str] | None = None) -> CheckResult:
    async with wire.client() as client:
        return await TwilioProvider(client).check(credentials or CREDENTIALS)


def _created(sid: str = "SM" + "ab" * 16) -> Wire:
    return Wire(respond(201, json={"sid": sid, "status": "queued"}))


def _error(status: int, code: int, text: str = "Twilio says no") -> Wire:
    document = {
        "code": code,
        "message": text,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return Wire(respond(status, json=document))


# -- the request ---------------------------------------------------------------------


async def test_send__posts_a_form_with_basic_auth_to_the_accounts_messages() -> None:
    wire = _created()

    outcome = await _send(wire)

    assert outcome.ok
    request = wire.only
    assert request.method == "POST"
    assert str(request.url) == MESSAGES_URL
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    expected = base64.b64encode(f"{SID}:tok3n".encode()).decode()
    assert request.headers["authorization"] == f"Basic {expected}"
    assert form_of(request) == {
        "To": ["+15558675310"],
        "From": ["+15005550006"],
        "Body": ["Your order shipped"],
    }


async def test_send__status_callback_carries_our_message_id() -> None:
    wire, msg = _created(), _sms()

    await _send(wire, msg, status_callback_url="https://sluice.example/ingress/twilio?x=1")

    (callback,) = form_of(wire.only)["StatusCallback"]
    url = httpx.URL(callback)
    assert url.host == "sluice.example"
    assert url.params["x"] == "1"
    assert url.params["sluice_message_id"] == msg.id


async def test_send__messaging_service_wins_over_from() -> None:
    wire = _created()
    credentials = {**CREDENTIALS, "messaging_service_sid": "MG" + "1" * 32}

    await _send(wire, credentials=credentials)

    form = form_of(wire.only)
    assert form["MessagingServiceSid"] == ["MG" + "1" * 32]
    assert "From" not in form


@pytest.mark.parametrize(
    ("recipient", "sender"),
    [("+15558675310", "+15005550006"), ("whatsapp:+15558675310", "whatsapp:+15005550006")],
)
async def test_send__whatsapp_channel_prefixes_to_and_from_once(
    recipient: str, sender: str
) -> None:
    wire = _created()
    msg = message(channel="whatsapp", provider="twilio", recipient=recipient, payload={"body": "x"})

    await _send(wire, msg, credentials={**CREDENTIALS, "from": sender})

    form = form_of(wire.only)
    assert form["To"] == ["whatsapp:+15558675310"]
    assert form["From"] == ["whatsapp:+15005550006"]


async def test_send__content_template_sends_sid_and_variables_as_json() -> None:
    wire = _created()
    msg = _sms(content_sid="HX" + "9" * 32, content_variables={"1": "Ann", "2": "42"})

    await _send(wire, msg)

    form = form_of(wire.only)
    assert form["ContentSid"] == ["HX" + "9" * 32]
    assert json.loads(form["ContentVariables"][0]) == {"1": "Ann", "2": "42"}
    assert "Body" not in form


async def test_send__media_urls_repeat_the_field() -> None:
    wire = _created()

    await _send(
        wire, _sms(body="pics", media_url=["https://a.example/1.png", "https://a.example/2.png"])
    )

    assert form_of(wire.only)["MediaUrl"] == ["https://a.example/1.png", "https://a.example/2.png"]


async def test_send__base_url_points_elsewhere_and_the_sid_cannot_escape_the_path() -> None:
    wire = _created()

    await _send(
        wire,
        credentials={**CREDENTIALS, "account_sid": "AC1/../../x?y"},
        base_url="http://127.0.0.1:9/twilio/",
    )

    assert wire.only.url.raw_path.decode() == (
        "/twilio/2010-04-01/Accounts/AC1%2F..%2F..%2Fx%3Fy/Messages.json"
    )


@pytest.mark.parametrize(
    "payload", [{}, {"body": ""}, {"content_sid": 7}, {"subject": "no body"}], ids=repr
)
async def test_send__payload_without_content_is_a_bad_request_without_io(
    payload: dict[str, Any],
) -> None:
    wire = _created()
    msg = message(channel="sms", provider="twilio", recipient="+15558675310", payload=payload)

    outcome = await _send(wire, msg)

    assert outcome.code is ErrorCode.BAD_REQUEST
    assert wire.requests == []


@pytest.mark.parametrize("missing", ["account_sid", "auth_token", "from"])
async def test_send__missing_credential_is_auth_revoked_without_io(missing: str) -> None:
    wire = _created()
    credentials = {k: v for k, v in CREDENTIALS.items() if k != missing}

    outcome = await _send(wire, credentials=credentials)

    assert outcome.code is ErrorCode.AUTH_REVOKED
    assert missing in outcome.detail
    assert wire.requests == []


# -- answers ---------------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 201])
async def test_send__2xx_is_success_with_the_sid(status: int) -> None:
    outcome = await _send(Wire(respond(status, json={"sid": "SMxyz", "status": "queued"})))

    assert outcome.ok
    assert outcome.provider_message_id == "SMxyz"
    assert outcome.provider_status == f"HTTP {status}"


async def test_send__2xx_without_a_sid_is_success_marked_malformed() -> None:
    outcome = await _send(Wire(respond(201, json={"status": "queued"})))

    assert outcome.ok
    assert outcome.provider_message_id is None
    assert outcome.detail.startswith("malformed response: no message sid")


@pytest.mark.parametrize(("twilio_code", "code"), sorted(ERROR_CODES.items()))
async def test_send__maps_every_twilio_error_code(twilio_code: int, code: ErrorCode) -> None:
    # HTTP 400 for every row: Twilio's code decides, whatever the status says.
    outcome = await _send(_error(400, twilio_code, "explained by Twilio"))

    assert outcome.code is code
    assert outcome.provider_code == str(twilio_code)
    assert outcome.provider_status == "HTTP 400"
    assert outcome.detail == f"Twilio {twilio_code}: explained by Twilio"


@pytest.mark.parametrize(("status", "code"), sorted(STATUS_CODES.items()))
async def test_send__maps_every_status_without_a_known_code(status: int, code: ErrorCode) -> None:
    outcome = await _send(_error(status, 99999))

    assert outcome.code is code
    assert outcome.provider_code == "99999"
    assert outcome.provider_status == f"HTTP {status}"


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, ErrorCode.BAD_REQUEST),
        (404, ErrorCode.BAD_REQUEST),
        (422, ErrorCode.BAD_REQUEST),
        (500, ErrorCode.PROVIDER_ERROR),
        (501, ErrorCode.PROVIDER_ERROR),
    ],
)
async def test_send__other_statuses_fall_back_by_range(status: int, code: ErrorCode) -> None:
    outcome = await _send(Wire(respond(status, text="nope")))

    assert outcome.code is code
    assert outcome.provider_code == str(status)


async def test_send__403_says_permission_was_denied() -> None:
    outcome = await _send(_error(403, 20403, "Forbidden"))

    assert outcome.code is ErrorCode.SCOPE_MISSING
    assert "denied permission" in outcome.detail


async def test_send__rate_limit_code_reads_retry_after() -> None:
    wire = Wire(
        respond(
            429, json={"code": 20429, "message": "Too Many Requests"}, headers={"retry-after": "3"}
        )
    )

    outcome = await _send(wire)

    assert outcome.code is ErrorCode.RATE_LIMITED
    assert outcome.retry_after == 3.0


async def test_send__code_given_as_text_is_understood() -> None:
    outcome = await _send(Wire(respond(400, json={"code": "21610", "message": "STOP"})))

    assert outcome.code is ErrorCode.RECIPIENT_UNSUBSCRIBED
    assert outcome.provider_code == "21610"


# -- check -----------------------------------------------------------------------------


async def test_check__fetches_the_account_with_basic_auth() -> None:
    wire = Wire(respond(200, json={"sid": SID, "status": "active"}))

    result = await _check(wire)

    assert result == CheckResult(ok=True, detail="account active")
    request = wire.only
    assert request.method == "GET"
    assert str(request.url) == f"https://api.twilio.com/2010-04-01/Accounts/{SID}.json"
    assert request.headers["authorization"].startswith("Basic ")
    assert result.granted_scopes is None


@pytest.mark.parametrize("status", ["suspended", "closed"])
async def test_check__inactive_account_is_suspended(status: str) -> None:
    result = await _check(Wire(respond(200, json={"sid": SID, "status": status})))

    assert not result.ok
    assert result.code is ErrorCode.ACCOUNT_SUSPENDED
    assert status in result.detail


async def test_check__rejected_token_is_auth_revoked() -> None:
    result = await _check(_error(401, 20003, "Authenticate"))

    assert result.code is ErrorCode.AUTH_REVOKED


async def test_check__malformed_answer_is_a_provider_error() -> None:
    result = await _check(Wire(respond(200, text="<html>")))

    assert result.code is ErrorCode.PROVIDER_ERROR
    assert "malformed" in result.detail


async def test_check__timeout_is_reported() -> None:
    result = await _check(Wire(raising(httpx.ReadTimeout("slow"))))

    assert result.code is ErrorCode.TIMEOUT


async def test_check__needs_only_sid_and_token() -> None:
    wire = Wire(respond(200, json={"sid": SID, "status": "active"}))

    result = await _check(wire, {"account_sid": SID, "auth_token": "t"})

    assert result.ok


# -- docs ------------------------------------------------------------------------------


def test_docs__list_every_twilio_code_under_its_canonical_code() -> None:
    docs = Path(__file__).parents[2] / "docs" / "providers.md"
    section = docs.read_text().split("## `twilio`")[1].split("\n## ")[0]
    rows = {
        line.split("|")[1].strip(" `"): line.split("|")[2]
        for line in section.splitlines()
        if line.strip().startswith("| `")
    }

    for twilio_code, code in ERROR_CODES.items():
        assert re.search(rf"\b{twilio_code}\b", rows.get(code.value, "")), (twilio_code, code)
