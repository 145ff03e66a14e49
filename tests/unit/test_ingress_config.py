"""``[ingress.*]`` of sluice.toml: who may post, and whom each credential speaks for."""

from __future__ import annotations

import re
from typing import Any

import pytest

from sluice.errors import ConfigError
from sluice.ingress.config import parse_ingress

ENV = {"ACME_TOKEN": "acme-secret", "GLOBEX_TOKEN": "globex-secret", "SHARED": "shared"}


def parse(table: dict[str, Any]) -> Any:
    return parse_ingress({"ingress": table}, env=ENV)


def test_tenant_secrets__each_token_speaks_for_its_tenant() -> None:
    config = parse({"twilio": {
        "secrets": ["env:SHARED"],
        "tenant_secrets": {"acme": ["env:ACME_TOKEN"], "globex": "env:GLOBEX_TOKEN"},
    }})  # fmt: skip
    assert config.sources["twilio"].credentials() == [
        (None, ("shared",)),
        ("acme", ("acme-secret",)),
        ("globex", ("globex-secret",)),
    ]


def test_tenant__makes_every_secret_of_the_source_speak_for_it() -> None:
    config = parse({"partner": {"kind": "webhook", "secrets": ["whsec_a"], "tenant": "acme"}})
    assert config.sources["partner"].credentials() == [("acme", ("whsec_a",))]


def test_sendgrid__keys_per_tenant() -> None:
    config = parse({"sendgrid": {"tenant_public_keys": {"acme": ["KEY-A"]}}})
    assert config.sources["sendgrid"].credentials() == [("acme", ("KEY-A",))]


@pytest.mark.parametrize(
    ("table", "words"),
    [
        ({"twilio": {"tenant_secrets": {"acme": ["x"], "globex": ["x"]}}}, "same secret"),
        ({"twilio": {"secrets": ["x"], "tenant_secrets": {"acme": ["x"]}}}, "same secret"),
        ({"twilio": {"tenant": "acme", "tenant_secrets": {"acme": ["x"]}}}, "exclude each other"),
        ({"twilio": {"tenant_secrets": {"acme": []}}}, "lists no secrets"),
        ({"twilio": {"tenant_secrets": {" acme": ["x"]}}}, "not a tenant name"),
        ({"twilio": {"tenant_secrets": ["x"]}}, "must map tenant names"),
        ({"twilio": {"tenant_secrets": {"acme": ["env:NOPE"]}}}, "NOPE, which is not set"),
        ({"twilio": {}}, "needs secrets (or tenant_secrets)"),
        ({"sendgrid": {"secrets": ["x"]}}, "use public_keys"),
        ({"twilio": {"secrets": ["x"], "public_keys": ["k"]}}, "use secrets"),
    ],
)
def test_bad_credentials_config_is_refused_naming_the_problem(
    table: dict[str, Any], words: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(words)):
        parse(table)
