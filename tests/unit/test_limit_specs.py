"""Limit declarations: what ``[[limits]]`` accepts, and clear errors for what it does not."""

from __future__ import annotations

import pytest

from sluice.errors import ConfigError, ValidationError
from sluice.flow.limits import LimitSpec, merge, parse_limits, validate_runtime


def test_parse__each_kind_with_defaults() -> None:
    specs = parse_limits(
        [
            {"kind": "rate", "provider": "twilio", "rate": 100},
            {
                "kind": "quota",
                "tenant": "acme",
                "provider": "whatsapp",
                "limit": 1000,
                "window": "1d",
                "urgent_priority": 5,
            },
            {"kind": "recipient", "action": "reply", "max": 3, "window": "1h", "cooldown": "10m"},
            {"kind": "action", "action": "reminder", "max": 10000, "window": 86400},
            {"kind": "concurrency", "provider": "twilio", "max": 20},
        ]
    )
    rate, quota, recipient, action, concurrency = specs
    assert (rate.rate, rate.burst) == (100, 100.0)  # burst defaults to one second's worth
    assert (quota.window, quota.reserve, quota.urgent_priority) == (86400.0, 0.05, 5)
    assert (recipient.max, recipient.window, recipient.cooldown) == (3, 3600.0, 600.0)
    assert action.window == 86400.0
    assert concurrency.max == 20
    assert rate.label() == "rate(provider=twilio)"


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({"kind": "speed", "rate": 1}, "limits[0].kind must be one of"),
        ({"kind": "rate"}, "a rate limit needs rate"),
        ({"kind": "rate", "rate": 0}, "limits[0].rate must be greater than 0"),
        ({"kind": "rate", "rate": -5}, "limits[0].rate must be greater than 0"),
        ({"kind": "rate", "rate": "fast"}, "limits[0].rate must be a number"),
        ({"kind": "rate", "rate": True}, "limits[0].rate must be a number"),
        ({"kind": "rate", "rate": 10, "burst": 0.5}, "burst must be at least 1"),
        ({"kind": "quota", "limit": 10}, "a quota limit needs window"),
        ({"kind": "quota", "limit": 10.5, "window": "1d"}, "limit must be a whole number"),
        ({"kind": "quota", "limit": 10, "window": "soon"}, "is not a duration"),
        ({"kind": "quota", "limit": 10, "window": "1d", "reserve": 1.5}, "reserve must be"),
        ({"kind": "recipient", "max": 3}, "needs max and window, or cooldown"),
        ({"kind": "quota", "limit": 9, "window": "1d", "reset": "7am"}, "reset must be"),
        ({"kind": "quota", "limit": 9, "window": "1d", "reset": "24:00"}, "reset must be"),
        ({"kind": "quota", "limit": 9, "window": "2d", "reset": "07:00"}, "divides a day"),
        ({"kind": "quota", "limit": 9, "window": "7h", "reset": "07:00"}, "divides a day"),
        ({"kind": "action", "max": 9, "window": "1d", "reset": "07:00"}, "reset is for quota"),
        ({"kind": "rate", "rate": 1, "colour": "red"}, "unknown field 'colour'"),
        ({"kind": "rate", "rate": 1, "tenant": 7}, "limits[0].tenant must be text"),
    ],
)
def test_parse__bad_entries_are_named(entry: dict[str, object], problem: str) -> None:
    with pytest.raises(ConfigError, match=r"sluice\.toml: ") as excinfo:
        parse_limits([entry])
    assert problem in str(excinfo.value)


def test_parse__quota_windows_roll_unless_given_the_providers_reset() -> None:
    rolling, fixed, named = parse_limits(
        [
            {"kind": "quota", "provider": "twilio", "limit": 9, "window": "1d"},
            {"kind": "quota", "provider": "sendgrid", "limit": 9, "window": "1d",
             "reset": "07:30"},
            {"kind": "quota", "provider": "whatsapp", "limit": 9, "window": "1d",
             "reset": "rolling"},
        ]
    )  # fmt: skip
    assert (rolling.reset, rolling.anchor) == (None, None)
    assert (fixed.reset, fixed.anchor) == ("07:30", 7.5 * 3600)
    assert (named.reset, named.anchor) == ("rolling", None)
    assert fixed.spec_dict()["reset"] == "07:30"  # kept for a run-time limit


def test_parse__a_repeated_scope_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"limits\[1\] repeats limits\[0\]"):
        parse_limits([{"kind": "rate", "rate": 1}, {"kind": "rate", "rate": 2}])


def test_parse__not_an_array_of_tables() -> None:
    with pytest.raises(ConfigError, match=r"\[\[limits\]\]"):
        parse_limits({"kind": "rate"})


def test_runtime__bad_input_is_a_validation_error() -> None:
    with pytest.raises(ValidationError, match="must be greater than 0") as excinfo:
        validate_runtime({"kind": "rate", "rate": -1})
    assert excinfo.value.field == "rate"


def test_merge__runtime_replaces_the_configured_limit_of_the_same_scope() -> None:
    configured = parse_limits([{"kind": "rate", "tenant": "a", "rate": 10}])
    runtime = [LimitSpec.parse({"kind": "rate", "tenant": "a", "rate": 2}, "x", "runtime")]
    [merged] = merge(configured, runtime)
    assert (merged.rate, merged.source) == (2, "runtime")
