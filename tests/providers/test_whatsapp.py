"""The WhatsApp Cloud API adapter over ``httpx.MockTransport``: request, every error row."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from _wire import Wire, json_of, message, raising, respond

from sluice.clock import FrozenClock
from sluice.model import ErrorCode, Message, Outcome
from sluice.providers._errors import CheckResult
from sluice.providers.whatsapp import (
    DEFAULT_API_VERSION,
    ERROR_CODES,
    MESSAGING_SCOPE,
    STATUS_CODES,
    WhatsAppProvider,
)

PHONE_NUMBER_ID = "106540352242922"
CREDENTIALS = {"access_token": "EAAGt0ken", "phone_number_id": PHONE_NUMBER_ID}
WAMID = "wamid.HBgLMTY1MDUwNzY1MjAVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA"


def _whatsapp(**payload: Any) -> Message:
    return message(
        channel="whatsapp",
        provider="whatsapp",
        recipient="+16505551234",
        payload=payload or {"body": "Your order shipped"},
    )


async def _send(
    wire: Wire, msg: Message | None = None, *, credentials: dict[str, str] | None = None
) -> Outcome:
    async with wire.client() as client:
        provider = WhatsAppProvider(client, clock=FrozenClock())
        return await provider.send(
            msg or _whatsapp(), CREDENTIALS if credentials is None else credentials
        )


async def _check(wire: Wire, credentials: dict[str, str] | None = None) -> CheckResult:
    async with wire.client() as client:
        return await WhatsAppProvider(client).check(credentials or CREDENTIALS)


def _sent(wamid: str = WAMID) -> Wire:
    return Wire(
        respond(
            200,
            json={
                "messaging_product": "whatsapp",
                "contacts": [{"input": "+16505551234", "wa_id": "16505551234"}],
                "messages": [{"id": wamid}],
            },
        )
    )


def _graph(status: int, code: int, text: str = "Graph says no", **extra: Any) -> Wire:
    error = {"message": text, "type": "OAuthException", "code": code, "fbtrace_id": "Az9", **extra}
    return Wire(respond(status, json={"error": error}))


# -- the request ---------------------------------------------------------------------


async def test_send__posts_a_text_message_with_a_bearer_token() -> None:
    wire, msg = _sent(), _whatsapp(body="Your order shipped")

    outcome = await _send(wire, msg)

    assert outcome.ok
    request = wire.only
    assert request.method == "POST"
    assert str(request.url) == (
        f"https://graph.facebook.com/{DEFAULT_API_VERSION}/{PHONE_NUMBER_ID}/messages"
    )
    assert request.headers["authorization"] == "Bearer EAAGt0ken"
    assert json_of(request) == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "+16505551234",
        "biz_opaque_callback_data": msg.id,
        "type": "text",
        "text": {"body": "Your order shipped"},
    }


async def test_send__template_message_with_a_language_code() -> None:
    wire = _sent()
    components = [{"type": "body", "parameters": [{"type": "text", "text": "42"}]}]
    msg = _whatsapp(
        template={"name": "order_shipped", "language": "en_US", "components": components}
    )

    await _send(wire, msg)

    body = json_of(wire.only)
    assert body["type"] == "template"
    assert body["template"] == {
        "name": "order_shipped",
        "language": {"code": "en_US"},
        "components": components,
    }
    assert body["biz_opaque_callback_data"] == msg.id
    assert "text" not in body


async def test_send__preview_url_is_passed_on() -> None:
    wire = _sent()

    await _send(wire, _whatsapp(body="see https://acme.example", preview_url=True))

    assert json_of(wire.only)["text"] == {"body": "see https://acme.example", "preview_url": True}


async def test_send__api_version_comes_from_the_credentials() -> None:
    wire = _sent()

    await _send(wire, credentials={**CREDENTIALS, "api_version": "v19.0"})

    assert wire.only.url.path == f"/v19.0/{PHONE_NUMBER_ID}/messages"


@pytest.mark.parametrize("version", ["19.0", "v19", "../v1.0", "v1.0/x"])
async def test_send__odd_api_version_is_auth_revoked_without_io(version: str) -> None:
    wire = _sent()

    outcome = await _send(wire, credentials={**CREDENTIALS, "api_version": version})

    assert outcome.code is ErrorCode.AUTH_REVOKED
    assert wire.requests == []


async def test_send__phone_number_id_cannot_escape_the_path() -> None:
    wire = _sent()

    await _send(wire, credentials={**CREDENTIALS, "phone_number_id": "1/../me?x"})

    assert wire.only.url.raw_path.decode() == f"/{DEFAULT_API_VERSION}/1%2F..%2Fme%3Fx/messages"


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"body": ""},
        {"template": "order_shipped"},
        {"template": {"language": "en"}},
        {"template": {"name": "x"}},
        {"template": {"name": "x", "language": {}}},
    ],
    ids=repr,
)
async def test_send__incomplete_payload_is_a_bad_request_without_io(
    payload: dict[str, Any],
) -> None:
    wire = _sent()
    msg = message(channel="whatsapp", provider="whatsapp", recipient="+1", payload=payload)

    outcome = await _send(wire, msg)

    assert outcome.code is ErrorCode.BAD_REQUEST
    assert wire.requests == []


@pytest.mark.parametrize("missing", ["access_token", "phone_number_id"])
async def test_send__missing_credential_is_auth_revoked_without_io(missing: str) -> None:
    wire = _sent()

    outcome = await _send(wire, credentials={k: v for k, v in CREDENTIALS.items() if k != missing})

    assert outcome.code is ErrorCode.AUTH_REVOKED
    assert missing in outcome.detail
    assert wire.requests == []


# -- answers ---------------------------------------------------------------------------


async def test_send__200_is_success_with_the_wamid() -> None:
    outcome = await _send(_sent())

    assert outcome.ok
    assert outcome.provider_message_id == WAMID
    assert outcome.provider_status == "HTTP 200"


@pytest.mark.parametrize("document", [{}, {"messages": []}, {"messages": [{"id": 7}]}], ids=repr)
async def test_send__200_without_a_wamid_is_success_marked_malformed(document: Any) -> None:
    outcome = await _send(Wire(respond(200, json=document)))

    assert outcome.ok
    assert outcome.provider_message_id is None
    assert "malformed response" in outcome.detail


@pytest.mark.parametrize(("graph_code", "code"), sorted(ERROR_CODES.items()))
async def test_send__maps_every_graph_error_code(graph_code: int, code: ErrorCode) -> None:
    # HTTP 400 for every row: the Graph code decides, whatever the status says.
    outcome = await _send(_graph(400, graph_code, f"(#{graph_code}) explained by Meta"))

    assert outcome.code is code
    assert outcome.provider_code == str(graph_code)
    assert outcome.provider_status == "HTTP 400"
    assert f"Graph {graph_code}: (#{graph_code}) explained by Meta" in outcome.detail


@pytest.mark.parametrize("graph_code", [201, 230, 298])
async def test_send__any_permission_code_is_scope_missing(graph_code: int) -> None:
    outcome = await _send(_graph(403, graph_code, "(#2xx) Permissions error"))

    assert outcome.code is ErrorCode.SCOPE_MISSING
    assert MESSAGING_SCOPE in outcome.detail


@pytest.mark.parametrize(("status", "code"), sorted(STATUS_CODES.items()))
async def test_send__maps_every_status_without_a_known_code(status: int, code: ErrorCode) -> None:
    outcome = await _send(_graph(status, 99999))

    assert outcome.code is code
    assert outcome.provider_code == "99999"


@pytest.mark.parametrize(
    ("status", "code"),
    [(400, ErrorCode.BAD_REQUEST), (404, ErrorCode.BAD_REQUEST), (500, ErrorCode.PROVIDER_ERROR)],
)
async def test_send__other_statuses_fall_back_by_range(status: int, code: ErrorCode) -> None:
    outcome = await _send(Wire(respond(status, text="no graph document")))

    assert outcome.code is code
    assert outcome.provider_code == str(status)


async def test_send__detail_carries_subcode_and_error_data() -> None:
    wire = _graph(
        400,
        131030,
        "(#131030) Recipient phone number not in allowed list",
        error_subcode=2494010,
        error_data={"messaging_product": "whatsapp", "details": "Add it to the list"},
    )

    outcome = await _send(wire)

    assert outcome.code is ErrorCode.INVALID_RECIPIENT
    assert outcome.detail == (
        "Graph 131030/2494010: (#131030) Recipient phone number not in allowed list "
        "(Add it to the list)"
    )


async def test_send__rate_limit_reads_retry_after() -> None:
    error = {"message": "(#130429) Rate limit hit", "code": 130429}
    wire = Wire(respond(400, json={"error": error}, headers={"retry-after": "9"}))

    outcome = await _send(wire)

    assert outcome.code is ErrorCode.RATE_LIMITED
    assert outcome.retry_after == 9.0


# -- check -----------------------------------------------------------------------------


async def test_check__reads_the_phone_number() -> None:
    wire = Wire(
        respond(
            200,
            json={
                "id": PHONE_NUMBER_ID,
                "display_phone_number": "+1 555-0100",
                "quality_rating": "GREEN",
            },
        )
    )

    result = await _check(wire)

    assert result.ok
    assert "+1 555-0100" in result.detail and "GREEN" in result.detail
    assert result.granted_scopes is None
    request = wire.only
    assert request.method == "GET"
    assert request.url.path == f"/{DEFAULT_API_VERSION}/{PHONE_NUMBER_ID}"
    assert request.url.params["fields"] == "id,display_phone_number,quality_rating"
    assert request.headers["authorization"] == "Bearer EAAGt0ken"


async def test_check__expired_token_is_auth_revoked() -> None:
    result = await _check(_graph(401, 190, "Session has expired", error_subcode=463))

    assert result.code is ErrorCode.AUTH_REVOKED
    assert "190/463" in result.detail


async def test_check__missing_permission_is_scope_missing() -> None:
    result = await _check(_graph(403, 10, "(#10) Application does not have permission"))

    assert result.code is ErrorCode.SCOPE_MISSING


async def test_check__malformed_answer_is_a_provider_error() -> None:
    result = await _check(Wire(respond(200, json={"display_phone_number": "+1"})))

    assert result.code is ErrorCode.PROVIDER_ERROR


async def test_check__dropped_connection_is_reported() -> None:
    result = await _check(Wire(raising(httpx.RemoteProtocolError("gone"))))

    assert result.code is ErrorCode.CONNECTION_FAILED


# -- docs ------------------------------------------------------------------------------


def test_docs__list_every_graph_code_under_its_canonical_code() -> None:
    docs = Path(__file__).parents[2] / "docs" / "providers.md"
    section = docs.read_text().split("## `whatsapp`")[1].split("\n## ")[0]
    rows = {
        line.split("|")[1].strip(" `"): line.split("|")[2]
        for line in section.splitlines()
        if line.strip().startswith("| `")
    }

    for graph_code, code in ERROR_CODES.items():
        assert re.search(rf"\b{graph_code}\b", rows.get(code.value, "")), (graph_code, code)
