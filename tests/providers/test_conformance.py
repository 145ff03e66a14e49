"""One suite every adapter passes, driven over ``httpx.MockTransport``.

Each adapter supplies a small fixture table (``ADAPTERS``): how to build it, credentials,
a message, and answers in its provider's real wire format for success and for each
class of failure. The suite then proves the same promises of every adapter: the
provider's id is extracted; transient, throttle, auth and permanent failures get the
right canonical code and class; ``Retry-After`` becomes ``retry_after``; timeouts,
dropped connections and malformed bodies are outcomes, never exceptions; credentials
that cannot work are refused before any I/O. A new adapter joins by adding a row.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from _wire import Wire, message, raising

from sluice.clock import Clock, FrozenClock
from sluice.model import ErrorClass, ErrorCode, Message, Outcome
from sluice.netguard import static_resolver
from sluice.providers._errors import CheckResult
from sluice.providers.base import Provider
from sluice.providers.sendgrid import SendGridProvider
from sluice.providers.twilio import TwilioProvider
from sluice.providers.webhook import WebhookProvider
from sluice.providers.whatsapp import WhatsAppProvider

WEBHOOK_SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()


@dataclass(frozen=True)
class Answer:
    """A response in a provider's format; built fresh for every request."""

    status: int
    json: Any = None
    text: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def handler(self, **extra_headers: str) -> Callable[[httpx.Request], httpx.Response]:
        def answer(request: httpx.Request) -> httpx.Response:
            headers = {**self.headers, **extra_headers}
            if self.json is not None:
                return httpx.Response(self.status, json=self.json, headers=headers)
            return httpx.Response(self.status, text=self.text or "", headers=headers)

        return answer


@dataclass(frozen=True)
class Adapter:
    """One adapter's fixture table."""

    name: str
    build: Callable[[httpx.AsyncClient, float, Clock], Any]
    credentials: dict[str, str] | None
    #: Credentials that cannot work: the adapter must refuse them without I/O.
    unusable_credentials: dict[str, str]
    new_message: Callable[[], Message]
    success: Answer
    #: What ``provider_message_id`` the success answer yields (None: the message id).
    success_id: str | None
    #: Failure scenario -> (answer, canonical code).
    failures: dict[str, tuple[Answer, ErrorCode]]
    #: Whether a 2xx must carry the provider's id (else a receiver's 2xx is enough).
    expects_id: bool = True
    #: For adapters with ``check``: a healthy answer and an auth failure.
    check_ok: Answer | None = None
    check_auth: Answer | None = None


def _twilio_error(status: int, code: int, message: str) -> Answer:
    more = f"https://www.twilio.com/docs/errors/{code}"
    return Answer(status, {"code": code, "message": message, "more_info": more, "status": status})


def _sendgrid_error(status: int, message: str, field_name: str | None = None) -> Answer:
    return Answer(status, {"errors": [{"message": message, "field": field_name, "help": None}]})


def _graph_error(status: int, code: int, message: str, **extra: Any) -> Answer:
    error = {"message": message, "type": "OAuthException", "code": code, "fbtrace_id": "A1b2"}
    return Answer(status, {"error": {**error, **extra}})


TWILIO = Adapter(
    name="twilio",
    build=lambda client, timeout, clock: TwilioProvider(client, timeout=timeout, clock=clock),
    credentials={"account_sid": "AC" + "a1" * 16, "auth_token": "secret", "from": "+15005550006"},
    unusable_credentials={"account_sid": "AC" + "a1" * 16, "from": "+15005550006"},
    new_message=lambda: message(
        channel="sms", provider="twilio", recipient="+15558675310", payload={"body": "Shipped"}
    ),
    success=Answer(201, {"sid": "SM" + "0f" * 16, "status": "queued"}),
    success_id="SM" + "0f" * 16,
    failures={
        "transient": (_twilio_error(500, 20500, "Internal Server Error"), ErrorCode.PROVIDER_ERROR),
        "unavailable": (
            _twilio_error(503, 20503, "Service Unavailable"),
            ErrorCode.PROVIDER_UNAVAILABLE,
        ),
        "throttle": (_twilio_error(429, 20429, "Too Many Requests"), ErrorCode.RATE_LIMITED),
        "auth": (_twilio_error(401, 20003, "Authenticate"), ErrorCode.AUTH_REVOKED),
        "scope": (_twilio_error(403, 20403, "Forbidden"), ErrorCode.SCOPE_MISSING),
        "permanent": (
            _twilio_error(400, 21211, "The 'To' number +15558675310 is not a valid phone number."),
            ErrorCode.INVALID_RECIPIENT,
        ),
    },
    check_ok=Answer(200, {"sid": "AC" + "a1" * 16, "status": "active"}),
    check_auth=_twilio_error(401, 20003, "Authenticate"),
)

SENDGRID = Adapter(
    name="sendgrid",
    build=lambda client, timeout, clock: SendGridProvider(client, timeout=timeout, clock=clock),
    credentials={"api_key": "SG.key", "from_email": "shop@acme.example"},
    unusable_credentials={"from_email": "shop@acme.example"},
    new_message=lambda: message(
        channel="email",
        provider="sendgrid",
        recipient="ann@example.com",
        payload={"subject": "Shipped", "text": "Your order shipped"},
    ),
    success=Answer(202, text="", headers={"x-message-id": "W8d2hWTUQ2K3cJ9Gm1dP8g"}),
    success_id="W8d2hWTUQ2K3cJ9Gm1dP8g",
    failures={
        "transient": (_sendgrid_error(500, "Internal server error"), ErrorCode.PROVIDER_ERROR),
        "unavailable": (
            _sendgrid_error(503, "Service Unavailable"),
            ErrorCode.PROVIDER_UNAVAILABLE,
        ),
        "throttle": (_sendgrid_error(429, "too many requests"), ErrorCode.RATE_LIMITED),
        "auth": (
            _sendgrid_error(
                401, "The provided authorization grant is invalid, expired, or revoked"
            ),
            ErrorCode.AUTH_REVOKED,
        ),
        "scope": (_sendgrid_error(403, "access forbidden"), ErrorCode.SCOPE_MISSING),
        "permanent": (
            _sendgrid_error(
                400, "Does not contain a valid address.", "personalizations.0.to.0.email"
            ),
            ErrorCode.INVALID_RECIPIENT,
        ),
    },
    check_ok=Answer(200, {"scopes": ["mail.send", "user.profile.read"]}),
    check_auth=_sendgrid_error(
        401, "The provided authorization grant is invalid, expired, or revoked"
    ),
)

WHATSAPP = Adapter(
    name="whatsapp",
    build=lambda client, timeout, clock: WhatsAppProvider(client, timeout=timeout, clock=clock),
    credentials={"access_token": "EAAGtoken", "phone_number_id": "106540352242922"},
    unusable_credentials={"access_token": "EAAGtoken"},
    new_message=lambda: message(
        channel="whatsapp",
        provider="whatsapp",
        recipient="+16505551234",
        payload={"body": "Your order shipped"},
    ),
    success=Answer(
        200,
        {
            "messaging_product": "whatsapp",
            "contacts": [{"input": "+16505551234", "wa_id": "16505551234"}],
            "messages": [{"id": "wamid.HBgLMTY1MDUwNzY1MjAVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA"}],
        },
    ),
    success_id="wamid.HBgLMTY1MDUwNzY1MjAVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA",
    failures={
        # A load balancer's 500, no Graph document: nothing says "not now", so retry.
        "transient": (Answer(500, text="Internal Server Error"), ErrorCode.PROVIDER_ERROR),
        "unavailable": (
            _graph_error(503, 2, "(#2) Service temporarily unavailable", is_transient=True),
            ErrorCode.PROVIDER_UNAVAILABLE,
        ),
        "throttle": (_graph_error(429, 130429, "(#130429) Rate limit hit"), ErrorCode.RATE_LIMITED),
        "auth": (
            _graph_error(
                401, 190, "Error validating access token: Session has expired", error_subcode=463
            ),
            ErrorCode.AUTH_REVOKED,
        ),
        "scope": (
            _graph_error(403, 10, "(#10) Application does not have permission for this action"),
            ErrorCode.SCOPE_MISSING,
        ),
        "permanent": (
            _graph_error(400, 131030, "(#131030) Recipient phone number not in allowed list"),
            ErrorCode.INVALID_RECIPIENT,
        ),
    },
    check_ok=Answer(
        200,
        {"id": "106540352242922", "display_phone_number": "+1 555-0100", "quality_rating": "GREEN"},
    ),
    check_auth=_graph_error(401, 190, "Invalid OAuth access token - Cannot parse access token"),
)

WEBHOOK = Adapter(
    name="webhook",
    # The receiver is a made-up host name; the SSRF guard gets a public address for it.
    build=lambda client, timeout, clock: WebhookProvider(
        client,
        WEBHOOK_SECRET,
        timeout=timeout,
        clock=clock,
        resolve=static_resolver("93.184.216.34"),
    ),
    credentials=None,
    unusable_credentials={"secret": "whsec_%%%"},
    new_message=lambda: message(
        channel="webhook",
        provider="webhook",
        recipient="https://hooks.acme.example/orders",
        payload={"order": 42},
    ),
    success=Answer(200, {"id": "rcv-1"}),
    success_id="rcv-1",
    failures={
        "transient": (Answer(500, text="receiver broke"), ErrorCode.PROVIDER_ERROR),
        "unavailable": (Answer(503, text="maintenance"), ErrorCode.PROVIDER_UNAVAILABLE),
        "throttle": (Answer(429, text="slow down"), ErrorCode.RATE_LIMITED),
        # A receiver's 401/403 is its own business, not a revoked connection: no auth rows.
        "permanent": (Answer(410, text="gone"), ErrorCode.ENDPOINT_GONE),
    },
    expects_id=False,
)

ADAPTERS = [TWILIO, SENDGRID, WHATSAPP, WEBHOOK]
CHECKABLE = [a for a in ADAPTERS if a.check_ok is not None]
#: Every adapter must show these; ``auth`` and ``scope`` only where the provider has them.
MANDATORY = {"transient", "unavailable", "throttle", "permanent"}
EXPECTED_CLASS = {
    "transient": ErrorClass.TRANSIENT,
    "unavailable": ErrorClass.THROTTLE,
    "throttle": ErrorClass.THROTTLE,
    "auth": ErrorClass.AUTH,
    "scope": ErrorClass.AUTH,
    "permanent": ErrorClass.PERMANENT,
}


def _ids(adapters: list[Adapter]) -> list[str]:
    return [a.name for a in adapters]


async def _send(
    adapter: Adapter,
    wire: Wire,
    *,
    credentials: dict[str, str] | None = None,
    timeout: float = 5.0,
    clock: Clock | None = None,
    follow_redirects: bool = False,
    msg: Message | None = None,
) -> Outcome:
    async with wire.client(follow_redirects=follow_redirects) as client:
        provider = adapter.build(client, timeout, clock or FrozenClock())
        return await provider.send(  # type: ignore[no-any-return]
            msg or adapter.new_message(),
            adapter.credentials if credentials is None else credentials,
        )


# -- the fixture tables themselves ---------------------------------------------------


@pytest.mark.parametrize("adapter", ADAPTERS, ids=_ids(ADAPTERS))
def test_fixture_table__covers_every_mandatory_failure(adapter: Adapter) -> None:
    assert set(adapter.failures) >= MANDATORY
    assert set(adapter.failures) <= set(EXPECTED_CLASS)


@pytest.mark.parametrize("adapter", ADAPTERS, ids=_ids(ADAPTERS))
async def test_adapter__satisfies_the_provider_protocol(adapter: Adapter) -> None:
    async with Wire().client() as client:
        provider = adapter.build(client, 5.0, FrozenClock())

    assert isinstance(provider, Provider)
    assert provider.name == adapter.name


# -- success -------------------------------------------------------------------------


@pytest.mark.parametrize("adapter", ADAPTERS, ids=_ids(ADAPTERS))
async def test_success__extracts_the_providers_message_id(adapter: Adapter) -> None:
    wire = Wire(adapter.success.handler())

    outcome = await _send(adapter, wire)

    assert outcome.ok
    assert outcome.code is None
    assert outcome.provider_message_id == adapter.success_id
    assert outcome.provider_status == f"HTTP {adapter.success.status}"
    assert len(wire.requests) == 1


@pytest.mark.parametrize("adapter", ADAPTERS, ids=_ids(ADAPTERS))
async def test_success__with_a_malformed_body_is_still_a_success(adapter: Adapter) -> None:
    # The provider accepted the message: retrying would send it a second time.
    msg = adapter.new_message()
    wire = Wire(Answer(adapter.success.status, text="<html>ok</html>").handler())

    outcome = await _send(adapter, wire, msg=msg)

    assert outcome.ok
    if adapter.expects_id:
        assert outcome.provider_message_id is None
        assert "malformed response" in outcome.detail
    else:
        assert outcome.provider_message_id == msg.id


# -- failures by class -----------------------------------------------------------------

FAILURES = [
    pytest.param(adapter, scenario, id=f"{adapter.name}-{scenario}")
    for adapter in ADAPTERS
    for scenario in adapter.failures
]


@pytest.mark.parametrize(("adapter", "scenario"), FAILURES)
async def test_failure__maps_to_the_canonical_code_and_class(
    adapter: Adapter, scenario: str
) -> None:
    answer, code = adapter.failures[scenario]

    outcome = await _send(adapter, Wire(answer.handler()))

    assert not outcome.ok
    assert outcome.code is code
    assert code.error_class is EXPECTED_CLASS[scenario]
    assert outcome.provider_status == f"HTTP {answer.status}"
    assert outcome.provider_code
    assert outcome.detail
    assert outcome.provider_message_id is None


@pytest.mark.parametrize("adapter", ADAPTERS, ids=_ids(ADAPTERS))
async def test_throttle__honours_retry_after_seconds(adapter: Adapter) -> None:
    answer, _ = adapter.failures["throttle"]

    outcome = await _send(adapter, Wire(answer.handler(**{"retry-after": "7"})))

    assert outcome.code is ErrorCode.RATE_LIMITED
    assert outcome.retry_after == 7.0


@pytest.mark.parametrize("adapter", ADAPTERS, ids=_ids(ADAPTERS))
async def test_throttle__honours_retry_after_as_an_http_date(adapter: Adapter) -> None:
    clock = FrozenClock(datetime(2030, 6, 1, 12, 0, tzinfo=UTC))
    when = format_datetime(clock.now() + timedelta(minutes=2), usegmt=True)
    answer, _ = adapter.failures["throttle"]

    outcome = await _send(adapter, Wire(answer.handler(**{"retry-after": when})), clock=clock)

    assert outcome.retry_after == 120.0


@pytest.mark.parametrize("adapter", ADAPTERS, ids=_ids(ADAPTERS))
async def test_permanent__ignores_retry_after(adapter: Adapter) -> None:
    answer, code = adapter.failures["permanent"]

    outcome = await _send(adapter, Wire(answer.handler(**{"retry-after": "7"})))

    assert outcome.code is code
    assert outcome.retry_after is None


@pytest.mark.parametrize("adapter", ADAPTERS, ids=_ids(ADAPTERS))
async def test_malformed_error_body__is_mapped_by_http_status(adapter: Adapter) -> None:
    wire = Wire(Answer(500, text="<html>Bad Gateway-ish</html>").handler())

    outcome = await _send(adapter, wire)

    assert outcome.code is ErrorCode.PROVIDER_ERROR
    assert outcome.provider_code == "500"
    assert "Bad Gateway-ish" in outcome.detail


@pytest.mark.parametrize("adapter", ADAPTERS, ids=_ids(ADAPTERS))
async def test_redirect__is_never_followed(adapter: Adapter) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.host == "elsewhere.example":
            return httpx.Response(200)
        return httpx.Response(302, headers={"location": "https://elsewhere.example/x"})

    wire = Wire(answer)

    outcome = await _send(adapter, wire, follow_redirects=True)

    assert outcome.code is ErrorCode.BAD_REQUEST
    assert len(wire.requests) == 1


# -- transport failures ----------------------------------------------------------------


@pytest.mark.parametrize("adapter", ADAPTERS, ids=_ids(ADAPTERS))
async def test_timeout__is_a_timeout(adapter: Adapter) -> None:
    outcome = await _send(adapter, Wire(raising(httpx.ReadTimeout("read timed out"))))

    assert outcome.code is ErrorCode.TIMEOUT
    assert outcome.code.error_class is ErrorClass.TRANSIENT
    assert outcome.provider_status is None


@pytest.mark.parametrize("adapter", ADAPTERS, ids=_ids(ADAPTERS))
async def test_slow_provider__times_out_within_the_timeout(adapter: Adapter) -> None:
    async def answer(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200)

    loop = asyncio.get_running_loop()
    started = loop.time()
    outcome = await _send(adapter, Wire(answer), timeout=0.1)

    assert outcome.code is ErrorCode.TIMEOUT
    assert loop.time() - started < 2


@pytest.mark.parametrize("adapter", ADAPTERS, ids=_ids(ADAPTERS))
@pytest.mark.parametrize(
    "exc",
    [
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
        httpx.ConnectError("connection refused"),
        httpx.ReadError("connection reset by peer"),
    ],
    ids=["dropped", "refused", "reset"],
)
async def test_connection_failure__is_connection_failed(adapter: Adapter, exc: Exception) -> None:
    outcome = await _send(adapter, Wire(raising(exc)))

    assert outcome.code is ErrorCode.CONNECTION_FAILED
    assert type(exc).__name__ in outcome.detail


# -- credentials -------------------------------------------------------------------------


@pytest.mark.parametrize("adapter", ADAPTERS, ids=_ids(ADAPTERS))
async def test_unusable_credentials__are_auth_revoked_without_io(adapter: Adapter) -> None:
    wire = Wire(adapter.success.handler())

    outcome = await _send(adapter, wire, credentials=adapter.unusable_credentials)

    assert outcome.code is ErrorCode.AUTH_REVOKED
    assert outcome.code.error_class is ErrorClass.AUTH
    assert wire.requests == []


# -- check -------------------------------------------------------------------------------


async def _check(adapter: Adapter, wire: Wire, credentials: dict[str, str] | None) -> CheckResult:
    async with wire.client() as client:
        provider = adapter.build(client, 5.0, FrozenClock())
        return await provider.check(credentials)  # type: ignore[no-any-return]


@pytest.mark.parametrize("adapter", CHECKABLE, ids=_ids(CHECKABLE))
async def test_check__healthy_credentials_are_ok(adapter: Adapter) -> None:
    assert adapter.check_ok is not None
    wire = Wire(adapter.check_ok.handler())

    result = await _check(adapter, wire, adapter.credentials)

    assert result.ok
    assert result.code is None
    assert wire.only.method == "GET"


@pytest.mark.parametrize("adapter", CHECKABLE, ids=_ids(CHECKABLE))
async def test_check__rejected_credentials_are_auth_revoked(adapter: Adapter) -> None:
    assert adapter.check_auth is not None

    result = await _check(adapter, Wire(adapter.check_auth.handler()), adapter.credentials)

    assert not result.ok
    assert result.code is ErrorCode.AUTH_REVOKED


@pytest.mark.parametrize("adapter", CHECKABLE, ids=_ids(CHECKABLE))
async def test_check__unreachable_provider_is_a_transport_code(adapter: Adapter) -> None:
    result = await _check(
        adapter, Wire(raising(httpx.ConnectError("refused"))), adapter.credentials
    )

    assert not result.ok
    assert result.code is ErrorCode.CONNECTION_FAILED


@pytest.mark.parametrize("adapter", CHECKABLE, ids=_ids(CHECKABLE))
async def test_check__without_credentials_is_auth_revoked_without_io(adapter: Adapter) -> None:
    wire = Wire(adapter.check_ok.handler() if adapter.check_ok else None)

    result = await _check(adapter, wire, {})

    assert result.code is ErrorCode.AUTH_REVOKED
    assert wire.requests == []
