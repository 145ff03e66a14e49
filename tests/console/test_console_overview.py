"""The overview in a real Chromium: every panel with seeded data, figures that change
by themselves, and a demo load counted to sent by a real ``sluice serve``, a worker and
the provider simulator."""

from __future__ import annotations

import base64
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from console_rig import ConsoleServer, shot, sign_in
from playwright.sync_api import Page, expect

from sluice.flow.controls import Mode, Scope
from sluice.model import Attempt, AttemptOutcome, Completion, Message, NewMessage, Status
from sluice.store import AuditEntry, Store
from sluice.store.base import Firing

#: How long a figure may take to change on its own (htmx polls every 3 s).
REFRESH_MS = 10_000


def sms(tenant: str, n: int) -> NewMessage:
    return NewMessage(tenant=tenant, channel="sms", provider="twilio",
                      recipient="+15550001111", payload={"n": n})  # fmt: skip


def outcome(m: Message, status: Status, now: datetime, code: str | None = None) -> Completion:
    if status is Status.HELD:
        return Completion(m.id, m.claim_seq, "w-seed", status, None, refund_attempt=True,
                          hold_reason="connection: needs_reconsent (twilio)")  # fmt: skip
    how = AttemptOutcome.SENT if status is Status.SENT else AttemptOutcome.FAILED
    attempt = Attempt(m.id, m.claim_seq, "w-seed", m.provider, now, now, how, error_code=code)
    return Completion(m.id, m.claim_seq, "w-seed", status, attempt)


async def seed(store: Store) -> None:
    """shop: 6 sent, 2 dead INVALID_RECIPIENT, 1 dead ENDPOINT_GONE, 1 held for its
    connection; globex: 3 held by a kill; late: 2 queued. A breaker open for twilio, a
    throttle on shop's twilio, an incident open, a worker alive."""
    now = datetime.now(UTC)
    await store.enqueue_many([sms("shop", i) for i in range(10)], now)
    claimed = await store.message_claim("w-seed", 10, 30, now)
    plan = [(Status.SENT, None)] * 6 + [(Status.DEAD, "INVALID_RECIPIENT")] * 2
    plan += [(Status.DEAD, "ENDPOINT_GONE"), (Status.HELD, None)]
    done = [outcome(m, s, now, code) for m, (s, code) in zip(claimed, plan, strict=True)]
    await store.message_complete_many("w-seed", done, now)
    await store.enqueue_many([sms("globex", i) for i in range(3)], now)
    await store.control_set(Scope.of(tenant="globex"), Mode.KILLED, actor="console:ann",
                            reason="runaway loop", expires_at=None, now=now)  # fmt: skip
    await store.control_hold_queued(now)
    await store.enqueue_many([sms("late", i) for i in range(2)], now)
    audit = AuditEntry(at=now, actor="worker", action="breaker.open", target="p:twilio")
    await store.breaker_transition("p:twilio", "twilio", "", None, "open",
                                   retry_at=now + timedelta(minutes=1), reason="5 of 6 failed",
                                   forced=False, now=now, audit=audit)  # fmt: skip
    await store.throttle_set("shop", "twilio", now + timedelta(minutes=2), "429 Retry-After", now)
    firing = Firing(rule="SluiceDeadLettersGrowing", scope={"channel": "sms"}, severity="P1",
                    types=("provider",), runbook="seeds/002#RB-03",
                    summary="dead letters growing on sms", value=3.0)  # fmt: skip
    await store.incident_fire(firing, now)
    await store.worker_heartbeat("w-live", "ops-host", 4242, 0, 6, now)


def figure(page: Page, name: str) -> str:
    return page.locator(f"[data-figure={name}]").inner_text()


def test_the_overview_shows_every_panel_with_seeded_data(
    console: ConsoleServer, page: Page
) -> None:
    console.run(seed)
    sign_in(page, console.url, console.key("ops"), name="ann")

    assert figure(page, "enqueued-rate") == "15" and figure(page, "enqueued-hour") == "15"
    assert figure(page, "sent-rate") == "6" and figure(page, "failed-rate") == "3"
    assert figure(page, "deferred-rate") == "0"
    assert [figure(page, f"depth-{s}") for s in ("queued", "sending", "held", "dead")] == [
        "2", "0", "4", "3",
    ]  # fmt: skip
    assert figure(page, "oldest-ready").endswith(" s")
    assert figure(page, "live-workers") == "1" and figure(page, "incidents") == "1"
    dead = page.locator("#panel-dead tbody tr")
    assert dead.all_inner_texts() == ["sms\tINVALID_RECIPIENT\t2", "sms\tENDPOINT_GONE\t1"]
    held = page.locator("#panel-held [data-held]")
    assert [h.get_attribute("data-held") for h in held.all()] == ["control", "connection"]
    assert "killed" in page.locator('[data-control="tenant=globex"]').inner_text()
    assert "runaway loop" in page.locator("#panel-controls").inner_text()
    assert "open" in page.locator('[data-breaker="p:twilio"]').inner_text()
    assert "429 Retry-After" in page.locator('[data-throttle="shop:twilio"]').inner_text()
    assert "SluiceDeadLettersGrowing" in page.locator("#panel-incidents").inner_text()
    assert "ops-host:4242" in page.locator("#panel-workers").inner_text()
    assert page.locator("#panel-depth tbody tr").all_inner_texts() == ["sms\ttwilio\t2\t·\t4\t3"]
    # Each panel leads to the page that acts on it.
    links = {
        p: page.locator(f"#panel-{p} h2 a").first.get_attribute("href")
        for p in ("dead", "held", "controls", "breakers", "throttles", "incidents")
    }
    assert links == {"dead": "/dlq", "held": "/held", "controls": "/controls",
                     "breakers": "/limits#breakers", "throttles": "/limits#throttles",
                     "incidents": "/incidents"}  # fmt: skip
    assert page.locator('[data-dead="sms:ENDPOINT_GONE"] a').get_attribute("href") == (
        "/dlq?channel=sms&error_code=ENDPOINT_GONE"
    )
    assert page.locator("svg.spark path").count() == 4
    shot(page, "overview")


def test_a_long_table_shows_its_first_rows_and_how_many_more(
    console: ConsoleServer, page: Page
) -> None:
    codes = [f"CODE_{i:02d}" for i in range(11)]

    async def dead_letters(store: Store) -> None:
        now = datetime.now(UTC)
        await store.enqueue_many([sms("shop", i) for i in range(len(codes) + 1)], now)
        claimed = await store.message_claim("w-seed", len(codes) + 1, 30, now)
        done = [outcome(m, Status.DEAD, now, code) for m, code in zip(claimed, [*codes, "CODE_00"])]
        await store.message_complete_many("w-seed", done, now)

    console.run(dead_letters)
    sign_in(page, console.url, console.key("ops"))

    rows = page.locator("#panel-dead tbody tr[data-dead]")
    assert rows.count() == 8
    assert rows.first.get_attribute("data-dead") == "sms:CODE_00"  # the largest group first
    more = page.locator("#panel-dead tr.more a")
    assert more.inner_text() == "3 more, 3 messages →"
    assert more.get_attribute("href") == "/dlq"


def test_the_overview_updates_by_itself(console: ConsoleServer, page: Page) -> None:
    console.run(seed)
    sign_in(page, console.url, console.key("ops"))
    assert figure(page, "depth-queued") == "2"
    page.evaluate("window.notReloaded = true")

    async def more(store: Store) -> None:
        await store.enqueue_many([sms("late", 100 + i) for i in range(5)], datetime.now(UTC))
        await store.control_clear(Scope.of(tenant="globex"), actor="console:ann",
                                  reason="fixed", release=True, now=datetime.now(UTC))  # fmt: skip

    console.run(more)

    expect(page.locator("[data-figure=depth-queued]")).to_have_text("10", timeout=REFRESH_MS)
    expect(page.locator("[data-figure=enqueued-rate]")).to_have_text("20", timeout=REFRESH_MS)
    assert figure(page, "depth-held") == "1"  # the kill's 3 went back to the queue
    expect(page.locator("#panel-controls .empty")).to_be_visible(timeout=REFRESH_MS)
    assert page.evaluate("window.notReloaded") is True


def test_a_session_ended_elsewhere_sends_the_polling_page_to_sign_in(
    console: ConsoleServer, page: Page
) -> None:
    sign_in(page, console.url, console.key("ops"))

    async def end_every_session(store: Store) -> None:
        await store.console_session_purge(datetime.now(UTC) + timedelta(days=365))

    console.run(end_every_session)

    page.wait_for_url(re.compile(r".*/login\?next=.*"), timeout=REFRESH_MS)


def test_a_tenant_key_cannot_open_the_overview(console: ConsoleServer, page: Page) -> None:
    sign_in(page, console.url, console.key("shop", "tenant", "shop"))
    for path in ("/", "/overview/live"):
        answer = page.goto(console.url + path)
        assert answer is not None and answer.status == 403, path
        assert "Overview" not in page.locator("main").inner_text()


# -- end to end: sluice serve, a worker, the simulator ----------------------------------

LOAD = 200


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    return {**env, "SLUICE_DATABASE_URL": database_url, "SLUICE_LOG_LEVEL": "warning",
            "SLUICE_ALLOW_LOOPBACK_TARGETS": "true", **extra}  # fmt: skip


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not come up: {log.read_text(errors='replace')}")
        time.sleep(0.05)


@contextlib.contextmanager
def _process(argv: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A ``sluice`` subprocess in its own process group, killed with it at the end."""
    with open(log, "wb") as out:
        argv = [sys.executable, "-m", "sluice.cli", *argv]
        proc = subprocess.Popen(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            yield proc
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


@pytest.mark.timeout(120)
def test_a_load_counted_to_sent_by_serve_a_worker_and_the_simulator(
    clean_pg_url: str, tmp_path: Path, page: Page
) -> None:
    secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    sim_port, api_port = _free_port(), _free_port()
    sim, api = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{api_port}"
    env = _env(clean_pg_url, SLUICE_WEBHOOK_SECRET=secret)
    create = [sys.executable, "-m", "sluice.cli", "apikeys", "create", "ops", "--role", "operator"]
    made = subprocess.run(create, env=env, capture_output=True, text=True, timeout=60, check=True)
    token = made.stdout.strip()
    with (
        _process(["simulator", "--port", str(sim_port)], env, tmp_path / "sim.log") as sim_proc,
        _process(["serve", "--port", str(api_port)], env, tmp_path / "serve.log") as serve,
    ):
        _wait_healthy(f"{sim}/_sim/health", sim_proc, tmp_path / "sim.log")
        _wait_healthy(f"{api}/healthz", serve, tmp_path / "serve.log")
        sign_in(page, api, token, name="ann")
        assert figure(page, "depth-queued") == "0"
        assert figure(page, "live-workers") == "0"

        batch = {"messages": [
            {"tenant": "acme", "channel": "webhook", "provider": "webhook",
             "recipient": f"{sim}/webhook/acme/orders", "payload": {"order": i}}
            for i in range(LOAD)
        ]}  # fmt: skip
        answer = httpx.post(f"{api}/v1/messages", json=batch, timeout=30,
                            headers={"Authorization": f"Bearer {token}"})  # fmt: skip
        assert answer.status_code in (200, 201), answer.text
        expect(page.locator("[data-figure=depth-queued]")).to_have_text(
            str(LOAD), timeout=REFRESH_MS
        )
        assert figure(page, "sent-hour") == "0"

        with _process(["worker"], env, tmp_path / "worker.log"):
            expect(page.locator("[data-figure=sent-hour]")).to_have_text(str(LOAD), timeout=60_000)
            expect(page.locator("[data-figure=live-workers]")).to_have_text("1")
            assert figure(page, "depth-queued") == "0"
            assert figure(page, "enqueued-hour") == str(LOAD)
            shot(page, "overview-after-load")

        effects = httpx.get(f"{sim}/_sim/effects", timeout=10).json()
        assert effects["unique"] == LOAD and effects.get("duplicates", 0) == 0


# -- make run: the printed one-time link opens the overview of its demo load -------------

DEMO = 60
GONE = DEMO // 25  # every 25th demo webhook goes to an endpoint answering 410 Gone
FLAKY = 5  # every 10th fails once first (49 is also a 25th: gone)


@pytest.mark.timeout(120)
def test_the_link_sluice_run_prints_signs_in_to_an_overview_of_the_demo_load(
    tmp_path: Path, page: Page
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    # It runs in its own directory: a relative PYTHONPATH would lose this tree there.
    paths = env.get("PYTHONPATH", "").split(os.pathsep)
    env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p) for p in paths if p)
    argv = [sys.executable, "-m", "sluice.cli", "run", "--duration", "90", "--port", "0",
            "--api-port", "0", "--demo", str(DEMO), "--demo-rate", "0"]  # fmt: skip
    proc = subprocess.Popen(
        argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        assert proc.stdout is not None
        link, printed = None, []
        for line in proc.stdout:
            printed.append(line)
            found = re.search(r"^console\s+(http://127\.0\.0\.1:\d+/login/link\?t=\S+)", line)
            if found:
                link = found.group(1)
                break
        assert link, "sluice run printed no login link:\n" + "".join(printed)
        page.goto(link)
        page.click("button[type=submit]")
        page.wait_for_url(re.compile(r"http://127\.0\.0\.1:\d+/$"))
        expect(page.locator("[data-figure=sent-hour]")).to_have_text(
            str(DEMO - GONE), timeout=60_000
        )
        assert figure(page, "enqueued-hour") == str(DEMO)
        assert figure(page, "failed-hour") == str(GONE + FLAKY)
        assert figure(page, "depth-dead") == str(GONE)
        assert figure(page, "depth-queued") == "0"
        rows = page.locator("#panel-dead tbody tr").all_inner_texts()
        assert rows == [f"webhook\tENDPOINT_GONE\t{GONE}"]
        assert figure(page, "live-workers") == "1"
        shot(page, "overview-sluice-run")
        page.goto(link)  # the link works once
        page.click("button[type=submit]")
        assert "/login" in page.url
    finally:
        proc.terminate()
        proc.wait(30)
