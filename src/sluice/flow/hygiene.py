"""Recipient hygiene, the rules: who may not be sent to, and when WhatsApp text may go.

Pure (no store, no clock): the worker (``sluice.worker.hygiene``) applies these before a
provider call, ingress (``sluice.ingress.hygiene``) reads opt-outs and opt-ins from
provider events with them, and the operator's acts (``sluice.ops.suppressions``) check
what they are given with them.

**Suppressions** are kept per tenant and *medium* (``sms``, ``whatsapp``, ``email``): a
message on a channel of the operator's own naming (``otp``) is screened under the medium
its provider sends it as. A recipient is kept as ``normalise`` spells it, so that every
spelling enqueue accepts for one person finds the same entry:

- ``sms``: E.164 as enqueue requires it (``+14155550100``);
- ``whatsapp``: E.164 too; Twilio's ``whatsapp:`` prefix is taken off and Meta's bare
  WhatsApp ID (``14155550100``) gets its ``+``;
- ``email``: the address in lower case (providers compare addresses without case; a
  suppression must not be dodged by ``Ann@Example.com``).

**The WhatsApp customer-service window**: Meta delivers free-form messages only within
``window`` (24 hours) of the recipient's last message to the business; outside it only an
approved template may be sent (Meta answers 131047, Twilio 63016). ``is_template`` tells
the two payloads apart as the adapters build them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sluice.addressing import BUILTIN_PROVIDERS, MEDIA, Addressing
from sluice.errors import ValidationError

__all__ = [
    "CHANNELS",
    "OPT_IN_WORDS",
    "OPT_OUT_CODES",
    "OPT_OUT_WORDS",
    "REASONS",
    "Suppression",
    "check_suppression",
    "is_template",
    "medium_of",
    "normalise",
    "opt_keyword",
    "window_open",
]

#: The media a recipient can be suppressed on.
CHANNELS = ("email", "sms", "whatsapp")
#: Why a recipient is suppressed: an inbound keyword, a provider's own opt-out event, an
#: email event, a provider error on a send, or an operator.
REASONS = frozenset(
    {"stop", "opt_out", "bounce", "spamreport", "unsubscribe", "group_unsubscribe",
     "provider_error", "operator"}
)  # fmt: skip
#: Inbound bodies (trimmed, any case) that opt a recipient out, and back in: the
#: carriers' standard keywords (CTIA), which Twilio's own opt-out handling also honours.
OPT_OUT_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
OPT_IN_WORDS = frozenset({"START", "UNSTOP", "YES"})
#: Provider error codes (as text, as receipts carry them) that mean the recipient
#: opted out: a send answered so, or a receipt saying so, suppresses them.
OPT_OUT_CODES: Mapping[str, frozenset[str]] = {
    # 21610: sent to a number that replied STOP; 63014: blocked by the user's action.
    "twilio": frozenset({"21610", "63014"}),
    # 131050: the user stopped marketing messages from this business.
    "whatsapp": frozenset({"131050"}),
}
_MAX_SOURCE = 512
_MAX_ACTOR = 256
#: The provider whose enqueue rules check a suppressed recipient of each medium: the
#: widest each medium has (Meta's takes the bare WhatsApp ID as well as E.164).
_CHECKED_AS = {"sms": "twilio", "whatsapp": "whatsapp", "email": "sendgrid"}


@dataclass(frozen=True, slots=True)
class Suppression:
    """One recipient a tenant may not send to on one medium, and why.

    ``source``: what said so (an inbound message id, a provider event id, an error
    code, an operator's note); ``actor``: who recorded it (``ingress:twilio``,
    ``worker:<id>``, an operator, a tenant's key).
    """

    tenant: str
    channel: str
    recipient: str
    reason: str
    source: str
    actor: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class _Probe:
    """What ``Addressing.check`` reads of a message, for a bare recipient."""

    provider: str
    channel: str
    recipient: str
    tenant: str = ""
    id: str = ""
    action: str = "send"
    payload: Mapping[str, Any] = field(default_factory=dict)  # never rendered: not http


def medium_of(channel: str, provider_kind: str | None) -> str | None:
    """The medium a message on ``channel`` through a ``provider_kind`` provider goes as
    (a channel of the operator's own: the provider's first medium); ``None`` for one no
    suppression applies to (webhooks, ``http`` actions, ``null``)."""
    if channel in MEDIA:
        medium: str | None = channel
    else:
        media = BUILTIN_PROVIDERS.get(provider_kind or "")
        medium = media[0] if media else None
    return medium if medium in CHANNELS else None


def normalise(channel: str, recipient: str) -> str:
    """``recipient`` as a suppression of ``channel`` keeps it (see the module docstring).
    Anything else is returned as given: checking it is ``check_suppression``'s part."""
    value = recipient.strip()
    if channel == "whatsapp":
        value = value.removeprefix("whatsapp:")
        if value[:1].isdigit():
            value = "+" + value
    elif channel == "email":
        value = value.lower()
    return value


def check_suppression(tenant: Any, channel: Any, recipient: Any, source: Any = "") -> str:
    """The normalised recipient; ``ValidationError`` naming the first bad field.

    ``channel`` must be a medium of ``CHANNELS``; ``recipient`` what enqueue accepts for
    it (one spelling per person: see ``normalise``); ``tenant`` a name as messages carry
    it; ``source`` short text.
    """
    if not isinstance(tenant, str) or not tenant.strip() or tenant != tenant.strip():
        raise ValidationError("tenant", "is required, without leading or trailing whitespace")
    if len(tenant) > 128 or not _clean(tenant):
        raise ValidationError("tenant", "must be at most 128 characters of valid text")
    if channel not in CHANNELS:
        raise ValidationError("channel", f"must be one of {', '.join(CHANNELS)}, not {channel!r}")
    if not isinstance(recipient, str) or not recipient.strip():
        raise ValidationError("recipient", "is required")
    if len(recipient) > 2048 or not _clean(recipient):
        raise ValidationError("recipient", "must be at most 2048 characters of valid text")
    value = normalise(channel, recipient)
    Addressing().check(_Probe(_CHECKED_AS[channel], channel, value))
    if not isinstance(source, str) or len(source) > _MAX_SOURCE or not _clean(source):
        raise ValidationError("source", f"must be text of at most {_MAX_SOURCE} characters")
    return value


def opt_keyword(body: object) -> str | None:
    """``"stop"`` or ``"start"`` when an inbound ``body`` is one of the keywords alone
    (trimmed, any case), else ``None``: "please stop the spam" is a message, not an
    opt-out, as carriers read it."""
    if not isinstance(body, str) or len(body) > 32:
        return None
    word = body.strip().upper()
    if word in OPT_OUT_WORDS:
        return "stop"
    if word in OPT_IN_WORDS:
        return "start"
    return None


def is_template(payload: Mapping[str, Any]) -> bool:
    """Is this WhatsApp payload a template (which may open a conversation) rather than
    free-form text? Meta's adapter sends ``payload["template"]``; Twilio's a Content API
    template by ``content_sid``."""
    return payload.get("template") is not None or payload.get("content_sid") is not None


def window_open(last_inbound: datetime | None, now: datetime, hours: float) -> bool:
    """Did the recipient write within the last ``hours`` (Meta's window is 24)?"""
    return last_inbound is not None and now - last_inbound < timedelta(hours=hours)


def _clean(text: str) -> bool:
    """Encodable (no lone surrogates) and without NUL: storable on both stores."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
