"""Ingress under load: no event lost when the worker forwarding them is killed.

Real processes throughout: ``sluice serve`` takes 2,000 signed Standard Webhooks at
1,000 requests/s (open loop) on ``/v1/ingress/partner``, plus about 5 % of them posted
a second time as a provider's retry would; one ``sluice worker`` projects each event
into an outbound webhook to the tenant's ``inbound_url`` (the provider simulator) and
is killed with SIGKILL half-way through the load, a fresh worker taking over.

What must hold afterwards, counted in against out: every request got a 2xx; the inbox
holds each event once, done; each event became exactly one outbound message (the
projector's idempotency key ``inbound:<provider>:<event_id>``), and every one of them
reached the simulator. A message may reach it twice only if it was retried (a send in
flight when the worker died comes back through its lease): delivery is at least once,
and the receiver dedupes on ``webhook-id``, the message id, which is what the simulator
counts by.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import httpx
import psycopg
from standardwebhooks.webhooks import Webhook

if TYPE_CHECKING:
    from conftest import SimulatorProcess, Workers

N = 2_000
RATE = 1_000.0  # requests per second, open loop
CONCURRENCY = 64  # requests in flight at most
REPLAY_EVERY = 20  # one event in 20 is posted twice (5 %)
REPLAY_LAG = 50  # ... 50 requests after its first delivery
SOURCE = "partner"
TENANT = "acme"
DRAIN_TIMEOUT = 60.0
WORKER_ENV = {
    "SLUICE_LEASE_SECONDS": "3",  # a killed worker's claims (messages and inbox) come back fast
    "SLUICE_HTTP_TIMEOUT": "1",
    "SLUICE_REAPER_INTERVAL": "0.5",
    "SLUICE_ALLOW_LOOPBACK_TARGETS": "1",  # the simulator is on 127.0.0.1
}

Request = tuple[bytes, dict[str, str]]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


def _config(path: Path, secret: str, inbound_url: str) -> Path:
    path.write_text(
        f'[ingress.{SOURCE}]\nkind = "webhook"\nsecrets = ["{secret}"]\ntenant = "{TENANT}"\n\n'
        f'[tenants.{TENANT}]\ninbound_url = "{inbound_url}"\n'
    )
    return path


def _signed_events(secret: str, n: int) -> tuple[list[str], list[Request]]:
    """``n`` distinct events, each a signed request ready to post (and re-post)."""
    signer = Webhook(secret)
    now = datetime.now(UTC)
    ids, requests = [], []
    for i in range(n):
        event_id = f"evt_{i:05d}"
        body = json.dumps(
            {"type": "order.created", "timestamp": now.isoformat(), "data": {"order": i}}
        )
        headers = {
            "content-type": "application/json",
            "webhook-id": event_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signer.sign(event_id, now, body),
        }
        ids.append(event_id)
        requests.append((body.encode(), headers))
    return ids, requests


def _schedule(n: int) -> list[int]:
    """Event indexes in posting order: each event once, and every ``REPLAY_EVERY``-th
    once more ``REPLAY_LAG`` posts later (a provider's retry of a delivery it doubted)."""
    order: list[int] = []
    for i in range(n):
        order.append(i)
        if i >= REPLAY_LAG and i % REPLAY_EVERY == 0:
            order.append(i - REPLAY_LAG)
    return order


async def _post_all(
    url: str, requests: list[Request], schedule: list[int], at_half: Callable[[], Any]
) -> list[tuple[int | None, Any]]:
    """Post ``schedule`` at ``RATE`` per second whatever the answers take (open loop);
    call ``at_half`` (in a thread) when the middle request falls due."""
    loop = asyncio.get_running_loop()
    replies: list[tuple[int | None, Any]] = [(None, "not sent")] * len(schedule)
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(session: aiohttp.ClientSession, k: int, i: int) -> None:
        body, headers = requests[i]
        async with gate:
            try:
                async with session.post(url, data=body, headers=headers) as r:
                    text = await r.text()
                    replies[k] = (r.status, json.loads(text) if r.status < 300 else text)
            except (aiohttp.ClientError, TimeoutError) as exc:
                replies[k] = (None, repr(exc))

    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks: list[asyncio.Future[Any]] = []
        start = loop.time()
        for k, i in enumerate(schedule):
            delay = start + k / RATE - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if k == len(schedule) // 2:
                tasks.append(loop.run_in_executor(None, at_half))
            tasks.append(asyncio.ensure_future(one(session, k, i)))
        await asyncio.gather(*tasks)
    return replies


@contextmanager
def _serve(tmp_path: Path, env: dict[str, str]) -> Iterator[str]:
    """``sluice serve`` on a free port until the block ends; yields its base URL."""
    port = free_port()
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115  # closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "sluice.cli", "serve", "--port", str(port)],
        env={**os.environ, **env, "SLUICE_LOG_LEVEL": "warning"},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
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
                raise RuntimeError(f"sluice serve did not start: {_read(tmp_path / 'serve.log')}")
            time.sleep(0.05)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def _read(path: Path) -> str:
    return path.read_text(errors="replace")[-4000:]


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.2)


def _counts(url: str) -> tuple[dict[str, int], dict[str, int]]:
    """(inbox rows by state, outbound messages by status)."""
    with psycopg.connect(url) as conn:
        inbox: dict[str, int] = dict(
            conn.execute("SELECT state, count(*) FROM sluice_inbox GROUP BY 1").fetchall()
        )
        out: dict[str, int] = dict(
            conn.execute("SELECT status, count(*) FROM sluice_messages GROUP BY 1").fetchall()
        )
    return inbox, out


def test_ingress_at_1000_per_second__worker_killed_half_way__no_event_lost(
    clean_pg_url: str, simulator: SimulatorProcess, workers: Workers, tmp_path: Path
) -> None:
    ingress_secret = new_secret()
    config = _config(
        tmp_path / "sluice.toml", ingress_secret, f"{simulator.url}/webhook/inbound/{TENANT}"
    )
    env = {"SLUICE_CONFIG": str(config), "SLUICE_DATABASE_URL": clean_pg_url}
    migrated = subprocess.run(
        [sys.executable, "-m", "sluice.cli", "migrate"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert migrated.returncode == 0, migrated.stderr
    event_ids, requests = _signed_events(ingress_secret, N)
    schedule = _schedule(N)
    replays = len(schedule) - N

    with _serve(tmp_path, env) as base:
        first = workers.start(
            clean_pg_url, simulator.secret, SLUICE_CONFIG=str(config), **WORKER_ENV
        )
        # /readyz is 200 once a worker has registered: the load meets a running worker.
        _wait(
            lambda: httpx.get(f"{base}/readyz", timeout=5).status_code == 200
            or first.poll() is not None,
            30,
            "the first worker to register",
        )
        assert first.poll() is None, f"the first worker exited: {workers.log(0)}"
        at_kill: dict[str, Any] = {}

        def kill_and_replace() -> None:
            first.send_signal(signal.SIGKILL)
            first.wait(10)
            workers.start(clean_pg_url, simulator.secret, SLUICE_CONFIG=str(config), **WORKER_ENV)
            at_kill["forwarded"] = simulator.summary()["unique"]
            at_kill["inbox"], at_kill["messages"] = _counts(clean_pg_url)

        load_started = time.monotonic()
        replies = asyncio.run(
            _post_all(f"{base}/v1/ingress/{SOURCE}", requests, schedule, kill_and_replace)
        )
        load_seconds = time.monotonic() - load_started

        # Every request answered 2xx, and the answers add up: N events accepted, every
        # re-post acknowledged as a duplicate.
        refused = [(schedule[k], r) for k, r in enumerate(replies) if not (r[0] and r[0] < 300)]
        assert refused == [], (
            f"{len(schedule)} requests in, {len(refused)} not answered 2xx: "
            f"{Counter(str(r[1][0]) for r in refused)}; first {refused[:3]}"
        )
        accepted = sum(r[1]["received"] - r[1]["duplicates"] for r in replies)
        acknowledged = sum(r[1]["duplicates"] for r in replies)
        assert (accepted, acknowledged) == (N, replays), (
            f"{N} events + {replays} re-posts in: ingress accepted {accepted} and "
            f"acknowledged {acknowledged} as duplicates"
        )

        def drained() -> bool:
            if workers.procs[-1].poll() is not None:
                raise AssertionError(f"the second worker exited: {workers.log(1)}")
            inbox, out = _counts(clean_pg_url)
            return inbox.get("done") == N and out.get("sent") == N

        _wait(drained, DRAIN_TIMEOUT, f"{N} inbox events done and {N} forwards sent")
        drain_seconds = time.monotonic() - load_started - load_seconds
    delivered = simulator.ids()
    workers.stop_all()

    with psycopg.connect(clean_pg_url) as conn:
        inbox_rows = conn.execute(
            "SELECT event_id, state, result FROM sluice_inbox WHERE provider = %s", (SOURCE,)
        ).fetchall()
        messages = conn.execute(
            "SELECT idempotency_key, id::text, status FROM sluice_messages"
        ).fetchall()
        attempts = conn.execute(
            "SELECT message_id::text, outcome FROM sluice_attempts ORDER BY id"
        ).fetchall()

    # The inbox: each event exactly once, all done.
    inbox_ids = Counter(row[0] for row in inbox_rows)
    assert len(inbox_rows) == N and set(inbox_ids) == set(event_ids), (
        f"{N} events in, {len(inbox_rows)} inbox rows ({len(inbox_ids)} distinct, "
        f"missing {sorted(set(event_ids) - set(inbox_ids))[:5]})"
    )
    not_done = [row for row in inbox_rows if row[1] != "done"]
    assert not_done == [], f"{N} inbox rows, {len(not_done)} not done: {not_done[:3]}"

    # The outbox: one forward per event, and the inbox says which one.
    by_key = {key: (mid, status) for key, mid, status in messages}
    wanted = {f"inbound:{SOURCE}:{e}" for e in event_ids}
    assert len(messages) == N and set(by_key) == wanted, (
        f"{N} events in, {len(messages)} outbound messages out "
        f"({len(set(by_key) & wanted)} with an event's key)"
    )
    forwarded = {row[0]: row[2] for row in inbox_rows}
    mismatched = [
        e for e in event_ids if forwarded[e] != f"forwarded {by_key[f'inbound:{SOURCE}:{e}'][0]}"
    ]
    assert mismatched == [], f"inbox results not naming their event's message: {mismatched[:3]}"
    mids = {mid for mid, _ in by_key.values()}

    # The simulator: every forward arrived; a second arrival only for a retried message.
    lost = sorted(mids - set(delivered))
    assert lost == [], f"{N} forwards out, {len(mids) - len(lost)} reached the simulator"
    assert set(delivered) == mids, f"unexpected effects: {sorted(set(delivered) - mids)[:3]}"
    outcomes: dict[str, list[str]] = {}
    for mid, outcome in attempts:
        outcomes.setdefault(mid, []).append(outcome)
    twice = {mid: n for mid, n in delivered.items() if n > 1}
    unexplained = [mid for mid in twice if len(outcomes.get(mid, [])) < 2]
    assert unexplained == [], f"delivered more than once without a retry: {unexplained[:3]}"
    sent_once = [mid for mid in mids if outcomes.get(mid, []).count("sent") == 1]
    assert len(sent_once) == N, f"{N} forwards, {len(sent_once)} with exactly one 'sent' attempt"

    retried = {mid: o for mid, o in outcomes.items() if len(o) > 1}
    report = (
        f"\ningress under load: {len(schedule)} requests ({N} events + {replays} re-posts) at "
        f"{RATE:,.0f}/s (answered in {load_seconds:.1f} s, forwards done "
        f"{drain_seconds:.1f} s later), all 2xx; inbox {len(inbox_rows)} rows, all done; "
        f"outbound messages {len(messages)}; delivered {len(delivered)} distinct, lost 0, "
        f"{sum(twice.values()) - len(twice)} duplicate arrivals ({len(twice)} messages); "
        f"at the kill: {at_kill.get('forwarded')} forwarded, inbox {at_kill.get('inbox')}, "
        f"messages {at_kill.get('messages')}; {len(retried)} messages retried "
        f"({Counter(x for o in retried.values() for x in o if x != 'sent')})"
    )
    print(report)
    (tmp_path / "ingress-load-report.txt").write_text(report)
