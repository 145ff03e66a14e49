"""The webhook provider, driven over ``httpx.MockTransport``: what it sends, how it maps."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from sluice.clock import FrozenClock
from sluice.errors import ConfigError
from sluice.model import ErrorClass, ErrorCode, Message, Outcome, Status, new_message_id
from sluice.netguard import static_resolver
from sluice.providers.base import Provider
from sluice.providers.webhook import MAX_RETRY_AFTER, WebhookProvider

URL = "https://receiver.example/hooks/orders"
#: The receiver is a made-up host name; the SSRF guard gets a public address for it.
PUBLIC = static_resolver("93.184.216.34")

Handler = Callable[[httpx.Request], httpx.Response | Awaitable[httpx.Response]]


def _secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


def _message(recipient: str = URL, **changes: Any) -> Message:
    message = Message(
        id=new_message_id(),
        tenant="t",
        channel="webhook",
        provider="webhook",
        action="order.created",
        recipient=recipient,
        payload={"order": 42, "items": ["a", "b"], "note": "grüße"},
        priority=0,
        status=Status.SENDING,
        run_at=datetime.now(UTC),
        attempts=1,
        max_attempts=5,
    )
    for name, value in changes.items():
        setattr(message, name, value)
    return message


class _Receiver:
    """A MockTransport handler that records requests and answers as told."""

    def __init__(self, answer: Handler | httpx.Response | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self._answer = answer if answer is not None else httpx.Response(200)

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        self.requests.append(request)
        if isinstance(self._answer, httpx.Response):
            return self._answer
        answer = self._answer(request)
        return await answer if isinstance(answer, Awaitable) else answer


async def _send(
    answer: Handler | httpx.Response | None = None,
    *,
    message: Message | None = None,
    secret: str | None = None,
    credentials: dict[str, str] | None = None,
    clock: FrozenClock | None = None,
    send_timeout: float = 10.0,
    follow_redirects: bool = False,
) -> tuple[Outcome, _Receiver]:
    receiver = _Receiver(answer)
    transport = httpx.MockTransport(receiver)
    async with httpx.AsyncClient(transport=transport, follow_redirects=follow_redirects) as client:
        provider = WebhookProvider(
            client, secret or _secret(), timeout=send_timeout, clock=clock, resolve=PUBLIC
        )
        outcome = await provider.send(message or _message(), credentials)
    return outcome, receiver


# -- what goes on the wire -------------------------------------------------------


async def test_send__posts_the_message_as_a_json_document() -> None:
    clock = FrozenClock(datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=UTC))
    message = _message(correlation_id="trace-1")

    outcome, receiver = await _send(message=message, clock=clock)

    assert outcome.ok
    (request,) = receiver.requests
    assert request.method == "POST"
    assert str(request.url) == URL
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == {
        "type": "order.created",
        "id": message.id,
        "tenant": "t",
        "channel": "webhook",
        "timestamp": "2030-01-02T03:04:05.678Z",
        "data": {"order": 42, "items": ["a", "b"], "note": "grüße"},
        "correlation_id": "trace-1",
    }


async def test_send__leaves_out_correlation_id_when_unset() -> None:
    _, receiver = await _send()

    assert "correlation_id" not in json.loads(receiver.requests[0].content)


async def test_send__signature_verifies_with_the_same_secret() -> None:
    secret = _secret()
    message = _message()

    outcome, receiver = await _send(message=message, secret=secret)

    assert outcome.ok
    request = receiver.requests[0]
    assert request.headers["webhook-id"] == message.id
    assert request.headers["idempotency-key"] == message.id
    verified = Webhook(secret).verify(request.content, dict(request.headers))
    assert verified["id"] == message.id
    with pytest.raises(WebhookVerificationError):
        Webhook(_secret()).verify(request.content, dict(request.headers))


async def test_send__timestamp_header_comes_from_the_clock() -> None:
    clock = FrozenClock(datetime(2030, 1, 1, tzinfo=UTC))

    _, receiver = await _send(clock=clock)

    assert receiver.requests[0].headers["webhook-timestamp"] == str(
        int(datetime(2030, 1, 1, tzinfo=UTC).timestamp())
    )


async def test_send__credentials_secret_overrides_the_default() -> None:
    default, override = _secret(), _secret()

    outcome, receiver = await _send(secret=default, credentials={"secret": override})

    assert outcome.ok
    request = receiver.requests[0]
    Webhook(override).verify(request.content, dict(request.headers))
    with pytest.raises(WebhookVerificationError):
        Webhook(default).verify(request.content, dict(request.headers))


async def test_send__invalid_credentials_secret_is_an_auth_failure_without_io() -> None:
    outcome, receiver = await _send(credentials={"secret": "whsec_%%%"})

    assert not outcome.ok
    assert outcome.code is ErrorCode.AUTH_REVOKED
    assert outcome.code.error_class is ErrorClass.AUTH
    assert receiver.requests == []


# -- a worker without SLUICE_WEBHOOK_SECRET --------------------------------------------


async def test_without_a_secret__signs_with_the_connections_secret() -> None:
    own = _secret()
    receiver = _Receiver()
    async with httpx.AsyncClient(transport=httpx.MockTransport(receiver)) as client:
        provider = WebhookProvider(client, None, resolve=PUBLIC)
        assert provider.worker_problem({"secret": own}) is None
        outcome = await provider.send(_message(), {"secret": own})

    assert outcome.ok
    request = receiver.requests[0]
    Webhook(own).verify(request.content, dict(request.headers))


async def test_without_a_secret__says_why_it_cannot_sign_and_sends_nothing_unsigned() -> None:
    receiver = _Receiver()
    async with httpx.AsyncClient(transport=httpx.MockTransport(receiver)) as client:
        provider = WebhookProvider(client, None, resolve=PUBLIC)
        problem = provider.worker_problem(None)
        outcome = await provider.send(_message())  # a caller that did not ask first

    assert problem is not None
    assert "SLUICE_WEBHOOK_SECRET" in problem and "sluice connections add" in problem
    assert not outcome.ok and outcome.code is ErrorCode.INTERNAL
    assert receiver.requests == []


async def test_with_a_secret__has_no_worker_problem() -> None:
    async with httpx.AsyncClient() as client:
        assert WebhookProvider(client, _secret()).worker_problem(None) is None


# -- configuration ---------------------------------------------------------------------


@pytest.mark.parametrize("secret", ["", "   ", "whsec_", "whsec_not base64!", "whsec_abc$def"])
async def test_constructor__invalid_secret_names_the_setting(secret: str) -> None:
    async with httpx.AsyncClient() as client:
        with pytest.raises(ConfigError, match="SLUICE_WEBHOOK_SECRET"):
            WebhookProvider(client, secret)


async def test_constructor__accepts_unpadded_and_unprefixed_secrets() -> None:
    raw = base64.b64encode(os.urandom(25)).decode()
    async with httpx.AsyncClient() as client:
        WebhookProvider(client, "whsec_" + raw.rstrip("="))
        WebhookProvider(client, raw)


async def test_provider__satisfies_the_provider_protocol() -> None:
    async with httpx.AsyncClient() as client:
        provider = WebhookProvider(client, _secret())

    assert isinstance(provider, Provider)
    assert provider.name == "webhook"


# -- recipient URLs --------------------------------------------------------------------


@pytest.mark.parametrize(
    "recipient",
    ["ftp://files.example/x", "mailto:ops@example.com", "receiver.example/hook", "http://", ""],
)
async def test_send__non_http_recipient_is_a_bad_request_without_io(recipient: str) -> None:
    outcome, receiver = await _send(message=_message(recipient))

    assert not outcome.ok
    assert outcome.code is ErrorCode.BAD_REQUEST
    assert receiver.requests == []


# -- status mapping --------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 201, 202, 204])
async def test_send__2xx_is_success(status: int) -> None:
    message = _message()

    outcome, _ = await _send(httpx.Response(status), message=message)

    assert outcome.ok
    assert outcome.provider_status == f"HTTP {status}"
    assert outcome.provider_message_id == message.id


async def test_send__success_takes_the_receivers_id_when_given() -> None:
    outcome, _ = await _send(httpx.Response(200, json={"id": "rcv-123", "ok": True}))

    assert outcome.provider_message_id == "rcv-123"


async def test_send__success_ignores_a_non_json_body() -> None:
    message = _message()

    outcome, _ = await _send(httpx.Response(200, text="<html>thanks</html>"), message=message)

    assert outcome.ok
    assert outcome.provider_message_id == message.id


@pytest.mark.parametrize(
    ("status", "code", "error_class"),
    [
        (301, ErrorCode.BAD_REQUEST, ErrorClass.PERMANENT),
        (400, ErrorCode.BAD_REQUEST, ErrorClass.PERMANENT),
        (401, ErrorCode.BAD_REQUEST, ErrorClass.PERMANENT),
        (404, ErrorCode.BAD_REQUEST, ErrorClass.PERMANENT),
        (408, ErrorCode.TIMEOUT, ErrorClass.TRANSIENT),
        (410, ErrorCode.ENDPOINT_GONE, ErrorClass.PERMANENT),
        (422, ErrorCode.BAD_REQUEST, ErrorClass.PERMANENT),
        (429, ErrorCode.RATE_LIMITED, ErrorClass.THROTTLE),
        (500, ErrorCode.PROVIDER_ERROR, ErrorClass.TRANSIENT),
        (501, ErrorCode.PROVIDER_ERROR, ErrorClass.TRANSIENT),
        (502, ErrorCode.PROVIDER_UNAVAILABLE, ErrorClass.THROTTLE),
        (503, ErrorCode.PROVIDER_UNAVAILABLE, ErrorClass.THROTTLE),
        (504, ErrorCode.PROVIDER_UNAVAILABLE, ErrorClass.THROTTLE),
    ],
)
async def test_send__maps_each_status(
    status: int, code: ErrorCode, error_class: ErrorClass
) -> None:
    outcome, _ = await _send(httpx.Response(status, text="receiver says no"))

    assert not outcome.ok
    assert outcome.code is code
    assert code.error_class is error_class
    assert outcome.provider_status == f"HTTP {status}"
    assert outcome.provider_code == str(status)
    assert "receiver says no" in outcome.detail


async def test_send__does_not_follow_redirects_even_if_the_client_would() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/elsewhere":
            return httpx.Response(200)
        return httpx.Response(301, headers={"location": "https://evil.example/elsewhere"})

    outcome, receiver = await _send(answer, follow_redirects=True)

    assert outcome.code is ErrorCode.BAD_REQUEST
    assert "redirect not followed" in outcome.detail
    assert "https://evil.example/elsewhere" in outcome.detail
    assert len(receiver.requests) == 1


async def test_send__detail_is_a_short_snippet_of_the_body() -> None:
    outcome, _ = await _send(httpx.Response(500, text="boom\n" + "x" * 100_000))

    assert outcome.detail.startswith("boom x")
    assert len(outcome.detail) <= 300


# -- Retry-After ---------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 503])
async def test_send__retry_after_seconds(status: int) -> None:
    outcome, _ = await _send(httpx.Response(status, headers={"retry-after": "7"}))

    assert outcome.retry_after == 7.0


async def test_send__retry_after_http_date_is_relative_to_the_clock() -> None:
    clock = FrozenClock(datetime(2030, 6, 1, 12, 0, 0, tzinfo=UTC))
    when = format_datetime(clock.now() + timedelta(minutes=2), usegmt=True)

    outcome, _ = await _send(httpx.Response(429, headers={"retry-after": when}), clock=clock)

    assert outcome.code is ErrorCode.RATE_LIMITED
    assert outcome.retry_after == 120.0


async def test_send__retry_after_in_the_past_means_now() -> None:
    clock = FrozenClock(datetime(2030, 6, 1, 12, 0, 0, tzinfo=UTC))
    when = format_datetime(clock.now() - timedelta(minutes=2), usegmt=True)

    outcome, _ = await _send(httpx.Response(503, headers={"retry-after": when}), clock=clock)

    assert outcome.retry_after == 0.0


async def test_send__retry_after_is_capped() -> None:
    outcome, _ = await _send(httpx.Response(429, headers={"retry-after": "99999999"}))

    assert outcome.retry_after == MAX_RETRY_AFTER


@pytest.mark.parametrize("value", ["soon", "", "nan", "Mon, 99 Foo 2030"])
async def test_send__garbage_retry_after_is_ignored(value: str) -> None:
    outcome, _ = await _send(httpx.Response(429, headers={"retry-after": value}))

    assert outcome.code is ErrorCode.RATE_LIMITED
    assert outcome.retry_after is None


async def test_send__retry_after_is_only_read_for_throttling() -> None:
    outcome, _ = await _send(httpx.Response(500, headers={"retry-after": "7"}))

    assert outcome.code is ErrorCode.PROVIDER_ERROR
    assert outcome.retry_after is None


# -- transport failures ----------------------------------------------------------------


def _raising(exc: Exception) -> Handler:
    def answer(request: httpx.Request) -> httpx.Response:
        raise exc

    return answer


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (httpx.ReadTimeout("read timed out"), ErrorCode.TIMEOUT),
        (httpx.ConnectTimeout("connect timed out"), ErrorCode.TIMEOUT),
        (httpx.PoolTimeout("no connection free"), ErrorCode.TIMEOUT),
        (httpx.ConnectError("connection refused"), ErrorCode.CONNECTION_FAILED),
        (httpx.ReadError("connection reset by peer"), ErrorCode.CONNECTION_FAILED),
        (
            httpx.RemoteProtocolError("Server disconnected without sending a response."),
            ErrorCode.CONNECTION_FAILED,
        ),
    ],
)
async def test_send__maps_transport_errors(exc: Exception, code: ErrorCode) -> None:
    outcome, _ = await _send(_raising(exc))

    assert not outcome.ok
    assert outcome.code is code
    assert outcome.provider_status is None
    assert type(exc).__name__ in outcome.detail


async def test_send__a_slow_receiver_times_out_within_the_timeout() -> None:
    async def answer(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200)

    loop = asyncio.get_running_loop()
    started = loop.time()
    outcome, _ = await _send(answer, send_timeout=0.1)

    assert outcome.code is ErrorCode.TIMEOUT
    assert "0.1" in outcome.detail
    assert loop.time() - started < 2
