"""Real processes for acceptance tests: the simulator and workers as subprocesses."""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest


@pytest.fixture(autouse=True)
def _loopback_targets_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    # These tests enqueue webhooks for the simulator on 127.0.0.1, from this process,
    # and their workers run with the same setting (see Workers.start): the enqueue
    # side must be told, as `sluice run` tells its own.
    monkeypatch.setenv("SLUICE_ALLOW_LOOPBACK_TARGETS", "true")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


@dataclass
class SimulatorProcess:
    """``sluice simulator`` in its own process, with its control API."""

    url: str
    secret: str
    proc: subprocess.Popen[bytes]

    def faults(self, **spec: object) -> None:
        httpx.post(f"{self.url}/_sim/faults", json=spec, timeout=5).raise_for_status()

    def clear_faults(self) -> None:
        httpx.delete(f"{self.url}/_sim/faults", timeout=5).raise_for_status()

    def summary(self) -> dict[str, int]:
        return httpx.get(f"{self.url}/_sim/effects", timeout=10).json()

    def ids(self) -> dict[str, int]:
        return httpx.get(f"{self.url}/_sim/effects/ids", timeout=30).json()["ids"]


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[SimulatorProcess]:
    """A provider simulator process on a free loopback port."""
    port = free_port()
    secret = new_secret()
    log = open(tmp_path / "simulator.log", "wb")  # noqa: SIM115  # closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "sluice.cli", "simulator", "--port", str(port)],
        env={**os.environ, "SLUICE_WEBHOOK_SECRET": secret},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            if httpx.get(f"{url}/_sim/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(
                f"simulator did not start: {(tmp_path / 'simulator.log').read_text()}"
            )
        time.sleep(0.05)
    try:
        yield SimulatorProcess(url, secret, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@dataclass
class Workers:
    """Worker subprocesses started by a test; all are killed at teardown."""

    tmp_path: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(
        self,
        database_url: str,
        secret: str | None,
        *,
        prefix: list[str] | None = None,
        **env: str,
    ) -> subprocess.Popen[bytes]:
        """A ``sluice worker``; ``secret=None``: without ``SLUICE_WEBHOOK_SECRET``;
        ``prefix``: a command to run it under (``faketime``)."""
        n = len(self.procs)
        log = open(self.tmp_path / f"worker-{n}.log", "wb")  # noqa: SIM115  # owned by the process
        inherited = {k: v for k, v in os.environ.items() if k != "SLUICE_WEBHOOK_SECRET"}
        full_env = {
            **inherited,
            "SLUICE_DATABASE_URL": database_url,
            **({"SLUICE_WEBHOOK_SECRET": secret} if secret is not None else {}),
            "SLUICE_LOG_LEVEL": "warning",
            # Webhooks go to the simulator on 127.0.0.1; the SSRF guard refuses loopback
            # unless told.
            "SLUICE_ALLOW_LOOPBACK_TARGETS": "true",
            **env,
        }
        proc = subprocess.Popen(
            [*(prefix or []), sys.executable, "-m", "sluice.cli", "worker"],
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Its own process group: teardown kills the worker with anything it runs
            # under, so no worker outlives its test to claim the next test's messages.
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def log(self, n: int) -> str:
        return (self.tmp_path / f"worker-{n}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    w = Workers(tmp_path)
    try:
        yield w
    finally:
        for p in w.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(5)


@dataclass
class OwnPostgres:
    """A PostgreSQL cluster of the test's own, which it may stop and start at will
    (the shared one on 5432 serves every other test and must stay up)."""

    datadir: Path
    port: int
    bindir: Path
    as_user: list[str]

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/sluice"

    def _pg_ctl(self, *args: str) -> None:
        subprocess.run(
            [*self.as_user, str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-w", *args],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.datadir}"
        self._pg_ctl("-o", options, "-l", str(self.datadir / "server.log"), "start")

    def stop(self) -> None:
        self._pg_ctl("-m", "fast", "stop")


@pytest.fixture
def own_postgres() -> Iterator[OwnPostgres]:
    """A fresh cluster on a free port with a database ``sluice``, removed afterwards."""
    import psycopg

    bindir = sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]
    # initdb refuses to run as root; the cluster then belongs to the postgres user,
    # and its directory lives outside pytest's root-only tmp folder.
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    datadir = Path(tempfile.mkdtemp(prefix="sluice-own-pg-"))
    if as_user:
        shutil.chown(datadir, "postgres", "postgres")
    subprocess.run(
        [*as_user, str(bindir / "initdb"), "-D", str(datadir), "-U", "postgres", "-A", "trust",
         "--no-sync"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    cluster = OwnPostgres(datadir, free_port(), bindir, as_user)
    cluster.start()
    try:
        admin = f"postgresql://postgres@127.0.0.1:{cluster.port}/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("CREATE DATABASE sluice")
        yield cluster
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            cluster.stop()
        shutil.rmtree(datadir, ignore_errors=True)


class TcpProxy:
    """A TCP relay on a free loopback port, in a thread of its own, that a test can cut:
    while cut, bytes in both directions are swallowed (a network partition: nothing is
    refused, nothing arrives); ``heal`` resets every relayed connection so clients
    reconnect, and relays again."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        import asyncio
        import threading

        self.target = (target_host, target_port)
        self.port = free_port()
        self.cut_off = False
        self._writers: set[Any] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tcp-proxy", daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _run(self) -> None:
        import asyncio

        asyncio.set_event_loop(self._loop)

        async def pipe(reader: Any, writer: Any) -> None:
            try:
                while data := await reader.read(65536):
                    if not self.cut_off:
                        writer.write(data)
                        await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                writer.close()

        async def serve(client_r: Any, client_w: Any) -> None:
            if self.cut_off:  # a new connection during the cut gets nowhere either
                self._writers.add(client_w)
                return
            try:
                server_r, server_w = await asyncio.open_connection(*self.target)
            except OSError:
                client_w.close()
                return
            self._writers.update((client_w, server_w))
            await asyncio.gather(pipe(client_r, server_w), pipe(server_r, client_w))

        async def main() -> None:
            await asyncio.start_server(serve, "127.0.0.1", self.port)
            self._ready.set()
            await asyncio.Event().wait()

        self._loop.run_until_complete(main())

    def cut(self) -> None:
        self.cut_off = True

    def heal(self) -> None:
        def reset() -> None:
            for w in list(self._writers):
                transport = w.transport
                if transport is not None:
                    transport.abort()
            self._writers.clear()
            self.cut_off = False

        self._loop.call_soon_threadsafe(reset)
