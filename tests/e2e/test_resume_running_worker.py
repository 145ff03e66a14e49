"""``sluice resume`` under a running worker: what the kill held is released and sent,
never held again under the control that was just lifted (issue 10, item 10)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from conftest import Workers, new_secret


def cli(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    return subprocess.run(
        [sys.executable, "-m", "sluice.cli", *args],
        capture_output=True,
        text=True,
        env={**base, "COLUMNS": "200", "SLUICE_DATABASE_URL": f"sqlite:///{db}"},
        timeout=60,
        check=False,
    )


def statuses(db: Path, tenant: str) -> list[tuple[str, str | None]]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        rows = conn.execute(
            "SELECT status, hold_reason FROM sluice_messages WHERE tenant = ? ORDER BY id",
            (tenant,),
        ).fetchall()
    return [(s, r) for s, r in rows]


def live_workers(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return int(
            conn.execute("SELECT count(*) FROM sluice_workers WHERE stopped_at IS NULL").fetchone()[
                0
            ]
        )


def wait_for(check: object, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


def test_resume__the_same_running_worker_sends_what_the_kill_held(
    tmp_path: Path, workers: Workers
) -> None:
    db = tmp_path / "sluice.db"
    assert cli(db, "migrate").returncode == 0
    # A slow control poll widens the window in which the worker's view of the controls
    # lags the database: the released messages must still not be held again in it.
    worker = workers.start(f"sqlite:///{db}", new_secret(), SLUICE_CONTROL_POLL="2")
    assert wait_for(lambda: live_workers(db) == 1, 30), workers.log(0)
    killed = cli(db, "kill", "--tenant", "globex", "--reason", "RB-10 loop", "--actor", "ops:ana")
    assert killed.returncode == 0, killed.stdout + killed.stderr
    assert "acknowledged by 1/1" in killed.stdout, killed.stdout
    for n in range(3):
        sent = cli(db, "send", "--tenant", "globex", "--channel", "sms", "--provider", "null",
                   "--recipient", f"+1555000000{n}")  # fmt: skip
        assert sent.returncode == 0, sent.stderr
    assert wait_for(lambda: [s for s, _ in statuses(db, "globex")] == ["held"] * 3, 20), statuses(
        db, "globex"
    )

    resumed = cli(db, "resume", "--tenant", "globex", "--reason", "fixed", "--actor", "ops:ana")
    assert resumed.returncode == 0, resumed.stderr
    assert "3 held messages released" in resumed.stdout, resumed.stdout
    assert wait_for(lambda: [s for s, _ in statuses(db, "globex")] == ["sent"] * 3, 20), (
        statuses(db, "globex"),
        workers.log(0)[-3000:],
    )
    assert worker.poll() is None, "the same worker ran throughout"
    # Held once (by the kill), sent once: never held again after the release.
    with contextlib.closing(sqlite3.connect(db)) as conn:
        attempts = conn.execute(
            "SELECT a.outcome FROM sluice_attempts a JOIN sluice_messages m "
            "ON m.id = a.message_id WHERE m.tenant = 'globex'"
        ).fetchall()
    assert sorted(o for (o,) in attempts) == ["sent"] * 3
