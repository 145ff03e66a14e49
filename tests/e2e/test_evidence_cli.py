"""``sluice annotate``, ``sluice annotations list`` and ``sluice incidents evidence`` as
an operator runs them: real subprocesses on both real stores."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import tarfile
from datetime import UTC, datetime
from pathlib import Path

from sluice.store import Store, create_store
from sluice.store.base import Firing

WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def cli(url: str, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    env = {**env, "COLUMNS": "200", "SLUICE_DATABASE_URL": url, "SLUICE_ACTOR": "cli:ann",
           **extra}  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "sluice.cli", *args],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip


def on_store(url: str, fn):  # type: ignore[no-untyped-def]
    async def go():  # type: ignore[no-untyped-def]
        store: Store = create_store(url)
        await store.open()  # type: ignore[attr-defined]
        try:
            return await fn(store)
        finally:
            await store.close()

    return asyncio.run(go())


def open_incident(url: str) -> str:
    async def go(store: Store) -> str:
        incident, _ = await store.incident_fire(
            Firing("SluiceDeadLetters", {"channel": "sms"}, "P2", ("QUEUE",), "002#2",
                   "3 dead letters on sms", 3.0),
            datetime.now(UTC),
        )  # fmt: skip
        return incident.id

    return str(on_store(url, go))


def test_annotate_and_list(store_url: str) -> None:
    done = cli(store_url, "annotate", "deployed v1.4.2", "--kind", "deploy", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["kind"] == "deploy"
    done = cli(store_url, "annotate", "acme flag on", "--kind", "config", "--tenant", "acme",
               "--at", "2026-01-01T09:00:00Z")  # fmt: skip
    assert done.returncode == 0 and "config" in done.stdout, done.stderr
    listed = cli(store_url, "annotations", "list", "--json", "--limit", "1")
    page = json.loads(listed.stdout)
    assert set(page) == {"items", "count", "next_cursor"} and page["count"] == 1
    assert page["items"][0]["actor"] == "cli:ann"
    rest = cli(store_url, "annotations", "list", "--json", "--cursor", page["next_cursor"])
    assert [a["text"] for a in json.loads(rest.stdout)["items"]] == ["acme flag on"]
    table = cli(store_url, "annotations", "list", "--kind", "deploy")
    assert "deployed v1.4.2" in table.stdout and "acme flag on" not in table.stdout


def test_annotate__bad_input_exits_2_naming_the_field(store_url: str) -> None:
    for args, field in (
        (["annotate", ""], "text"),
        (["annotate", "x" * 2001], "text"),
        (["annotate", "x", "--kind", "party"], "kind"),
        (["annotate", "x", "--at", "yesterday"], "at"),
        (["annotations", "list", "--limit", "0"], "limit"),
        (["annotations", "list", "--cursor", "zz"], "cursor"),
    ):
        done = cli(store_url, *args)
        assert done.returncode == 2, (args, done.stderr)
        assert field in done.stderr, (args, done.stderr)
    assert json.loads(cli(store_url, "annotations", "list", "--json").stdout)["count"] == 0


def test_incidents_evidence__writes_once_and_never_a_secret(store_url: str, tmp_path: Path) -> None:
    iid = open_incident(store_url)
    cli(store_url, "annotate", "deployed v1.4.2", "--kind", "deploy")
    out = tmp_path / "ev.tar.gz"
    secrets = {"SLUICE_WEBHOOK_SECRET": WEBHOOK_SECRET}
    done = cli(store_url, "incidents", "evidence", iid, "--out", str(out), **secrets)
    assert done.returncode == 0, done.stderr
    assert str(out) in done.stdout
    with tarfile.open(out, "r:gz") as tar:
        bodies = {}
        for m in tar.getmembers():
            fh = tar.extractfile(m)
            assert fh is not None
            bodies[m.name.split("/", 1)[1]] = fh.read()
    assert "manifest.json" in bodies and "annotations.json" in bodies
    assert json.loads(bodies["audit.json"])["chain"]["ok"] is True
    settings = json.loads(bodies["settings.json"])["settings"]
    assert settings["webhook_secret"] == "[redacted]"
    assert not any(WEBHOOK_SECRET.encode() in b for b in bodies.values())
    # Never overwritten: the second run refuses and leaves the first archive as it was.
    before = out.read_bytes()
    again = cli(store_url, "incidents", "evidence", iid, "--out", str(out))
    assert again.returncode == 2 and "out" in again.stderr and "exists" in again.stderr
    assert out.read_bytes() == before
    # An unknown incident: a clear error, no file.
    other = tmp_path / "none.tar.gz"
    unknown = cli(store_url, "incidents", "evidence", "00000000-0000-0000-0000-000000000000",
                  "--out", str(other))  # fmt: skip
    assert unknown.returncode == 2 and "incident" in unknown.stderr and not other.exists()
    with tarfile.open(fileobj=io.BytesIO(before), mode="r:gz") as tar:
        assert tar.getmembers()
