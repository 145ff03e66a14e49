"""``sluice canary`` as an operator runs it: a real subprocess on each store. With no
worker running, a canary goes missing, exits 1 and opens an incident; bad input and a bad
``[canary]`` exit 2 naming what is wrong, and send nothing."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sluice.store import MessageFilter, Store, create_store

TOML = (
    '[canary]\ntimeout = "1s"\n'
    'targets = [{ provider = "webhook", recipient = "https://r.example/c" }]\n'
)


@pytest.fixture
def toml(tmp_path: Path) -> Path:
    path = tmp_path / "sluice.toml"
    path.write_text(TOML)
    return path


def cli(url: str, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    return subprocess.run(
        [sys.executable, "-m", "sluice.cli", *args],
        capture_output=True, text=True, timeout=60, check=False,
        env={**env, "COLUMNS": "200", "SLUICE_DATABASE_URL": url, "SLUICE_CONFIG": str(config)},
    )  # fmt: skip


def counts(url: str) -> tuple[int, int, list[str]]:
    async def go() -> tuple[int, int, list[str]]:
        store: Store = create_store(url)
        await store.open()  # type: ignore[attr-defined]
        try:
            runs = await store.canary_list(None, 100)
            msgs = await store.message_list(MessageFilter(), None, None, 100)
            return len(runs), len(msgs), [i.rule for i in await store.incident_list("open", 10)]
        finally:
            await store.close()

    return asyncio.run(go())


def test_canary_run__without_a_worker_goes_missing_exits_1_and_opens_an_incident(
    store_url: str, toml: Path
) -> None:
    r = cli(store_url, toml, "canary", "run", "--json", "--reason", "after RB-09")

    assert r.returncode == 1, r.stderr
    out = json.loads(r.stdout)
    assert (out["count"], out["next_cursor"]) == (1, None)
    assert out["items"][0]["outcome"] == "missing"
    assert counts(store_url) == (1, 1, ["SluiceCanaryFailed"])

    listed = cli(store_url, toml, "canary", "list")
    assert listed.returncode == 0, listed.stderr
    assert "missing" in listed.stdout and "webhook" in listed.stdout


@pytest.mark.parametrize(
    ("args", "config", "named"),
    [
        (["--wait", "-1s"], TOML, "--wait"),
        (["--wait", "nan"], TOML, "--wait"),
        (["--wait", "20m"], TOML, "--wait"),
        (["--provider", "twilio"], TOML, "provider"),
        ([], TOML.replace('"1s"', '"soon"'), "[canary].timeout"),
        ([], '[canary]\ntenant = "acme"\n', "[canary].tenant"),
    ],
)
def test_canary_run__bad_input_exits_2_naming_it_and_sends_nothing(
    store_url: str, toml: Path, args: list[str], config: str, named: str
) -> None:
    toml.write_text(config)
    r = cli(store_url, toml, "canary", "run", *args)

    assert r.returncode == 2, r.stderr
    assert named in r.stderr
    assert counts(store_url) == (0, 0, [])


def test_help__lists_the_canary_commands(tmp_path: Path) -> None:
    r = cli("sqlite:///unused.db", tmp_path / "none.toml", "--help")
    assert "canary" in r.stdout


def test_worker__refuses_to_start_with_a_bad_canary_table(store_url: str, toml: Path) -> None:
    toml.write_text(
        '[canary]\ntargets = [{ provider = "twilio", recipient = "+1", channel = "fax" }]\n'
    )
    r = cli(store_url, toml, "worker", "--until-idle")

    assert r.returncode == 2, r.stderr
    assert "[canary].targets[0].channel" in r.stderr
