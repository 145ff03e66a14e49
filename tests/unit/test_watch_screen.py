"""The ``sluice status --watch`` screen drawn from a snapshot, as text: what on-call reads."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

from rich.console import Console

from sluice.cli.watch import screen
from sluice.flow.breakers import BreakerState, BreakerStatus
from sluice.ops.watch import DeadGroup, HeldGroup, Rates, Snapshot, WorkerBeat
from sluice.store.base import Throttle

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
WHERE = "sqlite:///sluice.db"


def text(frame: object) -> str:
    out = io.StringIO()
    Console(file=out, width=160, force_terminal=False).print(frame)
    return out.getvalue()


def snap(**kw: object) -> Snapshot:
    fields: dict[str, object] = {
        "at": NOW,
        "store": WHERE,
        "rates": [Rates(60, 30, 2, 1), Rates(300, 100, 20, 5)],
        "depth": {"queued": 1200, "sending": 4, "held": 2, "dead": 7},
        "oldest_ready_age_seconds": 754.0,
        "dead_total": 7,
        "dead": [DeadGroup("sms", "INVALID_RECIPIENT", 5), DeadGroup("email", "[weird]", 2)],
        "dead_groups": 2,
        "held": [HeldGroup("approval", 2, 3600.0)],
        "breakers": [],
        "throttles": [],
        "workers": [WorkerBeat("w-1", "host-a", 3.0, 2, True)],
        "incidents": [],
    }
    fields.update(kw)
    return Snapshot(**fields)  # type: ignore[arg-type]


def test_screen__shows_rates_depth_oldest_age_dead_letters_held_and_workers() -> None:
    out = text(screen(snap(), where=WHERE, now=NOW, interval=2))

    assert "2026-01-01 12:00:00 UTC" in out and WHERE in out and "every 2s" in out
    assert "last 1m   30.0      2.0         1.0           93.8%" in out
    assert "last 5m   20.0      4.0         1.0           83.3%" in out
    assert "queued 1200  sending 4  held 2  dead 7" in out
    assert "oldest due message: 12.6m since it was created" in out
    assert "dead letters: 7" in out and "INVALID_RECIPIENT" in out
    assert "[weird]" in out  # shown as it is, not read as markup
    assert "approval" in out and "60.0m" in out
    assert "workers: 1 live" in out and "3.0s ago" in out
    for quiet in ("breakers not closed: none", "throttles: none", "open incidents: none"):
        assert quiet in out
    assert "NOT ANSWERING" not in out


def test_screen__lists_breakers_throttles_and_says_when_dead_letters_are_cut() -> None:
    breaker = BreakerStatus(
        "p:twilio", "twilio", "", BreakerState.OPEN, True, NOW - timedelta(minutes=3), None,
        "vendor down", 0, 1, 9, 0.9,
    )  # fmt: skip
    throttle = Throttle("acme", "twilio", NOW + timedelta(seconds=30), "RATE_LIMITED", NOW)
    out = text(
        screen(
            snap(breakers=[breaker], throttles=[throttle], dead_groups=14),
            where=WHERE,
            now=NOW,
            interval=2,
        )
    )

    assert "p:twilio" in out and "open (forced)" in out and "90%" in out and "3.0m ago" in out
    assert "acme" in out and "30.0s" in out and "RATE_LIMITED" in out
    assert "dead letters: 7 (largest 2 of 14 groups)" in out


def test_screen__a_store_not_answering_is_said_and_the_last_figures_are_dated() -> None:
    later = NOW + timedelta(seconds=40)
    out = text(
        screen(
            snap(),
            where=WHERE,
            now=later,
            interval=2,
            failing=(NOW + timedelta(seconds=10), "no PostgreSQL server is answering"),
        )
    )

    assert "STORE NOT ANSWERING for 30.0s: no PostgreSQL server is answering" in out
    assert "retrying every 2s; figures below are from 12:00:00" in out
    assert "queued 1200" in out


def test_screen__before_any_good_read_only_the_error() -> None:
    out = text(screen(None, where=WHERE, now=NOW, interval=5, failing=(NOW, "database locked")))

    assert "STORE NOT ANSWERING for 0.0s: database locked — retrying every 5s" in out
    assert "figures below" not in out and "depth" not in out
