"""``python -m sluice.alerts``: print the Prometheus rule file (see ``prometheus.py``)."""

from __future__ import annotations

import sys

from sluice.alerts.prometheus import render_prometheus_rules

sys.stdout.write(render_prometheus_rules())
