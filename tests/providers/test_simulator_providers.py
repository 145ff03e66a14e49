"""The real adapters, on the production HTTP client, against the provider simulator.

Twilio, SendGrid and the WhatsApp Cloud API as the simulator speaks them on 127.0.0.1:
credentials registered, revoked and narrowed through ``/_sim/credentials``, faults
scoped per provider through ``/_sim/faults``, effects counted by Sluice's message id.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from _wire import message

from sluice.config import Settings
from sluice.model import ErrorCode, Message, Outcome
from sluice.providers import http_client
from sluice.providers.sendgrid import SendGridProvider
from sluice.providers.simulator import SimulatorThread
from sluice.providers.twilio import TwilioProvider
from sluice.providers.whatsapp import WhatsAppProvider

SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()
TWILIO_SID = "AC" + "5" * 32


@dataclass(frozen=True)
class Api:
    """One provider API as the simulator serves it."""

    name: str
    build: Callable[..., Any]
    registration: dict[str, Any]
    credentials: dict[str, str]
    token: str
    #: The scope a send needs (None: the provider has no scopes).
    scope: str | None
    new_message: Callable[[], Message]


TWILIO = Api(
    name="twilio",
    build=TwilioProvider,
    registration={"provider": "twilio", "account_sid": TWILIO_SID, "auth_token": "tw-secret"},
    credentials={"account_sid": TWILIO_SID, "auth_token": "tw-secret", "from": "+15005550006"},
    token="tw-secret",
    scope=None,
    new_message=lambda: message(
        channel="sms", provider="twilio", recipient="+15558675310", payload={"body": "Shipped"}
    ),
)
SENDGRID = Api(
    name="sendgrid",
    build=SendGridProvider,
    registration={"provider": "sendgrid", "api_key": "SG.sim-key"},
    credentials={"api_key": "SG.sim-key", "from_email": "shop@acme.example"},
    token="SG.sim-key",
    scope="mail.send",
    new_message=lambda: message(
        channel="email",
        provider="sendgrid",
        recipient="ann@example.com",
        payload={"subject": "Shipped", "text": "Your order shipped"},
    ),
)
WHATSAPP = Api(
    name="whatsapp",
    build=WhatsAppProvider,
    registration={
        "provider": "whatsapp",
        "access_token": "EAAsim",
        "phone_number_id": "106540352242922",
    },
    credentials={"access_token": "EAAsim", "phone_number_id": "106540352242922"},
    token="EAAsim",
    scope="whatsapp_business_messaging",
    new_message=lambda: message(
        channel="whatsapp",
        provider="whatsapp",
        recipient="+16505551234",
        payload={"body": "Your order shipped"},
    ),
)
APIS = [TWILIO, SENDGRID, WHATSAPP]
SCOPED = [api for api in APIS if api.scope is not None]


def _names(apis: list[Api]) -> list[str]:
    return [api.name for api in apis]


class CallbackReceiver:
    """A small local HTTP server that keeps every POST it gets (status callbacks)."""

    def __init__(self) -> None:
        self.received: queue.Queue[tuple[str, dict[str, str], bytes]] = queue.Queue()
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                received.put((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> CallbackReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def next(self, timeout: float = 5.0) -> tuple[str, dict[str, str], bytes]:
        return self.received.get(timeout=timeout)


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorThread]:
    with SimulatorThread(SECRET) as running:
        yield running


@pytest.fixture(autouse=True)
def _fresh_state(sim: SimulatorThread) -> None:
    sim.state.reset_effects()
    sim.state.clear_faults()
    sim.state.clear_credentials()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    """The production client: aiohttp's pool under httpx, as a worker runs it."""
    http = http_client(Settings())
    yield http
    await http.aclose()


@pytest.fixture
async def control() -> AsyncIterator[httpx.AsyncClient]:
    """A plain client for the simulator's control routes."""
    async with httpx.AsyncClient(timeout=10) as http:
        yield http


async def _post(control: httpx.AsyncClient, sim: SimulatorThread, path: str, doc: Any) -> Any:
    response = await control.post(f"{sim.url}{path}", json=doc)
    assert response.status_code == 200, response.text
    return response.json()


async def _register(control: httpx.AsyncClient, sim: SimulatorThread, api: Api) -> None:
    await _post(control, sim, "/_sim/credentials", api.registration)


def _adapter(api: Api, sim: SimulatorThread, client: httpx.AsyncClient, **options: Any) -> Any:
    return api.build(client, base_url=f"{sim.url}/{api.name}", timeout=5.0, **options)


async def _send(
    api: Api,
    sim: SimulatorThread,
    client: httpx.AsyncClient,
    msg: Message | None = None,
    *,
    credentials: dict[str, str] | None = None,
    **options: Any,
) -> Outcome:
    provider = _adapter(api, sim, client, **options)
    return await provider.send(  # type: ignore[no-any-return]
        msg or api.new_message(), credentials or api.credentials
    )


# -- success ---------------------------------------------------------------------------


@pytest.mark.parametrize("api", APIS, ids=_names(APIS))
async def test_send__is_recorded_once_under_our_message_id(
    api: Api, sim: SimulatorThread, client: httpx.AsyncClient, control: httpx.AsyncClient
) -> None:
    await _register(control, sim, api)
    msg = api.new_message()
    # Twilio carries our id only in the StatusCallback URL; nobody listens on port 9.
    options = {"status_callback_url": "http://127.0.0.1:9/cb"} if api is TWILIO else {}

    outcome = await _send(api, sim, client, msg, **options)

    assert outcome.ok, outcome
    assert outcome.provider_message_id
    assert sim.state.counts() == {msg.id: 1}
    effect = (await control.get(f"{sim.url}/_sim/effects/{msg.id}")).json()
    assert effect["provider"] == api.name
    assert "authorization" not in effect["headers"]
    by_provider = (await control.get(f"{sim.url}/_sim/effects?by_provider=1")).json()["by_provider"]
    assert by_provider[api.name]["unique"] == by_provider[api.name]["total"] == 1


async def test_send__provider_ids_look_like_the_real_ones(
    sim: SimulatorThread, client: httpx.AsyncClient, control: httpx.AsyncClient
) -> None:
    for api in APIS:
        await _register(control, sim, api)

    twilio, sendgrid, whatsapp = [await _send(api, sim, client) for api in APIS]

    assert twilio.provider_message_id is not None and twilio.provider_message_id.startswith("SM")
    assert twilio.provider_status == "HTTP 201"
    assert sendgrid.provider_status == "HTTP 202" and sendgrid.provider_message_id
    assert whatsapp.provider_message_id is not None
    assert whatsapp.provider_message_id.startswith("wamid.")


async def test_twilio_without_a_status_callback__is_keyed_by_its_sid(
    sim: SimulatorThread, client: httpx.AsyncClient, control: httpx.AsyncClient
) -> None:
    await _register(control, sim, TWILIO)

    outcome = await _send(TWILIO, sim, client)

    assert sim.state.counts() == {outcome.provider_message_id: 1}


@pytest.mark.parametrize("api", APIS, ids=_names(APIS))
async def test_send__twice_is_two_deliveries_the_simulator_counts_as_a_duplicate(
    api: Api, sim: SimulatorThread, client: httpx.AsyncClient, control: httpx.AsyncClient
) -> None:
    # None of these APIs takes an idempotency key: a resend after a crash is a second SMS.
    await _register(control, sim, api)
    msg = api.new_message()
    options = {"status_callback_url": "http://127.0.0.1:9/cb"} if api is TWILIO else {}

    first = await _send(api, sim, client, msg, **options)
    second = await _send(api, sim, client, msg, **options)

    assert first.ok and second.ok
    assert first.provider_message_id != second.provider_message_id
    assert sim.state.counts() == {msg.id: 2}


async def test_effects__form_bodies_show_as_objects(
    sim: SimulatorThread, client: httpx.AsyncClient, control: httpx.AsyncClient
) -> None:
    await _register(control, sim, TWILIO)
    outcome = await _send(TWILIO, sim, client)

    effect = (await control.get(f"{sim.url}/_sim/effects/{outcome.provider_message_id}")).json()

    assert effect["body"] == {"To": "+15558675310", "From": "+15005550006", "Body": "Shipped"}


async def test_effects__summary_keeps_its_shape_unless_asked_for_providers(
    sim: SimulatorThread, client: httpx.AsyncClient, control: httpx.AsyncClient
) -> None:
    for api in APIS:
        await _register(control, sim, api)
        await _send(api, sim, client)

    plain = (await control.get(f"{sim.url}/_sim/effects")).json()
    detailed = (await control.get(f"{sim.url}/_sim/effects?by_provider=true")).json()

    assert "by_provider" not in plain
    assert plain["unique"] == 3
    assert set(detailed["by_provider"]) == {"webhook", "twilio", "sendgrid", "whatsapp"}
    assert {p: c["unique"] for p, c in detailed["by_provider"].items()} == {
        "webhook": 0,
        "twilio": 1,
        "sendgrid": 1,
        "whatsapp": 1,
    }


# -- credentials -------------------------------------------------------------------------


@pytest.mark.parametrize("api", APIS, ids=_names(APIS))
async def test_check__registered_credentials_are_ok(
    api: Api, sim: SimulatorThread, client: httpx.AsyncClient, control: httpx.AsyncClient
) -> None:
    await _register(control, sim, api)

    result = await _adapter(api, sim, client).check(api.credentials)

    assert result.ok, result
    if api is SENDGRID:
        assert result.granted_scopes == ["mail.send"]


@pytest.mark.parametrize("api", APIS, ids=_names(APIS))
async def test_unknown_credentials__are_auth_revoked(
    api: Api, sim: SimulatorThread, client: httpx.AsyncClient
) -> None:
    outcome = await _send(api, sim, client)
    result = await _adapter(api, sim, client).check(api.credentials)

    assert outcome.code is ErrorCode.AUTH_REVOKED
    assert outcome.provider_status == "HTTP 401"
    assert result.code is ErrorCode.AUTH_REVOKED
    assert sim.state.counts() == {}


@pytest.mark.parametrize("api", APIS, ids=_names(APIS))
async def test_revoked_token__is_auth_revoked(
    api: Api, sim: SimulatorThread, client: httpx.AsyncClient, control: httpx.AsyncClient
) -> None:
    await _register(control, sim, api)
    assert (await _send(api, sim, client)).ok

    await _post(
        control, sim, "/_sim/credentials/revoke", {"provider": api.name, "token": api.token}
    )
    outcome = await _send(api, sim, client)

    assert outcome.code is ErrorCode.AUTH_REVOKED
    assert (await _adapter(api, sim, client).check(api.credentials)).code is ErrorCode.AUTH_REVOKED
    assert sim.state.summary()["unique"] == 1


@pytest.mark.parametrize("api", SCOPED, ids=_names(SCOPED))
async def test_removed_scope__is_scope_missing(
    api: Api, sim: SimulatorThread, client: httpx.AsyncClient, control: httpx.AsyncClient
) -> None:
    await _register(control, sim, api)

    await _post(
        control,
        sim,
        "/_sim/credentials/scopes",
        {"provider": api.name, "token": api.token, "scopes": []},
    )
    outcome = await _send(api, sim, client)

    assert outcome.code is ErrorCode.SCOPE_MISSING
    assert outcome.provider_status == "HTTP 403"
    assert api.scope is not None and api.scope in outcome.detail
    assert sim.state.counts() == {}


async def test_sendgrid_check__reports_the_narrowed_scopes(
    sim: SimulatorThread, client: httpx.AsyncClient, control: httpx.AsyncClient
) -> None:
    await _post(
        control, sim, "/_sim/credentials", {**SENDGRID.registration, "scopes": ["stats.read"]}
    )

    result = await _adapter(SENDGRID, sim, client).check(SENDGRID.credentials)

    assert result.code is ErrorCode.SCOPE_MISSING
    assert result.granted_scopes == ["stats.read"]


async def test_twilio_suspended_account__is_account_suspended(
    sim: SimulatorThread, client: httpx.AsyncClient, control: httpx.AsyncClient
) -> None:
    await _post(control, sim, "/_sim/credentials", {**TWILIO.registration, "status": "suspended"})

    outcome = await _send(TWILIO, sim, client)
    result = await _adapter(TWILIO, sim, client).check(TWILIO.credentials)

    assert outcome.code is ErrorCode.ACCOUNT_SUSPENDED
    assert outcome.provider_code == "20005"
    assert result.code is ErrorCode.ACCOUNT_SUSPENDED


async def test_whatsapp_token_for_another_number__is_refused(
    sim: SimulatorThread, client: httpx.AsyncClient, control: httpx.AsyncClient
) -> None:
    await _register(control, sim, WHATSAPP)

    outcome = await _send(
        WHATSAPP, sim, client, credentials={**WHATSAPP.credentials, "phone_number_id": "999"}
    )

    assert outcome.code is ErrorCode.BAD_REQUEST
    assert outcome.provider_code == "100"


# -- faults per provider -----------------------------------------------------------------


@pytest.mark.parametrize("api", APIS, ids=_names(APIS))
async def test_outage__is_provider_unavailable(
    api: Api, sim: SimulatorThread, client: httpx.AsyncClient, control: httpx.AsyncClient
) -> None:
    await _register(control, sim, api)
    await _post(
        control, sim, "/_sim/faults", {"provider": api.name, "error_rate": 1.0, "error_status": 503}
    )

    outcome = await _send(api, sim, client)
    result = await _adapter(api, sim, client).check(api.credentials)

    assert outcome.code is ErrorCode.PROVIDER_UNAVAILABLE
    assert outcome.provider_status == "HTTP 503"
    assert result.code is ErrorCode.PROVIDER_UNAVAILABLE
    assert sim.state.counts() == {}


@pytest.mark.parametrize("api", APIS, ids=_names(APIS))
async def test_429__is_rate_limited_with_retry_after(
    api: Api, sim: SimulatorThread, client: httpx.AsyncClient, control: httpx.AsyncClient
) -> None:
    await _register(control, sim, api)
    await _post(
        control, sim, "/_sim/faults", {"provider": api.name, "status": 429, "retry_after": 3}
    )

    outcome = await _send(api, sim, client)

    assert outcome.code is ErrorCode.RATE_LIMITED
    assert outcome.retry_after == 3.0


async def test_sendgrid_429_without_retry_after__waits_for_the_reset(
    sim: SimulatorThread, client: httpx.AsyncClient, control: httpx.AsyncClient
) -> None:
    await _register(control, sim, SENDGRID)
    await _post(control, sim, "/_sim/faults", {"provider": "sendgrid", "status": 429})

    outcome = await _send(SENDGRID, sim, client)

    assert outcome.code is ErrorCode.RATE_LIMITED
    assert outcome.retry_after is not None and 0 <= outcome.retry_after <= 2


@pytest.mark.parametrize("api", APIS, ids=_names(APIS))
async def test_invalid_recipient__is_invalid_recipient(
    api: Api, sim: SimulatorThread, client: httpx.AsyncClient, control: httpx.AsyncClient
) -> None:
    await _register(control, sim, api)
    bad = api.new_message()
    good = message(
        channel=bad.channel, provider=bad.provider, recipient="+15550000000", payload=bad.payload
    )
    if api is SENDGRID:
        good.recipient = "bob@example.com"
    await _post(
        control, sim, "/_sim/faults", {"provider": api.name, "invalid_recipients": [bad.recipient]}
    )

    refused = await _send(api, sim, client, bad)
    accepted = await _send(api, sim, client, good)

    assert refused.code is ErrorCode.INVALID_RECIPIENT
    assert refused.provider_status == "HTTP 400"
    assert accepted.ok


async def test_twilio_whatsapp_recipient__matches_the_listed_number(
    sim: SimulatorThread, client: httpx.AsyncClient, control: httpx.AsyncClient
) -> None:
    await _register(control, sim, TWILIO)
    await _post(
        control, sim, "/_sim/faults", {"provider": "twilio", "invalid_recipients": ["+15558675310"]}
    )
    msg = message(
        channel="whatsapp", provider="twilio", recipient="+15558675310", payload={"body": "x"}
    )

    outcome = await _send(TWILIO, sim, client, msg)

    assert outcome.code is ErrorCode.INVALID_RECIPIENT
    assert outcome.provider_code == "21211"


async def test_faults__for_one_provider_leave_the_others_alone(
    sim: SimulatorThread, client: httpx.AsyncClient, control: httpx.AsyncClient
) -> None:
    for api in APIS:
        await _register(control, sim, api)
    await _post(control, sim, "/_sim/faults", {"provider": "twilio", "status": 503})

    outcomes = {api.name: await _send(api, sim, client) for api in APIS}

    assert outcomes["twilio"].code is ErrorCode.PROVIDER_UNAVAILABLE
    assert outcomes["sendgrid"].ok and outcomes["whatsapp"].ok


async def test_dropped_connection__is_connection_failed_yet_the_email_was_sent(
    sim: SimulatorThread, client: httpx.AsyncClient, control: httpx.AsyncClient
) -> None:
    await _register(control, sim, SENDGRID)
    await _post(
        control, sim, "/_sim/faults", {"provider": "sendgrid", "drop_after_effect_rate": 1.0}
    )
    msg = SENDGRID.new_message()

    outcome = await _send(SENDGRID, sim, client, msg)

    assert outcome.code is ErrorCode.CONNECTION_FAILED
    assert sim.state.counts() == {msg.id: 1}


async def test_latency_past_the_timeout__is_a_timeout_yet_the_message_lands(
    sim: SimulatorThread, client: httpx.AsyncClient, control: httpx.AsyncClient
) -> None:
    await _register(control, sim, WHATSAPP)
    await _post(control, sim, "/_sim/faults", {"provider": "whatsapp", "latency_ms": 400})
    msg = WHATSAPP.new_message()
    impatient = WhatsAppProvider(client, base_url=f"{sim.url}/whatsapp", timeout=0.1)

    outcome = await impatient.send(msg, WHATSAPP.credentials)

    assert outcome.code is ErrorCode.TIMEOUT
    for _ in range(100):
        if sim.state.counts():
            break
        await asyncio.sleep(0.05)
    assert sim.state.counts() == {msg.id: 1}


# -- Twilio status callbacks ---------------------------------------------------------------


async def test_twilio_status_callback__arrives_signed_at_the_receiver(
    sim: SimulatorThread, client: httpx.AsyncClient, control: httpx.AsyncClient
) -> None:
    await _register(control, sim, TWILIO)
    msg = TWILIO.new_message()
    with CallbackReceiver() as receiver:
        callback_url = f"{receiver.url}/ingress/twilio"

        outcome = await _send(TWILIO, sim, client, msg, status_callback_url=callback_url)
        path, headers, body = await asyncio.to_thread(receiver.next)

    assert outcome.ok
    url = urlsplit(path)
    assert url.path == "/ingress/twilio"
    assert dict(parse_qsl(url.query)) == {"sluice_message_id": msg.id}
    form = dict(parse_qsl(body.decode()))
    assert form["MessageSid"] == outcome.provider_message_id
    assert form["MessageStatus"] == "delivered"
    assert form["To"] == "+15558675310"
    assert form["AccountSid"] == TWILIO_SID
    full_url = f"{receiver.url}{path}"
    text = full_url + "".join(f"{k}{v}" for k, v in sorted(form.items()))
    expected = base64.b64encode(
        hmac.new(b"tw-secret", text.encode(), hashlib.sha1).digest()
    ).decode()
    assert headers["x-twilio-signature"] == expected
    deadline = time.monotonic() + 5
    while sim.state.by_provider()["twilio"]["callbacks_sent"] != 1:
        assert time.monotonic() < deadline, sim.state.by_provider()["twilio"]
        await asyncio.sleep(0.02)


async def test_twilio_status_callback__failures_are_counted_not_fatal(
    sim: SimulatorThread, client: httpx.AsyncClient, control: httpx.AsyncClient
) -> None:
    await _register(control, sim, TWILIO)

    outcome = await _send(TWILIO, sim, client, status_callback_url="http://127.0.0.1:9/nobody")

    assert outcome.ok
    deadline = time.monotonic() + 10
    while sim.state.by_provider()["twilio"]["callbacks_failed"] != 1:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)


# -- the simulator's own answers -----------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "kwargs", "status", "fragment"),
    [
        (
            f"/twilio/2010-04-01/Accounts/{TWILIO_SID}/Messages.json",
            {"data": {"From": "+1", "Body": "x"}, "auth": (TWILIO_SID, "tw-secret")},
            400,
            '"code":21604',
        ),
        (
            f"/twilio/2010-04-01/Accounts/{TWILIO_SID}/Messages.json",
            {"data": {"To": "+1", "From": "+1"}, "auth": (TWILIO_SID, "tw-secret")},
            400,
            '"code":21602',
        ),
        (
            "/twilio/2010-04-01/Accounts/ACother/Messages.json",
            {"data": {"To": "+1", "From": "+1", "Body": "x"}, "auth": (TWILIO_SID, "tw-secret")},
            401,
            '"code":20003',
        ),
        (
            "/sendgrid/v3/mail/send",
            {
                "json": {"from": {"email": "a@b.c"}},
                "headers": {"authorization": "Bearer SG.sim-key"},
            },
            400,
            '"field":"personalizations"',
        ),
        (
            "/whatsapp/v21.0/106540352242922/messages",
            {
                "json": {"to": "+1", "type": "text", "text": {"body": "x"}},
                "headers": {"authorization": "Bearer EAAsim"},
            },
            400,
            '"code":100',
        ),
        (
            "/whatsapp/v21.0/106540352242922/messages",
            {
                "json": {
                    "messaging_product": "whatsapp",
                    "to": "+1",
                    "type": "template",
                    "template": {"name": "x"},
                },
                "headers": {"authorization": "Bearer EAAsim"},
            },
            400,
            '"code":131008',
        ),
    ],
    ids=[
        "twilio-no-to",
        "twilio-no-body",
        "twilio-wrong-account",
        "sendgrid-no-personalizations",
        "whatsapp-no-product",
        "whatsapp-template-no-language",
    ],
)
async def test_simulator__refuses_malformed_requests_like_the_provider(
    sim: SimulatorThread,
    control: httpx.AsyncClient,
    path: str,
    kwargs: dict[str, Any],
    status: int,
    fragment: str,
) -> None:
    for api in APIS:
        await _register(control, sim, api)

    response = await control.post(f"{sim.url}{path}", **kwargs)

    assert response.status_code == status
    assert fragment in response.text.replace(" ", "")
    assert sim.state.summary()["rejected"] == 1
    assert sim.state.counts() == {}


@pytest.mark.parametrize(
    "document",
    [
        {"provider": "smtp", "api_key": "x"},
        {"provider": "sendgrid"},
        {"provider": "sendgrid", "api_key": "x", "scopes": "mail.send"},
        {"provider": "twilio", "account_sid": "AC1", "auth_token": "t", "api_key": "x"},
        ["not", "an", "object"],
    ],
    ids=["unknown-provider", "no-secret", "scopes-not-a-list", "unknown-field", "not-an-object"],
)
async def test_credentials__a_bad_registration_is_refused(
    sim: SimulatorThread, control: httpx.AsyncClient, document: Any
) -> None:
    response = await control.post(f"{sim.url}/_sim/credentials", json=document)

    assert response.status_code == 400
    assert "error" in response.json()
    assert sim.state.credentials() == []


async def test_credentials__listed_with_secrets_shortened_and_cleared_per_provider(
    sim: SimulatorThread, control: httpx.AsyncClient
) -> None:
    for api in APIS:
        await _register(control, sim, api)

    listed = (await control.get(f"{sim.url}/_sim/credentials")).json()["credentials"]
    after = (await control.delete(f"{sim.url}/_sim/credentials?provider=twilio")).json()

    assert {c["provider"] for c in listed} == {"twilio", "sendgrid", "whatsapp"}
    assert all(c["token"].endswith("…") and len(c["token"]) <= 5 for c in listed)
    assert {c["provider"] for c in after["credentials"]} == {"sendgrid", "whatsapp"}


async def test_credentials__revoking_an_unknown_one_is_404(
    sim: SimulatorThread, control: httpx.AsyncClient
) -> None:
    response = await control.post(
        f"{sim.url}/_sim/credentials/revoke", json={"provider": "sendgrid", "token": "nope"}
    )

    assert response.status_code == 404


async def test_credentials__twilio_revokes_by_account_sid_too(
    sim: SimulatorThread, client: httpx.AsyncClient, control: httpx.AsyncClient
) -> None:
    await _register(control, sim, TWILIO)

    await _post(
        control, sim, "/_sim/credentials/revoke", {"provider": "twilio", "token": TWILIO_SID}
    )

    assert (await _send(TWILIO, sim, client)).code is ErrorCode.AUTH_REVOKED


@pytest.mark.parametrize(
    "document",
    [
        {"provider": "fax", "status": 503},
        {"provider": "twilio", "path_prefix": "/sendgrid"},
        {"invalid_recipients": "+1555"},
    ],
    ids=["unknown-provider", "prefix-outside-provider", "recipients-not-a-list"],
)
async def test_faults__a_bad_provider_fault_is_refused(
    sim: SimulatorThread, control: httpx.AsyncClient, document: dict[str, Any]
) -> None:
    response = await control.post(f"{sim.url}/_sim/faults", json=document)

    assert response.status_code == 400
    assert sim.state.faults() == []


async def test_faults__provider_is_shorthand_for_its_path_prefix(
    sim: SimulatorThread, control: httpx.AsyncClient
) -> None:
    document = await _post(
        control, sim, "/_sim/faults", {"provider": "whatsapp", "invalid_recipients": ["+1", "+2"]}
    )

    (faults,) = document["faults"]
    assert faults["path_prefix"] == "/whatsapp"
    assert faults["invalid_recipients"] == ["+1", "+2"]
