"""Running the simulator: in the foreground (``serve``, the ``sluice simulator`` command)
or on a background thread (``SimulatorThread``, for tests and ``sluice run``)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import uvicorn
from starlette.applications import Starlette
from starlette.types import Scope

from sluice import heap
from sluice.clock import Clock
from sluice.providers.simulator._app import create_app
from sluice.providers.simulator._base import ConnectionAborter
from sluice.providers.simulator._requests import DEFAULT_CAPACITY
from sluice.providers.simulator._state import SimulatorState


def _uvicorn_aborter(server: uvicorn.Server) -> ConnectionAborter:
    """Abort the TCP connection a request arrived on, found by its peer address.

    ASGI has no way to say "drop this connection without answering": uvicorn answers 500
    when an app raises or returns early. Its connection set does hold the transport.
    """

    async def abort(scope: Scope) -> bool:
        client = scope.get("client")
        if not client:
            return False
        peer = (str(client[0]), int(client[1]))
        for connection in list(server.server_state.connections):
            if getattr(connection, "client", None) == peer:
                connection.transport.abort()
                # Let connection_lost run so uvicorn sees a disconnect, not an app that
                # returned without answering (which it would answer with a 500).
                for _ in range(100):
                    if connection not in server.server_state.connections:
                        break
                    await asyncio.sleep(0)
                return True
        return False

    return abort


def _server(
    app: Starlette, host: str, port: int, log_level: str, *, embedded: bool
) -> uvicorn.Server:
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        # Embedded (a test, ``sluice run``): leave the host process's logging alone.
        log_config=None if embedded else uvicorn.config.LOGGING_CONFIG,
        # Embedded, uvicorn must not swap the process-wide event loop policy (uvloop).
        loop="asyncio" if embedded else "auto",
        access_log=False,
        # On: the app closes its status-callback client as the server stops.
        lifespan="on",
        # The peer address must be the socket's, or drops cannot find their connection.
        proxy_headers=False,
        # Longer than httpx's 5 s keep-alive, so the client always closes an idle
        # connection first and never reuses one the server is closing.
        timeout_keep_alive=75,
        timeout_graceful_shutdown=3,
        backlog=4096,
    )
    server = uvicorn.Server(config)
    app.state.simulator.abort_connection = _uvicorn_aborter(server)
    return server


def serve(
    host: str,
    port: int,
    secret: str | None,
    log_level: str = "warning",
    *,
    callbacks: bool = True,
) -> None:
    """Run the simulator in the foreground until interrupted (``sluice simulator``);
    ``secret`` and ``callbacks`` as for ``create_app``."""
    app = create_app(secret, callbacks=callbacks)
    server = _server(app, host, port, log_level, embedded=False)
    heap.settle()  # its own process (sluice.heap)
    server.run()


class SimulatorThread:
    """The simulator on a background thread, for tests and ``sluice run``.

    ::

        with SimulatorThread(secret) as sim:
            url = sim.url + "/webhook/orders"
            ...
            assert sim.state.summary()["unique"] == 1

    ``port=0`` picks a free port. ``start`` returns once the server accepts connections.
    """

    def __init__(
        self,
        secret: str | None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Clock | None = None,
        log_level: str = "warning",
        callbacks: bool = True,
        request_log_size: int = DEFAULT_CAPACITY,
    ) -> None:
        self.app = create_app(
            secret, clock=clock, callbacks=callbacks, request_log_size=request_log_size
        )
        self.state: SimulatorState = self.app.state.simulator
        self._host = host
        self._port = port
        self._log_level = log_level
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.url = ""

    def start(self, timeout: float = 10.0) -> SimulatorThread:
        """Start serving; raise ``RuntimeError`` if it is not up within ``timeout``."""
        if self._thread is not None:
            raise RuntimeError(f"simulator already running on {self.url}")
        # Binding here, not in the thread, gives port 0 its real number before we return
        # and turns "address in use" into an exception the caller sees.
        # IPPROTO_TCP spelled out: asyncio only sets TCP_NODELAY on accepted sockets whose
        # proto says TCP, and with proto 0 Nagle meets delayed ACK: 40 ms per request.
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self._host, self._port))
        except OSError:
            sock.close()
            raise
        host, port = sock.getsockname()[:2]
        self.url = (
            f"http://[{host}]:{port}" if family == socket.AF_INET6 else f"http://{host}:{port}"
        )
        server = _server(self.app, host, port, self._log_level, embedded=True)
        self._server = server

        def run() -> None:
            try:
                server.run(sockets=[sock])
            except BaseException as exc:  # handed to start() / stop() to re-raise
                self._error = exc
            finally:
                sock.close()

        self._thread = threading.Thread(target=run, name=f"sluice-simulator-{port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"simulator did not start on {self.url}") from self._error
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and wait for the thread; in-flight requests get a moment."""
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(timeout)
        self._server = self._thread = None

    def __enter__(self) -> SimulatorThread:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
