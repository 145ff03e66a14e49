"""``sluice incidents postmortem ID [--out FILE]`` and ``sluice incidents stats [--since]
[--json]`` as on-call runs them: real subprocesses on real databases."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from incident_scene import Scene, build
from sluice.ops.postmortem import SECTIONS
from sluice.store import Store, create_store


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    return subprocess.run(
        [sys.executable, "-m", "sluice.cli", *args],
        capture_output=True, text=True, env={**env, "COLUMNS": "200"}, timeout=60, check=False,
    )  # fmt: skip


def scene(url: str) -> Scene:
    async def go() -> Scene:
        store: Store = create_store(url)
        await store.open()
        try:
            t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
            return await build(store, t0)
        finally:
            await store.close()

    return asyncio.run(go())


def test_postmortem__prints_the_draft_or_writes_it(store_url: str, tmp_path: Path) -> None:
    s = scene(store_url)
    r = cli("incidents", "postmortem", s.incident_id, "--database-url", store_url)
    assert r.returncode == 0, r.stderr
    assert re.findall(r"^### (.+)$", r.stdout, re.M) == list(SECTIONS)
    assert "Time to detection: 7 min 0 s" in r.stdout and "No loss" in r.stdout
    out = tmp_path / "pm.md"
    w = cli("incidents", "postmortem", s.incident_id, "--out", str(out), "--database-url",
            store_url)  # fmt: skip
    assert w.returncode == 0 and w.stdout.strip() == f"wrote {out}"
    written = out.read_text(encoding="utf-8")
    assert re.findall(r"^### (.+)$", written, re.M) == list(SECTIONS)
    assert "| sent late | 1 |" in written and "| dead | 1 |" in written


def test_stats__table_and_json(store_url: str) -> None:
    scene(store_url)
    r = cli("incidents", "stats", "--since", "1d", "--database-url", store_url)
    assert r.returncode == 0, r.stderr
    assert "MTTD 7.0m   MTTC 2.0m   MTTR 12.0m" in r.stdout
    assert "SluiceDeadLetters" in r.stdout and "P2 1" in r.stdout
    j = cli("incidents", "stats", "--since", "1d", "--json", "--database-url", store_url)
    got = json.loads(j.stdout)
    assert (got["count"], got["next_cursor"], got["overall"]["incidents"]) == (1, None, 1)
    assert got["items"][0]["mttd_seconds"] == 420.0


def test_bad_input__exits_2_naming_what_is_wrong(sqlite_url: str, tmp_path: Path) -> None:
    s = scene(sqlite_url)
    cases = [
        (("incidents", "postmortem", "nope"), "no incident with id"),
        (("incidents", "postmortem", "00000000-0000-0000-0000-000000000000"), "no incident"),
        (("incidents", "postmortem", s.incident_id, "--out", str(tmp_path)), "out:"),
        (("incidents", "postmortem", s.incident_id, "--out", str(tmp_path / "no" / "x.md")),
         "out:"),
        (("incidents", "stats", "--since", "yesterday"), "since:"),
        (("incidents", "stats", "--since", "0d"), "since:"),
        (("incidents", "stats", "--since", "5000d"), "since:"),
    ]  # fmt: skip
    for args, says in cases:
        r = cli(*args, "--database-url", sqlite_url)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert says in r.stderr.lower() and "Traceback" not in r.stderr and r.stdout == ""


def test_help__names_the_commands() -> None:
    top = cli("incidents", "--help").stdout
    assert "postmortem" in top and "stats" in top
    assert "SLUICE_INCIDENTS_SINCE" in cli("incidents", "stats", "--help").stdout
