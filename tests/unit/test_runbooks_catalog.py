"""The runbooks as data hold together: every seed section in which Sluice has a part has
one, every alert rule's runbook exists, every check names a probe the diagnosis has, and
every command is a real ``sluice`` command with the options it uses (parsed by the same
command tree ``sluice --help`` shows)."""

from __future__ import annotations

import shlex

import click
import pytest
import typer.main

from sluice.alerts.rules import RULES
from sluice.cli import app
from sluice.errors import NotFound
from sluice.ops.runbooks import PROBES, fill
from sluice.runbooks import NOT_COVERED, PLACEHOLDERS, RUNBOOKS, find, placeholders, rules_for

SEED_SECTIONS = (
    [f"002#{n}" for n in range(1, 7)]
    + [f"003#RB-{n:02d}" for n in range(1, 13)]
    + ["003#2.2"]
    + [
        "001#provider-outage",
        "001#token-revocation",
        "001#webhook-replay",
        "001#outbox-lag",
        "001#notification-projector-failure",
    ]
    + [f"004#1.{n}" for n in range(1, 6)]
    + ["000#remediation"]
)

SAMPLE = {
    "tenant": "acme",
    "provider": "twilio",
    "channel": "sms",
    "error_code": "PROVIDER_UNAVAILABLE",
    "since": "1h",
    "key": "p:twilio",
    "incident": "0b7e0c7e-0000-4000-8000-000000000000",
    "action": "reply",
}
COMMANDS = [(rb.id, c.line) for rb in RUNBOOKS for c in rb.commands]


def test_every_seed_section_has_a_runbook_or_a_reason() -> None:
    covered = {s for rb in RUNBOOKS for s in rb.sources}
    missing = [s for s in SEED_SECTIONS if s not in covered and s not in NOT_COVERED]
    assert not missing
    assert not covered & set(NOT_COVERED)


def test_ids_and_sources_are_unique() -> None:
    ids = [rb.id for rb in RUNBOOKS]
    sources = [s for rb in RUNBOOKS for s in rb.sources]
    assert len(ids) == len(set(ids))
    assert len(sources) == len(set(sources))


def test_every_rules_runbook_exists() -> None:
    for rule in RULES:
        assert find(rule.runbook).id, rule.name
    assert {r.name for rb in RUNBOOKS for r in rules_for(rb)} == {r.name for r in RULES}


def test_find_by_id_section_or_short_name_and_unknown_names_the_ids() -> None:
    assert find("provider-outage").source == "003#RB-09"
    assert find("003#RB-09").id == find("RB-09").id == find("001#provider-outage").id
    with pytest.raises(NotFound, match=r"no runbook 'nope'.*provider-outage"):
        find("nope")
    with pytest.raises(NotFound, match=r"\(empty\)"):
        find("")


def test_every_check_names_a_probe() -> None:
    for rb in RUNBOOKS:
        for check in (*rb.diagnosis, *rb.verification):
            assert check.probe in PROBES, (rb.id, check.probe)
        assert rb.diagnosis and rb.verification and rb.commands and rb.escalation, rb.id
        assert rb.follow_ups, rb.id  # the postmortem draft seeds its action items with them


def test_every_dry_run_is_a_command_with_dry_run() -> None:
    for rb in RUNBOOKS:
        for c in rb.commands:
            assert ("--dry-run" in c.line) == c.dry_run, (rb.id, c.line)


def _resolve(words: list[str]) -> tuple[click.Command, list[str], str]:
    cmd: click.Command = typer.main.get_command(app)
    path = ["sluice"]
    rest = list(words)
    while isinstance(cmd, click.Group):
        assert rest, f"{' '.join(path)} needs a subcommand"
        name = rest.pop(0)
        sub = cmd.commands.get(name)
        assert sub is not None, f"{' '.join(path)} has no command {name!r}"
        cmd, path = sub, [*path, name]
    return cmd, rest, " ".join(path)


@pytest.mark.parametrize(
    ("runbook", "line"), COMMANDS, ids=[f"{r}:{i}" for i, (r, _) in enumerate(COMMANDS)]
)
def test_every_command_exists_with_its_options(runbook: str, line: str) -> None:
    assert placeholders(line) <= PLACEHOLDERS, line
    words = shlex.split(fill(line, SAMPLE))
    assert words[0] == "sluice", line
    cmd, args, path = _resolve(words[1:])
    known = {o for p in cmd.params for o in getattr(p, "opts", [])}
    for word in args:
        if word.startswith("--"):
            assert word.split("=")[0] in known, f"{path} has no option {word}"
    # Parsing the way `sluice` would (types, choices, arguments), without running it.
    ctx = cmd.make_context(path, [a.replace("<ids>", "1") for a in args])
    ctx.close()


def test_fill_leaves_unknown_slots_visible_and_quotes_odd_values() -> None:
    assert fill("sluice pause --tenant {tenant}", {}) == "sluice pause --tenant <tenant>"
    assert fill("sluice pause --tenant {tenant}", {"tenant": "a b;rm"}) == (
        "sluice pause --tenant 'a b;rm'"
    )


def test_every_dry_run_is_followed_by_its_act() -> None:
    for rb in RUNBOOKS:
        cmds = rb.commands
        for i, c in enumerate(cmds):
            if not c.dry_run:
                continue
            base = c.line.replace(" --dry-run", "")
            act = cmds[i + 1].line if i + 1 < len(cmds) else ""
            assert act.startswith(base) and "--reason" in act, (rb.id, c.line, act)


def test_docs_runbooks_md_is_written_from_the_runbooks() -> None:
    from pathlib import Path

    from sluice.runbooks.docs import markdown

    path = Path(__file__).resolve().parents[2] / "docs" / "runbooks.md"
    assert path.read_text() == markdown(), "run: python -m sluice.runbooks.docs > docs/runbooks.md"


def test_scope_matches_rows_by_their_labels() -> None:
    from datetime import UTC, datetime

    from sluice.ops.runbooks import make_scope

    now = datetime(2026, 1, 1, tzinfo=UTC)
    scope = make_scope("1h", now=now, tenant="acme", action="reply")
    assert scope.matches({"tenant": "acme", "action": "reply", "provider": "twilio"})
    assert scope.matches({"tenant": "", "provider": "twilio"})  # every tenant's breaker
    assert not scope.matches({"tenant": "acme", "action": ""})  # a plain send, not a reply
    assert not scope.matches({"tenant": "globex", "action": "reply"})
