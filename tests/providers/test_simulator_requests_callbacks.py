"""The simulator's request log, its status-callback switches and client, and running it
without a webhook secret: over HTTP on 127.0.0.1, as a worker or an operator sees it."""

from __future__ import annotations

import asyncio
import base64
import os
import queue
import threading
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from _wire import message
from standardwebhooks.webhooks import Webhook

from sluice.providers.simulator import RequestLog, SimulatorThread
from sluice.providers.twilio import TwilioProvider

SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()
SID = "AC" + "6" * 32
CREDENTIALS = {"account_sid": SID, "auth_token": "tw-secret", "from": "+15005550006"}
MESSAGES = f"/twilio/2010-04-01/Accounts/{SID}/Messages.json"
FORM = {"To": "+15558675312", "From": "+15005550006", "Body": "z"}


class KeepAliveReceiver:
    """An HTTP/1.1 server keeping each POST's path and the client port it came from."""

    def __init__(self) -> None:
        self.received: queue.Queue[tuple[str, int]] = queue.Queue()
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, so a reused client shows

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0)))
                received.put((self.path, int(self.client_address[1])))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> KeepAliveReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def next(self, timeout: float = 5.0) -> tuple[str, int]:
        return self.received.get(timeout=timeout)


@pytest.fixture
def sim() -> Iterator[SimulatorThread]:
    with SimulatorThread(SECRET) as running:
        running.state.register_credential(
            {"provider": "twilio", "account_sid": SID, "auth_token": "tw-secret"}
        )
        yield running


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


async def _send(sim: SimulatorThread, http: httpx.AsyncClient, callback: str | None = None) -> str:
    provider = TwilioProvider(http, base_url=f"{sim.url}/twilio", status_callback_url=callback)
    msg = message(channel="sms", provider="twilio", recipient="+15558675310", payload={"body": "x"})
    outcome = await provider.send(msg, CREDENTIALS)
    assert outcome.ok, outcome
    # The effect's key: our message id from the callback URL, else Twilio's sid.
    return msg.id if callback else str(outcome.provider_message_id)


async def _until(check: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def _twilio_counters(sim: SimulatorThread) -> dict[str, int]:
    return sim.state.by_provider()["twilio"]


# -- the request log ---------------------------------------------------------------------


async def test_requests__log_recorded_refused_and_rejected_with_time_status_and_latency(
    sim: SimulatorThread, http: httpx.AsyncClient
) -> None:
    before = datetime.now(UTC)
    sent = await _send(sim, http)
    await http.post(f"{sim.url}/_sim/faults", json={"provider": "twilio", "status": 429})
    refused = await TwilioProvider(http, base_url=f"{sim.url}/twilio").send(
        message(channel="sms", provider="twilio", recipient="+15558675311", payload={"body": "y"}),
        CREDENTIALS,
    )
    await http.post(f"{sim.url}/_sim/faults", json={"provider": "twilio", "status": 503})
    unavailable = await http.post(f"{sim.url}{MESSAGES}", data=FORM, auth=(SID, "tw-secret"))
    bad_auth = await http.post(f"{sim.url}{MESSAGES}", data=FORM, auth=(SID, "wrong"))

    answer = (await http.get(f"{sim.url}/_sim/requests")).json()

    assert not refused.ok and unavailable.status_code == 503 and bad_auth.status_code == 401
    items = answer["items"]
    assert answer["count"] == len(items) == 4
    assert [(i["method"], i["path"], i["provider"]) for i in items] == [
        ("POST", MESSAGES, "twilio")
    ] * 4
    assert [(i["status"], i["outcome"]) for i in items] == [
        (201, "recorded"),
        (429, "injected"),
        (503, "injected"),
        (401, "rejected"),
    ]
    assert items[0]["key"] == sent
    assert [i["seq"] for i in items] == sorted(i["seq"] for i in items)
    for item in items:
        at = datetime.fromisoformat(item["at"])
        assert before - timedelta(seconds=1) <= at <= datetime.now(UTC)
        assert item["latency_ms"] >= 0
    assert answer["next_cursor"] == str(items[-1]["seq"])


async def test_requests__since_a_cursor_or_a_time_and_filters_page_through_the_log(
    sim: SimulatorThread, http: httpx.AsyncClient
) -> None:
    for _ in range(3):
        await _send(sim, http)
    await http.post(f"{sim.url}/_sim/faults", json={"provider": "twilio", "status": 429})
    await http.post(f"{sim.url}{MESSAGES}", data=FORM, auth=(SID, "tw-secret"))

    first = (await http.get(f"{sim.url}/_sim/requests", params={"limit": 2})).json()
    rest = (
        await http.get(f"{sim.url}/_sim/requests", params={"since": first["next_cursor"]})
    ).json()
    refused = (await http.get(f"{sim.url}/_sim/requests", params={"status": 429})).json()
    later = (
        await http.get(f"{sim.url}/_sim/requests", params={"since": datetime.now(UTC).isoformat()})
    ).json()
    nothing_new = (
        await http.get(f"{sim.url}/_sim/requests", params={"since": rest["next_cursor"]})
    ).json()

    assert first["count"] == 2 and rest["count"] == 2
    assert [i["seq"] for i in first["items"] + rest["items"]] == list(range(1, 5))
    assert [i["status"] for i in refused["items"]] == [429]
    assert later["items"] == [] and nothing_new == {**nothing_new, "items": [], "count": 0}
    assert nothing_new["next_cursor"] is None
    by_provider = (
        await http.get(f"{sim.url}/_sim/requests", params={"provider": "sendgrid"})
    ).json()
    assert by_provider["count"] == 0


async def test_requests__control_routes_are_not_logged(
    sim: SimulatorThread, http: httpx.AsyncClient
) -> None:
    await http.get(f"{sim.url}/_sim/health")
    await http.get(f"{sim.url}/_sim/effects")

    answer = (await http.get(f"{sim.url}/_sim/requests")).json()

    assert answer["items"] == [] and answer["last_seq"] == 0


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"since": "yesterday"}, "since"),
        ({"since": "2026-12-05T10:00:00"}, "since"),  # no offset: which zone?
        ({"since": "-1"}, "since"),
        ({"since": "²"}, "since"),
        ({"limit": "0"}, "limit"),
        ({"limit": "10001"}, "limit"),
        ({"limit": "1e3"}, "limit"),
        ({"limit": "9" * 400}, "limit"),
        ({"status": "600"}, "status"),
        ({"provider": "pigeon"}, "provider"),
    ],
)
async def test_requests__bad_parameters_are_refused_by_name(
    sim: SimulatorThread, http: httpx.AsyncClient, params: dict[str, str], named: str
) -> None:
    answer = await http.get(f"{sim.url}/_sim/requests", params=params)

    assert answer.status_code == 400
    assert answer.json()["error"].startswith(named)


async def test_requests__the_log_is_bounded_and_delete_empties_it(
    http: httpx.AsyncClient,
) -> None:
    with SimulatorThread(SECRET, request_log_size=3) as small:
        for _ in range(5):
            await http.post(f"{small.url}{MESSAGES}", data={"To": "+1"})

        kept = (await http.get(f"{small.url}/_sim/requests")).json()
        cleared = (await http.delete(f"{small.url}/_sim/requests")).json()
        after = (await http.get(f"{small.url}/_sim/requests")).json()

    assert [i["seq"] for i in kept["items"]] == [3, 4, 5]
    assert (kept["kept"], kept["capacity"], kept["last_seq"]) == (3, 3, 5)
    assert cleared == {"kept": 0, "capacity": 3, "last_seq": 5}
    assert after["items"] == []


def test_request_log__refuses_a_capacity_that_is_not_a_positive_integer() -> None:
    for bad in (0, -1, True, 2.5):
        with pytest.raises(ValueError, match="capacity"):
            RequestLog(bad)  # type: ignore[arg-type]


# -- status callbacks --------------------------------------------------------------------


async def test_callbacks__share_one_client_connection(
    sim: SimulatorThread, http: httpx.AsyncClient
) -> None:
    with KeepAliveReceiver() as receiver:
        await _send(sim, http, f"{receiver.url}/cb")
        _, first_port = await asyncio.to_thread(receiver.next)
        await _send(sim, http, f"{receiver.url}/cb")
        _, second_port = await asyncio.to_thread(receiver.next)

    # One kept-alive connection: a client per callback would come from a new port each time.
    assert first_port == second_port
    await _until(lambda: _twilio_counters(sim)["callbacks_sent"] == 2, "both counted")


async def test_callbacks__a_message_opts_out_with_sim_callback_off(
    sim: SimulatorThread, http: httpx.AsyncClient
) -> None:
    with KeepAliveReceiver() as receiver:
        quiet = await _send(sim, http, f"{receiver.url}/cb?sim_callback=off")
        loud = await _send(sim, http, f"{receiver.url}/cb")
        path, _ = await asyncio.to_thread(receiver.next)
        await asyncio.sleep(0.2)  # time enough for a stray callback to show

        assert receiver.received.empty()
    assert f"sluice_message_id={loud}" in path
    assert sim.state.counts() == {quiet: 1, loud: 1}  # both sent, one called back
    await _until(lambda: _twilio_counters(sim)["callbacks_sent"] == 1, "the callback counted")
    assert _twilio_counters(sim)["callbacks_skipped"] == 1


async def test_callbacks__switched_off_for_all_and_back_on_over_the_control_route(
    sim: SimulatorThread, http: httpx.AsyncClient
) -> None:
    with KeepAliveReceiver() as receiver:
        off = await http.post(f"{sim.url}/_sim/callbacks", json={"enabled": False})
        await _send(sim, http, f"{receiver.url}/cb")
        await _send(sim, http, f"{receiver.url}/cb")
        state_off = (await http.get(f"{sim.url}/_sim/callbacks")).json()
        await http.post(f"{sim.url}/_sim/callbacks", json={"enabled": True})
        back = await _send(sim, http, f"{receiver.url}/cb")
        path, _ = await asyncio.to_thread(receiver.next)

        assert receiver.received.empty()
    assert off.json() == state_off == {"enabled": False}
    assert f"sluice_message_id={back}" in path
    assert _twilio_counters(sim)["callbacks_skipped"] == 2


async def test_callbacks__off_from_the_start(http: httpx.AsyncClient) -> None:
    with SimulatorThread(SECRET, callbacks=False) as quiet, KeepAliveReceiver() as receiver:
        quiet.state.register_credential(
            {"provider": "twilio", "account_sid": SID, "auth_token": "tw-secret"}
        )
        await _send(quiet, http, f"{receiver.url}/cb")
        await asyncio.sleep(0.2)

        assert receiver.received.empty()
        assert _twilio_counters(quiet)["callbacks_skipped"] == 1


@pytest.mark.parametrize(
    "body", [b'{"enabled": "no"}', b"{}", b"[]", b"not json", b'{"enabled": 0}']
)
async def test_callbacks__a_bad_switch_is_refused_by_name_and_changes_nothing(
    sim: SimulatorThread, http: httpx.AsyncClient, body: bytes
) -> None:
    answer = await http.post(f"{sim.url}/_sim/callbacks", content=body)

    assert answer.status_code == 400
    assert "enabled" in answer.json()["error"] or "JSON" in answer.json()["error"]
    assert (await http.get(f"{sim.url}/_sim/callbacks")).json() == {"enabled": True}


# -- without a webhook secret ------------------------------------------------------------


async def test_without_a_secret__webhooks_get_503_naming_the_setting_providers_work(
    http: httpx.AsyncClient,
) -> None:
    signed = Webhook(SECRET).sign("msg_1", datetime.now(UTC), '{"a": 1}')
    with SimulatorThread(None) as bare:
        bare.state.register_credential(
            {"provider": "twilio", "account_sid": SID, "auth_token": "tw-secret"}
        )
        webhook = await http.post(
            f"{bare.url}/webhook/orders",
            content=b'{"a": 1}',
            headers={
                "webhook-id": "msg_1",
                "webhook-timestamp": str(int(datetime.now(UTC).timestamp())),
                "webhook-signature": signed,
            },
        )
        sent = await _send(bare, http)
        logged = (await http.get(f"{bare.url}/_sim/requests")).json()["items"]

        assert webhook.status_code == 503
        assert "SLUICE_WEBHOOK_SECRET" in webhook.json()["error"]
        assert bare.state.counts() == {sent: 1}
        assert bare.state.summary()["rejected"] == 1
    assert [(i["provider"], i["status"], i["outcome"]) for i in logged] == [
        ("webhook", 503, "rejected"),
        ("twilio", 201, "recorded"),
    ]
