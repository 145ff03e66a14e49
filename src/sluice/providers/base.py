"""The provider protocol: one ``send`` per adapter, given a shared HTTP client."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from sluice.model import Message, Outcome

__all__ = ["Credentials", "Provider"]

#: A connection's secrets for one provider (issue 3 brings stored, encrypted connections).
Credentials = Mapping[str, str]


@runtime_checkable
class Provider(Protocol):
    """Delivers one message; maps every vendor response to an ``Outcome``.

    ``send`` must not raise for anything the provider or the network does: timeouts,
    refused connections, malformed responses all become failure outcomes with a
    canonical code. An exception escaping ``send`` is a bug in the adapter; the
    dispatcher records it as ``INTERNAL`` and retries.

    An adapter may also have ``worker_problem(credentials) -> str | None``: why this
    worker cannot send a message with those credentials because of its own
    configuration (the webhook adapter without ``SLUICE_WEBHOOK_SECRET``). The
    dispatcher asks before the call and, given a reason, puts the message back for
    another worker, no attempt spent, instead of failing it.
    """

    name: str

    async def send(self, message: Message, credentials: Credentials | None = None) -> Outcome:
        """Deliver ``message`` and report what happened."""
        ...
