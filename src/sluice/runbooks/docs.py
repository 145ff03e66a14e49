"""``docs/runbooks.md``, written from the runbooks themselves (a test keeps the file equal
to :func:`markdown`; regenerate it with ``python -m sluice.runbooks.docs > docs/runbooks.md``)."""

from __future__ import annotations

from sluice.runbooks.catalog import NOT_COVERED, RUNBOOKS
from sluice.runbooks.model import Check, Command, Runbook

__all__ = ["markdown"]


def _rules(rb: Runbook) -> str:
    from sluice.alerts.rules import RULES

    names = [r.name for r in RULES if r.runbook in rb.sources]
    return ", ".join(f"`{n}`" for n in names) or "—"


def _checks(checks: tuple[Check, ...]) -> list[str]:
    return [f"{i}. `{c.probe}`: {c.looks_for}" for i, c in enumerate(checks, 1)]


def _commands(cmds: tuple[Command, ...]) -> list[str]:
    return [f"{i}. `{c.line}` — {c.why}" for i, c in enumerate(cmds, 1)]


def markdown() -> str:
    """Every runbook: the index, then each one in full."""
    out = [
        "# Runbooks",
        "",
        "Every runbook of the seeds in which Sluice has a part, as `sluice runbook show ID`",
        "prints it (written from `src/sluice/runbooks/catalog.py`; a test keeps this file in",
        "step: `python -m sluice.runbooks.docs > docs/runbooks.md`). `sluice runbook diagnose",
        "ID` runs the checks against the store now and fills the commands' `{slots}` with the",
        "scope asked for or what the checks found; `sluice incidents show ID` does it for the",
        "incident's runbook.",
        "",
        "| id | seed | title | alert rules |",
        "| --- | --- | --- | --- |",
    ]
    for rb in RUNBOOKS:
        seeds = ", ".join(f"`{s}`" for s in rb.sources)
        out.append(f"| [`{rb.id}`](#{rb.id}) | {seeds} | {rb.title} | {_rules(rb)} |")
    out += ["", "Not covered: " + "; ".join(f"`{k}` ({v})" for k, v in NOT_COVERED.items()), ""]
    for rb in RUNBOOKS:
        out += [f"## {rb.id}", "", f"**{rb.title}** (seed {', '.join(rb.sources)}). {rb.summary}"]
        out += ["", "Diagnosis:", "", *_checks(rb.diagnosis)]
        out += ["", "Containment:", "", *_commands(rb.containment)]
        out += ["", "Recovery:", "", *_commands(rb.recovery)]
        out += ["", "Verification:", "", *_checks(rb.verification)]
        out += ["", "Escalation:", "", *[f"- {e}" for e in rb.escalation]]
        if rb.follow_ups:
            out += ["", "Follow-ups:", "", *[f"- {f}" for f in rb.follow_ups]]
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    import sys

    sys.stdout.write(markdown())
