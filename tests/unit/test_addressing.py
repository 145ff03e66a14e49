"""Enqueue refuses a message that could only ever be dead-lettered: a provider Sluice does
not have, or a channel its provider does not serve. The error names the field and says
what is accepted; the configuration in effect (``sluice.toml``) supplies the aliases."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from sluice import ConfigError, NewMessage, ValidationError
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
    assert "http, null, sendgrid, sluice_events, twilio, webhook, whatsapp" in problem
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
    assert f"use {accepted}, or a channel name of your own" in problem


def test_channel__an_alias_serves_the_channels_of_its_kind(config: Path) -> None:
    problem = rejected("channel", msg(provider="twilio-backup", channel="email"))
    assert "twilio-backup (twilio)" in problem


@pytest.mark.usefixtures("no_config")
@pytest.mark.parametrize("provider", ["null", "http"])
def test_channel__null_and_http_take_any_channel(provider: str) -> None:
    msg(provider=provider, channel="crm", recipient="contact-42").validate()
    msg(provider=provider, channel="email", recipient="ann@example.com").validate()


@pytest.mark.usefixtures("no_config")
@pytest.mark.parametrize(
    ("provider", "recipient", "refused"),
    [
        ("twilio", "+14155550100", "bob"),
        ("sendgrid", "ann@example.com", "+14155550100"),
        ("whatsapp", "14155550100", "ann@example.com"),
        ("webhook", "https://hooks.example.com/otp", "+14155550100"),
    ],
)
def test_channel__one_of_your_own_takes_the_recipient_of_the_providers_medium(
    provider: str, recipient: str, refused: str
) -> None:
    # "otp" is an operator's label (its own routes, controls, limits), sent as the
    # provider sends by default: SMS through Twilio, email through SendGrid, ...
    msg(provider=provider, channel="otp", recipient=recipient).validate()
    rejected("recipient", msg(provider=provider, channel="otp", recipient=refused))


# -- recipients: phone numbers --------------------------------------------------------

NOT_PHONES = [
    "bob",
    "14155550100",  # no '+'
    "+04155550100",  # no country code starts with 0
    "+1415555",  # 7 digits
    "+1234567890123456",  # 16 digits
    "+1 415 555 0100",
    "+1-415-555-0100",
    "+1(415)5550100",
    "+14155550100 ",
    "+١٤١٥٥٥٥٠١٠٠",  # Arabic-Indic digits are digits to Python, not to a carrier
    "tel:+14155550100",
]


@pytest.mark.usefixtures("no_config")
@pytest.mark.parametrize("provider", ["twilio", "null"])
@pytest.mark.parametrize("number", ["+14155550100", "+4915123456789", "+85291234567"])
def test_recipient__sms_takes_an_e164_number(provider: str, number: str) -> None:
    msg(channel="sms", provider=provider, recipient=number).validate()


@pytest.mark.usefixtures("no_config")
@pytest.mark.parametrize("number", NOT_PHONES)
def test_recipient__sms_refuses_anything_but_e164_saying_what_it_takes(number: str) -> None:
    problem = rejected("recipient", msg(channel="sms", provider="twilio", recipient=number))
    assert problem.startswith(repr(number))
    assert "E.164" in problem and "8 to 15 digits" in problem and "+14155550100" in problem


@pytest.mark.usefixtures("no_config")
@pytest.mark.parametrize("number", ["+14155550100", "whatsapp:+14155550100"])
def test_recipient__whatsapp_through_twilio_also_takes_its_prefix(number: str) -> None:
    msg(channel="whatsapp", provider="twilio", recipient=number).validate()


@pytest.mark.usefixtures("no_config")
@pytest.mark.parametrize("number", ["14155550100", "whatsapp:14155550100", "whatsapp:bob"])
def test_recipient__whatsapp_through_twilio_refuses_a_number_without_plus(number: str) -> None:
    problem = rejected("recipient", msg(channel="whatsapp", provider="twilio", recipient=number))
    assert "E.164" in problem and "whatsapp:+14155550100" in problem


@pytest.mark.usefixtures("no_config")
@pytest.mark.parametrize("number", ["+14155550100", "14155550100"])
def test_recipient__whatsapp_through_meta_also_takes_the_digits_without_plus(number: str) -> None:
    msg(channel="whatsapp", provider="whatsapp", recipient=number).validate()


@pytest.mark.usefixtures("no_config")
@pytest.mark.parametrize(
    "number", ["whatsapp:+14155550100", "04155550100", "1415555", "1 415 555 0100"]
)
def test_recipient__whatsapp_through_meta_refuses_other_forms(number: str) -> None:
    problem = rejected("recipient", msg(channel="whatsapp", provider="whatsapp", recipient=number))
    assert "E.164" in problem and "without the '+'" in problem


def test_recipient__an_alias_takes_the_forms_of_its_kind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "sluice.toml"
    path.write_text('[providers."meta-eu"]\nkind = "whatsapp"\n')
    monkeypatch.setenv("SLUICE_CONFIG", str(path))
    msg(channel="whatsapp", provider="meta-eu", recipient="14155550100").validate()


# -- recipients: email addresses ------------------------------------------------------


@pytest.mark.usefixtures("no_config")
@pytest.mark.parametrize(
    "address",
    [
        "ann@example.com",
        "ann.lee+orders@mail.example.co.uk",
        "ann@bücher.example",
        "x" * 64 + "@" + "d" * 185 + ".com",  # 254 characters
    ],
)
def test_recipient__email_takes_one_address(address: str) -> None:
    msg(channel="email", provider="sendgrid", recipient=address).validate()


@pytest.mark.usefixtures("no_config")
@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("ann", "exactly one @"),
        ("ann@@example.com", "exactly one @"),
        ("ann@example.com,bob@example.com", "exactly one @"),
        ("@example.com", "nothing comes before the @"),
        ("ann@example", "not a name with a dot"),
        ("ann@.example.com", "not a name with a dot"),
        ("ann@example..com", "not a name with a dot"),
        ("ann@example.com.", "not a name with a dot"),
        ("Ann <ann@example.com>", "spaces or control characters"),
        ("ann@example.com\r\nBcc: all@example.com", "spaces or control characters"),
        ("ann\x01@example.com", "spaces or control characters"),
        ("ann@exa(mple).com", "characters no domain name has"),
        ("x" * 65 + "@example.com", "longer than 64"),
        ("x" * 64 + "@" + "d" * 186 + ".com", "longer than 254"),
    ],
)
def test_recipient__email_refuses_what_is_not_one_address(address: str, why: str) -> None:
    problem = rejected("recipient", msg(channel="email", provider="sendgrid", recipient=address))
    assert why in problem
    assert "ann@example.com" in problem  # the form it takes


# -- recipients: webhook URLs ---------------------------------------------------------

REFUSED_URLS = [
    "bob",
    "hooks.example.com/orders",
    "ftp://hooks.example.com/orders",
    "file:///etc/passwd",
    "http://127.0.0.1:8025/webhook",
    "http://2130706433/",
    "http://0x7f.1/",
    "http://0177.0.0.1/",
    "http://127.1/",
    "http://localhost:8080/",
    "http://api.localhost/",
    "http://[::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:10.0.0.1]/",
    "http://10.0.0.5/admin",
    "http://192.168.1.1/",
    "http://172.16.0.1/",
    "http://169.254.169.254/latest/meta-data/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://100.64.0.1/",
    "http://0.0.0.0/",
    "http://[fd00:ec2::254]/",
    "http://999.1.1.1/",
]
LOOPBACK_URLS = [
    "http://127.0.0.1:8025/webhook",
    "http://2130706433/",
    "http://0x7f.1/",
    "http://localhost:8080/",
    "http://[::1]/",
    "http://[::ffff:127.0.0.1]/",
]


@pytest.mark.usefixtures("no_config")
@pytest.mark.parametrize("url", REFUSED_URLS)
def test_recipient__webhook_refuses_what_the_ssrf_guard_refuses_by_its_form(url: str) -> None:
    problem = rejected("recipient", msg(recipient=url))
    assert "http:// or https://" in problem and "public host" in problem


@pytest.mark.usefixtures("no_config")
@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/orders?x=1",
        "http://93.184.216.34:8080/hook",
        "https://[2606:2800:220:1:248:1893:25c8:1946]/hook",
        # Not resolved at enqueue: whatever this name points to, the send-time guard
        # looks it up before every send.
        "https://nowhere.invalid/hook",
    ],
)
def test_recipient__webhook_takes_a_public_http_url_without_resolving_it(url: str) -> None:
    msg(recipient=url).validate()


@pytest.mark.usefixtures("no_config")
@pytest.mark.parametrize("url", [*REFUSED_URLS, "https://hooks.example.com/x"])
@pytest.mark.parametrize("allow", [False, True])
def test_recipient__webhook_agrees_with_the_send_time_guard(url: str, allow: bool) -> None:
    from sluice.netguard import check_url_syntax

    message = msg(recipient=url)
    try:
        message.validate(addressing=Addressing(allow_loopback=allow))
        refused = False
    except ValidationError:
        refused = True
    assert refused == (check_url_syntax(url, allow_loopback=allow) is not None)


@pytest.mark.usefixtures("no_config")
@pytest.mark.parametrize("url", LOOPBACK_URLS)
def test_recipient__loopback_webhook_needs_sluice_allow_loopback_targets(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert "SLUICE_ALLOW_LOOPBACK_TARGETS" in rejected("recipient", msg(recipient=url))
    monkeypatch.setenv("SLUICE_ALLOW_LOOPBACK_TARGETS", "true")
    msg(recipient=url).validate()
    # Loopback only: everything else non-public stays refused.
    rejected("recipient", msg(recipient="http://10.0.0.5/"))


def test_recipient__loopback_setting_is_read_from_sluice_toml_as_the_worker_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sluice.config import load_settings

    path = tmp_path / "sluice.toml"
    path.write_text("[sluice]\nallow_loopback_targets = true\n")
    monkeypatch.setenv("SLUICE_CONFIG", str(path))
    monkeypatch.delenv("SLUICE_ALLOW_LOOPBACK_TARGETS", raising=False)
    assert load_settings().allow_loopback_targets is True
    msg(recipient="http://127.0.0.1:8025/webhook").validate()
    monkeypatch.setenv("SLUICE_ALLOW_LOOPBACK_TARGETS", "false")  # the environment wins
    assert load_settings().allow_loopback_targets is False
    rejected("recipient", msg(recipient="http://127.0.0.1:8025/webhook"))


def test_recipient__an_edit_of_sluice_toml_counts_from_the_next_enqueue(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # addressing_in_effect keeps its last answer while file and environment stay the
    # same: an edit in place, or a variable set or cleared, must end it at once.
    path = tmp_path / "sluice.toml"
    path.write_text("[sluice]\nallow_loopback_targets = true\n")
    monkeypatch.setenv("SLUICE_CONFIG", str(path))
    monkeypatch.delenv("SLUICE_ALLOW_LOOPBACK_TARGETS", raising=False)
    loopback = msg(recipient="http://127.0.0.1:8025/webhook")
    loopback.validate()
    loopback.validate()
    path.write_text("[sluice]\nallow_loopback_targets = false\n")
    rejected("recipient", loopback)
    monkeypatch.setenv("SLUICE_ALLOW_LOOPBACK_TARGETS", "1")
    loopback.validate()
    monkeypatch.delenv("SLUICE_ALLOW_LOOPBACK_TARGETS")
    rejected("recipient", loopback)
    path.unlink()
    with pytest.raises(ConfigError, match="does not exist"):
        msg(**ALIAS_SMS).validate()


def test_config__a_directory_named_as_sluice_toml_is_no_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sluice.config import look_up_config

    monkeypatch.setenv("SLUICE_CONFIG", str(tmp_path))
    found = look_up_config()
    assert isinstance(found, ConfigError)
    assert f"config file {tmp_path} does not exist" in str(found)
    monkeypatch.delenv("SLUICE_CONFIG")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sluice.toml").mkdir()
    assert look_up_config() == (None, None)


@pytest.mark.usefixtures("no_config")
def test_recipient__settings_given_decide_loopback_over_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sluice.config import Settings

    monkeypatch.delenv("SLUICE_ALLOW_LOOPBACK_TARGETS", raising=False)
    local = addressing_in_effect(Settings(allow_loopback_targets=True))
    msg(recipient="http://127.0.0.1:8025/webhook").validate(addressing=local)
    assert addressing_in_effect().allow_loopback is False


#: Literal targets in many spellings, inside and outside ``CORP`` and never allowed.
PRIVATE_LITERALS = [
    "http://10.20.0.7/hook",
    "http://0x0a140007/",
    "http://10.20.7/",
    "http://[::ffff:10.20.0.7]/",
    "http://[64:ff9b::a14:7]/",
    "http://[fd00:1::5]/",
    "http://10.21.0.1/",
    "http://[::ffff:10.21.0.1]/",
    "http://[fd00:2::5]/",
    "http://169.254.169.254/",
    "http://0xa9fea9fe/",
    "http://[::ffff:169.254.169.254]/",
    "http://100.100.100.200/",
    "http://[fd00:ec2::254]/",
    "http://[fe80::1]/",
    "http://0.0.0.0/",
    "http://127.0.0.1/",
    "http://93.184.216.34/",
]
CORP = ["10.20.0.0/16", "fd00:1::/48", "fd00:ec2::/32", "100.64.0.0/10", "hooks.corp.example"]


@pytest.mark.usefixtures("no_config")
@pytest.mark.parametrize("url", PRIVATE_LITERALS)
async def test_recipient__private_targets_enqueue_agrees_with_the_send_time_guard(
    url: str,
) -> None:
    import httpx

    from sluice.netguard import PrivateTargets, TargetGuard

    listed = PrivateTargets.parse(CORP)

    async def no_dns(host: str) -> list[str]:
        raise AssertionError(f"a literal needs no DNS, yet {host} was looked up")

    send_refuses = await TargetGuard(resolve=no_dns, private=listed).check(httpx.URL(url))
    try:
        msg(recipient=url).validate(addressing=Addressing(private=listed))
        enqueue_refuses = False
    except ValidationError:
        enqueue_refuses = True
    assert enqueue_refuses == (send_refuses is not None), send_refuses


@pytest.mark.usefixtures("no_config")
def test_recipient__private_targets_are_read_as_the_worker_reads_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sluice.config import Settings

    inside = msg(recipient="http://10.20.0.7/hook")
    monkeypatch.delenv("SLUICE_ALLOW_PRIVATE_TARGETS", raising=False)
    assert "SLUICE_ALLOW_PRIVATE_TARGETS" in rejected("recipient", inside)

    monkeypatch.setenv("SLUICE_ALLOW_PRIVATE_TARGETS", "10.20.0.0/16 hooks.corp.example")
    inside.validate()
    rejected("recipient", msg(recipient="http://169.254.169.254/"))
    # The settings of the store or API doing the enqueue win over the environment.
    assert "SLUICE_ALLOW_PRIVATE_TARGETS" in rejected(
        "recipient", inside, addressing_in_effect(Settings())
    )

    path = tmp_path / "sluice.toml"
    path.write_text('[sluice]\nallow_private_targets = ["10.20.0.0/16"]\n')
    monkeypatch.setenv("SLUICE_CONFIG", str(path))
    monkeypatch.delenv("SLUICE_ALLOW_PRIVATE_TARGETS")
    inside.validate()

    # A list a worker would refuse to start on admits nothing here either.
    monkeypatch.setenv("SLUICE_ALLOW_PRIVATE_TARGETS", "10.20.0.0/16, 169.254.0.0/16")
    rejected("recipient", inside)


@pytest.mark.usefixtures("no_config")
def test_recipient__other_channels_take_any_recipient() -> None:
    msg(channel="calendar", provider="http", recipient="primary").validate()


# -- http actions: declared, and rendering to the configured path ---------------------

ACTIONS = """
[actions."sessions.revoke"]
method = "DELETE"
url = "https://api.example/api/users/{payload.user_id}/sessions/{payload.session_id}"

[actions."crm.note"]
method = "POST"
url = "https://crm.example/notes"
headers = { "X-Subject" = "{payload.subject}" }
"""


@pytest.fixture
def actions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "sluice.toml"
    path.write_text(ACTIONS)
    monkeypatch.setenv("SLUICE_CONFIG", str(path))
    return path


def revoke(**payload: Any) -> NewMessage:
    return msg(
        channel="crm", provider="http", recipient="acme", action="sessions.revoke",
        payload={"user_id": "u-7", "session_id": "abc", **payload},
    )  # fmt: skip


@pytest.mark.usefixtures("actions")
def test_action__a_declared_action_that_renders_is_accepted() -> None:
    revoke().validate()


@pytest.mark.usefixtures("actions")
@pytest.mark.parametrize("user_id", ["..", ".", "", "%2e%2e", "%252E%252E", "../admin"])
def test_action__a_path_value_that_would_climb_is_refused_naming_it(user_id: str) -> None:
    problem = rejected("payload.user_id", revoke(user_id=user_id))
    assert "sessions.revoke" in problem and "another path" in problem


@pytest.mark.usefixtures("actions")
def test_action__in_a_batch_the_error_names_the_message_and_the_key() -> None:
    with pytest.raises(ValidationError) as excinfo:
        prepare([revoke(), revoke(session_id="..")])
    assert excinfo.value.field == "messages[1].payload.session_id"


@pytest.mark.usefixtures("actions")
def test_action__a_payload_without_a_key_the_action_uses_is_refused() -> None:
    message = revoke()
    message.payload = {"user_id": "u-7"}
    problem = rejected("payload", message)
    assert "'session_id'" in problem and "{payload.session_id}" in problem


@pytest.mark.usefixtures("actions")
def test_action__a_value_that_would_split_a_header_is_refused() -> None:
    note = msg(
        channel="crm", provider="http", recipient="acme", action="crm.note",
        payload={"subject": "hi\r\nX-Injected: 1"},
    )  # fmt: skip
    assert "span lines" in rejected("payload", note)


def test_action__one_not_declared_is_refused_listing_the_declared(actions: Path) -> None:
    problem = rejected("action", dataclasses.replace(revoke(), action="sessions.revok"))
    assert "crm.note, sessions.revoke" in problem and str(actions) in problem


@pytest.mark.usefixtures("no_config")
def test_action__without_a_sluice_toml_actions_are_left_to_the_worker() -> None:
    revoke(user_id="..").validate()  # the adapter refuses it at send time, sending nothing


# -- a sluice.toml that cannot be read ------------------------------------------------


ALIAS_SMS = {"channel": "sms", "provider": "twilio-backup", "recipient": "+14155550100"}


@pytest.mark.parametrize(
    ("text", "broken"),
    [
        ("this is not toml [", {"alias", "action"}),
        ('[providers."b"]\nkind = "pigeon"\n', {"alias"}),
        ('[actions."a"]\nmethod = "GET"\nurl = "https://x.example/{payload.}"\n', {"action"}),
    ],
)
def test_unreadable_config__only_messages_that_need_it_are_refused(
    text: str, broken: set[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "sluice.toml"
    path.write_text(text)
    monkeypatch.setenv("SLUICE_CONFIG", str(path))
    # Enqueue runs in the application's transaction: an SMS must not fail because the
    # operator's file has a typo elsewhere.
    msg(channel="sms", provider="twilio", recipient="+14155550100").validate()
    for name, message in (("alias", msg(**ALIAS_SMS)), ("action", revoke())):
        if name in broken:
            with pytest.raises(ConfigError) as excinfo:
                message.validate()
            assert str(path) in str(excinfo.value)
