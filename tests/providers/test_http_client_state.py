"""The worker's shared HTTP client keeps no state between sends: a cookie one endpoint
sets never rides along on another tenant's request to the same host.

Every adapter in a worker process shares one client (``sluice.providers.http_client``).
A receiver behind a load balancer that sets a session cookie (sticky sessions do) would
otherwise have that cookie sent back with the next tenant's webhook to the same host:
one tenant's session handed to another, and requests no longer independent. The real
adapter and client talk to a server on loopback that sets a cookie on every answer.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from sluice.config import Settings
from sluice.model import Message, Status
from sluice.providers import http_client
from sluice.providers.webhook import WebhookProvider

SECRET = "whsec_" + base64.b64encode(b"c" * 24).decode()


@pytest.fixture
async def cookie_server() -> AsyncIterator[tuple[int, list[bytes]]]:
    """Answers 200 with a Set-Cookie naming the request's path; records each head."""
    heads: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            (int(line.split(b":")[1]) for line in head.split(b"\r\n")
             if line.lower().startswith(b"content-length:")), 0,
        )  # fmt: skip
        await reader.readexactly(length)
        heads.append(head)
        path = head.split(b" ")[1].decode()
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n"
            + f"set-cookie: session={path.strip('/').replace('/', '-')}; Path=/\r\n\r\nok".encode()
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1], heads


def message(tenant: str, url: str, n: int) -> Message:
    now = datetime.now(UTC)
    return Message(
        id=f"01900000-0000-7000-8000-00000000000{n}", tenant=tenant, channel="webhook",
        provider="webhook", action="send", recipient=url, payload={"n": n}, priority=0,
        status=Status.SENDING, run_at=now, attempts=1, max_attempts=5,
    )  # fmt: skip


async def test_a_cookie_set_for_one_tenant_is_never_sent_with_the_next_request(
    cookie_server: tuple[int, list[bytes]],
) -> None:
    port, heads = cookie_server
    async with http_client(Settings()) as client:
        adapter = WebhookProvider(client, SECRET, allow_loopback=True)
        for n, tenant in enumerate(["acme", "globex", "acme"], start=1):
            outcome = await adapter.send(message(tenant, f"http://127.0.0.1:{port}/{tenant}", n))
            assert outcome.ok, outcome
        kept = len(client.cookies)
    assert len(heads) == 3
    cookies = [[x for x in h.lower().split(b"\r\n") if x.startswith(b"cookie")] for h in heads]
    assert cookies == [[], [], []]
    assert kept == 0
