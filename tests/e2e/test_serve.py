"""``sluice serve`` and ``sluice apikeys`` as an operator runs them: real processes on
PostgreSQL, a key made on the command line used over HTTP."""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env_for(url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    return {**env, "COLUMNS": "200", "SLUICE_DATABASE_URL": url, **extra}


def cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sluice.cli", *args],
        capture_output=True, text=True, env=env_for(url), timeout=60, check=False,
    )  # fmt: skip


@contextlib.contextmanager
def serve_process(
    url: str, tmp_path: Path, *args: str, **env: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A real ``sluice serve`` on a free port, its output in ``tmp_path/serve.log``;
    yields its base URL and the process, and stops it afterwards."""
    port = free_port()
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115  # closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "sluice.cli", "serve", "--port", str(port), *args],
        env=env_for(url, **env), stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((tmp_path / "serve.log").read_text())
            time.sleep(0.05)
        yield base, proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


@pytest.fixture
def served(clean_pg_url: str, tmp_path: Path) -> Iterator[tuple[str, str]]:
    assert cli(clean_pg_url, "migrate").returncode == 0
    with serve_process(clean_pg_url, tmp_path) as (base, _):
        yield clean_pg_url, base


def test_serve__a_key_made_with_the_cli_enqueues_and_reads_over_http(
    served: tuple[str, str],
) -> None:
    url, base = served
    made = cli(url, "apikeys", "create", "shop", "--tenant", "acme")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith("sk_") and "store the token now" in made.stderr
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": "order-1"}
    sms = {"channel": "sms", "provider": "null", "recipient": "+15550001111"}
    first = httpx.post(f"{base}/v1/messages", json=sms, headers=headers, timeout=10)
    again = httpx.post(f"{base}/v1/messages", json=sms, headers=headers, timeout=10)
    assert first.status_code == again.status_code == 201
    assert first.json()["id"] == again.json()["id"]
    got = httpx.get(f"{base}/v1/messages/{first.json()['id']}", headers=headers, timeout=10)
    assert got.json()["tenant"] == "acme" and got.json()["status"] == "queued"
    listed = cli(url, "apikeys", "list", "--json")
    (key,) = json.loads(listed.stdout)["items"]
    assert (key["name"], key["role"], key["tenant"]) == ("shop", "tenant", "acme")
    assert token.split(".")[1] not in listed.stdout  # the secret is never shown again
    ready = httpx.get(f"{base}/readyz", timeout=10)
    assert ready.status_code == 503 and "none seen" in ready.json()["checks"]["workers"]
    assert httpx.get(f"{base}/openapi.json", timeout=10).json()["info"]["title"] == "Sluice"


def test_apikeys__bad_input_is_exit_2_and_names_the_field(clean_pg_url: str) -> None:
    assert cli(clean_pg_url, "migrate").returncode == 0
    cases = [
        (("apikeys", "create", "x", "--role", "root"), "role"),
        (("apikeys", "create", "x", "--role", "tenant"), "tenant"),
        (("apikeys", "create", "x", "--role", "operator", "--tenant", "acme"), "tenant"),
        (("apikeys", "create", "bad name!", "--tenant", "acme"), "name"),
        (("apikeys", "revoke", "sk_0000000000000000"), "no API key"),
    ]
    for args, needle in cases:
        done = cli(clean_pg_url, *args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert needle in done.stderr, (args, done.stderr)
    assert json.loads(cli(clean_pg_url, "apikeys", "list", "--json").stdout)["items"] == []
    made = cli(clean_pg_url, "apikeys", "create", "ops", "--role", "operator")
    assert made.returncode == 0
    dup = cli(clean_pg_url, "apikeys", "create", "ops", "--role", "operator")
    assert dup.returncode == 2 and "already exists" in dup.stderr


def test_inbox__list_and_retry_from_the_cli(clean_pg_url: str) -> None:
    assert cli(clean_pg_url, "migrate").returncode == 0
    listed = cli(clean_pg_url, "inbox", "list", "--state", "dead")
    assert listed.returncode == 0 and "PROVIDER" in listed.stdout
    bad = cli(clean_pg_url, "inbox", "list", "--state", "zombie")
    assert bad.returncode == 2 and "state" in bad.stderr
    retried = cli(clean_pg_url, "inbox", "retry")
    assert retried.returncode == 0 and "requeued 0" in retried.stdout


def _abort_mid_body(port: int, path: str) -> None:
    """Promise a 10,000-byte body, send a tenth of it, and hang up."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Content-Length: 10000\r\n\r\n".encode()
            + b'{"channel": "'
            + b"x" * 1000
        )


def test_serve__clients_that_hang_up_mid_body_leave_no_error_in_the_log(
    clean_pg_url: str, tmp_path: Path
) -> None:
    assert cli(clean_pg_url, "migrate").returncode == 0
    # An ingress source, so that its endpoint reads the body before it checks anything.
    config = tmp_path / "sluice.toml"
    config.write_text('[ingress.partner]\nkind = "webhook"\nsecrets = ["whsec_c2VjcmV0"]\n'
                      'tenant = "acme"\n')  # fmt: skip
    with serve_process(clean_pg_url, tmp_path, SLUICE_CONFIG=str(config)) as (base, _):
        port = int(base.rsplit(":", 1)[1])
        before = (tmp_path / "serve.log").read_text()
        for i in range(100):
            _abort_mid_body(port, "/v1/messages" if i % 2 else "/v1/ingress/partner")
        # A request after them all: by its answer the server has seen every hang-up.
        assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200
        time.sleep(0.5)
        new = (tmp_path / "serve.log").read_text()[len(before) :]
    assert "Traceback" not in new and '"error"' not in new, new[:2000]
    assert new.count("\n") == 0, new[:2000]


def _read_until_closed(socks: list[socket.socket], within: float) -> dict[socket.socket, bytes]:
    """What each socket received until the server closed it; sockets still open after
    ``within`` seconds are missing from the answer."""
    got: dict[socket.socket, bytes] = {s: b"" for s in socks}
    closed: dict[socket.socket, bytes] = {}
    with selectors.DefaultSelector() as sel:
        for s in socks:
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
        deadline = time.monotonic() + within
        while got and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=0.2):
                s = key.fileobj
                assert isinstance(s, socket.socket)
                try:
                    data = s.recv(65536)
                except ConnectionResetError:
                    data = b""
                if data:
                    got[s] += data
                else:
                    closed[s] = got.pop(s)
                    sel.unregister(s)
    return closed


def _trickle(sock: socket.socket, data: bytes, stop: threading.Event) -> None:
    """Send ``data`` a byte every 0.1 s, the way a slowloris client holds a connection."""
    for i in range(len(data)):
        if stop.wait(0.1):
            return
        try:
            sock.send(data[i : i + 1])
        except OSError:
            return


def test_serve__slow_clients_are_cut_off_while_others_are_served(
    clean_pg_url: str, tmp_path: Path
) -> None:
    assert cli(clean_pg_url, "migrate").returncode == 0
    args = ("--header-timeout", "1", "--body-timeout", "2")
    with serve_process(clean_pg_url, tmp_path, *args) as (base, _):
        port = int(base.rsplit(":", 1)[1])
        head = b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        silent, partial_headers, partial_body = [], [], []
        for i in range(300):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            if i % 3 == 0:
                silent.append(s)
            elif i % 3 == 1:
                s.sendall(head)
                partial_headers.append(s)
            else:
                s.sendall(head + b"Content-Length: 1000\r\n\r\n" + b'{"channel": "sms"')
                partial_body.append(s)
        # Kept alive: one whole request answered, then half of the next one's headers
        # (the deadline holds for every request on a connection, not only its first).
        kept_alive = []
        for _ in range(20):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            while not answer.endswith(b'{"status":"ok"}'):
                answer += s.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
            s.sendall(head)
            kept_alive.append(s)
        stop = threading.Event()
        trickling = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(2)]
        trickling[1].sendall(head + b"Content-Length: 1000\r\n\r\n")
        threads = [
            threading.Thread(target=_trickle, args=(trickling[0], head * 10, stop)),
            threading.Thread(target=_trickle, args=(trickling[1], b"x" * 1000, stop)),
        ]
        for t in threads:
            t.start()
        try:
            # Meanwhile an honest client is answered at once.
            ok = httpx.get(f"{base}/healthz", timeout=5)
            assert ok.status_code == 200
            refused = httpx.post(f"{base}/v1/messages", json={}, timeout=5)
            assert refused.status_code == 401
            everyone = silent + partial_headers + partial_body + kept_alive + trickling
            # Without the limits the server kept such connections for minutes and more.
            closed = _read_until_closed(everyone, within=15)
        finally:
            stop.set()
            for t in threads:
                t.join()
            for s in [*silent, *partial_headers, *partial_body, *kept_alive, *trickling]:
                s.close()
        still_open = [s for s in everyone if s not in closed]
        assert not still_open, f"{len(still_open)} of {len(everyone)} slow connections kept"
        for s in [*partial_headers, *kept_alive, trickling[0]]:
            assert closed[s].startswith(b"HTTP/1.1 408 "), closed[s][:200]
        for s in [*partial_body, trickling[1]]:
            assert closed[s].startswith(b"HTTP/1.1 408 "), closed[s][:200]
            assert b"took longer than 2 s" in closed[s]
        assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200


def test_serve__a_database_that_goes_down_costs_seconds_not_the_pool_timeout(
    own_postgres: Any,
    tmp_path: Path,  # an OwnPostgres (tests/e2e/conftest.py)
) -> None:
    url = own_postgres.url
    assert cli(url, "migrate").returncode == 0
    made = cli(url, "apikeys", "create", "shop", "--tenant", "acme")
    assert made.returncode == 0, made.stderr
    headers = {"Authorization": f"Bearer {made.stdout.strip()}"}
    sms = {"channel": "sms", "provider": "null", "recipient": "+15550001111"}
    with serve_process(url, tmp_path) as (base, _):
        assert httpx.post(f"{base}/v1/messages", json=sms, headers=headers).status_code == 201
        own_postgres.stop()

        started = time.monotonic()
        first = httpx.post(f"{base}/v1/messages", json=sms, headers=headers, timeout=60)
        # The pool used to wait 30 s for a connection; now SLUICE_DB_TIMEOUT, 5 s.
        assert first.status_code == 503 and time.monotonic() - started < 15, first.text

        # Once the store knows the server is gone, it asks it directly and fails at once.
        started = time.monotonic()
        ready = httpx.get(f"{base}/readyz", timeout=60)
        later = [
            httpx.post(f"{base}/v1/messages", json=sms, headers=headers, timeout=60)
            for _ in range(10)
        ]
        assert time.monotonic() - started < 10  # 55 s at 5 s each
        assert [r.status_code for r in later] == [503] * 10
        assert later[0].headers["retry-after"] == "1"
        checks = ready.json()["checks"]
        assert ready.status_code == 503
        answering = f"no PostgreSQL server is answering at 127.0.0.1:{own_postgres.port}"
        assert answering in checks["store"], checks
        assert checks["migrations"].startswith("not checked"), checks

        own_postgres.start()
        deadline = time.monotonic() + 60
        while True:
            again = httpx.post(f"{base}/v1/messages", json=sms, headers=headers, timeout=60)
            if again.status_code == 201 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert again.status_code == 201, again.text
    log = (tmp_path / "serve.log").read_text()
    assert "Traceback" not in log and "error connecting in" not in log, log[-3000:]
