"""``sluice status --watch`` as on-call runs it: the real command in a subprocess, stopped
with Ctrl-C (SIGINT), its screen read from what it printed (not a terminal, so every frame
follows the last); and a database that goes away under it and comes back."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from sluice.model import Attempt, AttemptOutcome, Completion, NewMessage, Status
from sluice.store import Store, create_store

PG_ADMIN_URL = os.environ.get(
    "SLUICE_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
HEADER = "sluice status --watch"


def env(**extra: str) -> dict[str, str]:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    return {**inherited, "COLUMNS": "200", **extra}


def cli(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sluice.cli", *args],
        capture_output=True, text=True, env=env(**extra), timeout=60, check=False,
    )  # fmt: skip


def seed(url: str) -> None:
    """Six messages: three queued, one sent, two dead (INVALID_RECIPIENT)."""

    async def go() -> None:
        store: Store = create_store(url)
        await store.open()  # type: ignore[attr-defined]
        try:
            now = datetime.now(UTC)
            await store.enqueue_many(
                [NewMessage(tenant="acme", channel="sms", provider="null",
                            recipient="+15550001111", payload={"n": n}) for n in range(6)],
                now,
            )  # fmt: skip
            a, b, c = await store.message_claim("w1", 3, 30, now)

            def done(m, status: Status, outcome: AttemptOutcome, code: str | None = None):  # type: ignore[no-untyped-def]
                attempt = Attempt(m.id, m.claim_seq, "w1", "null", now, now, outcome,
                                  error_code=code)  # fmt: skip
                return Completion(m.id, m.claim_seq, "w1", status, attempt)

            await store.message_complete_many(
                "w1",
                [done(a, Status.SENT, AttemptOutcome.SENT),
                 done(b, Status.DEAD, AttemptOutcome.FAILED, "INVALID_RECIPIENT"),
                 done(c, Status.DEAD, AttemptOutcome.FAILED, "INVALID_RECIPIENT")],
                now,
            )  # fmt: skip
        finally:
            await store.close()

    asyncio.run(go())


class Watch:
    """``sluice status --watch`` running in the background, its output in a file."""

    def __init__(self, url: str, out: Path, interval: str = "0.2", **extra: str) -> None:
        self.out = out
        self.err = out.with_suffix(".err")
        with self.out.open("w") as stdout, self.err.open("w") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sluice.cli", "status", "--watch", "--interval", interval],
                stdout=stdout, stderr=stderr, text=True,
                env=env(SLUICE_DATABASE_URL=url, **extra),
            )  # fmt: skip

    def frames(self) -> list[str]:
        return [HEADER + f for f in self.out.read_text().split(HEADER)[1:]]

    def wait_for(self, what: str, timeout: float = 20) -> str:
        """The first frame, of those printed from now on, that contains ``what``."""
        seen = len(self.frames())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"the watch ended: {self.err.read_text()}"
            for frame in self.frames()[seen:]:
                if what in frame:
                    return frame
            time.sleep(0.1)
        pytest.fail(f"no frame showed {what!r} within {timeout}s; last: {self.frames()[-1:]}")

    def interrupt(self) -> int:
        """Ctrl-C, and the exit code."""
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=20)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def watches() -> Iterator[list[Watch]]:
    started: list[Watch] = []
    yield started
    for w in started:
        w.kill()


def test_watch__redraws_depth_and_dead_letters_until_ctrl_c_then_exits_0(
    tmp_path: Path, watches: list[Watch]
) -> None:
    url = f"sqlite:///{tmp_path / 'sluice.db'}"
    assert cli("migrate", SLUICE_DATABASE_URL=url).returncode == 0
    seed(url)

    watch = Watch(url, tmp_path / "watch.out")
    watches.append(watch)
    time.sleep(1.5)
    code = watch.interrupt()

    frames = watch.frames()
    assert code == 0, watch.err.read_text()
    assert "Traceback" not in watch.err.read_text()
    assert len(frames) >= 3, "redrawn every 0.2 s for 1.5 s"
    last = frames[-1]
    assert "depth  queued 3  sending 0  held 0  dead 2" in last
    assert "dead letters: 2" in last
    assert "sms      INVALID_RECIPIENT  2" in last
    assert "last 1m   1.0       2.0         0.0           33.3%" in last
    assert "workers: none" in last and "open incidents: none" in last


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--watch", "--json"), "--json: cannot be combined with --watch"),
        (("--watch", "--interval", "0"), "--interval: is 0; must be 0.1 to 3600 seconds"),
        (("--watch", "--interval", "7200"), "--interval: is 7200; must be 0.1 to 3600"),
        (("--interval", "5"), "--interval: applies only with --watch"),
    ],
    ids=["json", "zero-interval", "long-interval", "interval-alone"],
)
def test_watch__bad_flags_are_refused_with_exit_2(
    tmp_path: Path, args: tuple[str, ...], says: str
) -> None:
    url = f"sqlite:///{tmp_path / 'sluice.db'}"
    assert cli("migrate", SLUICE_DATABASE_URL=url).returncode == 0

    result = cli("status", *args, SLUICE_DATABASE_URL=url)

    assert result.returncode == 2
    assert says in result.stderr
    assert result.stdout == ""


def test_watch__an_interval_from_the_environment_does_not_break_plain_status(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'sluice.db'}"
    assert cli("migrate", SLUICE_DATABASE_URL=url).returncode == 0

    result = cli("status", SLUICE_DATABASE_URL=url, SLUICE_WATCH_INTERVAL="5")

    assert result.returncode == 0, result.stderr
    assert "oldest ready message waiting" in result.stdout


def test_watch__a_store_without_the_schema_at_the_start_is_an_error_not_a_screen(
    tmp_path: Path,
) -> None:
    result = cli("status", "--watch", SLUICE_DATABASE_URL=f"sqlite:///{tmp_path / 'none.db'}")

    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and "sluice migrate" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_watch__a_database_gone_mid_watch_is_shown_and_retried_until_it_is_back(
    tmp_path: Path, watches: list[Watch]
) -> None:
    name = f"sluice_e2e_watch_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    url = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"

    def admin(sql: str) -> None:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(sql)

    admin(f'CREATE DATABASE "{name}"')
    try:
        assert cli("migrate", SLUICE_DATABASE_URL=url).returncode == 0
        watch = Watch(url, tmp_path / "watch.out", SLUICE_DB_TIMEOUT="1")
        watches.append(watch)
        watch.wait_for("depth  queued 0")

        admin(f'DROP DATABASE "{name}" WITH (FORCE)')
        down = watch.wait_for("STORE NOT ANSWERING")
        assert f'database "{name}" does not exist' in down
        watch.wait_for("STORE NOT ANSWERING")  # still running, still trying

        admin(f'CREATE DATABASE "{name}"')
        assert cli("migrate", SLUICE_DATABASE_URL=url).returncode == 0
        seed(url)
        back = watch.wait_for("dead letters: 2")

        assert "NOT ANSWERING" not in back
        assert "depth  queued 3  sending 0  held 0  dead 2" in back
        assert watch.interrupt() == 0
        assert "Traceback" not in watch.err.read_text()
    finally:
        admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
