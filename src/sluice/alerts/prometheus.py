"""The rule set as a Prometheus rule file (``deploy/prometheus/sluice-rules.yml``).

Written by hand, not by a YAML library (Sluice has none at run time): the file is one
fixed shape, every string goes out JSON-quoted (a YAML double-quoted scalar) and every
expression as a literal block, so the text is the same on every run and a test can compare
it with the committed file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

from sluice.alerts.rules import RULES, Rule

__all__ = ["GROUP", "prometheus_duration", "prometheus_template", "render_prometheus_rules"]

#: The rule group's name.
GROUP = "sluice"

_HEADER = """\
# Sluice's alert rules for Prometheus: group "sluice", one rule per detection the
# runbooks name (docs/alerts.md lists them with their seeds and runbooks).
# GENERATED from src/sluice/alerts/rules.py -- do not edit here. Regenerate with
#   PYTHONPATH=src python -m sluice.alerts > deploy/prometheus/sluice-rules.yml
# (tests/unit/test_prometheus_rules.py fails while this file and the rules differ).
# Load it with `rule_files: [sluice-rules.yml]` in prometheus.yml.
"""

_FIELD = re.compile(r"\{(\w+)(?::(\w+))?\}")
_VALUE = {
    None: "{{ $value | humanize }}",
    "percent": "{{ $value | humanizePercentage }}",
    "duration": "{{ $value | humanizeDuration }}",
}


def prometheus_template(text: str) -> str:
    """A rule template (``{label}``, ``{value}``, ``{value:percent}``,
    ``{value:duration}``) in Prometheus's template language."""

    def field(m: re.Match[str]) -> str:
        name, form = m.group(1), m.group(2)
        if name == "value":
            return _VALUE[form]
        if form is not None:
            raise ValueError(f"only {{value}} takes a format, not {m.group(0)!r}")
        return "{{ $labels.%s }}" % name  # noqa: UP031  # braces would need doubling twice

    return _FIELD.sub(field, text)


def prometheus_duration(seconds: int) -> str:
    """``90`` -> ``1m30s``; ``0`` -> ``0s``."""
    if seconds == 0:
        return "0s"
    out = []
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        n, seconds = divmod(seconds, size)
        if n:
            out.append(f"{n}{unit}")
    return "".join(out)


def _q(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _rule(r: Rule) -> Iterable[str]:
    yield f"      - alert: {r.name}"
    yield "        expr: |-"
    for line in r.expr.splitlines():
        yield f"          {line}"
    yield f"        for: {prometheus_duration(r.for_seconds)}"
    yield "        labels:"
    yield f"          severity: {r.severity}"
    yield f"          incident_type: {_q(','.join(r.tags))}"
    yield f"          runbook: {_q(r.runbook)}"
    yield "        annotations:"
    yield f"          summary: {_q(prometheus_template(r.summary))}"
    yield f"          description: {_q(prometheus_template(r.description))}"


def render_prometheus_rules(rules: Iterable[Rule] = RULES) -> str:
    """The Prometheus rule file of ``rules`` (all of Sluice's by default)."""
    lines = [_HEADER.rstrip("\n"), "groups:", f"  - name: {GROUP}", "    rules:"]
    for r in rules:
        lines.extend(_rule(r))
    return "\n".join(lines) + "\n"
