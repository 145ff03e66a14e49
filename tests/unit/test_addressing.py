"""Enqueue refuses a message that could only ever be dead-lettered: a provider Sluice does
not have, or a channel its provider does not serve. The error names the field and says
what is accepted; the configuration in effect (``sluice.toml``) supplies the aliases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sluice import NewMessage, ValidationError
from sluice.addressing import Addressing, addressing_in_effect
from sluice.store._enqueue import prepare

ALIASES = """
[providers."twilio-backup"]
kind = "twilio"

[providers."mail-eu"]
kind = "sendgrid"
"""


def msg(**kw: Any) -> NewMessage:
    fields: dict[str, Any] = {
        "tenant": "acme",
        "channel": "webhook",
        "provider": "webhook",
        "recipient": "https://hooks.acme.example/orders",
    }
    fields.update(kw)
    return NewMessage(**fields)


def rejected(field: str, message: NewMessage, addressing: Addressing | None = None) -> str:
    with pytest.raises(ValidationError) as excinfo:
        message.validate(addressing=addressing)
    assert excinfo.value.field == field, str(excinfo.value)
    return excinfo.value.problem


@pytest.fixture
def no_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No sluice.toml in effect: a directory without one, and no SLUICE_CONFIG."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SLUICE_CONFIG", raising=False)


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A sluice.toml declaring two aliases, in effect through SLUICE_CONFIG."""
    path = tmp_path / "elsewhere.toml"
    path.write_text(ALIASES)
    monkeypatch.setenv("SLUICE_CONFIG", str(path))
    return path


# -- provider names -----------------------------------------------------------------


@pytest.mark.usefixtures("no_config")
@pytest.mark.parametrize("provider", ["webhook", "null", "http"])
def test_provider__every_built_in_provider_is_accepted(provider: str) -> None:
    msg(provider=provider).validate()


@pytest.mark.usefixtures("no_config")
@pytest.mark.parametrize("provider", ["twillio", "bravo:twilio", "Twilio", "carrier-pigeon"])
def test_provider__an_unknown_name_is_refused_listing_what_is_accepted(provider: str) -> None:
    problem = rejected("provider", msg(channel="sms", provider=provider))
    assert repr(provider) in problem
    assert "http, null, sendgrid, twilio, webhook, whatsapp" in problem
    assert '[providers."name"]' in problem
    assert "none declared" in problem


@pytest.mark.usefixtures("no_config")
def test_provider__a_near_miss_suggests_the_provider_meant() -> None:
    assert "did you mean 'twilio'?" in rejected("provider", msg(provider="twillio"))


def test_provider__an_alias_of_the_sluice_toml_in_effect_is_accepted(config: Path) -> None:
    msg(channel="email", provider="mail-eu", recipient="ann@example.com").validate()
    problem = rejected("provider", msg(provider="twilio-bakup"))
    assert "did you mean 'twilio-backup'?" in problem
    assert "declared: mail-eu, twilio-backup" in problem
    assert str(config) in problem


def test_provider__an_alias_added_to_the_file_is_seen_without_a_restart(config: Path) -> None:
    late = msg(channel="email", provider="mail-us", recipient="ann@example.com")
    rejected("provider", late)
    config.write_text(ALIASES + '\n[providers."mail-us"]\nkind = "sendgrid"\n')
    late.validate()


def test_provider__the_configuration_is_parsed_once_while_it_does_not_change(
    config: Path,
) -> None:
    assert addressing_in_effect() is addressing_in_effect()


def test_provider__in_a_batch_the_error_names_the_message(config: Path) -> None:
    batch = [msg(), msg(), msg(provider="twillio")]
    with pytest.raises(ValidationError) as excinfo:
        prepare(batch)
    assert excinfo.value.field == "messages[2].provider"


# -- channels each provider serves ----------------------------------------------------


@pytest.mark.usefixtures("no_config")
@pytest.mark.parametrize(
    ("provider", "channel", "accepted"),
    [
        ("sendgrid", "sms", "'email'"),
        ("twilio", "email", "'sms' or 'whatsapp'"),
        ("whatsapp", "sms", "'whatsapp'"),
        ("webhook", "email", "'webhook'"),
    ],
)
def test_channel__one_its_provider_does_not_serve_is_refused(
    provider: str, channel: str, accepted: str
) -> None:
    problem = rejected("channel", msg(provider=provider, channel=channel))
    assert repr(channel) in problem and provider in problem
    assert problem.endswith(f"use {accepted}")


def test_channel__an_alias_serves_the_channels_of_its_kind(config: Path) -> None:
    problem = rejected("channel", msg(provider="twilio-backup", channel="email"))
    assert "twilio-backup (twilio)" in problem


@pytest.mark.usefixtures("no_config")
@pytest.mark.parametrize("provider", ["null", "http"])
def test_channel__null_and_http_take_any_channel(provider: str) -> None:
    msg(provider=provider, channel="crm", recipient="contact-42").validate()
