"""Is this webhook really from the provider? One check per signing scheme.

Each verifier returns quietly when the request is authentic and raises
``SignatureError`` otherwise; the caller answers 401 and stores nothing. Every verifier
takes a *sequence* of secrets and accepts a request that any one of them signed, so a
secret can be rotated without a window of rejected webhooks: configure old and new,
switch the provider over, then drop the old one.

- ``verify_twilio``: ``X-Twilio-Signature``, HMAC-SHA1 (auth token) over the URL followed
  by every form field as name + value, sorted; base64.
- ``verify_sendgrid``: ``X-Twilio-Email-Event-Webhook-Signature``, ECDSA P-256 / SHA-256
  over the ``X-Twilio-Email-Event-Webhook-Timestamp`` header followed by the raw body.
- ``verify_meta``: ``X-Hub-Signature-256``, ``sha256=`` + hex HMAC-SHA256 (app secret) of
  the raw body (WhatsApp Cloud API, and every other Meta webhook).
- ``verify_standard``: Standard Webhooks, HMAC-SHA256 over ``{id}.{timestamp}.{body}``
  keyed with the base64 part of a ``whsec_`` secret; ``webhook-signature`` carries one or
  more ``v1,<base64>`` entries.

The schemes with a signed timestamp (SendGrid, Standard Webhooks) also refuse a request
whose timestamp is further than ``tolerance`` from ``now``, in either direction, so a
captured request cannot be replayed later. ``now`` is passed in: tests control time.

Digests are compared with ``hmac.compare_digest``. A ``SignatureError``'s reason is short
and safe to log: it names the header and what was wrong with it, never a secret, never
the expected value. A secret that cannot be used at all (a public key that does not
parse, a ``whsec_`` secret that is not base64) is the operator's mistake, not the
sender's, and raises ``ConfigError`` instead, so it shows up as a server error rather
than as a stream of "bad signature" rejections.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit, urlunsplit

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sluice.errors import ConfigError, SluiceError

__all__ = [
    "TOLERANCE",
    "SignatureError",
    "verify_meta",
    "verify_sendgrid",
    "verify_standard",
    "verify_twilio",
]

#: How far a signed timestamp may be from our clock, either way (Standard Webhooks' advice;
#: SendGrid documents no window, and the same one serves).
TOLERANCE = timedelta(minutes=5)

_TWILIO_HEADER = "X-Twilio-Signature"
_SENDGRID_SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
_SENDGRID_TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"
_META_HEADER = "X-Hub-Signature-256"
_STANDARD_PREFIX = "whsec_"
_DEFAULT_PORTS = {"http": 80, "https": 443}
#: Unix seconds have 10 digits until 2286; anything much longer is not a timestamp.
_MAX_TIMESTAMP_DIGITS = 12


class SignatureError(SluiceError):
    """The signature is missing, malformed, stale or wrong: the request is not trusted.

    ``reason`` is short and safe to log; it never contains a secret or the expected value.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def verify_twilio(
    url: str,
    params: Sequence[tuple[str, str]],
    signature: str | None,
    auth_tokens: Sequence[str],
) -> None:
    """Check ``X-Twilio-Signature`` on a form-encoded Twilio webhook.

    ``url`` is the full URL Twilio requested, query string included, exactly as
    configured with Twilio. ``params`` are the POST form fields as (name, value) pairs; a
    name may repeat. Like Twilio's own SDKs, the URL is also tried with its port removed
    and with the scheme's default port added, because Twilio is not consistent about
    which of the two it signs. (The ``bodySHA256`` variant for JSON bodies is not
    supported.)
    """
    tokens = _configured(auth_tokens, "Twilio auth token")
    given = _present(signature, _TWILIO_HEADER).encode()
    # Sorted by name, then value; an identical pair sent twice counts once (as the SDKs do).
    fields = "".join(name + value for name, value in sorted({(n, v) for n, v in params}))
    for candidate in _url_variants(url):
        signed = (candidate + fields).encode()
        for token in tokens:
            digest = hmac.new(token.encode(), signed, hashlib.sha1).digest()
            if hmac.compare_digest(base64.b64encode(digest), given):
                return
    raise SignatureError(f"{_TWILIO_HEADER} does not match")


def verify_sendgrid(
    body: bytes,
    signature: str | None,
    timestamp: str | None,
    public_keys: Sequence[str],
    now: datetime,
    tolerance: timedelta = TOLERANCE,
) -> None:
    """Check SendGrid's signed Event Webhook.

    ``signature`` and ``timestamp`` are the values of
    ``X-Twilio-Email-Event-Webhook-Signature`` and ``-Timestamp``. ``public_keys`` are the
    verification keys from SendGrid's settings, each as the base64 DER text SendGrid shows
    or as PEM.
    """
    keys = [_sendgrid_key(text, index) for index, text in enumerate(public_keys) if text.strip()]
    if not keys:
        raise SignatureError("no SendGrid verification key configured")
    sent_signature = _present(signature, _SENDGRID_SIGNATURE)
    sent_at = _present(timestamp, _SENDGRID_TIMESTAMP)
    _check_fresh(sent_at, _SENDGRID_TIMESTAMP, now, tolerance)
    der = _b64decode(sent_signature)
    if der is None:
        raise SignatureError(f"{_SENDGRID_SIGNATURE} is not base64")
    signed = sent_at.encode() + body
    for key in keys:
        try:
            key.verify(der, signed, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:  # also what a malformed DER signature raises
            continue
        return
    raise SignatureError(f"{_SENDGRID_SIGNATURE} does not match")


def verify_meta(body: bytes, signature: str | None, app_secrets: Sequence[str]) -> None:
    """Check ``X-Hub-Signature-256`` (``sha256=<hex>``) on a Meta / WhatsApp webhook."""
    secrets = _configured(app_secrets, "Meta app secret")
    given = _present(signature, _META_HEADER)
    scheme, sep, hex_digest = given.partition("=")
    if not sep or scheme.strip().lower() != "sha256":
        raise SignatureError(f"{_META_HEADER} does not start with 'sha256='")
    try:
        digest = bytes.fromhex(hex_digest.strip())
    except ValueError:
        raise SignatureError(f"{_META_HEADER} is not hex") from None
    if len(digest) != hashlib.sha256().digest_size:
        raise SignatureError(f"{_META_HEADER} is not a SHA-256 digest")
    for secret in secrets:
        if hmac.compare_digest(hmac.new(secret.encode(), body, hashlib.sha256).digest(), digest):
            return
    raise SignatureError(f"{_META_HEADER} does not match")


def verify_standard(
    body: bytes,
    headers: Mapping[str, str],
    secrets: Sequence[str],
    now: datetime,
    tolerance: timedelta = TOLERANCE,
) -> str:
    """Check a Standard Webhooks request and return its ``webhook-id``.

    ``headers`` may use any case. ``secrets`` are ``whsec_<base64>`` (the prefix may be
    left out). The request is accepted when any ``v1`` entry of ``webhook-signature``
    matches any secret; the sender may sign with two keys while it rotates, and we may
    hold two while we do. Entries of other versions are ignored.
    """
    keys = [_standard_key(text, index) for index, text in enumerate(secrets) if text.strip()]
    if not keys:
        raise SignatureError("no Standard Webhooks secret configured")
    lowered = {name.lower(): value for name, value in headers.items()}
    webhook_id = _present(lowered.get("webhook-id"), "webhook-id")
    sent_at = _present(lowered.get("webhook-timestamp"), "webhook-timestamp")
    header = _present(lowered.get("webhook-signature"), "webhook-signature")
    _check_fresh(sent_at, "webhook-timestamp", now, tolerance)
    offered: list[bytes] = []
    for entry in header.split():
        version, sep, encoded = entry.partition(",")
        decoded = _b64decode(encoded) if sep and version == "v1" else None
        if decoded is not None:
            offered.append(decoded)
    if not offered:
        raise SignatureError("webhook-signature has no v1 signature")
    signed = f"{webhook_id}.{sent_at}.".encode() + body
    for key in keys:
        expected = hmac.digest(key, signed, "sha256")  # one-shot, in C
        # No early exit over the offered entries: the time taken does not depend on which
        # one matched (it would only ever reveal that one did).
        matched = False
        for candidate in offered:
            matched |= hmac.compare_digest(expected, candidate)
        if matched:
            return webhook_id
    raise SignatureError("webhook-signature does not match")


def _configured(secrets: Sequence[str], what: str) -> list[str]:
    usable = [secret for secret in secrets if secret.strip()]
    if not usable:
        raise SignatureError(f"no {what} configured")
    return usable


def _present(value: str | None, header: str) -> str:
    if value is None or not value.strip():
        raise SignatureError(f"missing {header}")
    return value.strip()


def _b64decode(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):  # ValueError: non-ASCII text
        return None


def _check_fresh(text: str, header: str, now: datetime, tolerance: timedelta) -> None:
    """Refuse a signed timestamp (unix seconds) further than ``tolerance`` from ``now``."""
    if not (text.isascii() and text.isdigit()) or len(text) > _MAX_TIMESTAMP_DIGITS:
        raise SignatureError(f"{header} is not unix seconds")
    if now.tzinfo is None:  # a naive clock reading is taken to be UTC, as Sluice's clocks are
        now = now.replace(tzinfo=UTC)
    age = now.timestamp() - int(text)
    if age > tolerance.total_seconds():
        raise SignatureError(f"{header} is stale (older than {tolerance})")
    if -age > tolerance.total_seconds():
        raise SignatureError(f"{header} is in the future (by more than {tolerance})")


def _url_variants(url: str) -> list[str]:
    """``url`` as given, then without its port or with the default one (Twilio signs either)."""
    variants = [url]
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # a URL we cannot take apart is only tried as given
        return variants
    default = _DEFAULT_PORTS.get(parts.scheme.lower())
    if default is None or not parts.hostname:
        return variants
    userinfo, at, host = parts.netloc.rpartition("@")
    if port is not None:
        host = host.rsplit(":", 1)[0]
        variants.append(urlunsplit(parts._replace(netloc=f"{userinfo}{at}{host}")))
    else:
        variants.append(urlunsplit(parts._replace(netloc=f"{userinfo}{at}{host}:{default}")))
    return variants


def _sendgrid_key(text: str, index: int) -> ec.EllipticCurvePublicKey:
    key = _load_ec_key(text.strip())
    if key is None:
        raise ConfigError(
            f"SendGrid verification key #{index + 1} is not an EC public key "
            "(expected the base64 DER text from SendGrid's settings, or PEM)"
        )
    return key


@functools.lru_cache(maxsize=16)
def _load_ec_key(text: str) -> ec.EllipticCurvePublicKey | None:
    """A public key from PEM or base64 DER text; cached, as parsing per request is waste."""
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode())
        else:
            der = _b64decode("".join(text.split()))
            if der is None:
                return None
            key = serialization.load_der_public_key(der)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return None
    return key if isinstance(key, ec.EllipticCurvePublicKey) else None


@functools.lru_cache(maxsize=256)
def _standard_key(text: str, index: int) -> bytes:
    """The key of a configured secret, decoded once (not on every request it verifies)."""
    encoded = text.strip().removeprefix(_STANDARD_PREFIX)
    # The reference library accepts unpadded base64; so do we, but nothing else loose: its
    # habit of skipping stray characters would turn a typo into a different key.
    key = _b64decode(encoded + "=" * (-len(encoded) % 4))
    if not key:
        raise ConfigError(
            f"Standard Webhooks secret #{index + 1} is not base64 after the "
            f"{_STANDARD_PREFIX!r} prefix"
        )
    return key
