"""Bad values for the metrics and alert settings are refused by name, and the tenant
label budget keeps its promise."""

from __future__ import annotations

import asyncio
import math
import socket

import pytest

from sluice import metrics
from sluice.config import Settings
from sluice.errors import ConfigError
from sluice.ops.state_metrics import metrics_server


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("metrics_tenants", "lots", "SLUICE_METRICS_TENANTS"),
        ("metrics_tenants", "-3", "SLUICE_METRICS_TENANTS"),
        ("metrics_port", 70_000, "SLUICE_METRICS_PORT"),
        ("metrics_port", -1, "SLUICE_METRICS_PORT"),
        ("metrics_refresh", 0.0, "SLUICE_METRICS_REFRESH"),
        ("metrics_refresh", math.nan, "SLUICE_METRICS_REFRESH"),
        ("alerts_interval", -1.0, "SLUICE_ALERTS_INTERVAL"),
        ("alerts_clear_for", math.inf, "SLUICE_ALERTS_CLEAR_FOR"),
        ("alerts_escalate_after", -5.0, "SLUICE_ALERTS_ESCALATE_AFTER"),
    ],
)
def test_bad_settings_are_named(field: str, value: object, named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        Settings(**{field: value})  # type: ignore[arg-type]


def test_tenant_budget__the_first_n_keep_their_name() -> None:
    try:
        metrics.configure_tenants("2")
        assert [metrics.tenant_label(t) for t in ("a", "b", "c", "a")] == ["a", "b", "_other", "a"]
        metrics.configure_tenants("off")
        assert metrics.tenant_label("a") == "_other"
    finally:
        metrics.configure_tenants("all")
    assert metrics.tenant_label("c") == "c"


def test_a_metrics_port_in_use_is_an_error_naming_the_setting() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = Settings(metrics_port=taken.getsockname()[1])

        async def serve() -> None:
            async with metrics_server(settings, None):
                pass

        with pytest.raises(ConfigError, match="SLUICE_METRICS_PORT"):
            asyncio.run(serve())
