"""Recipient hygiene from what providers tell us: opt-outs, opt-ins, bounces, complaints,
and the time each recipient last wrote (WhatsApp's 24-hour window).

The projector hands every event over once it knows the tenant (``inbound``) or the
message (``receipt``):

- an inbound SMS or WhatsApp message (Twilio's ``Body``, the Cloud API's
  ``messages[].text.body`` or button text) that is only STOP, STOPALL, UNSUBSCRIBE,
  CANCEL, END or QUIT (any case, trimmed) suppresses the sender for the tenant on that
  medium; START, UNSTOP or YES lifts it. Twilio's own opt-out handling reports the same
  as ``OptOutType`` (STOP / START), which counts too;
- any inbound WhatsApp message (through Meta or through Twilio) records when the
  recipient last wrote: the dispatcher lets free-form text go within 24 hours of it;
- SendGrid's ``bounce`` (type ``bounce``: a hard bounce; ``blocked`` is a soft one and
  is not suppressed), ``spamreport``, ``unsubscribe`` and ``group_unsubscribe`` suppress
  the address for email;
- a receipt whose error code means "opted out" (``flow.hygiene.OPT_OUT_CODES``: Twilio
  21610 and 63014, WhatsApp 131050) suppresses the message's recipient.

Every change goes through ``sluice.store.hygiene`` (audited, actor ``ingress:<source>``,
source the provider's event id). A sender address that is not a valid recipient
(hostile or garbled) changes nothing and is logged.

Order: an inbound event the projector must try again (the tenant has no ``inbound_url``
yet, say) would apply its STOP or START once more, possibly after a later START or STOP
had been applied. So an inbound event's keyword is applied on its first try only (or
again when applying it was what failed: the error then starts with ``FAILED``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sluice import metrics
from sluice.errors import SluiceError, ValidationError
from sluice.flow.hygiene import (
    OPT_OUT_CODES,
    Suppression,
    check_suppression,
    medium_of,
    opt_keyword,
)
from sluice.ingress.config import IngressConfig
from sluice.model import Message
from sluice.store.base import InboxItem, Store
from sluice.store.hygiene import lift, suppress

__all__ = ["FAILED", "InboundHygiene"]

#: How a failure to apply an event's keyword starts (kept as the inbox item's last error).
FAILED = "recipient hygiene not applied:"
#: SendGrid events that suppress an address, with the reason kept.
_SENDGRID = {"spamreport": "spamreport", "unsubscribe": "unsubscribe",
             "group_unsubscribe": "group_unsubscribe", "bounce": "bounce"}  # fmt: skip


class InboundHygiene:
    """Applies what one inbox event says about a recipient; see the module docstring."""

    def __init__(
        self,
        store: Store,
        config: IngressConfig,
        provider_kinds: Mapping[str, str],
        logger: Any,
    ) -> None:
        self.store = store
        self.config = config
        self.provider_kinds = provider_kinds
        self.log = logger

    def _kind(self, item: InboxItem) -> str | None:
        source = self.config.sources.get(item.provider)
        return source.kind if source is not None else None

    async def receipt(self, item: InboxItem, msg: Message, now: datetime) -> None:
        """A receipt about ``msg``: a hard bounce or an opted-out error suppresses."""
        kind = self._kind(item)
        reason = None
        if kind == "sendgrid" and item.data.get("event") == "bounce":
            # type "blocked" is a soft bounce (the receiving server said not now).
            reason = "bounce" if item.data.get("type", "bounce") == "bounce" else None
        elif item.error_code is not None and item.error_code in OPT_OUT_CODES.get(kind or "", ()):
            reason = "provider_error"
        if reason is None:
            return
        medium = medium_of(msg.channel, self.provider_kinds.get(msg.provider, msg.provider))
        if medium is None:
            return
        address = item.data.get("email") if kind == "sendgrid" else None
        source = item.event_id if reason == "bounce" else f"{item.event_id} ({item.error_code})"
        await self._suppress(item, msg.tenant, medium, address or msg.recipient, reason,
                             source, now)  # fmt: skip

    async def inbound(self, item: InboxItem, tenant: str, now: datetime) -> None:
        """An inbound event of ``tenant``: keywords, opt-out events, email complaints,
        and the last time a WhatsApp recipient wrote."""
        kind = self._kind(item)
        if kind == "sendgrid":
            reason = _SENDGRID.get(str(item.data.get("event")))
            if reason is not None and self._first(item):
                email = item.data.get("email")
                await self._suppress(item, tenant, "email", email, reason, item.event_id, now)
            return
        if kind == "twilio":
            sender = item.data.get("From")
            body: object = item.data.get("Body")
            opt_type = str(item.data.get("OptOutType") or "").upper()
        elif kind == "whatsapp":
            message = item.data.get("message") or {}
            sender = message.get("from") if isinstance(message, dict) else None
            body = _whatsapp_text(message)
            opt_type = ""
        else:
            return
        if not isinstance(sender, str):
            return
        medium = "whatsapp" if kind == "whatsapp" or sender.startswith("whatsapp:") else "sms"
        recipient = self._valid(tenant, medium, sender, item)
        if recipient is None:
            return
        if medium == "whatsapp":
            await self.store.contact_seen(tenant, medium, recipient, item.occurred_at or now)
        word = {"STOP": "stop", "START": "start"}.get(opt_type) or opt_keyword(body)
        if word is None or not self._first(item):
            return
        reason = "opt_out" if opt_type == "STOP" else "stop"
        if word == "stop":
            await self._suppress(item, tenant, medium, recipient, reason, item.event_id, now)
            return
        try:
            lifted = await lift(
                self.store, tenant, medium, recipient, f"ingress:{item.provider}",
                "start", item.event_id, now,
            )  # fmt: skip
        except SluiceError as exc:
            raise SluiceError(f"{FAILED} {exc}") from exc
        if lifted is not None:
            self.log.info("recipient opted back in", tenant=tenant, channel=medium,
                          source=item.provider, event_id=item.event_id)  # fmt: skip

    def _first(self, item: InboxItem) -> bool:
        return item.attempts <= 1 or (item.last_error or "").startswith(FAILED)

    def _valid(self, tenant: str, medium: str, address: object, item: InboxItem) -> str | None:
        try:
            return check_suppression(tenant, medium, address, item.event_id)
        except ValidationError as exc:
            self.log.warning("inbound sender is no valid recipient; nothing suppressed",
                             source=item.provider, event_id=item.event_id[:100],
                             problem=str(exc)[:200])  # fmt: skip
            return None

    async def _suppress(
        self, item: InboxItem, tenant: str, medium: str, address: object, reason: str,
        source: str, now: datetime,
    ) -> None:  # fmt: skip
        recipient = self._valid(tenant, medium, address, item)
        if recipient is None:
            return
        entry = Suppression(tenant, medium, recipient, reason, source[:512],
                            f"ingress:{item.provider}", now)  # fmt: skip
        try:
            added = await suppress(self.store, entry)
        except SluiceError as exc:
            raise SluiceError(f"{FAILED} {exc}") from exc
        if added:
            metrics.of(metrics.SUPPRESSIONS_ADDED, medium, reason).inc()
            self.log.info("recipient suppressed", tenant=tenant, channel=medium, reason=reason,
                          source=item.provider, event_id=item.event_id)  # fmt: skip


def _whatsapp_text(message: object) -> object:
    """The words of a Cloud API inbound message: a text's body, or a button's text."""
    if not isinstance(message, dict):
        return None
    for part, key in (("text", "body"), ("button", "text")):
        value = message.get(part)
        if isinstance(value, dict) and isinstance(value.get(key), str):
            return value[key]
    return None
