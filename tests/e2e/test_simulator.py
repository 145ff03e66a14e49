"""The provider simulator on 127.0.0.1, driven by the real webhook provider over HTTP."""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from sluice.clock import FrozenClock
from sluice.errors import ConfigError
from sluice.model import ErrorCode, Message, Outcome, Status, new_message_id
from sluice.providers.simulator import SimulatorThread, create_app
from sluice.providers.webhook import WebhookProvider

SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorThread]:
    with SimulatorThread(SECRET) as running:
        yield running


@pytest.fixture(autouse=True)
def _fresh_state(sim: SimulatorThread) -> None:
    sim.state.reset_effects()
    sim.state.clear_faults()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as http:
        yield http


@pytest.fixture
def provider(client: httpx.AsyncClient) -> WebhookProvider:
    # The simulator listens on 127.0.0.1, which the SSRF guard admits only when told.
    return WebhookProvider(client, SECRET, timeout=5.0, allow_loopback=True)


def _message(url: str, **payload: Any) -> Message:
    return Message(
        id=new_message_id(),
        tenant="t",
        channel="webhook",
        provider="webhook",
        action="order.created",
        recipient=url,
        payload=payload or {"order": 1},
        priority=0,
        status=Status.SENDING,
        run_at=datetime.now(UTC),
        attempts=1,
        max_attempts=5,
    )


async def _faults(client: httpx.AsyncClient, sim: SimulatorThread, **faults: Any) -> None:
    response = await client.post(f"{sim.url}/_sim/faults", json=faults)
    assert response.status_code == 200, response.text


async def _summary(client: httpx.AsyncClient, sim: SimulatorThread) -> dict[str, int]:
    response = await client.get(f"{sim.url}/_sim/effects")
    assert response.status_code == 200
    return response.json()  # type: ignore[no-any-return]


# -- recording effects -------------------------------------------------------------


async def test_send__records_the_effect_once(
    sim: SimulatorThread, client: httpx.AsyncClient, provider: WebhookProvider
) -> None:
    message = _message(f"{sim.url}/webhook/orders", order=7)

    outcome = await provider.send(message)

    assert outcome.ok
    assert outcome.provider_status == "HTTP 200"
    assert outcome.provider_message_id == message.id
    assert await _summary(client, sim) == {
        "unique": 1,
        "total": 1,
        "duplicates": 0,
        "rejected": 0,
        "errors_injected": 0,
        "dropped": 0,
    }
    effect = (await client.get(f"{sim.url}/_sim/effects/{message.id}")).json()
    assert effect["count"] == 1
    assert effect["path"] == "/webhook/orders"
    assert effect["headers"]["webhook-id"] == message.id
    assert effect["body"]["id"] == message.id
    assert effect["body"]["data"] == {"order": 7}


async def test_send__same_id_twice_is_one_effect_and_a_duplicate(
    sim: SimulatorThread, client: httpx.AsyncClient, provider: WebhookProvider
) -> None:
    message = _message(f"{sim.url}/webhook/orders")

    first = await provider.send(message)
    second = await provider.send(message)

    assert first.ok and second.ok
    summary = await _summary(client, sim)
    assert (summary["unique"], summary["total"], summary["duplicates"]) == (1, 2, 1)
    ids = (await client.get(f"{sim.url}/_sim/effects/ids")).json()["ids"]
    assert ids == {message.id: 2}


async def test_effect__unknown_id_is_404(sim: SimulatorThread, client: httpx.AsyncClient) -> None:
    response = await client.get(f"{sim.url}/_sim/effects/{new_message_id()}")

    assert response.status_code == 404


async def test_effects__delete_resets_everything(
    sim: SimulatorThread, client: httpx.AsyncClient, provider: WebhookProvider
) -> None:
    await provider.send(_message(f"{sim.url}/webhook/x"))

    response = await client.delete(f"{sim.url}/_sim/effects")

    assert response.status_code == 200
    assert (await _summary(client, sim))["unique"] == 0
    assert (await client.get(f"{sim.url}/_sim/effects/ids")).json() == {"ids": {}}


async def test_health(sim: SimulatorThread, client: httpx.AsyncClient) -> None:
    response = await client.get(f"{sim.url}/_sim/health")

    assert response.status_code == 200


# -- signatures -------------------------------------------------------------------------


async def test_bad_signature__is_refused_and_not_recorded(
    sim: SimulatorThread, client: httpx.AsyncClient
) -> None:
    other = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    impostor = WebhookProvider(client, other, allow_loopback=True)

    outcome = await impostor.send(_message(f"{sim.url}/webhook/orders"))
    unsigned = await client.post(f"{sim.url}/webhook/orders", json={"id": "x"})
    garbled = await client.post(
        f"{sim.url}/webhook/orders",
        content=b"{}",
        headers={
            "webhook-id": "x",
            "webhook-timestamp": str(int(time.time())),
            "webhook-signature": "no-comma-here",
        },
    )

    assert outcome.code is ErrorCode.BAD_REQUEST
    assert outcome.provider_status == "HTTP 401"
    assert unsigned.status_code == 401
    assert garbled.status_code == 401
    summary = await _summary(client, sim)
    assert (summary["unique"], summary["total"], summary["rejected"]) == (0, 0, 3)


async def test_signature__is_judged_by_the_simulators_clock(client: httpx.AsyncClient) -> None:
    # A test that moves time forward to skip a backoff signs in the "future"; a simulator
    # on the same clock must still accept it.
    clock = FrozenClock()
    clock.advance(3600)
    with SimulatorThread(SECRET, clock=clock) as moved:
        url = f"{moved.url}/webhook/orders"

        on_sim_clock = WebhookProvider(client, SECRET, clock=clock, allow_loopback=True)
        on_wall_clock = WebhookProvider(client, SECRET, allow_loopback=True)
        same_clock = await on_sim_clock.send(_message(url))
        wall_clock = await on_wall_clock.send(_message(url))

    assert same_clock.ok
    assert wall_clock.provider_status == "HTTP 401"


def test_create_app__invalid_secret_names_the_setting() -> None:
    with pytest.raises(ConfigError, match="SLUICE_WEBHOOK_SECRET"):
        create_app("whsec_not base64!")


# -- fault injection ---------------------------------------------------------------------


async def test_fault__429_with_retry_after_is_rate_limited(
    sim: SimulatorThread, client: httpx.AsyncClient, provider: WebhookProvider
) -> None:
    await _faults(client, sim, status=429, retry_after=2)

    outcome = await provider.send(_message(f"{sim.url}/webhook/orders"))

    assert outcome.code is ErrorCode.RATE_LIMITED
    assert outcome.retry_after == 2.0
    summary = await _summary(client, sim)
    assert (summary["unique"], summary["errors_injected"]) == (0, 1)


async def test_fault__retry_after_may_be_an_http_date(
    sim: SimulatorThread, client: httpx.AsyncClient, provider: WebhookProvider
) -> None:
    when = datetime.now(UTC) + timedelta(seconds=90)
    await _faults(client, sim, status=503, retry_after=when.strftime("%a, %d %b %Y %H:%M:%S GMT"))

    outcome = await provider.send(_message(f"{sim.url}/webhook/orders"))

    assert outcome.code is ErrorCode.PROVIDER_UNAVAILABLE
    assert outcome.retry_after is not None
    assert 80 <= outcome.retry_after <= 90


async def test_fault__error_rate_one_answers_every_request_with_the_error(
    sim: SimulatorThread, client: httpx.AsyncClient, provider: WebhookProvider
) -> None:
    await _faults(client, sim, error_rate=1.0, error_status=503)

    outcomes = [await provider.send(_message(f"{sim.url}/webhook/x")) for _ in range(5)]

    assert {o.code for o in outcomes} == {ErrorCode.PROVIDER_UNAVAILABLE}
    summary = await _summary(client, sim)
    assert (summary["unique"], summary["errors_injected"]) == (0, 5)


async def test_fault__seeded_error_rate_is_repeatable(
    sim: SimulatorThread, client: httpx.AsyncClient, provider: WebhookProvider
) -> None:
    async def run() -> list[bool]:
        await _faults(client, sim, error_rate=0.5, seed=7)
        return [(await provider.send(_message(f"{sim.url}/webhook/x"))).ok for _ in range(20)]

    first, second = await run(), await run()

    assert first == second
    assert 0 < sum(first) < 20


async def test_fault__latency_delays_the_answer(
    sim: SimulatorThread, client: httpx.AsyncClient, provider: WebhookProvider
) -> None:
    await _faults(client, sim, latency_ms=300)

    started = time.monotonic()
    outcome = await provider.send(_message(f"{sim.url}/webhook/x"))

    assert outcome.ok
    assert time.monotonic() - started >= 0.3


async def test_fault__latency_past_the_timeout_is_a_timeout_yet_the_effect_lands(
    sim: SimulatorThread, client: httpx.AsyncClient
) -> None:
    await _faults(client, sim, latency_ms=400)
    impatient = WebhookProvider(client, SECRET, timeout=0.1, allow_loopback=True)
    message = _message(f"{sim.url}/webhook/x")

    outcome = await impatient.send(message)

    assert outcome.code is ErrorCode.TIMEOUT
    for _ in range(100):  # the receiver finishes its work after the sender gave up
        if sim.state.counts():
            break
        await asyncio.sleep(0.05)
    assert sim.state.counts() == {message.id: 1}


async def test_fault__dropped_connection_is_connection_failed_yet_the_effect_lands(
    sim: SimulatorThread, client: httpx.AsyncClient, provider: WebhookProvider
) -> None:
    await _faults(client, sim, drop_after_effect_rate=1.0)
    message = _message(f"{sim.url}/webhook/x")

    outcome = await provider.send(message)

    assert outcome.code is ErrorCode.CONNECTION_FAILED
    assert outcome.provider_status is None  # no status line ever arrived
    summary = await _summary(client, sim)
    assert (summary["unique"], summary["dropped"]) == (1, 1)


async def test_fault__dropped_connection_is_a_transport_error_not_a_500(
    sim: SimulatorThread, client: httpx.AsyncClient
) -> None:
    await _faults(client, sim, drop_after_effect_rate=1.0)
    msg_id, now, body = new_message_id(), datetime.now(UTC), '{"hello":"world"}'
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(SECRET).sign(msg_id, now, body),
    }

    with pytest.raises(httpx.TransportError):
        await client.post(f"{sim.url}/webhook/raw", content=body, headers=headers)

    assert (await client.get(f"{sim.url}/_sim/effects/ids")).json()["ids"] == {msg_id: 1}


async def test_fault__fail_first_fails_each_id_n_times_then_lets_it_through(
    sim: SimulatorThread, client: httpx.AsyncClient, provider: WebhookProvider
) -> None:
    await _faults(client, sim, fail_first=2, error_status=500)
    a, b = _message(f"{sim.url}/webhook/x"), _message(f"{sim.url}/webhook/x")

    tries_a = [await provider.send(a) for _ in range(3)]
    tries_b = [await provider.send(b) for _ in range(3)]

    for tries in (tries_a, tries_b):
        assert [o.code for o in tries] == [ErrorCode.PROVIDER_ERROR, ErrorCode.PROVIDER_ERROR, None]
    summary = await _summary(client, sim)
    assert (summary["unique"], summary["total"], summary["errors_injected"]) == (2, 2, 4)


async def test_fault__scoped_to_a_path_prefix(
    sim: SimulatorThread, client: httpx.AsyncClient, provider: WebhookProvider
) -> None:
    await _faults(client, sim, status=503, path_prefix="/webhook/tenant-a")

    a = await provider.send(_message(f"{sim.url}/webhook/tenant-a/orders"))
    b = await provider.send(_message(f"{sim.url}/webhook/tenant-b/orders"))

    assert a.code is ErrorCode.PROVIDER_UNAVAILABLE
    assert b.ok


async def test_faults__delete_clears_them(
    sim: SimulatorThread, client: httpx.AsyncClient, provider: WebhookProvider
) -> None:
    await _faults(client, sim, status=503)
    await _faults(client, sim, status=429, path_prefix="/webhook/a")

    response = await client.delete(f"{sim.url}/_sim/faults")
    outcome = await provider.send(_message(f"{sim.url}/webhook/a"))

    assert response.json() == {"faults": []}
    assert (await client.get(f"{sim.url}/_sim/faults")).json() == {"faults": []}
    assert outcome.ok


@pytest.mark.parametrize(
    "document",
    [{"error_rate": 2}, {"eror_rate": 0.5}, {"status": 200}, {"latency_ms": "slow"}, []],
)
async def test_faults__a_bad_document_is_refused(
    sim: SimulatorThread, client: httpx.AsyncClient, document: Any
) -> None:
    response = await client.post(f"{sim.url}/_sim/faults", json=document)

    assert response.status_code == 400
    assert "error" in response.json()
    assert (await client.get(f"{sim.url}/_sim/faults")).json() == {"faults": []}


# -- under load ------------------------------------------------------------------------


async def test_many_concurrent_sends_with_drops__every_effect_lands_at_least_once(
    sim: SimulatorThread, client: httpx.AsyncClient
) -> None:
    await _faults(client, sim, drop_after_effect_rate=0.2, error_rate=0.1, seed=3)
    # A generous timeout: a send that timed out after landing would be a duplicate the
    # assertions below do not expect, and a loaded CI machine can be slow.
    provider = WebhookProvider(client, SECRET, timeout=60.0, allow_loopback=True)
    messages = [_message(f"{sim.url}/webhook/load") for _ in range(400)]
    in_flight = asyncio.Semaphore(50)

    async def deliver(message: Message) -> list[Outcome]:
        # What a dispatcher does: retry until the receiver confirms.
        async with in_flight:
            outcomes = [await provider.send(message)]
            while not outcomes[-1].ok:
                outcomes.append(await provider.send(message))
        return outcomes

    histories = await asyncio.gather(*(deliver(m) for m in messages))

    ids = (await client.get(f"{sim.url}/_sim/effects/ids")).json()["ids"]
    summary = await _summary(client, sim)
    assert set(ids) == {m.id for m in messages}
    # Every extra arrival is one the sender could not know about: a dropped answer.
    assert summary["duplicates"] == summary["dropped"] > 0
    assert summary["errors_injected"] > 0
    for message, outcomes in zip(messages, histories, strict=True):
        assert {o.code for o in outcomes} <= {
            None,
            ErrorCode.CONNECTION_FAILED,
            ErrorCode.PROVIDER_ERROR,
        }
        dropped = sum(o.code is ErrorCode.CONNECTION_FAILED for o in outcomes)
        assert ids[message.id] == dropped + 1
