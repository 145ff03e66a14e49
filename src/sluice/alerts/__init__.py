"""Detection: Sluice's alert rules, defined once (``rules.py``) and exported to Prometheus
(``prometheus.py``; ``python -m sluice.alerts`` prints the rule file). A built-in
evaluator reads the same ``RULES`` and each rule's ``builtin`` spec.

This package imports nothing of Sluice's beyond itself: it names metrics by their text,
and a test checks every name against ``sluice.metrics``.
"""

from __future__ import annotations

from sluice.alerts.prometheus import render_prometheus_rules
from sluice.alerts.rules import (
    INCIDENT_TYPES,
    ROW_TIME,
    RULES,
    All,
    Builtin,
    Condition,
    Count,
    Latency,
    PrometheusOnly,
    Ratio,
    Rule,
    State,
)

__all__ = [
    "INCIDENT_TYPES",
    "ROW_TIME",
    "RULES",
    "All",
    "Builtin",
    "Condition",
    "Count",
    "Latency",
    "PrometheusOnly",
    "Ratio",
    "Rule",
    "State",
    "render_prometheus_rules",
]
