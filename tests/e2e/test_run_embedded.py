"""Acceptance tests of ``sluice run``: the whole system in one real process.

It runs in a temporary working directory with no ``SLUICE_*`` variables inherited,
so the default ``sqlite:///sluice.db`` lands in that directory and nowhere else.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

DEMO = 60
GONE = DEMO // 25  # every 25th demo message goes to an endpoint answering 410 Gone


def sluice(*args: str, cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run the real ``sluice ARGS`` in ``cwd`` with a clean ``SLUICE_*`` environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    return subprocess.run(
        [sys.executable, "-m", "sluice.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**env, "COLUMNS": "200"},
        timeout=timeout,
        check=False,
    )


def test_run__delivers_the_demo_load_and_stops_by_itself(tmp_path: Path) -> None:
    started = time.monotonic()

    result = sluice("run", "--duration", "10", "--port", "0", "--api-port", "0",
                    "--demo", str(DEMO), "--demo-rate", "0", cwd=tmp_path, timeout=60)  # fmt: skip

    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert elapsed < 60
    out = result.stdout
    assert re.search(r"^simulator\s+http://127\.0\.0\.1:\d+", out, re.M), out
    assert f"demo load  {DEMO} webhooks enqueued" in out
    assert "-m sluice.cli status --database-url sqlite:///sluice.db\n" in out
    assert "using existing database" not in out
    lines = out.strip().splitlines()
    assert lines[-1] == "stopped."
    assert re.fullmatch(r"operator key \w+ of this run revoked\.", lines[-2]), lines[-2]
    final = re.search(r"queued (\d+)  sending (\d+)  sent (\d+)  dead (\d+)", lines[-3])
    assert final, lines[-3]
    assert final.groups() == ("0", "0", str(DEMO - GONE), str(GONE))
    assert (tmp_path / "sluice.db").is_file()

    status = sluice(
        "status", "--json", "--database-url", f"sqlite:///{tmp_path / 'sluice.db'}",
        cwd=tmp_path, timeout=30,
    )  # fmt: skip
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["counts"] == {"sent": DEMO - GONE, "dead": GONE}
    assert [(g["channel"], g["error_code"], g["count"]) for g in report["dead"]] == [
        ("webhook", "ENDPOINT_GONE", GONE)
    ]
    assert [w["stopped_at"] is not None for w in report["workers"]] == [True]


def test_run__on_a_port_already_taken_exits_2_and_suggests_another(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        result = sluice("run", "--port", str(port), "--api-port", "0", "--demo", "0",
                        "--duration", "1", cwd=tmp_path, timeout=30)  # fmt: skip

    assert result.returncode == 2
    assert f"127.0.0.1:{port}" in result.stderr
    assert "--port" in result.stderr
    assert "Traceback" not in result.stderr


def test_run__serves_the_api_with_an_operator_key_for_the_run(tmp_path: Path) -> None:
    import httpx

    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sluice.cli", "run", "--duration", "8", "--port", "0",
         "--api-port", "0", "--demo", "10"],
        cwd=tmp_path, env={**env, "COLUMNS": "200"}, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        api = token = None
        for line in proc.stdout:
            if line.startswith("API "):
                api = line.split()[1]
            if api and line.strip().startswith("sk_"):
                token = line.split()[0]
                break
        assert api and token, "no API line"
        status = httpx.get(
            f"{api}/v1/status", headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
        assert status.status_code == 200 and "counts" in status.json()
        assert httpx.get(f"{api}/v1/status", timeout=10).status_code == 401
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_run__on_an_api_port_already_taken_exits_2_and_suggests_another(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        result = sluice("run", "--port", "0", "--api-port", str(port), "--demo", "0",
                        "--duration", "1", cwd=tmp_path, timeout=30)  # fmt: skip

    assert result.returncode == 2
    assert f"127.0.0.1:{port}" in result.stderr and "--api-port" in result.stderr
    assert "Traceback" not in result.stderr


def test_run__its_api_cuts_off_slow_clients_like_serve(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    env.update(COLUMNS="200", SLUICE_API_HEADER_TIMEOUT="1", SLUICE_API_BODY_TIMEOUT="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "sluice.cli", "run", "--port", "0", "--api-port", "0",
         "--demo", "0", "--duration", "60"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        url = None
        for line in proc.stdout:
            found = re.match(r"API\s+http://127\.0\.0\.1:(\d+)", line)
            if found:
                url = int(found.group(1))
                break
        assert url is not None, "sluice run did not print its API address"
        head = b"POST /v1/messages HTTP/1.1\r\nHost: x\r\n"
        slow_headers = socket.create_connection(("127.0.0.1", url), timeout=15)
        slow_headers.sendall(head)
        slow_body = socket.create_connection(("127.0.0.1", url), timeout=15)
        slow_body.sendall(head + b"Content-Length: 100\r\n\r\n{")
        # Each is answered 408 and closed; without the limits, recv() would time out.
        for s in (slow_headers, slow_body):
            with s:
                answer = b""
                while chunk := s.recv(4096):
                    answer += chunk
                assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    finally:
        proc.terminate()
        proc.wait(30)


def test_run__serves_metrics_on_the_metrics_port(tmp_path: Path) -> None:
    """``sluice run --metrics-port``: the demo's dead letters are on /metrics while it runs."""
    import socket

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sluice.cli", "run", "--duration", "8", "--port", "0",
         "--api-port", "0", "--demo", str(DEMO), "--metrics-port", str(port)],
        cwd=tmp_path, env={**env, "SLUICE_METRICS_REFRESH": "0.1"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        dead = 0.0
        while time.monotonic() < deadline and dead < GONE:
            try:
                text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            except httpx.HTTPError:
                time.sleep(0.2)
                continue
            dead = sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("sluice_dead_letters{")
            )
            time.sleep(0.2)
        assert dead == GONE
    finally:
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err


def _json(command: list[str], cwd: Path) -> object:
    result = subprocess.run(
        [*command, "--json"], capture_output=True, text=True, cwd=cwd, timeout=60, check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _items(document: object) -> list[dict[str, object]]:
    assert isinstance(document, dict)
    rows = document.get("items", document.get("held"))
    assert isinstance(rows, list)
    return rows


def test_run__the_printed_kill_held_resume_hold_then_deliver_the_demo_feed(
    tmp_path: Path,
) -> None:
    """Run the commands ``sluice run`` prints, as printed, while its demo feed flows."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sluice.cli", "run", "--port", "0", "--api-port", "0",
         "--demo", "0", "--demo-rate", "10", "--duration", "120"],
        cwd=tmp_path, env={**env, "COLUMNS": "200"}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        printed: dict[str, list[str]] = {}
        for line in proc.stdout:
            words = shlex.split(line.strip()) if line.startswith("  ") else []
            for verb in ("kill", "held", "resume", "status"):
                if verb in words and "curl" not in words:
                    printed[verb] = words
            if line.startswith("Ctrl-C") or line.startswith("stopping"):
                break
        assert set(printed) == {"kill", "held", "resume", "status"}, printed

        def run(words: list[str]) -> None:
            done = subprocess.run(words, capture_output=True, text=True, cwd=tmp_path,
                                  env=env, timeout=60, check=False)  # fmt: skip
            assert done.returncode == 0, done.stderr

        run(printed["kill"])
        held: list[dict[str, object]] = []
        deadline = time.monotonic() + 30
        while len(held) < 3:
            assert time.monotonic() < deadline, "nothing was held after the kill"
            time.sleep(0.5)
            held = _items(_json(printed["held"], tmp_path))
        assert {row["tenant"] for row in held} == {"globex"}
        run(printed["resume"])
        ids = {str(row["id"]) for row in held}
        deadline = time.monotonic() + 30
        while True:
            rows = _json([*printed["status"][:-3], "messages", "list", "--tenant", "globex",
                          "--limit", "1000", *printed["status"][-2:]], tmp_path)  # fmt: skip
            assert isinstance(rows, list | dict)
            listed = rows if isinstance(rows, list) else _items(rows)
            sent = {str(r["id"]) for r in listed if r["status"] == "sent"}
            if ids <= sent:
                break
            assert time.monotonic() < deadline, f"held messages not delivered: {ids - sent}"
            time.sleep(0.5)
        proc.terminate()
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert out.strip().splitlines()[-1] == "stopped."
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    keys = _json([*printed["status"][:-3], "apikeys", "list", *printed["status"][-2:]], tmp_path)
    rows = keys if isinstance(keys, list) else _items(keys)
    assert len(rows) == 1 and rows[0]["revoked_at"] is not None


def test_run__says_plainly_that_it_reuses_an_existing_database(tmp_path: Path) -> None:
    first = sluice("run", "--duration", "1", "--port", "0", "--api-port", "0", "--demo", "12",
                   "--demo-rate", "0", cwd=tmp_path, timeout=60)  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert "using existing database" not in first.stdout

    again = sluice("run", "--duration", "1", "--port", "0", "--api-port", "0", "--demo", "0",
                   "--demo-rate", "0", cwd=tmp_path, timeout=60)  # fmt: skip

    assert again.returncode == 0, again.stderr
    assert re.search(
        r"using existing database \S*sluice\.db: 12 messages from earlier runs; "
        r"delete it for a fresh start",
        again.stdout,
    ), again.stdout


def test_run__a_bad_demo_rate_exits_2_naming_it(tmp_path: Path) -> None:
    for bad in ("-1", "nan", "1e9"):
        result = sluice("run", "--demo-rate", bad, "--port", "0", "--api-port", "0",
                        "--duration", "1", cwd=tmp_path, timeout=30)  # fmt: skip
        assert result.returncode == 2, (bad, result.stderr)
        assert "--demo-rate" in result.stderr
        assert not (tmp_path / "sluice.db").exists()
