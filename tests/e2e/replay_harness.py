"""Shared parts of the seed-incident replays (``test_replay_seeds.py``).

A replay drives real processes: ``sluice worker`` with its built-in evaluator on
PostgreSQL, the provider simulator, and the ``sluice`` CLI as on-call types it. This
module reads what they leave behind, independently of the code under test: the store
through plain SQL, the simulator through its request log and effect counts, incidents
and diagnoses through ``sluice incidents show --json``. It also runs a diagnosis'
commands exactly as printed (``shlex``-split, ``sluice`` replaced by this Python).
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg

from sluice.ops.postmortem import postmortem_facts
from sluice.store import create_store

#: The postmortem's categories of a message's final state (ops.postmortem.CATEGORIES),
#: computed here again from the rows, not with its code.
_SENT = ("sent", "delivered", "read", "bounced")
_CATEGORY = {
    "queued": "delayed", "sending": "delayed", "held": "held", "dead": "dead",
    "cancelled": "cancelled", "expired": "expired", "suppressed": "suppressed",
    "shadowed": "shadowed",
}  # fmt: skip


def wait_for(what: str, check: Callable[[], Any], seconds: float = 60) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {seconds:g} s for {what}")
        time.sleep(0.2)


def on_store(url: str, fn: Callable[[Any], Any]) -> Any:
    async def go() -> Any:
        store = create_store(url)
        await store.open()  # type: ignore[attr-defined]
        try:
            return await fn(store)
        finally:
            await store.close()

    return asyncio.run(go())


@dataclass
class Replay:
    """One replay: the database, the environment the CLI runs with, and what it measured."""

    url: str
    tmp_path: Path
    env: dict[str, str] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)

    def sluice(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """The ``sluice`` CLI as a subprocess (in ``tmp_path``, so a file a command names
        is found there)."""
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
        r = subprocess.run(
            [sys.executable, "-m", "sluice.cli", *args],
            capture_output=True, text=True, timeout=60, check=False, cwd=self.tmp_path,
            env={**inherited, "COLUMNS": "200", "SLUICE_DATABASE_URL": self.url,
                 "SLUICE_ALLOW_LOOPBACK_TARGETS": "true", **self.env},
        )  # fmt: skip
        if check:
            assert r.returncode == 0, f"sluice {shlex.join(args)}: {r.stdout}\n{r.stderr}"
        return r

    def run_printed(self, line: str, *, actor: str = "oncall:replay") -> str:
        """Run a command line exactly as a diagnosis printed it; every slot must be
        filled (no ``<name>`` left). Acts get ``--actor``; its output is returned."""
        assert "<" not in line, f"a slot is unfilled: {line}"
        words = shlex.split(line)
        assert words[0] == "sluice", line
        args = words[1:]
        if "--reason" in args and "--dry-run" not in args:
            args.append(f"--actor={actor}")
        return self.sluice(*args).stdout

    # -- incidents ---------------------------------------------------------------------

    def incidents(self) -> list[Any]:
        return list(on_store(self.url, lambda s: s.incident_list("")))

    def incident(self, incident_id: str) -> Any:
        return on_store(self.url, lambda s: s.incident_get(incident_id))

    def show(self, incident_id: str) -> dict[str, Any]:
        """``sluice incidents show ID --json``: the incident and its diagnosis now."""
        document: dict[str, Any] = json.loads(
            self.sluice("incidents", "show", incident_id, "--json").stdout
        )
        assert document["diagnosis_error"] is None, document["diagnosis_error"]
        return document

    def wait_incident(self, rule: str, seconds: float = 60) -> Any:
        return wait_for(
            f"an incident of {rule}",
            lambda: next((i for i in self.incidents() if i.rule == rule), None),
            seconds,
        )

    def wait_resolved(self, incident_id: str, seconds: float = 60) -> Any:
        return wait_for(
            f"incident {incident_id} to resolve",
            lambda: (i := self.incident(incident_id)).state == "resolved" and i,
            seconds,
        )

    # -- the store, read with SQL ------------------------------------------------------

    def statuses(self, ids: list[str] | None = None) -> dict[str, str]:
        with psycopg.connect(self.url) as conn:
            rows = conn.execute("SELECT id::text, status FROM sluice_messages").fetchall()
        wanted = set(ids) if ids is not None else None
        return {i: s for i, s in rows if wanted is None or i in wanted}

    def audit_at(self, action: str) -> datetime:
        """When the latest audit row of ``action`` was written."""
        with psycopg.connect(self.url) as conn:
            row = conn.execute(
                "SELECT max(at) FROM sluice_audit WHERE action = %s", (action,)
            ).fetchone()
        assert row is not None and row[0] is not None, f"no audit row {action}"
        at: datetime = row[0]
        return at

    def store_counts(
        self, fields: Mapping[str, str], since: datetime, until: datetime
    ) -> dict[str, int]:
        """Messages in scope created in [since, until] or with an attempt that finished
        then, per final-state category: what the postmortem's table must say."""
        where = " AND ".join(f"m.{k} = %({k})s" for k in fields) or "true"
        sql = f"""
            SELECT m.status, m.attempts, m.deferrals FROM sluice_messages m
            WHERE {where} AND (
              m.created_at BETWEEN %(since)s AND %(until)s
              OR EXISTS (SELECT 1 FROM sluice_attempts a WHERE a.message_id = m.id
                         AND a.finished_at BETWEEN %(since)s AND %(until)s))
        """  # column names are the postmortem's scope fields; the values are bound
        counts: dict[str, int] = {}
        with psycopg.connect(self.url) as conn:
            rows = conn.execute(sql, {**fields, "since": since, "until": until}).fetchall()
        for status, attempts, deferrals in rows:
            if status in _SENT:
                cat = "sent late" if attempts > 1 or deferrals > 0 else "sent"
            else:
                cat = _CATEGORY.get(status, status)
            counts[cat] = counts.get(cat, 0) + 1
        return counts

    def facts(self, incident_id: str) -> Any:
        return on_store(self.url, lambda s: postmortem_facts(s, incident_id))

    def check_postmortem(self, incident_id: str) -> Any:
        """The draft's facts against the store; the printed draft says no loss."""
        facts = self.facts(incident_id)
        fields = {k: v for k, v in _fields(facts.incident.scope).items()}
        theirs = {c: n for c, n in facts.by_category.items() if n}
        ours = self.store_counts(fields, facts.started, facts.until)
        assert theirs == ours, (theirs, ours)
        assert facts.loss.missing == [] and facts.loss.accepted == facts.loss.accounted
        draft = self.sluice("incidents", "postmortem", incident_id).stdout
        assert "No loss" in draft, draft
        return facts


def _fields(scope: Mapping[str, str]) -> dict[str, str]:
    """An incident's scope as message columns (a breaker key names its provider)."""
    out = {k: v for k, v in scope.items() if k in ("tenant", "channel", "provider", "action")}
    parts = scope.get("key", "").split(":")
    if parts[0] == "p" and len(parts) == 2:
        out.setdefault("provider", parts[1])
    elif parts[0] == "c" and len(parts) == 3:
        out.setdefault("tenant", parts[1])
        out.setdefault("provider", parts[2])
    return out


# -- the simulator -----------------------------------------------------------------------


def sim_requests(url: str) -> list[dict[str, Any]]:
    """The simulator's whole request log, oldest first."""
    out: list[dict[str, Any]] = []
    since: Any = 0
    while True:
        page = httpx.get(
            f"{url}/_sim/requests", params={"since": since, "limit": 10_000}, timeout=30
        ).json()
        out += page["items"]
        if not page["items"] or page.get("next_cursor") in (None, since):
            return out
        since = page["next_cursor"]


def requests_after(
    url: str, path_prefix: str, after: datetime | None = None
) -> list[dict[str, Any]]:
    """Requests to ``path_prefix`` that arrived after ``after`` (all: None)."""
    return [
        r
        for r in sim_requests(url)
        if r["path"].startswith(path_prefix)
        and (after is None or datetime.fromisoformat(r["at"]) > after)
    ]


def effects_of(url: str, ids: list[str]) -> dict[str, int]:
    """Effects recorded per message id (only the ids given; absent: no effect)."""
    keyed: dict[str, int] = httpx.get(f"{url}/_sim/effects/ids", timeout=30).json()["ids"]
    wanted = set(ids)
    return {k: n for k, n in keyed.items() if k in wanted}


def seconds(a: datetime, b: datetime) -> float:
    return round((b - a).total_seconds(), 1)


def now() -> datetime:
    return datetime.now(UTC)
