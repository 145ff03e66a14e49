"""The request id: the client's ``X-Request-Id``, or one made up, on every request.

It is echoed in the response, bound to every log line written while the request runs,
and becomes the ``correlation_id`` of the messages a request enqueues without one — so
the request, its messages and their attempts are found under one id
(``GET /v1/messages?correlation_id=…``, ``sluice messages list --correlation-id``).
"""

from __future__ import annotations

import os
import random
import re

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sluice.api import problems

__all__ = ["HEADER", "MAX_LENGTH", "RequestId", "request_id"]

HEADER = "X-Request-Id"
#: As long as a correlation id may be.
MAX_LENGTH = 255

#: Where made-up ids come from: an id to find a request by, not a secret, so a generator
#: of this process's own (seeded by the system, again in every forked child) rather
#: than ``uuid4``, whose system call per request cost more than the rest of the id. Not
#: the ``random`` module's: a test or an application seeding that would repeat ids.
_ids = random.Random()
os.register_at_fork(after_in_child=_ids.seed)

#: Visible ASCII: what a log line, a header and every store keep as they are.
_VALID = re.compile(r"[\x21-\x7e]+")


def request_id(scope: Scope) -> str | None:
    """The id of the request ``scope`` belongs to (None outside ``RequestId``)."""
    state = scope.get("state") or {}
    value = state.get("request_id")
    return value if isinstance(value, str) else None


class RequestId:
    """Takes the request's ``X-Request-Id`` (or makes one), keeps it in the request
    state, binds it to the log context and echoes it in the response.

    A header that is not 1 to 255 visible ASCII characters is answered 422 naming it:
    an id the client cannot find again in the logs is worse than none.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = [v for n, v in scope["headers"] if n == b"x-request-id"]
        if given:
            text = given[-1].decode("latin-1").strip()
            if len(given) > 1 or len(text) > MAX_LENGTH or not _VALID.fullmatch(text):
                response = problems.problem_response(
                    422,
                    f"{HEADER}: must be one header of 1 to {MAX_LENGTH} visible ASCII characters",
                    field=HEADER,
                    kind="validation",
                    instance=scope.get("path"),
                )
                await response(scope, receive, send)
                return
            rid = text
        else:
            rid = f"{_ids.getrandbits(128):032x}"  # uuid4().hex's shape
        scope.setdefault("state", {})["request_id"] = rid
        echoed = (HEADER.lower().encode(), rid.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0] != echoed[0]]
                message = {**message, "headers": [*headers, echoed]}
            await send(message)

        # Bound and reset by token (bound_contextvars copies the whole context to restore it).
        tokens = structlog.contextvars.bind_contextvars(request_id=rid)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            structlog.contextvars.reset_contextvars(**tokens)
