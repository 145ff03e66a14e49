"""A provider outage at the simulator, two worker processes on PostgreSQL.

The primary Twilio account answers 503 for everything. The breaker on ``twilio`` opens
once the window has its minimum volume; while it is open, no attempt goes to the
primary: the ``sms`` channel fails over to ``twilio-backup`` (a second account, declared
in ``sluice.toml``), the ``otp`` channel, which has no route, waits without spending
attempts. After recovery the breaker half-opens, its probes succeed, it closes, and
every message has been delivered exactly once.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
import pytest

from sluice.model import NewMessage
from sluice.ops.connections import connection_add
from sluice.secrets import SecretBox, generate_key
from sluice.store import create_store

PRIMARY, BACKUP = "AC" + "1" * 32, "AC" + "2" * 32
COOLDOWN = 4.0


async def _setup(url: str, box: SecretBox) -> tuple[list[str], list[str]]:
    store = create_store(url)
    await store.open()  # type: ignore[attr-defined]
    try:
        for tenant, provider, sid in (
            ("acme", "twilio", PRIMARY),
            ("acme", "twilio-backup", BACKUP),
            ("solo", "twilio", PRIMARY),
        ):
            await connection_add(
                store, box, tenant=tenant, provider=provider,
                secrets={"account_sid": sid, "auth_token": f"tok-{sid[-1]}", "from": "+15550001"},
                scopes=[], actor="test",
            )  # fmt: skip
        sms = await store.enqueue_many(
            [
                NewMessage(
                    tenant="acme",
                    channel="sms",
                    provider="twilio",
                    recipient=f"+1555010{i:04d}",
                    payload={"body": f"code {i}"},
                )
                for i in range(60)
            ]
        )
        otp = await store.enqueue_many(
            [
                NewMessage(
                    tenant="solo",
                    channel="otp",
                    provider="twilio",
                    recipient=f"+1555020{i:04d}",
                    payload={"body": f"otp {i}"},
                )
                for i in range(20)
            ]
        )
        return sms, otp
    finally:
        await store.close()


def breakers(url: str) -> dict[str, dict[str, object]]:
    out = subprocess.run(
        [sys.executable, "-m", "sluice.cli", "breakers", "list", "--json"],
        env={**os.environ, "SLUICE_DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    document = json.loads(out)
    rows = document["items"]
    return {str(r["key"]): r for r in rows}


def wait_for(check, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def statuses(url: str) -> dict[str, str]:
    with psycopg.connect(url) as conn:
        return {str(i): s for i, s in conn.execute("SELECT id, status FROM sluice_messages")}


def test_outage__breaker_opens_fails_over_spends_nothing_closes_delivers_all(
    clean_pg_url, simulator, workers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    key = generate_key()
    config = tmp_path / "sluice.toml"
    config.write_text(
        '[providers."twilio-backup"]\nkind = "twilio"\n\n'
        '[routes]\nsms = ["twilio", "twilio-backup"]\n'
    )
    # The setup below adds a twilio-backup connection: it must see the alias too.
    monkeypatch.setenv("SLUICE_CONFIG", str(config))
    for sid in (PRIMARY, BACKUP):
        httpx.post(
            f"{simulator.url}/_sim/credentials",
            json={"provider": "twilio", "account_sid": sid, "auth_token": f"tok-{sid[-1]}"},
            timeout=5,
        ).raise_for_status()
    sms, otp = asyncio.run(_setup(clean_pg_url, SecretBox(key)))
    simulator.faults(path_prefix=f"/twilio/2010-04-01/Accounts/{PRIMARY}", status=503)
    env = {
        "SLUICE_CONFIG": str(config),
        "SLUICE_SECRET_KEY": key,
        "SLUICE_TWILIO_BASE_URL": f"{simulator.url}/twilio",
        "SLUICE_STATUS_CALLBACK_URL": f"{simulator.url}/_sim/health",
        "SLUICE_BREAKER_WINDOW": "60",
        "SLUICE_BREAKER_MIN_VOLUME": "10",
        "SLUICE_BREAKER_COOLDOWN": str(COOLDOWN),
        "SLUICE_BREAKER_PROBES": "2",
        "SLUICE_RETRY_BASE": "0.2",
        "SLUICE_RETRY_CAP": "1",
        "SLUICE_WORKER_CONCURRENCY": "5",
    }
    workers.start(clean_pg_url, simulator.secret, **env)
    workers.start(clean_pg_url, simulator.secret, **env)

    # The breaker opens; the sms channel fails over and is delivered meanwhile.
    opened = wait_for(
        lambda: breakers(clean_pg_url).get("p:twilio", {}).get("state") == "open"
        and breakers(clean_pg_url)["p:twilio"],
        60,
        "the twilio breaker to open",
    )
    wait_for(
        lambda: all(statuses(clean_pg_url)[i] == "sent" for i in sms), 60, "sms via the backup"
    )
    since = datetime.fromisoformat(str(opened["since"]))
    # While open (after a grace for the workers' one-second sync) nothing goes to the
    # primary: no attempt is spent on the otp messages that have nowhere else to go.
    quiet_from, quiet_to = since + timedelta(seconds=1.5), since + timedelta(seconds=COOLDOWN)
    # The otp messages are looked at half a second before the cooldown ends: from its
    # end on, the workers take them again (each comes due then) and the probes go out.
    time.sleep(max(0.0, (quiet_to - timedelta(seconds=0.5) - datetime.now(UTC)).total_seconds()))
    otp_states = [s for i, s in statuses(clean_pg_url).items() if i in otp]
    time.sleep(max(0.0, (quiet_to - datetime.now(UTC)).total_seconds()))
    with psycopg.connect(clean_pg_url) as conn:
        (during,) = conn.execute(
            "SELECT count(*) FROM sluice_attempts WHERE provider = 'twilio' "
            "AND started_at >= %s AND started_at < %s",
            (quiet_from, quiet_to),
        ).fetchone()  # type: ignore[misc]
    assert during == 0, "attempts were spent on an open breaker"
    assert "queued" in otp_states, otp_states
    assert set(otp_states) <= {"queued", "sent"}, otp_states

    # Recovery: the breaker half-opens after its cooldown, probes succeed, it closes.
    simulator.clear_faults()
    wait_for(
        lambda: breakers(clean_pg_url).get("p:twilio", {}).get("state") == "closed",
        60,
        "the breaker to close",
    )
    wait_for(
        lambda: all(s == "sent" for s in statuses(clean_pg_url).values()),
        60,
        "every message delivered",
    )
    workers.stop_all()

    delivered = simulator.ids()
    assert sorted(k for k in delivered if k in set(sms) | set(otp)) == sorted(sms + otp)
    assert max(delivered[i] for i in sms + otp) == 1
    with psycopg.connect(clean_pg_url) as conn:
        sent_via = dict(
            conn.execute(
                "SELECT provider, count(*) FROM sluice_attempts WHERE outcome = 'sent' "
                "GROUP BY provider"
            ).fetchall()
        )
        audit = [
            a for (a,) in conn.execute("SELECT action FROM sluice_audit ORDER BY id").fetchall()
        ]
        dead = conn.execute("SELECT count(*) FROM sluice_messages WHERE status = 'dead'")
        (dead_n,) = dead.fetchone()  # type: ignore[misc]
    assert sent_via.get("twilio-backup", 0) > 0, sent_via
    assert sum(sent_via.values()) == len(sms) + len(otp)
    assert dead_n == 0
    assert "breaker.open" in audit and "breaker.closed" in audit
    print(
        f"breaker opened at {since.isoformat()}; attempts on the open breaker 0; "
        f"sent via {sent_via}; delivered {len(sms) + len(otp)} once each; dead 0"
    )
