"""The alert rules (``sluice.alerts``), their Prometheus file, its promtool tests and the
Grafana dashboard agree with each other and with the metrics Sluice exports.

promtool comes from Debian's ``prometheus`` package; without it these tests fail (never
skip) and say how to install it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from sluice import metrics
from sluice.alerts import (
    INCIDENT_TYPES,
    ROW_TIME,
    RULES,
    All,
    Condition,
    Count,
    Latency,
    PrometheusOnly,
    Ratio,
    State,
    render_prometheus_rules,
)

ROOT = Path(__file__).resolve().parents[2]
RULE_FILE = ROOT / "deploy" / "prometheus" / "sluice-rules.yml"
TESTS = sorted((ROOT / "deploy" / "prometheus" / "tests").glob("*.yml"))
DASHBOARD = ROOT / "deploy" / "grafana" / "sluice.json"


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail(
            "promtool is missing: install Debian's prometheus package "
            "(apt-get install -y prometheus), which ships it; .ci/run does this itself"
        )
    return found


def _exported_names() -> set[str]:
    names = {s.name for s in metrics.STATE}
    for m in metrics.EVENT_METRICS:
        family = m.describe()[0]
        if family.type == "counter":
            names.add(family.name + "_total")
        else:
            names.update(family.name + s for s in ("_bucket", "_sum", "_count"))
    return names


def _metric_names(expr: str) -> set[str]:
    without_strings = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)
    return set(re.findall(r"\bsluice_[a-z0-9_]+", without_strings))


def _dashboard_exprs() -> list[tuple[str, str]]:
    board = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"])
        for panel in board["panels"]
        for target in panel.get("targets", [])
    ]


def test_rule_file__is_what_the_rules_render() -> None:
    assert RULE_FILE.read_text() == render_prometheus_rules(), (
        "deploy/prometheus/sluice-rules.yml is stale: regenerate it with "
        "PYTHONPATH=src python -m sluice.alerts > deploy/prometheus/sluice-rules.yml"
    )


def test_rule_file__parses_to_one_group_with_every_rule_labelled() -> None:
    doc = yaml.safe_load(RULE_FILE.read_text())
    (group,) = doc["groups"]
    assert group["name"] == "sluice"
    assert [r["alert"] for r in group["rules"]] == [r.name for r in RULES]
    for data, r in zip(group["rules"], RULES, strict=True):
        assert data["labels"] == {
            "severity": r.severity,
            "incident_type": ",".join(r.tags),
            "runbook": r.runbook,
        }
        assert set(data["annotations"]) == {"summary", "description"}
        assert data["expr"] == r.expr
        assert re.fullmatch(r"(\d+[hms])+", data["for"])


def test_promtool__checks_the_rule_file() -> None:
    done = subprocess.run(
        [_promtool(), "check", "rules", str(RULE_FILE)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool__unit_tests_pass() -> None:
    assert TESTS, "no promtool tests in deploy/prometheus/tests"
    done = subprocess.run(
        [_promtool(), "test", "rules", *map(str, TESTS)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_tests__every_rule_fires_once_and_stays_quiet_once() -> None:
    fires: set[str] = set()
    quiet: set[str] = set()
    for path in TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {r.name for r in RULES}
    assert names - fires == set(), "rules without a test that fires"
    assert names - quiet == set(), "rules without a near miss that stays quiet"


def test_rules__are_well_formed() -> None:
    assert len({r.name for r in RULES}) == len(RULES)
    for r in RULES:
        assert re.fullmatch(r"Sluice[A-Z][A-Za-z0-9]+", r.name), r.name
        assert r.severity in {"P0", "P1", "P2", "P3"}, r.name
        assert r.tags and set(r.tags) <= INCIDENT_TYPES, r.name
        assert re.fullmatch(r"00[0-4]#[A-Za-z0-9.-]+", r.runbook), r.name
        assert r.seed and r.condition, r.name
        for text in (r.summary, r.description):
            for name, _ in re.findall(r"\{(\w+)(?::(\w+))?\}", text):
                assert name == "value" or name in r.scope, (r.name, name)


def test_rules__a_tenancy_violation_is_p0_safety() -> None:
    (rule,) = [r for r in RULES if r.name == "SluiceTenancyViolation"]
    assert (rule.severity, rule.tags, rule.runbook) == ("P0", ("SAFETY",), "003#RB-01")


def _groups(c: Condition) -> tuple[str, ...]:
    if isinstance(c, All):
        return _groups(c.conditions[0])
    return c.by


def _check_builtin(c: Condition) -> None:
    state = {s.name: s for s in metrics.STATE}
    if isinstance(c, State):
        assert c.metric in state, c.metric
        labels = set(state[c.metric].labels)
        assert set(c.by) <= labels and {k for k, _ in c.where} <= labels, c
    elif isinstance(c, Count | Ratio):
        assert c.table in ROW_TIME and (not isinstance(c, Ratio) or c.over in (None, *ROW_TIME))
    elif isinstance(c, Latency):
        assert 0 < c.quantile < 1
    else:
        assert isinstance(c, All) and c.conditions
        for inner in c.conditions:
            _check_builtin(inner)


def test_rules__builtin_spec_reads_what_the_store_has_and_scopes_like_the_alert() -> None:
    for r in RULES:
        if isinstance(r.builtin, PrometheusOnly):
            assert r.builtin.reason
            continue
        _check_builtin(r.builtin)
        assert set(_groups(r.builtin)) == set(r.scope), r.name


def test_rules_and_dashboard__name_only_metrics_sluice_exports() -> None:
    exported = _exported_names()
    exprs = [(r.name, r.expr) for r in RULES] + _dashboard_exprs()
    unknown = {(where, name) for where, expr in exprs for name in _metric_names(expr) - exported}
    assert unknown == set()
    assert all(_metric_names(expr) for _, expr in exprs)


def test_dashboard__shows_the_panels_seed_002_lists_and_asks_for_a_datasource() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["schemaVersion"] >= 39
    (var,) = [v for v in board["templating"]["list"] if v["type"] == "datasource"]
    assert var["name"] == "datasource"
    for panel in board["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
    exprs = " ".join(e for _, e in _dashboard_exprs())
    for metric in (
        "sluice_messages",  # queue depth by status
        "sluice_delivery_latency_seconds_bucket",  # latency percentiles
        "sluice_attempts_total",  # failure rate by error code
        "sluice_dead_letters",  # DLQ size
        "sluice_quota_use_ratio",  # quota use
        "sluice_breaker_open",
        "sluice_held_messages",
        "sluice_ingress_requests_total",
        "sluice_workers_live",
    ):
        assert metric in _metric_names(exprs), metric


def test_docs__list_every_rule_with_its_severity_and_runbook() -> None:
    doc = (ROOT / "docs" / "alerts.md").read_text()
    rows = {
        cells[0].strip("` "): cells
        for line in doc.splitlines()
        if line.startswith("| `Sluice")
        for cells in [[c.strip() for c in line.strip("|").split("|")]]
    }
    assert set(rows) == {r.name for r in RULES}
    for r in RULES:
        assert rows[r.name][1] == r.severity and rows[r.name][3] == f"`{r.runbook}`", r.name
