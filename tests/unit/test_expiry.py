"""Message expiry's rules (issue 14): hostile ttl and expires_at values are refused naming
the field; the ``[expiry]`` table of sluice.toml is read with the message's own first."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from sluice import NewMessage, ValidationError
from sluice.errors import ConfigError
from sluice.expiry import MAX_TTL, ExpiryRules, check_ttl, past, rules_in_effect
from sluice.model import content_hash
from sluice.store._enqueue import prepare


def msg(**kw: Any) -> NewMessage:
    fields: dict[str, Any] = {
        "tenant": "acme", "channel": "webhook", "provider": "null",
        "recipient": "https://example.test/hook",
    }  # fmt: skip
    fields.update(kw)
    return NewMessage(**fields)


@pytest.mark.parametrize(
    "ttl",
    [
        0,
        -1,
        -0.0,
        float("nan"),
        float("inf"),
        -float("inf"),
        True,
        False,
        MAX_TTL + 1,
        1e308,
        10**400,
        "5m",
        "300",
        [5],
        {"s": 5},
        b"5",
    ],
)
def test_ttl__hostile_values_are_refused_naming_it(ttl: Any) -> None:
    with pytest.raises(ValidationError) as err:
        msg(ttl=ttl).validate()
    assert err.value.field == "ttl"


@pytest.mark.parametrize(
    ("expires_at", "says"),
    [
        (datetime(2030, 1, 1), "timezone-aware"),  # naive
        ("2030-01-01T00:00:00Z", "timezone-aware"),  # text is not a datetime here
        (datetime.now(UTC) - timedelta(seconds=1), "already past"),
        (datetime(1970, 1, 1, tzinfo=UTC), "already past"),
        (datetime.now(UTC) + timedelta(days=400), "366 days"),
        (datetime(9999, 12, 31, 23, 59, tzinfo=timezone(timedelta(hours=-15))), "range"),
    ],
)
def test_expires_at__hostile_values_are_refused_naming_it(expires_at: Any, says: str) -> None:
    with pytest.raises(ValidationError) as err:
        msg(expires_at=expires_at).validate("messages[2].")
    assert err.value.field == "messages[2].expires_at"
    assert says in str(err.value) or says == "range"


def test_expires_at_and_ttl__not_both_and_hashed_only_when_given() -> None:
    soon = datetime.now(UTC) + timedelta(minutes=5)
    with pytest.raises(ValidationError) as err:
        msg(expires_at=soon, ttl=60).validate()
    assert err.value.field == "expires_at"
    plain = msg()
    assert content_hash(plain, "{}") == content_hash(msg(id=plain.id), "{}")
    assert content_hash(msg(ttl=60), "{}") != content_hash(plain, "{}")
    assert content_hash(msg(ttl=60), "{}") != content_hash(msg(ttl=61), "{}")
    msg(ttl=60).validate()
    msg(ttl=0.5).validate()
    msg(expires_at=soon.astimezone(timezone(timedelta(hours=5)))).validate()


def test_check_ttl__durations_in_words() -> None:
    assert check_ttl("90s", "x") == 90 and check_ttl("15m", "x") == 900
    assert check_ttl("2h", "x") == 7200 and check_ttl("1d", "x") == 86400
    assert check_ttl(" 30 ", "x") == 30
    for bad in ("", "m", "1w", "-5m", "0s", "nan", "infs", "1e999s", "x" * 100, "\uff15m"):
        with pytest.raises(ValidationError):
            check_ttl(bad, "x")


def test_past__only_at_or_after_the_expiry() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    m = msg()
    assert not past(m, at)  # no expiry: never
    m.expires_at = at
    assert past(m, at) and past(m, at + timedelta(seconds=1))
    assert not past(m, at - timedelta(microseconds=1))


def test_rules__the_message_then_action_then_channel_then_default() -> None:
    rules = ExpiryRules.from_table(
        {"default": "1d", "action": {"otp.send": "5m"}, "channel": {"sms": 3600}}
    )
    assert rules.ttl_for("sms", "otp.send") == 300
    assert rules.ttl_for("sms", "reminder") == 3600
    assert rules.ttl_for("email", "reminder") == 86400
    assert ExpiryRules.from_table(None).ttl_for("sms", "x") is None


@pytest.mark.parametrize(
    ("table", "names"),
    [
        ([1], "[expiry] must be a table"),
        ({"defualt": "1h"}, "defualt"),
        ({"default": "forever"}, "expiry.default"),
        ({"default": 0}, "expiry.default"),
        ({"action": {"otp": float("nan")}}, "expiry.action.otp"),
        ({"channel": {"sms": -5}}, "expiry.channel.sms"),
        ({"channel": "sms"}, "expiry.channel"),
    ],
)
def test_rules__a_wrong_table_is_a_config_error_naming_the_entry(table: Any, names: str) -> None:
    with pytest.raises(ConfigError) as err:
        ExpiryRules.from_table(table, "sluice.toml")
    assert names in str(err.value)


def test_prepare__applies_the_configured_default_unless_the_message_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "sluice.toml"
    config.write_text('[expiry]\ndefault = "1h"\n[expiry.action]\n"otp.send" = "5m"\n')
    monkeypatch.setenv("SLUICE_CONFIG", str(config))
    soon = datetime.now(UTC) + timedelta(minutes=1)
    rows = prepare([msg(), msg(action="otp.send"), msg(ttl=7), msg(expires_at=soon)])
    assert [r.ttl for r in rows] == [3600, 300, 7, None]
    assert rules_in_effect().default == 3600
    config.write_text('[expiry]\ndefault = "soon"\n')
    with pytest.raises(ConfigError):
        prepare([msg()])
    # A message naming its own expiry needs no sluice.toml, readable or not.
    assert [r.ttl for r in prepare([msg(ttl=5)])] == [5]
    # A file that is not TOML (a typo anywhere) fails no enqueue; no worker starts on it.
    config.write_text("not toml [")
    assert [r.ttl for r in prepare([msg(ttl=5), msg()])] == [5, None]
