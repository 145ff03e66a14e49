"""Webhook signature checks: each scheme accepts what its provider signs and nothing else."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import types
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

import sluice.ingress
from sluice.errors import ConfigError, SluiceError
from sluice.ingress import (
    TOLERANCE,
    SignatureError,
    verify_meta,
    verify_sendgrid,
    verify_standard,
    verify_twilio,
)

NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
BODY = b'[{"email":"a@example.com","event":"delivered","sg_event_id":"e1","timestamp":1}]'


def _rejected(call: object, *args: object, **kwargs: object) -> SignatureError:
    assert callable(call)
    with pytest.raises(SignatureError) as caught:
        call(*args, **kwargs)
    return caught.value


def test_package__all_lists_every_public_name_once() -> None:
    names = sluice.ingress.__all__
    assert len(names) == len(set(names))
    public = {
        name
        for name, value in vars(sluice.ingress).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name != "annotations"  # the `from __future__ import annotations` flag
    }
    assert public == set(names)
    for name in names:
        value = getattr(sluice.ingress, name)
        assert isinstance(value, timedelta) or (value.__doc__ or "").strip(), name


def test_signature_error__is_a_sluice_error_with_its_reason() -> None:
    error = SignatureError("missing X-Twilio-Signature")
    assert isinstance(error, SluiceError)
    assert error.reason == "missing X-Twilio-Signature"
    assert str(error) == "missing X-Twilio-Signature"


def test_tolerance__is_five_minutes() -> None:
    assert timedelta(minutes=5) == TOLERANCE


# -- Twilio -------------------------------------------------------------------------------

# The example Twilio publishes with its SDKs (twilio-python's tests, twilio-php's docs):
# token 12345, this URL and these fields sign to RSOYDt4T1cUTdK1PDd93/VVr8B8=.
TWILIO_TOKEN = "12345"
TWILIO_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
TWILIO_PARAMS = [
    ("CallSid", "CA1234567890ABCDE"),
    ("Caller", "+14158675309"),
    ("Digits", "1234"),
    ("From", "+14158675309"),
    ("To", "+18005551212"),
]
TWILIO_SIGNATURE = "RSOYDt4T1cUTdK1PDd93/VVr8B8="


def _twilio_sign(token: str, url: str, params: list[tuple[str, str]]) -> str:
    text = url + "".join(name + value for name, value in sorted(params))
    return base64.b64encode(hmac.new(token.encode(), text.encode(), hashlib.sha1).digest()).decode()


def test_twilio__accepts_the_published_example() -> None:
    verify_twilio(TWILIO_URL, TWILIO_PARAMS, TWILIO_SIGNATURE, [TWILIO_TOKEN])


def test_twilio__field_order_as_received_does_not_matter() -> None:
    verify_twilio(TWILIO_URL, list(reversed(TWILIO_PARAMS)), TWILIO_SIGNATURE, [TWILIO_TOKEN])


def test_twilio__repeated_names_sort_by_value_as_in_twilio_sdk_vector() -> None:
    # twilio-python's vector for a repeated field: Digits=5678 and Digits=1234.
    params = [("Sid", "CA123"), ("SidAccount", "AC123"), ("Digits", "5678"), ("Digits", "1234")]
    verify_twilio(TWILIO_URL, params, "IK+Dwps556ElfBT0I3Rgjkr1wJU=", [TWILIO_TOKEN])


def test_twilio__url_signed_with_default_port_is_accepted_without_it() -> None:
    # twilio-python's vector: the same request signed over https://mycompany.com:443/...
    verify_twilio(TWILIO_URL, TWILIO_PARAMS, "kvajT1Ptam85bY51eRf/AJRuM3w=", [TWILIO_TOKEN])


def test_twilio__url_with_a_port_is_also_tried_without_it() -> None:
    url = TWILIO_URL.replace(".com", ".com:1234")
    verify_twilio(url, TWILIO_PARAMS, TWILIO_SIGNATURE, [TWILIO_TOKEN])


def test_twilio__http_url_signed_with_port_80_vector() -> None:
    url = TWILIO_URL.replace("https", "http")
    verify_twilio(url, TWILIO_PARAMS, "0ZXoZLH/DfblKGATFgpif+LLRf4=", [TWILIO_TOKEN])


def test_twilio__url_with_credentials_keeps_them_when_trying_ports() -> None:
    url = "https://user:pw@sluice.example/v1/ingress/twilio?sluice_message_id=m1"
    signature = _twilio_sign("tok", url.replace(".example/", ".example:443/"), TWILIO_PARAMS)
    verify_twilio(url, TWILIO_PARAMS, signature, ["tok"])


@pytest.mark.parametrize(
    "params",
    [
        [*TWILIO_PARAMS[:-1], ("To", "+18005551213")],  # a value changed
        [*TWILIO_PARAMS, ("Body", "hi")],  # a field added
        TWILIO_PARAMS[:-1],  # a field removed
    ],
    ids=["changed", "added", "removed"],
)
def test_twilio__tampered_fields_are_rejected(params: list[tuple[str, str]]) -> None:
    error = _rejected(verify_twilio, TWILIO_URL, params, TWILIO_SIGNATURE, [TWILIO_TOKEN])
    assert error.reason == "X-Twilio-Signature does not match"


def test_twilio__tampered_url_is_rejected() -> None:
    url = TWILIO_URL.replace("foo=1", "foo=2")
    _rejected(verify_twilio, url, TWILIO_PARAMS, TWILIO_SIGNATURE, [TWILIO_TOKEN])


def test_twilio__wrong_token_is_rejected_and_not_named() -> None:
    error = _rejected(verify_twilio, TWILIO_URL, TWILIO_PARAMS, TWILIO_SIGNATURE, ["s3cr3t-tok"])
    assert "s3cr3t-tok" not in str(error)
    assert TWILIO_SIGNATURE not in str(error)


@pytest.mark.parametrize("signature", [None, "", "   "])
def test_twilio__missing_signature_is_rejected(signature: str | None) -> None:
    error = _rejected(verify_twilio, TWILIO_URL, TWILIO_PARAMS, signature, [TWILIO_TOKEN])
    assert error.reason == "missing X-Twilio-Signature"


@pytest.mark.parametrize("tokens", [[], [""], ["  "]])
def test_twilio__no_token_configured_is_rejected(tokens: list[str]) -> None:
    error = _rejected(verify_twilio, TWILIO_URL, TWILIO_PARAMS, TWILIO_SIGNATURE, tokens)
    assert error.reason == "no Twilio auth token configured"


@pytest.mark.parametrize("order", ["old_first", "new_first"])
def test_twilio__rotation_accepts_either_token(order: str) -> None:
    tokens = ["old-token", TWILIO_TOKEN] if order == "old_first" else [TWILIO_TOKEN, "old-token"]
    verify_twilio(TWILIO_URL, TWILIO_PARAMS, TWILIO_SIGNATURE, tokens)
    old = _twilio_sign("old-token", TWILIO_URL, TWILIO_PARAMS)
    verify_twilio(TWILIO_URL, TWILIO_PARAMS, old, tokens)


def test_twilio__rotation_rejects_when_neither_token_signed() -> None:
    tokens = ["old-token", "new-token"]
    _rejected(verify_twilio, TWILIO_URL, TWILIO_PARAMS, TWILIO_SIGNATURE, tokens)


def test_twilio__non_ascii_fields_are_signed_as_utf8() -> None:
    params = [("Body", "grüße 👋"), ("MessageSid", "SM1")]
    url = "https://sluice.example/v1/ingress/twilio"
    verify_twilio(url, params, _twilio_sign("tok", url, params), ["tok"])


# -- SendGrid ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sendgrid_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def other_sendgrid_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _der_b64(key: ec.EllipticCurvePrivateKey) -> str:
    """The public key as SendGrid's settings show it: base64 DER SubjectPublicKeyInfo."""
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


def _pem(key: ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def _sendgrid_sign(key: ec.EllipticCurvePrivateKey, timestamp: str, body: bytes) -> str:
    """What SendGrid sends: base64 of the DER ECDSA/SHA-256 signature of timestamp + body."""
    return base64.b64encode(key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))).decode()


def _ts(offset_seconds: int = 0) -> str:
    return str(int(NOW.timestamp()) + offset_seconds)


def test_sendgrid__accepts_a_signed_batch(sendgrid_key: ec.EllipticCurvePrivateKey) -> None:
    ts = _ts()
    signature = _sendgrid_sign(sendgrid_key, ts, BODY)
    verify_sendgrid(BODY, signature, ts, [_der_b64(sendgrid_key)], NOW)


def test_sendgrid__accepts_a_pem_key(sendgrid_key: ec.EllipticCurvePrivateKey) -> None:
    ts = _ts()
    verify_sendgrid(BODY, _sendgrid_sign(sendgrid_key, ts, BODY), ts, [_pem(sendgrid_key)], NOW)


def test_sendgrid__accepts_a_key_pasted_with_line_breaks(
    sendgrid_key: ec.EllipticCurvePrivateKey,
) -> None:
    text = _der_b64(sendgrid_key)
    wrapped = "\n".join(text[i : i + 40] for i in range(0, len(text), 40))
    ts = _ts()
    verify_sendgrid(BODY, _sendgrid_sign(sendgrid_key, ts, BODY), ts, [wrapped], NOW)


def test_sendgrid__tampered_body_is_rejected(sendgrid_key: ec.EllipticCurvePrivateKey) -> None:
    ts = _ts()
    signature = _sendgrid_sign(sendgrid_key, ts, BODY)
    tampered = BODY.replace(b"delivered", b"bounce")
    error = _rejected(verify_sendgrid, tampered, signature, ts, [_der_b64(sendgrid_key)], NOW)
    assert error.reason == "X-Twilio-Email-Event-Webhook-Signature does not match"


def test_sendgrid__tampered_timestamp_is_rejected(sendgrid_key: ec.EllipticCurvePrivateKey) -> None:
    signature = _sendgrid_sign(sendgrid_key, _ts(), BODY)
    _rejected(verify_sendgrid, BODY, signature, _ts(-1), [_der_b64(sendgrid_key)], NOW)


def test_sendgrid__wrong_key_is_rejected(
    sendgrid_key: ec.EllipticCurvePrivateKey, other_sendgrid_key: ec.EllipticCurvePrivateKey
) -> None:
    ts = _ts()
    signature = _sendgrid_sign(other_sendgrid_key, ts, BODY)
    _rejected(verify_sendgrid, BODY, signature, ts, [_der_b64(sendgrid_key)], NOW)


@pytest.mark.parametrize(
    ("which", "reason"),
    [
        ("signature", "missing X-Twilio-Email-Event-Webhook-Signature"),
        ("timestamp", "missing X-Twilio-Email-Event-Webhook-Timestamp"),
    ],
)
def test_sendgrid__missing_header_is_rejected(
    sendgrid_key: ec.EllipticCurvePrivateKey, which: str, reason: str
) -> None:
    ts = _ts()
    signature: str | None = _sendgrid_sign(sendgrid_key, ts, BODY)
    timestamp: str | None = ts
    if which == "signature":
        signature = None
    else:
        timestamp = None
    error = _rejected(verify_sendgrid, BODY, signature, timestamp, [_der_b64(sendgrid_key)], NOW)
    assert error.reason == reason


def test_sendgrid__no_key_configured_is_rejected(sendgrid_key: ec.EllipticCurvePrivateKey) -> None:
    ts = _ts()
    error = _rejected(verify_sendgrid, BODY, _sendgrid_sign(sendgrid_key, ts, BODY), ts, [], NOW)
    assert error.reason == "no SendGrid verification key configured"


@pytest.mark.parametrize("signed_by", ["old", "new"])
def test_sendgrid__rotation_accepts_either_key(
    sendgrid_key: ec.EllipticCurvePrivateKey,
    other_sendgrid_key: ec.EllipticCurvePrivateKey,
    signed_by: str,
) -> None:
    keys = [_der_b64(other_sendgrid_key), _der_b64(sendgrid_key)]
    signer = other_sendgrid_key if signed_by == "old" else sendgrid_key
    ts = _ts()
    verify_sendgrid(BODY, _sendgrid_sign(signer, ts, BODY), ts, keys, NOW)


def test_sendgrid__rotation_rejects_when_neither_key_signed(
    sendgrid_key: ec.EllipticCurvePrivateKey, other_sendgrid_key: ec.EllipticCurvePrivateKey
) -> None:
    stranger = ec.generate_private_key(ec.SECP256R1())
    keys = [_der_b64(other_sendgrid_key), _der_b64(sendgrid_key)]
    ts = _ts()
    _rejected(verify_sendgrid, BODY, _sendgrid_sign(stranger, ts, BODY), ts, keys, NOW)


@pytest.mark.parametrize(
    ("offset", "accepted"),
    [(-300, True), (-301, False), (300, True), (301, False), (-86_400, False)],
    ids=["5min-old", "just-stale", "5min-ahead", "just-future", "a-day-old"],
)
def test_sendgrid__timestamp_must_be_within_five_minutes(
    sendgrid_key: ec.EllipticCurvePrivateKey, offset: int, accepted: bool
) -> None:
    ts = _ts(offset)
    args = (BODY, _sendgrid_sign(sendgrid_key, ts, BODY), ts, [_der_b64(sendgrid_key)], NOW)
    if accepted:
        verify_sendgrid(*args)
    else:
        reason = _rejected(verify_sendgrid, *args).reason
        assert ("stale" if offset < 0 else "future") in reason


def test_sendgrid__tolerance_can_be_narrowed(sendgrid_key: ec.EllipticCurvePrivateKey) -> None:
    ts = _ts(-61)
    signature = _sendgrid_sign(sendgrid_key, ts, BODY)
    keys = [_der_b64(sendgrid_key)]
    verify_sendgrid(BODY, signature, ts, keys, NOW)
    _rejected(verify_sendgrid, BODY, signature, ts, keys, NOW, timedelta(seconds=60))


@pytest.mark.parametrize("timestamp", ["abc", "1.5", "-5", "\u0661\u0667" + "\u0660" * 8, "9" * 30])
def test_sendgrid__malformed_timestamp_is_rejected(
    sendgrid_key: ec.EllipticCurvePrivateKey, timestamp: str
) -> None:
    signature = _sendgrid_sign(sendgrid_key, _ts(), BODY)
    error = _rejected(verify_sendgrid, BODY, signature, timestamp, [_der_b64(sendgrid_key)], NOW)
    assert error.reason == "X-Twilio-Email-Event-Webhook-Timestamp is not unix seconds"


@pytest.mark.parametrize(
    "signature",
    ["not base64!", base64.b64encode(b"not a DER signature").decode(), "é"],
)
def test_sendgrid__malformed_signature_is_rejected(
    sendgrid_key: ec.EllipticCurvePrivateKey, signature: str
) -> None:
    _rejected(verify_sendgrid, BODY, signature, _ts(), [_der_b64(sendgrid_key)], NOW)


@pytest.mark.parametrize(
    "key",
    ["not a key", base64.b64encode(b"not DER either").decode(), "-----BEGIN PUBLIC KEY-----\nx"],
)
def test_sendgrid__a_key_that_does_not_parse_is_a_config_error(
    sendgrid_key: ec.EllipticCurvePrivateKey, key: str
) -> None:
    ts = _ts()
    with pytest.raises(ConfigError, match="SendGrid verification key #2"):
        verify_sendgrid(
            BODY, _sendgrid_sign(sendgrid_key, ts, BODY), ts, [_der_b64(sendgrid_key), key], NOW
        )


def test_sendgrid__a_non_ec_key_is_a_config_error() -> None:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    der = (
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(ConfigError):
        verify_sendgrid(BODY, "AAAA", _ts(), [base64.b64encode(der).decode()], NOW)


# -- Meta / WhatsApp -------------------------------------------------------------------------

APP_SECRET = "meta-app-secret"
WA_BODY = b'{"object":"whatsapp_business_account","entry":[]}'


def _meta_sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def test_meta__accepts_a_signed_body() -> None:
    verify_meta(WA_BODY, _meta_sign(APP_SECRET, WA_BODY), [APP_SECRET])


def test_meta__accepts_upper_case_hex() -> None:
    signature = _meta_sign(APP_SECRET, WA_BODY)
    verify_meta(WA_BODY, "sha256=" + signature.removeprefix("sha256=").upper(), [APP_SECRET])


def test_meta__tampered_body_is_rejected() -> None:
    signature = _meta_sign(APP_SECRET, WA_BODY)
    error = _rejected(verify_meta, WA_BODY + b" ", signature, [APP_SECRET])
    assert error.reason == "X-Hub-Signature-256 does not match"


def test_meta__wrong_secret_is_rejected_and_not_named() -> None:
    error = _rejected(verify_meta, WA_BODY, _meta_sign(APP_SECRET, WA_BODY), ["other-secret"])
    assert "other-secret" not in str(error)
    assert APP_SECRET not in str(error)


@pytest.mark.parametrize("signature", [None, ""])
def test_meta__missing_signature_is_rejected(signature: str | None) -> None:
    assert _rejected(verify_meta, WA_BODY, signature, [APP_SECRET]).reason == (
        "missing X-Hub-Signature-256"
    )


def test_meta__no_secret_configured_is_rejected() -> None:
    error = _rejected(verify_meta, WA_BODY, _meta_sign(APP_SECRET, WA_BODY), [])
    assert error.reason == "no Meta app secret configured"


@pytest.mark.parametrize(
    "signature",
    [
        "sha1=" + hmac.new(APP_SECRET.encode(), WA_BODY, hashlib.sha1).hexdigest(),
        hmac.new(APP_SECRET.encode(), WA_BODY, hashlib.sha256).hexdigest(),  # no prefix
        "sha256=zz" + "0" * 62,
        "sha256=" + "ab" * 20,  # hex, but not 32 bytes
        "sha256=é",
    ],
    ids=["sha1", "no-prefix", "not-hex", "short", "non-ascii"],
)
def test_meta__malformed_signature_is_rejected(signature: str) -> None:
    _rejected(verify_meta, WA_BODY, signature, [APP_SECRET])


@pytest.mark.parametrize("signed_by", ["old-secret", APP_SECRET])
def test_meta__rotation_accepts_either_secret(signed_by: str) -> None:
    verify_meta(WA_BODY, _meta_sign(signed_by, WA_BODY), ["old-secret", APP_SECRET])


def test_meta__rotation_rejects_when_neither_secret_signed() -> None:
    _rejected(verify_meta, WA_BODY, _meta_sign("third", WA_BODY), ["old-secret", APP_SECRET])


# -- Standard Webhooks (signed by the reference implementation) --------------------------------


def _whsec() -> str:
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


SECRET = _whsec()
OLD_SECRET = _whsec()
STD_BODY = (
    b'{"type":"message.delivered","timestamp":"2025-06-01T12:00:00Z","data":{"message_id":"m1"}}'
)


def _std_headers(
    secret: str, body: bytes = STD_BODY, at: datetime = NOW, msg_id: str = "msg_2KWPBgLlAf"
) -> dict[str, str]:
    """Headers as a sender using the ``standardwebhooks`` library would send them."""
    signature = Webhook(secret).sign(msg_id, at, body.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
    }


def test_standard__accepts_and_returns_the_webhook_id() -> None:
    assert verify_standard(STD_BODY, _std_headers(SECRET), [SECRET], NOW) == "msg_2KWPBgLlAf"


def test_standard__header_names_are_case_insensitive() -> None:
    headers = {name.title(): value for name, value in _std_headers(SECRET).items()}
    assert "Webhook-Signature" in headers
    assert verify_standard(STD_BODY, headers, [SECRET], NOW) == "msg_2KWPBgLlAf"


def test_standard__secret_without_prefix_or_padding_is_accepted() -> None:
    bare = SECRET.removeprefix("whsec_")
    verify_standard(STD_BODY, _std_headers(SECRET), [bare], NOW)
    key = base64.b64encode(b"\x01" * 31).decode()  # 31 bytes: base64 ends in '='
    headers = _std_headers("whsec_" + key)
    verify_standard(STD_BODY, headers, ["whsec_" + key.rstrip("=")], NOW)


def test_standard__tampered_body_is_rejected() -> None:
    headers = _std_headers(SECRET)
    tampered = STD_BODY.replace(b"delivered", b"failed")
    assert _rejected(verify_standard, tampered, headers, [SECRET], NOW).reason == (
        "webhook-signature does not match"
    )


def test_standard__tampered_id_is_rejected() -> None:
    headers = {**_std_headers(SECRET), "webhook-id": "msg_other"}
    _rejected(verify_standard, STD_BODY, headers, [SECRET], NOW)


def test_standard__wrong_secret_is_rejected_and_not_named() -> None:
    error = _rejected(verify_standard, STD_BODY, _std_headers(OLD_SECRET), [SECRET], NOW)
    assert SECRET not in str(error)
    assert SECRET.removeprefix("whsec_") not in str(error)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_standard__missing_header_is_rejected(missing: str) -> None:
    headers = _std_headers(SECRET)
    del headers[missing]
    assert _rejected(verify_standard, STD_BODY, headers, [SECRET], NOW).reason == (
        f"missing {missing}"
    )


def test_standard__no_secret_configured_is_rejected() -> None:
    error = _rejected(verify_standard, STD_BODY, _std_headers(SECRET), [" "], NOW)
    assert error.reason == "no Standard Webhooks secret configured"


@pytest.mark.parametrize("secret", ["whsec_not*base64", "whsec_"])
def test_standard__a_secret_that_is_not_base64_is_a_config_error(secret: str) -> None:
    with pytest.raises(ConfigError, match="secret #2"):
        verify_standard(STD_BODY, _std_headers(SECRET), [SECRET, secret], NOW)


@pytest.mark.parametrize("signed_by", ["old", "new"])
def test_standard__rotation_we_hold_two_secrets(signed_by: str) -> None:
    headers = _std_headers(OLD_SECRET if signed_by == "old" else SECRET)
    verify_standard(STD_BODY, headers, [OLD_SECRET, SECRET], NOW)


@pytest.mark.parametrize("valid_first", [True, False])
def test_standard__rotation_sender_sends_two_signatures(valid_first: bool) -> None:
    stranger = _std_headers(_whsec())["webhook-signature"]
    headers = _std_headers(SECRET)
    pair = [headers["webhook-signature"], stranger]
    headers["webhook-signature"] = " ".join(pair if valid_first else reversed(pair))
    verify_standard(STD_BODY, headers, [SECRET], NOW)


def test_standard__rotation_rejects_when_no_signature_matches_any_secret() -> None:
    headers = _std_headers(_whsec())
    headers["webhook-signature"] += " " + _std_headers(_whsec())["webhook-signature"]
    _rejected(verify_standard, STD_BODY, headers, [OLD_SECRET, SECRET], NOW)


def test_standard__entries_of_other_versions_are_ignored() -> None:
    headers = _std_headers(SECRET)
    valid = headers["webhook-signature"]
    headers["webhook-signature"] = f"v1a,{valid[3:]} v2,AAAA junk v1,!!! {valid}"
    verify_standard(STD_BODY, headers, [SECRET], NOW)


def test_standard__only_other_versions_is_rejected() -> None:
    headers = _std_headers(SECRET)
    headers["webhook-signature"] = "v1a," + headers["webhook-signature"][3:]
    assert _rejected(verify_standard, STD_BODY, headers, [SECRET], NOW).reason == (
        "webhook-signature has no v1 signature"
    )


@pytest.mark.parametrize(
    ("offset", "accepted"),
    [(-300, True), (-301, False), (300, True), (301, False)],
    ids=["5min-old", "just-stale", "5min-ahead", "just-future"],
)
def test_standard__timestamp_must_be_within_five_minutes(offset: int, accepted: bool) -> None:
    headers = _std_headers(SECRET, at=NOW + timedelta(seconds=offset))
    if accepted:
        verify_standard(STD_BODY, headers, [SECRET], NOW)
    else:
        reason = _rejected(verify_standard, STD_BODY, headers, [SECRET], NOW).reason
        assert ("stale" if offset < 0 else "future") in reason


def test_standard__naive_now_is_read_as_utc() -> None:
    naive = NOW.replace(tzinfo=None)
    verify_standard(STD_BODY, _std_headers(SECRET), [SECRET], naive)


def test_standard__malformed_timestamp_is_rejected() -> None:
    headers = {**_std_headers(SECRET), "webhook-timestamp": "1748779200.0"}
    assert _rejected(verify_standard, STD_BODY, headers, [SECRET], NOW).reason == (
        "webhook-timestamp is not unix seconds"
    )


@pytest.mark.parametrize(
    "body",
    [STD_BODY, '{"note":"grüße 👋"}'.encode(), b""],
    ids=["receipt", "non-ascii", "empty"],
)
def test_standard__agrees_with_the_reference_verifier(body: bytes) -> None:
    # The reference reads the wall clock, so sign "now" for both.
    now = datetime.now(UTC)
    headers = _std_headers(SECRET, body=body, at=now)
    Webhook(SECRET).verify(body, headers, json_parse=False)
    verify_standard(body, headers, [SECRET], now)
    tampered = body + b" "
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(tampered, headers, json_parse=False)
    _rejected(verify_standard, tampered, headers, [SECRET], now)


# -- garbage in, SignatureError out ----------------------------------------------------------

FUZZ_KEY = _der_b64(ec.generate_private_key(ec.SECP256R1()))
header_text = st.one_of(st.none(), st.text(max_size=200))


@given(signature=header_text, params=st.lists(st.tuples(st.text(), st.text()), max_size=5))
def test_twilio__arbitrary_input_only_raises_signature_error(
    signature: str | None, params: list[tuple[str, str]]
) -> None:
    with pytest.raises(SignatureError):
        verify_twilio("https://sluice.example/t", params, signature, [TWILIO_TOKEN])


@given(signature=header_text, timestamp=header_text, body=st.binary(max_size=200))
def test_sendgrid__arbitrary_input_only_raises_signature_error(
    signature: str | None, timestamp: str | None, body: bytes
) -> None:
    with pytest.raises(SignatureError):
        verify_sendgrid(body, signature, timestamp, [FUZZ_KEY], NOW)


@given(signature=header_text, body=st.binary(max_size=200))
def test_meta__arbitrary_input_only_raises_signature_error(
    signature: str | None, body: bytes
) -> None:
    with pytest.raises(SignatureError):
        verify_meta(body, signature, [APP_SECRET])


@given(
    headers=st.dictionaries(
        st.sampled_from(["webhook-id", "Webhook-Timestamp", "webhook-signature", "x"]),
        st.text(max_size=100),
    ),
    body=st.binary(max_size=200),
)
def test_standard__arbitrary_input_only_raises_signature_error(
    headers: dict[str, str], body: bytes
) -> None:
    with pytest.raises(SignatureError):
        verify_standard(body, headers, [SECRET], NOW)
