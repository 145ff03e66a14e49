"""The connection goes to the address the SSRF guard vetted, not to a second DNS answer.

The worker's real transport (aiohttp underneath) resolves a vetted host through the
guard's pin. Here the guard's resolver says ``hooks.invalid`` is 127.0.0.1 (loopback
allowed, as for the simulator) while the system resolver cannot resolve that name at
all: the send still reaches the local server, so no second lookup happened.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import pytest
from _wire import loopback_server

from sluice.config import Settings
from sluice.model import Message, Status
from sluice.netguard import static_resolver
from sluice.providers import http_client
from sluice.providers.webhook import WebhookProvider

SECRET = "whsec_" + base64.b64encode(b"s" * 24).decode()


@pytest.fixture
async def local_server() -> AsyncIterator[tuple[int, list[bytes]]]:
    async with loopback_server() as server:
        yield server


def message(url: str) -> Message:
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    return Message(
        id="01900000-0000-7000-8000-000000000001", tenant="acme", channel="webhook",
        provider="webhook", action="send", recipient=url, payload={"a": 1}, priority=0,
        status=Status.SENDING, run_at=now, attempts=1, max_attempts=5,
    )  # fmt: skip


async def test_the_send_connects_to_the_vetted_address(
    local_server: tuple[int, list[bytes]],
) -> None:
    port, seen = local_server
    async with http_client(Settings()) as client:
        adapter = WebhookProvider(
            client, SECRET, allow_loopback=True, resolve=static_resolver("127.0.0.1")
        )
        outcome = await adapter.send(message(f"http://hooks.invalid:{port}/in"))
    assert outcome.ok, outcome
    assert len(seen) == 1 and b"host: hooks.invalid" in seen[0].lower()


async def test_a_name_resolving_to_a_private_address_is_never_connected(
    local_server: tuple[int, list[bytes]],
) -> None:
    port, seen = local_server
    async with http_client(Settings()) as client:
        adapter = WebhookProvider(
            client, SECRET, allow_loopback=True, resolve=static_resolver("10.0.0.7")
        )
        outcome = await adapter.send(message(f"http://hooks.invalid:{port}/in"))
    assert not outcome.ok and "private" in outcome.detail
    assert seen == []


async def test_a_private_address_the_operator_lists_is_what_the_connection_is_pinned_to() -> None:
    # No private address answers on this machine, so the connection itself cannot be
    # shown; what aiohttp is handed to connect to can: the vetted private address, not a
    # second lookup (the system resolver cannot resolve hooks.invalid at all).
    import socket

    import httpx

    from sluice.netguard import PrivateTargets, TargetGuard
    from sluice.providers._transport import PinnedResolver

    listed = PrivateTargets.parse(["10.20.0.0/16"])
    guard = TargetGuard(resolve=static_resolver("10.20.0.7"), private=listed)
    assert await guard.check(httpx.URL("https://hooks.invalid/in")) is None

    resolver = PinnedResolver()
    try:
        answers = await resolver.resolve("hooks.invalid", 443, socket.AF_UNSPEC)
    finally:
        await resolver.close()
    assert [(a["host"], a["port"]) for a in answers] == [("10.20.0.7", 443)]

    refused = await TargetGuard(resolve=static_resolver("10.21.0.7"), private=listed).check(
        httpx.URL("https://other.invalid/in")
    )
    assert refused is not None and "10.21.0.7, a private address" in refused
