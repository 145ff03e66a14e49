"""Test doubles shared by the provider tests: a recording MockTransport handler, messages,
and a bare HTTP server on loopback for the tests that need the real client and transport.

Not a test module (no ``test_`` prefix); the test files import it by name, which works
because pytest puts this directory on ``sys.path`` (rootdir-relative, no packages).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import httpx

from sluice.model import Message, Status, new_message_id

Handler = Callable[[httpx.Request], httpx.Response | Awaitable[httpx.Response]]


class Wire:
    """An ``httpx.MockTransport`` handler that records requests and answers as told.

    ``answer`` is a response factory (called per request, so a body is never read twice),
    a handler, or ``None`` for an empty 200.
    """

    def __init__(self, answer: Handler | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self.answer = answer

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        self.requests.append(request)
        if self.answer is None:
            return httpx.Response(200)
        answer = self.answer(request)
        return await answer if isinstance(answer, Awaitable) else answer

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        """A client whose every request comes here."""
        return httpx.AsyncClient(transport=httpx.MockTransport(self), **kwargs)

    @property
    def only(self) -> httpx.Request:
        """The single request made (fails if there were none or several)."""
        (request,) = self.requests
        return request


def respond(status: int, **kwargs: Any) -> Handler:
    """A handler answering every request with a fresh ``httpx.Response(status, **kwargs)``."""

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, **kwargs)

    return answer


def raising(exc: Exception) -> Handler:
    """A handler whose transport fails with ``exc``."""

    def answer(request: httpx.Request) -> httpx.Response:
        raise exc

    return answer


def message(
    *,
    channel: str,
    provider: str,
    recipient: str,
    payload: Mapping[str, Any],
    action: str = "order.shipped",
    tenant: str = "acme",
) -> Message:
    """A claimed message as the dispatcher hands it to an adapter."""
    return Message(
        id=new_message_id(),
        tenant=tenant,
        channel=channel,
        provider=provider,
        action=action,
        recipient=recipient,
        payload=dict(payload),
        priority=0,
        status=Status.SENDING,
        run_at=datetime.now(UTC),
        attempts=1,
        max_attempts=5,
    )


def form_of(request: httpx.Request) -> dict[str, list[str]]:
    """A form-encoded request body, every field as a list."""
    return parse_qs(request.content.decode(), keep_blank_values=True)


def json_of(request: httpx.Request) -> Any:
    """A JSON request body."""
    return json.loads(request.content)


@contextlib.asynccontextmanager
async def loopback_server(
    extra: Callable[[bytes], bytes] = lambda head: b"",
) -> AsyncIterator[tuple[int, list[bytes]]]:
    """An HTTP/1.1 server on 127.0.0.1 that answers every request 200 "ok" and closes
    the connection, with the header lines ``extra(head)`` gives; yields its port and the
    head of each request it read (the body is read and dropped)."""
    heads: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            (int(line.split(b":")[1]) for line in head.split(b"\r\n")
             if line.lower().startswith(b"content-length:")), 0,
        )  # fmt: skip
        await reader.readexactly(length)
        heads.append(head)
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n"
            + extra(head)
            + b"\r\nok"
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1], heads
