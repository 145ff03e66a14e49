"""The ``Idempotency-Key`` request header (IETF httpapi draft), for POST requests.

The first request with a key owns it while it runs; its response is kept for
``idempotency_window`` seconds and replayed (with ``Idempotent-Replayed: true``) to
every later request with the same key and the same body. The same key with a
different body is refused with 422; while the first request is still running, 409.
A request that fails (any error response) gives the key back, so the client may
retry it — with the same body or a corrected one.

What a request stores, it stores in the same transaction as its key's record of the
response (``HeldKey.enqueue``, the store's ``idem_enqueue``). A request that fails
half-way — the database gone between two writes — therefore leaves either both or
neither: never messages whose key still looks free (or abandoned, after
``idempotency_lock``) to a retry, which would store them a second time.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from starlette.responses import JSONResponse, Response

from sluice.api.auth import Principal
from sluice.api.problems import Problem
from sluice.metrics import DUPLICATES, tenant_label
from sluice.model import Message, NewMessage
from sluice.store import Store

__all__ = ["HEADER", "HeldKey", "fingerprint", "idempotent"]

HEADER = "Idempotency-Key"
_KEY = re.compile(r'"?([\x21\x23-\x7e]{1,255})"?')


def _parse(value: str) -> str:
    """The key: a Structured Fields string (``"abc"``); a bare token is accepted too."""
    match = _KEY.fullmatch(value.strip())
    if not match:
        raise Problem(
            422, f"{HEADER} must be 1 to 255 visible ASCII characters, optionally quoted",
            field=HEADER, kind="validation",
        )  # fmt: skip
    return match.group(1)


def fingerprint(method: str, path: str, body: Any) -> str:
    """What makes two requests "the same": method, path and the parsed body (so key
    order and whitespace do not matter)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{method} {path}\n{canonical}".encode()).hexdigest()


def _busy(key: str) -> Problem:
    return Problem(
        409, f"a request with {HEADER} {key!r} is still being processed; retry shortly",
        field=HEADER, kind="idempotency-key-in-use", headers={"Retry-After": "1"},
    )  # fmt: skip


@dataclass(slots=True)
class HeldKey:
    """The ``Idempotency-Key`` a running request holds, for its handler to store under.

    ``recorded`` turns true once the response is recorded with what it describes;
    ``lost`` once the store found the claim no longer ours.
    """

    store: Store
    scope: str
    key: str
    recorded: bool = False
    lost: bool = False

    async def enqueue(
        self, messages: Sequence[NewMessage], respond: Callable[[list[Message]], tuple[int, Any]]
    ) -> tuple[int, Any]:
        """Store ``messages`` and record the response ``respond`` makes of them (status,
        JSON-able body) under the key, in one transaction; return that response."""
        answer: list[tuple[int, Any]] = []

        def record(stored: list[Message]) -> tuple[int, str]:
            status, content = respond(stored)
            answer[:] = [(status, content)]
            return status, _text(content, status)

        if await self.store.idem_enqueue(self.scope, self.key, messages, record) is None:
            # Our claim outlived its lock and another request with the same key and
            # body took it over; that one stores the messages (or has already).
            self.lost = True
            raise _busy(self.key)
        self.recorded = True
        return answer[0]


def _text(content: Any, status: int) -> str:
    """The body exactly as the response will carry it (and a replay will repeat it)."""
    return bytes(JSONResponse(content, status_code=status).body).decode()


async def idempotent(
    request: Request,
    who: Principal,
    header: str | None,
    body: Any,
    handler: Callable[[HeldKey | None], Awaitable[tuple[int, Any]]],
) -> Response:
    """Run ``handler`` (returning status and a JSON-able body) under the key, if any.

    ``handler`` gets the key it holds (``None`` without one) and should store through
    ``HeldKey.enqueue``, so that its writes and the key's record of them are one. A
    handler that stores nothing may ignore it; its response is recorded afterwards.
    """
    if header is None:
        status, content = await handler(None)
        return JSONResponse(content, status_code=status)
    key = _parse(header)
    state = request.app.state
    store, settings = state.store, state.settings
    fp = fingerprint(request.method, request.url.path, body)
    claim = await store.idem_begin(
        who.idem_scope, key, fp, state.clock.now(), settings.idempotency_lock,
        settings.idempotency_window,
    )  # fmt: skip
    if claim.state == "replay":
        DUPLICATES.labels("api", tenant_label(who.tenant or "")).inc()
        return Response(
            claim.response or "null", status_code=claim.status_code or 200,
            media_type="application/json", headers={"Idempotent-Replayed": "true"},
        )  # fmt: skip
    if claim.state == "mismatch":
        raise Problem(
            422, f"{HEADER} {key!r} was already used for a different request; use a new key",
            field=HEADER, kind="idempotency-key-reused",
        )  # fmt: skip
    if claim.state == "busy":
        raise _busy(key)
    held = HeldKey(store, who.idem_scope, key)
    try:
        status, content = await handler(held)
    except BaseException:
        # Only a running claim is released: if the failure came after the commit that
        # recorded the response (the connection dropped while it was acknowledged),
        # the record stays and a retry gets it replayed. A lost claim is another
        # request's now, and not ours to give back.
        if not held.lost:
            await store.idem_release(who.idem_scope, key)
        raise
    response = JSONResponse(content, status_code=status)
    if not held.recorded:
        await store.idem_finish(
            who.idem_scope, key, status, bytes(response.body).decode(), state.clock.now()
        )
    return response
