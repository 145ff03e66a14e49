"""The rules of recipient hygiene (``sluice.flow.hygiene``): pure, no store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sluice.errors import ValidationError
from sluice.flow.hygiene import (
    check_suppression,
    is_template,
    medium_of,
    normalise,
    opt_keyword,
    window_open,
)

NOW = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("channel", "given", "kept"),
    [
        ("sms", "+14155550100", "+14155550100"),
        ("whatsapp", "whatsapp:+14155550100", "+14155550100"),
        ("whatsapp", "14155550100", "+14155550100"),
        ("whatsapp", " +14155550100 ", "+14155550100"),
        ("email", "Ann@Example.COM", "ann@example.com"),
    ],
)
def test_every_spelling_of_one_person_is_one_entry(channel: str, given: str, kept: str) -> None:
    assert normalise(channel, given) == kept
    assert check_suppression("acme", channel, given) == kept


@pytest.mark.parametrize(
    ("tenant", "channel", "recipient", "field"),
    [
        ("acme", "sms", "\ud800", "recipient"),  # a lone surrogate
        ("acme", "sms", "+1" + "5" * 10_000, "recipient"),  # huge
        ("acme", "sms", "+14155550100\x00", "recipient"),
        ("acme", "sms", "4155550100", "recipient"),
        ("acme", "email", "a@b", "recipient"),
        ("acme", "email", "x" * 300 + "@example.com", "recipient"),
        ("acme", "webhook", "https://example.com", "channel"),
        ("acme", "SMS", "+14155550100", "channel"),
        ("", "sms", "+14155550100", "tenant"),
        (" acme", "sms", "+14155550100", "tenant"),
        ("ac\ud800me", "sms", "+14155550100", "tenant"),
        ("a" * 129, "sms", "+14155550100", "tenant"),
        ("acme", "sms", None, "recipient"),
    ],
)
def test_check_suppression__names_the_bad_field(
    tenant: str, channel: str, recipient: object, field: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        check_suppression(tenant, channel, recipient)
    assert caught.value.field == field


def test_check_suppression__source_is_short_storable_text() -> None:
    for source in ("\ud800", "x" * 513, "a\x00b"):
        with pytest.raises(ValidationError) as caught:
            check_suppression("acme", "sms", "+14155550100", source)
        assert caught.value.field == "source"


@pytest.mark.parametrize(
    ("body", "word"),
    [
        ("STOP", "stop"), (" stop\n", "stop"), ("Unsubscribe", "stop"), ("stopall", "stop"),
        ("cancel", "stop"), ("END", "stop"), ("quit", "stop"),
        ("START", "start"), ("unstop", "start"), ("yes", "start"),
        ("please stop", None), ("STOP!", None), ("", None), (None, None), (42, None),
        ("STOP" * 100, None), ("\ud800", None),
    ],
)  # fmt: skip
def test_opt_keyword__only_a_keyword_alone(body: object, word: str | None) -> None:
    assert opt_keyword(body) == word


def test_medium_of__a_channel_of_ones_own_goes_as_the_providers_medium() -> None:
    assert medium_of("sms", "twilio") == "sms"
    assert medium_of("otp", "twilio") == "sms"
    assert medium_of("receipts", "sendgrid") == "email"
    assert medium_of("whatsapp", "twilio") == "whatsapp"
    assert medium_of("webhook", "webhook") is None
    assert medium_of("crm", "http") is None
    assert medium_of("otp", "nonesuch") is None


def test_templates_and_the_window() -> None:
    assert is_template({"template": {"name": "x", "language": "en"}})
    assert is_template({"content_sid": "HX1"})
    assert not is_template({"body": "hi"})
    assert window_open(NOW - timedelta(hours=23, minutes=59), NOW, 24)
    assert not window_open(NOW - timedelta(hours=24), NOW, 24)
    assert not window_open(None, NOW, 24)
