"""The ``Idempotency-Key`` request header (IETF httpapi draft), for POST requests.

The first request with a key owns it while it runs; its response is kept for
``idempotency_window`` seconds and replayed (with ``Idempotent-Replayed: true``) to
every later request with the same key and the same body. The same key with a
different body is refused with 422; while the first request is still running, 409.
A request that fails (any error response) gives the key back, so the client may
retry it — with the same body or a corrected one.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request
from starlette.responses import JSONResponse, Response

from sluice.api.auth import Principal
from sluice.api.problems import Problem

__all__ = ["HEADER", "fingerprint", "idempotent"]

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


async def idempotent(
    request: Request,
    who: Principal,
    header: str | None,
    body: Any,
    handler: Callable[[], Awaitable[tuple[int, Any]]],
) -> Response:
    """Run ``handler`` (returning status and a JSON-able body) under the key, if any."""
    if header is None:
        status, content = await handler()
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
        raise Problem(
            409, f"a request with {HEADER} {key!r} is still being processed; retry shortly",
            field=HEADER, kind="idempotency-key-in-use", headers={"Retry-After": "1"},
        )  # fmt: skip
    try:
        status, content = await handler()
    except BaseException:
        await store.idem_release(who.idem_scope, key)
        raise
    response = JSONResponse(content, status_code=status)
    await store.idem_finish(
        who.idem_scope, key, status, bytes(response.body).decode(), state.clock.now()
    )
    return response
