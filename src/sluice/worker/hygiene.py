"""Recipient hygiene while sending: what the dispatcher asks before and after a call.

Before any provider call, once per claimed batch (two queries at most):

- a message whose recipient is on its tenant's suppression list for the message's
  medium ends ``suppressed`` (error code ``RECIPIENT_SUPPRESSED``): nothing is sent, no
  attempt is spent, it is not retried and it is not a dead letter;
- a free-form WhatsApp message (not a template) to a recipient who has not written to
  the tenant within ``SLUICE_WHATSAPP_WINDOW_HOURS`` (24) ends ``dead`` with
  ``WINDOW_CLOSED`` and the reason, instead of failing at Meta (131047) or Twilio
  (63016). ``SLUICE_WHATSAPP_WINDOW=false`` leaves that to the provider.

After a call the provider answered "this recipient opted out" (``RECIPIENT_UNSUBSCRIBED``:
Twilio 21610, WhatsApp 131050), the recipient is suppressed for the tenant (audited,
actor ``worker:<id>``) and the message ends ``suppressed`` rather than dead.

The rules themselves are ``sluice.flow.hygiene``'s; the writes go through
``sluice.store.hygiene``, as ingress's and the operator's do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sluice import metrics
from sluice.config import Settings
from sluice.errors import SluiceError
from sluice.flow.hygiene import Suppression, is_template, medium_of, normalise, window_open
from sluice.model import Completion, ErrorClass, ErrorCode, Message, Outcome, Status
from sluice.store.base import Store
from sluice.store.hygiene import suppress
from sluice.worker.retry import Decision

__all__ = ["RecipientScreen"]

Key = tuple[str, str, str]


class RecipientScreen:
    """Screens claimed messages for suppressed recipients and closed WhatsApp windows.

    ``kinds`` maps each provider name the worker has (aliases included) to its built-in
    kind, which says the medium of a message on a channel of the operator's own.
    """

    def __init__(
        self,
        store: Store,
        settings: Settings,
        kinds: Mapping[str, str],
        *,
        worker_id: str,
        tally: metrics.Tally,
        logger: Any,
    ) -> None:
        self.store = store
        self.kinds = dict(kinds)
        self.worker_id = worker_id
        self.tally = tally
        self.log = logger
        self.window = settings.whatsapp_window
        self.window_hours = settings.whatsapp_window_hours

    def key(self, msg: Message) -> Key | None:
        """(tenant, medium, normalised recipient), or None when no list applies."""
        medium = medium_of(msg.channel, self.kinds.get(msg.provider, msg.provider))
        if medium is None:
            return None
        return (msg.tenant, medium, normalise(medium, msg.recipient))

    async def screen(
        self, batch: Sequence[Message], now: datetime
    ) -> tuple[list[Message], list[Completion]]:
        """What may go on, and the verdicts of what may not (to write back as they are).
        Raises ``SluiceError`` when the store cannot be asked: the caller gives the batch
        back, as it does when the connections cannot be loaded."""
        keys = {m.id: k for m in batch if (k := self.key(m)) is not None}
        if not keys:
            return list(batch), []
        listed = await self.store.suppression_find(sorted(set(keys.values())))
        free_form = {
            m.id for m in batch
            if self.window and m.id in keys and keys[m.id][1] == "whatsapp"
            and keys[m.id] not in listed and not is_template(m.payload)
        }  # fmt: skip
        asked = sorted({keys[i] for i in free_form})
        seen = await self.store.contact_find(asked) if asked else {}
        go: list[Message] = []
        stopped: list[Completion] = []
        for msg in batch:
            key = keys.get(msg.id)
            if key is not None and key in listed:
                stopped.append(self._suppressed(msg, key))
            elif (
                key is not None
                and msg.id in free_form
                and not window_open(seen.get(key), now, self.window_hours)
            ):
                stopped.append(self._window_closed(msg, seen.get(key)))
            else:
                go.append(msg)
        return go, stopped

    async def unsubscribed(self, msg: Message, outcome: Outcome, now: datetime) -> Decision:
        """The provider said the recipient opted out: suppress them for the tenant and end
        the message ``suppressed`` (the attempt was made and is kept)."""
        key = self.key(msg)
        if key is not None:
            code = outcome.provider_code or str(outcome.code)
            entry = Suppression(
                tenant=key[0], channel=key[1], recipient=key[2], reason="provider_error",
                source=f"{msg.provider}:{code}"[:512], actor=f"worker:{self.worker_id}",
                created_at=now,
            )  # fmt: skip
            try:
                if await suppress(self.store, entry):
                    self.tally.inc(metrics.SUPPRESSIONS_ADDED, key[1], entry.reason)
            except SluiceError as exc:  # the message's verdict stands; the next send says it again
                self.log.warning("could not record the suppression", error=str(exc),
                                 tenant=msg.tenant, provider=msg.provider)  # fmt: skip
        self._count(msg, "unsubscribed")
        return Decision(Status.SUPPRESSED, error_class=ErrorClass.PERMANENT)

    def _suppressed(self, msg: Message, key: Key) -> Completion:
        self._count(msg, "list")
        why = (
            f"not sent: {msg.recipient} is on tenant {msg.tenant}'s {key[1]} suppression list "
            "(see `sluice suppressions list`)"
        )
        return self._verdict(msg, Status.SUPPRESSED, ErrorCode.RECIPIENT_SUPPRESSED, why)

    def _window_closed(self, msg: Message, last: datetime | None) -> Completion:
        metrics_tenant = metrics.tenant_label(msg.tenant)
        code = str(ErrorCode.WINDOW_CLOSED)
        self.tally.inc(metrics.DEAD_LETTERED, metrics_tenant, msg.channel, msg.provider, code)
        since = f"last wrote {last.isoformat()}" if last is not None else "has never written"
        why = (
            f"not sent: free-form WhatsApp text outside the {self.window_hours:g}-hour "
            f"customer-service window ({msg.recipient} {since}); send an approved template "
            "instead (payload.template, or content_sid through Twilio)"
        )
        return self._verdict(msg, Status.DEAD, ErrorCode.WINDOW_CLOSED, why)

    def _verdict(self, msg: Message, status: Status, code: ErrorCode, why: str) -> Completion:
        self.log.info("message stopped before the call", id=msg.id, tenant=msg.tenant,
                      provider=msg.provider, status=str(status), code=str(code))  # fmt: skip
        return Completion(
            message_id=msg.id,
            claim_seq=msg.claim_seq,
            worker_id=self.worker_id,
            status=status,
            attempt=None,
            refund_attempt=True,  # no provider was called: no attempt spent
            error_code=str(code),
            error=why,
        )

    def _count(self, msg: Message, reason: str) -> None:
        tenant = metrics.tenant_label(msg.tenant)
        self.tally.inc(metrics.SUPPRESSED, tenant, msg.channel, msg.provider, reason)
