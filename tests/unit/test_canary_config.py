"""``[canary]`` of ``sluice.toml`` (issue 15): what it gives, and every bad value refused
with an error naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from sluice.errors import ConfigError
from sluice.ops.canary import CanaryConfig, CanaryTarget, canary_config


def config_of(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> CanaryConfig:
    path = tmp_path / "sluice.toml"
    path.write_text(text)
    return canary_config(env or {}, path)


def test_canary_config__defaults_and_overrides_per_target(tmp_path: Path) -> None:
    config = config_of(
        tmp_path,
        """
        [canary]
        interval = "10m"
        targets = [
          { provider = "twilio", recipient = "+15005550006" },
          { provider = "sendgrid", recipient = "canary@example.com", timeout = "30s" },
          { provider = "twilio", recipient = "+15005550006", tenant = "acme", interval = 0 },
        ]
        """,
    )

    assert config.targets == (
        CanaryTarget("twilio", "twilio", "sms", "+15005550006", "_sluice", 600.0, 120.0),
        CanaryTarget("sendgrid", "sendgrid", "email", "canary@example.com", "_sluice", 600.0, 30.0),
        CanaryTarget("twilio:acme", "twilio", "sms", "+15005550006", "acme", 0.0, 120.0),
    )
    assert [t.name for t in config.of("twilio")] == ["twilio", "twilio:acme"]


def test_canary_config__none_without_a_file_or_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert canary_config({}, None).targets == ()
    assert config_of(tmp_path, "[sluice]\n").targets == ()


def test_canary_config__the_environment_sets_the_interval(tmp_path: Path) -> None:
    text = '[canary]\ntargets = [{ provider = "webhook", recipient = "https://r.example/c" }]\n'
    assert config_of(tmp_path, text, {"SLUICE_CANARY_INTERVAL": "off"}).targets[0].interval == 0
    assert config_of(tmp_path, text, {"SLUICE_CANARY_INTERVAL": "90s"}).targets[0].interval == 90
    with pytest.raises(ConfigError, match="SLUICE_CANARY_INTERVAL"):
        config_of(tmp_path, text, {"SLUICE_CANARY_INTERVAL": "-5m"})


T = '{ provider = "twilio", recipient = "+15005550006" }'


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("canary = 3", "[canary] must be a table"),
        ('[canary]\ntenant = "acme"', "[canary].tenant"),
        ("[canary]\ntenant = 7", "[canary].tenant"),
        ('[canary]\ninterval = "nan"', "[canary].interval"),
        ('[canary]\ninterval = "5y"', "[canary].interval"),
        ("[canary]\ninterval = -1", "[canary].interval"),
        ("[canary]\ninterval = inf", "[canary].interval"),
        ("[canary]\ntimeout = 0", "[canary].timeout"),
        ("[canary]\ntimeout = 1e300", "[canary].timeout"),
        ("[canary]\nsurprise = 1", "unknown field(s) ['surprise']"),
        ('[canary]\ntargets = "twilio"', "[canary].targets"),
        ("[canary]\ntargets = [3]", "[canary].targets[0] must be a table"),
        ('[canary]\ntargets = [{ provider = "nope", recipient = "x" }]', "targets[0].provider"),
        ('[canary]\ntargets = [{ provider = "twilio" }]', "targets[0].recipient"),
        (
            '[canary]\ntargets = [{ provider = "twilio", recipient = " +1" }]',
            "targets[0].recipient",
        ),
        (
            '[canary]\ntargets = [{ provider = "twilio", recipient = "+1", channel = "email" }]',
            "targets[0].channel",
        ),
        ('[canary]\ntargets = [{ provider = "http", recipient = "x" }]', "targets[0].channel"),
        (f"[canary]\ntargets = [{T}, {T}]", "targets[1].name"),
        (
            '[canary]\ntargets = [{ provider = "twilio", recipient = "+1", interval = "soon" }]',
            "targets[0].interval",
        ),
        (
            '[canary]\ntargets = [{ provider = "twilio", recipient = "+1", timeout = false }]',
            "targets[0].timeout",
        ),
        (
            '[canary]\ntargets = [{ provider = "twilio", recipient = "+1", payload = "hi" }]',
            "targets[0].payload",
        ),
        (
            '[canary]\ntargets = [{ provider = "twilio", recipient = "+1", colour = "red" }]',
            "targets[0]: unknown field(s) ['colour']",
        ),
    ],
)
def test_canary_config__refuses_a_bad_value_by_name(tmp_path: Path, text: str, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        config_of(tmp_path, text)
    assert field in str(err.value)
