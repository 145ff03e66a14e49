"""Ingress: webhooks from providers, checked and read, before anything is stored.

- ``verify``: one signature check per scheme (Twilio, SendGrid, Meta / WhatsApp,
  Standard Webhooks); each raises ``SignatureError`` on a request it does not trust;
- ``parse``: each provider's body read into ``Event``s (receipts and inbound events),
  raising ``PayloadError`` naming the field on anything malformed.

Both are pure: no database, no network, and time only as a ``now`` argument.
"""

from __future__ import annotations

from sluice.ingress.parse import (
    Event,
    PayloadError,
    parse_sendgrid,
    parse_standard,
    parse_twilio,
    parse_whatsapp,
)
from sluice.ingress.verify import (
    TOLERANCE,
    SignatureError,
    verify_meta,
    verify_sendgrid,
    verify_standard,
    verify_twilio,
)

__all__ = [
    "TOLERANCE",
    "Event",
    "PayloadError",
    "SignatureError",
    "parse_sendgrid",
    "parse_standard",
    "parse_twilio",
    "parse_whatsapp",
    "verify_meta",
    "verify_sendgrid",
    "verify_standard",
    "verify_twilio",
]
