"""The request log: every request to a provider route, with what it was answered.

``RequestLogMiddleware`` wraps the whole app and adds one ``LoggedRequest`` per request
outside ``/_sim/`` (reading the log must not fill it): when it arrived, method, path,
provider, the status answered (``None`` when the connection was dropped without an
answer), how long the answer took, and what the simulator made of it (``recorded``,
``rejected``, ``injected`` for an injected error, ``dropped``) with the effect key when
there is one. Refused requests (429, 503, 401 ...) are there like any other.

The log keeps the newest ``capacity`` entries; each has a sequence number, so a reader
polls ``GET /_sim/requests?since=<seq>`` and misses nothing that was still kept.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sluice.clock import Clock
from sluice.providers.simulator._base import PROVIDERS

#: Entries kept by default: a few minutes of a busy drain, a few MB at most.
DEFAULT_CAPACITY = 10_000
#: Where in the ASGI scope an endpoint leaves its notes for the log.
NOTES = "sluice.simulator.notes"


@dataclass(frozen=True, slots=True)
class LoggedRequest:
    """One request as the log keeps it."""

    seq: int
    at: datetime
    method: str
    path: str
    provider: str | None
    status: int | None
    latency_ms: float
    outcome: str | None
    key: str | None

    def to_json(self) -> dict[str, Any]:
        """The entry as ``GET /_sim/requests`` lists it."""
        return {
            "seq": self.seq,
            "at": self.at.isoformat(),
            "method": self.method,
            "path": self.path,
            "provider": self.provider,
            "status": self.status,
            "latency_ms": round(self.latency_ms, 3),
            "outcome": self.outcome,
            "key": self.key,
        }


class RequestLog:
    """The newest ``capacity`` requests, oldest first, safe to read from another thread."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError("the request log's capacity must be a positive integer")
        self.capacity = capacity
        self._entries: deque[LoggedRequest] = deque(maxlen=capacity)
        self._seq = 0
        self._lock = threading.Lock()

    def add(self, **fields: Any) -> LoggedRequest:
        """Append one entry (its ``seq`` is given here); the oldest goes past capacity."""
        with self._lock:
            self._seq += 1
            entry = LoggedRequest(seq=self._seq, **fields)
            self._entries.append(entry)
            return entry

    def since(
        self,
        since: int | datetime | None = None,
        *,
        limit: int = 1000,
        provider: str | None = None,
        status: int | None = None,
    ) -> list[LoggedRequest]:
        """Entries after sequence number ``since`` (or at or after a time), oldest first."""
        with self._lock:
            entries = list(self._entries)
        out: list[LoggedRequest] = []
        for entry in entries:
            if isinstance(since, int) and entry.seq <= since:
                continue
            if isinstance(since, datetime) and entry.at < since:
                continue
            if provider is not None and entry.provider != provider:
                continue
            if status is not None and entry.status != status:
                continue
            out.append(entry)
            if len(out) >= limit:
                break
        return out

    def stats(self) -> dict[str, int]:
        """How many entries are kept, the capacity, and the last sequence number given."""
        with self._lock:
            return {"kept": len(self._entries), "capacity": self.capacity, "last_seq": self._seq}

    def clear(self) -> None:
        """Forget every entry (sequence numbers go on from where they were)."""
        with self._lock:
            self._entries.clear()


def note(scope: Scope, **fields: str | None) -> None:
    """Tell the log what the simulator made of this request (outcome, key)."""
    notes = scope.get(NOTES)
    if isinstance(notes, dict):
        notes.update(fields)


class RequestLogMiddleware:
    """ASGI middleware adding every non-control HTTP request to ``log``."""

    def __init__(self, app: ASGIApp, log: RequestLog, clock: Clock) -> None:
        self.app = app
        self.log = log
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path.startswith("/_sim/"):
            await self.app(scope, receive, send)
            return
        at = self.clock.now()
        started = time.perf_counter()
        answered: list[int] = []
        notes: dict[str, str | None] = {}
        scope[NOTES] = notes

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                answered.append(int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            first = path.split("/", 2)[1] if path.count("/") >= 1 else ""
            dropped = notes.get("outcome") == "dropped"
            self.log.add(
                at=at,
                method=str(scope.get("method", "")),
                path=path,
                provider=first if first in PROVIDERS else None,
                status=None if dropped or not answered else answered[0],
                latency_ms=(time.perf_counter() - started) * 1000,
                outcome=notes.get("outcome"),
                key=notes.get("key"),
            )
