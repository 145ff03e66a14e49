"""``sluice serve`` and ``sluice apikeys`` as an operator runs them: real processes on
PostgreSQL, a key made on the command line used over HTTP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

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


@pytest.fixture
def served(clean_pg_url: str, tmp_path: Path) -> Iterator[tuple[str, str]]:
    assert cli(clean_pg_url, "migrate").returncode == 0
    port = free_port()
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115  # closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "sluice.cli", "serve", "--port", str(port)],
        env=env_for(clean_pg_url), stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError((tmp_path / "serve.log").read_text())
        time.sleep(0.05)
    try:
        yield clean_pg_url, base
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


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
    (key,) = json.loads(listed.stdout)
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
    assert json.loads(cli(clean_pg_url, "apikeys", "list", "--json").stdout) == []
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
