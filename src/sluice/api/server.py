"""The HTTP server under the API: uvicorn, guarded against clients that send slowly.

uvicorn closes a kept-alive connection that sits idle, but it waits without end on a
client that connects and then sends its request headers a byte at a time, or not at
all (slowloris): a few hundred such clients hold as many connections for as long as
they like. Three limits, each a setting, bound what a client may hold:

- ``api_header_timeout``: from the connect (or from the first byte of a later request
  on a kept-alive connection) to the end of the headers. Past it, ``GuardedHttpTools``
  answers 408 and closes the connection.
- ``api_body_timeout``: from the end of the headers to the end of the body, kept by
  ``BodyLimit`` in the app (a 408 problem document, then the connection is closed).
- ``api_max_connections``: connections one server process holds; past it uvicorn
  answers 503 to every new request until some close.

``sluice serve`` and the API inside ``sluice run`` both build their server here.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState
from uvicorn.supervisors import Multiprocess

from sluice.config import Settings

__all__ = ["GuardedHttpTools", "ServerConfig", "run_server", "server_config"]

#: Seconds an idle kept-alive connection stays open (uvicorn's own default).
KEEP_ALIVE_TIMEOUT = 5

_HEADERS_LATE = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: 38\r\n"
    b"connection: close\r\n"
    b"\r\n"
    b"the request headers took too long; bye"
)

#: uvicorn's exit code when the server could not start (``uvicorn.run`` uses it too).
_STARTUP_FAILURE = 3


class ServerConfig(uvicorn.Config):
    """``uvicorn.Config`` that serves with ``GuardedHttpTools`` and carries its deadline.

    A plain attribute on a module-level class: with ``--workers N`` uvicorn pickles the
    config into each server process, and the deadline must travel with it.
    """

    def __init__(self, app: Any, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(app, http=GuardedHttpTools, **kwargs)
        self.header_timeout = header_timeout


class GuardedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol, with a deadline on each request's headers."""

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._header_timeout: float | None = getattr(config, "header_timeout", None)
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # uvicorn narrows it too
        super().connection_made(transport)
        # A client that connects and says nothing is held to the same deadline.
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        # Armed once per request: bytes that keep trickling in do not push it back.
        if self._header_timeout is not None and self._header_timer is None:
            self._header_timer = self.loop.call_later(self._header_timeout, self._headers_late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:
            # Nothing else is being answered on this connection: the 408 says why it ends.
            self.transport.write(_HEADERS_LATE)
        self.transport.close()


def server_config(app: Any, settings: Settings, **kwargs: Any) -> ServerConfig:
    """The server for ``app`` (an ASGI app, or an import string for ``factory=True``)
    with the slow-client limits of ``settings``; ``kwargs`` go to ``uvicorn.Config``."""
    return ServerConfig(
        app,
        header_timeout=settings.api_header_timeout,
        limit_concurrency=settings.api_max_connections,
        timeout_keep_alive=KEEP_ALIVE_TIMEOUT,
        **kwargs,
    )


def run_server(config: ServerConfig) -> None:
    """Serve until stopped: in this process, or ``config.workers`` child processes
    sharing one socket (what ``uvicorn.run`` does, with our config)."""
    server = uvicorn.Server(config)
    try:
        if config.workers > 1:
            sock = config.bind_socket()
            # Each process counts into its own files here; a scrape of any of them reads
            # all of them (prometheus-client's multiprocess mode). Set before the
            # processes start, so that they import prometheus-client in that mode.
            with tempfile.TemporaryDirectory(prefix="sluice-metrics-") as shared:
                os.environ["PROMETHEUS_MULTIPROC_DIR"] = shared
                try:
                    Multiprocess(config, target=server.run, sockets=[sock]).run()
                finally:
                    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        else:
            server.run()
    except KeyboardInterrupt:
        pass
    if config.workers == 1 and not server.started:
        raise SystemExit(_STARTUP_FAILURE)
