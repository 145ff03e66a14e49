"""May this event touch that message? The tenancy rule for what ingress takes in.

A provider's webhook names the message it is about by Sluice's own id (echoed back from
the send) and by the provider's id for it (SID, wamid, ``X-Message-Id``). Both travel in
fields the sender chooses: whoever holds *a* valid signing secret can name *any* message.
So a signature only proves who sent the request; whether the event may apply to the
message it names is decided here, from three facts that the sender cannot choose:

- the **tenant** the verifying credential speaks for (``InboxItem.source_tenant``; a
  credential of the operator's own provider account speaks for every tenant) must be the
  message's tenant;
- the **kind of provider** the source is (a Twilio source speaks of Twilio sends, a
  SendGrid source of SendGrid sends) must be the kind of the provider the message went
  through; a Standard Webhooks source is a partner's and may speak of any;
- the **provider message id**, when both the event and the message have one, must match:
  it is what the provider gave the account that made the send, so only that account's
  callbacks carry it.

Pure: no database, no clock. ``None`` means the event may apply.
"""

from __future__ import annotations

from collections.abc import Mapping

from sluice.model import Message
from sluice.store.base import InboxItem

__all__ = ["PROVIDER_KINDS", "message_binding_problem", "route_binding_problem"]

#: Source kinds that are one provider's own webhooks (``webhook`` is any partner's).
PROVIDER_KINDS = frozenset({"twilio", "sendgrid", "whatsapp"})


def message_binding_problem(
    item: InboxItem,
    msg: Message,
    *,
    source_kind: str | None,
    provider_kinds: Mapping[str, str],
) -> str | None:
    """Why ``item`` must not apply to ``msg``, or ``None`` when it may.

    ``source_kind`` is the kind of the ingress source the item came in through (``None``
    when that source is no longer configured); ``provider_kinds`` maps provider names,
    aliases included (``twilio-backup``), to their kind.
    """
    if item.source_tenant is not None and item.source_tenant != msg.tenant:
        return (
            f"source {item.provider!r} speaks for tenant {item.source_tenant!r}, but message "
            f"{msg.id} belongs to tenant {msg.tenant!r}"
        )
    if source_kind in PROVIDER_KINDS:
        sent_with = provider_kinds.get(msg.provider, msg.provider)
        if sent_with != source_kind:
            return (
                f"a {source_kind} event cannot be about message {msg.id}, which was sent "
                f"through {msg.provider!r} ({sent_with})"
            )
    if (
        item.provider_message_id is not None
        and msg.provider_message_id is not None
        and item.provider_message_id != msg.provider_message_id
    ):
        return (
            f"the event names provider message id {item.provider_message_id!r}, but message "
            f"{msg.id} was sent as {msg.provider_message_id!r}"
        )
    return None


def route_binding_problem(item: InboxItem, routed: str | None) -> str | None:
    """Why an inbound event written to an address routed to tenant ``routed`` must not be
    handed to it, or ``None``: a credential that speaks for one tenant cannot deliver
    inbound events to another tenant's number."""
    if routed is not None and item.source_tenant is not None and routed != item.source_tenant:
        return (
            f"source {item.provider!r} speaks for tenant {item.source_tenant!r}, but address "
            f"{item.address!r} is routed to tenant {routed!r}"
        )
    return None
