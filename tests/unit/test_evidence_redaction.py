"""What an evidence archive redacts (``sluice.ops.evidence``): every secret-bearing
setting and configuration entry, URL passwords and queries, hook URLs' paths; and what
it keeps, so the settings stay readable."""

from __future__ import annotations

import pytest

from sluice.config import Settings
from sluice.ops.evidence import REDACTED, _scrub, redact_config, redact_settings


def test_settings__secrets_redacted_the_rest_kept() -> None:
    found: set[str] = set()
    out = redact_settings(
        Settings(
            database_url="postgresql://sluice:Db-Pa55word@db:5432/sluice",
            webhook_secret="whsec_abcdefghijklmnop",
            secret_key="a-very-secret-key-value",
            redis_url="redis://default:Redis-Pa55@r:6379/0",
            allow_private_targets=("10.0.0.0/8",),
        ),
        found,
    )
    assert out["database_url"] == f"postgresql://sluice:{REDACTED}@db:5432/sluice"
    assert out["redis_url"] == f"redis://default:{REDACTED}@r:6379/0"
    assert (out["webhook_secret"], out["secret_key"]) == (REDACTED, REDACTED)
    assert out["secret_key_previous"] is None  # nothing set, nothing to hide
    assert out["allow_private_targets"] == ["10.0.0.0/8"] and out["http_timeout"] == 10.0
    assert {"Db-Pa55word", "whsec_abcdefghijklmnop", "a-very-secret-key-value"} <= found
    sqlite = redact_settings(Settings(database_url="sqlite:///var/lib/sluice.db"))
    assert sqlite["database_url"] == "sqlite:///var/lib/sluice.db"


def test_config__tables_of_secrets_headers_env_references_and_hook_urls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SG_KEY_FOR_TEST", "sendgrid-key-from-env")
    found: set[str] = set()
    out = redact_config(
        {
            "ingress": {
                "twilio": {"auth_token": "tw-token-123456",
                           "tenant_secrets": {"acme": "acme-s3cret-1"}},
                "sendgrid": {"verification": "env:SG_KEY_FOR_TEST"},
            },
            "actions": {"crm": {"url": "https://crm.example.com/t/{recipient}",
                                "headers": {"Authorization": "Bearer bearer-tok-99"}}},
            "alerts": {"targets": [
                {"name": "slack", "url": "https://hooks.example.com/services/T0/ABCDEFGHIJKLMNOP"},
            ]},
        },
        found,
    )  # fmt: skip
    assert out["ingress"]["twilio"] == {"auth_token": REDACTED, "tenant_secrets": REDACTED}
    assert out["ingress"]["sendgrid"]["verification"] == "env:SG_KEY_FOR_TEST"  # the name only
    assert out["actions"]["crm"]["headers"] == REDACTED
    assert out["actions"]["crm"]["url"] == "https://crm.example.com/t/{recipient}"
    assert out["alerts"]["targets"][0]["url"] == f"https://hooks.example.com/{REDACTED}"
    for secret in ("tw-token-123456", "acme-s3cret-1", "Bearer bearer-tok-99",
                   "sendgrid-key-from-env", "ABCDEFGHIJKLMNOP"):  # fmt: skip
        assert secret in found
    text = _scrub('{"note": "acme-s3cret-1 and sendgrid-key-from-env", "word": "services"}', found)
    assert "acme-s3cret-1" not in text and "sendgrid-key-from-env" not in text
    assert "services" in text  # a path's ordinary words are not scrubbed from everything
