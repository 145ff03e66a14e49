"""Producer and worker read the same NOTIFY coalescing interval."""

from __future__ import annotations

import pytest

from sluice.config import load_settings, notify_interval
from sluice.errors import ConfigError
from sluice.store.postgres import _Notifier


def test_notify_interval__defaults_to_the_settings_default() -> None:
    assert notify_interval({}) == load_settings(env={}).notify_interval == 0.2


def test_notify_interval__environment_reaches_the_producer_as_it_reaches_the_worker() -> None:
    env = {"SLUICE_NOTIFY_INTERVAL": "0.05"}
    assert notify_interval(env) == load_settings(env=env).notify_interval == 0.05


@pytest.mark.parametrize("raw", ["soon", "-1", "nan", "inf"])
def test_notify_interval__bad_value_is_named(raw: str) -> None:
    with pytest.raises(ConfigError, match="SLUICE_NOTIFY_INTERVAL"):
        notify_interval({"SLUICE_NOTIFY_INTERVAL": raw})


def test_notifier__zero_interval_notifies_every_enqueue() -> None:
    notifier = _Notifier(0.0)
    assert notifier.due({"sms"}) == ["sms"]
    assert notifier.due({"sms"}) == ["sms"]


def test_notifier__coalesces_within_the_interval_per_channel() -> None:
    notifier = _Notifier(3600.0)
    assert notifier.due({"sms"}) == ["sms"]
    assert notifier.due({"sms"}) == []
    assert notifier.due({"email"}) == ["email"]
