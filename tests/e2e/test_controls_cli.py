"""Acceptance tests of the control, held-message and limit commands: the real CLI on an
SQLite file. Exit 0 when done; exit 2 on bad input, naming the problem, nothing changed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TIMEOUT = 60.0


def cli(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    return subprocess.run(
        [sys.executable, "-m", "sluice.cli", *args],
        capture_output=True,
        text=True,
        env={**base, "COLUMNS": "200", "SLUICE_DATABASE_URL": f"sqlite:///{db}"},
        timeout=TIMEOUT,
        check=False,
    )


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "sluice.db"
    assert cli(path, "migrate").returncode == 0
    return path


def state(db: Path) -> tuple[object, object]:
    controls = json.loads(cli(db, "controls", "list", "--json").stdout)["items"]
    limits = json.loads(cli(db, "limits", "list", "--json").stdout)["items"]
    return controls, limits


def test_kill_resume__round_trip_with_no_workers(db: Path) -> None:
    done = cli(db, "kill", "--tenant", "acme", "--reason", "RB-10", "--expires", "30m")
    assert done.returncode == 0, done.stderr
    assert "tenant=acme: killed until" in done.stdout
    assert "no live workers" in done.stdout
    [control] = state(db)[0]  # type: ignore[misc]
    assert control["mode"] == "killed" and control["tenant"] == "acme"
    status = cli(db, "status")
    assert "CONTROL KILLED tenant=acme" in status.stdout
    resumed = cli(db, "resume", "--tenant", "acme", "--reason", "fixed")
    assert resumed.returncode == 0 and "control cleared (was killed)" in resumed.stdout
    assert state(db) == ([], [])


QUOTA_RESET_7AM = "limits set quota --limit 9 --window 1d --reset 7am --reason x".split()  # noqa: SIM905 - reads as typed


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["kill", "--tenant", "acme"], "reason: is required"),
        (["pause", "--reason", "x", "--expires", "soon"], "expires: 'soon' is not a duration"),
        (["controls", "set", "frozen", "--reason", "x"], "mode: must be one of"),
        (["kill", "--tenant", " acme", "--reason", "x"], "tenant: ' acme'"),
        (["resume", "--tenant", "nobody", "--reason", "x"], "no control is set on scope"),
        (["approve"], "name the messages to approve"),
        (["held", "list", "--limit", "0"], "limit: must be at least 1"),
        (["limits", "set", "rate", "--rate", "-1", "--reason", "x"], "rate: must be greater"),
        (["limits", "set", "speed", "--reason", "x"], "kind: must be one of"),
        (QUOTA_RESET_7AM, 'reset: must be "rolling" or the provider\'s reset time'),
        (["limits", "clear", "rate", "--tenant", "a", "--reason", "x"], "no run-time rate"),
    ],
)
def test_bad_input__exit_2_names_the_problem_and_changes_nothing(
    db: Path, args: list[str], problem: str
) -> None:
    before = state(db)
    result = cli(db, *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert problem in result.stderr
    assert state(db) == before
