"""The ``null`` provider: accepts everything at once, for benchmarks and dry runs.

It does no I/O and never yields to the event loop, so a benchmark run with it measures
Sluice's own overhead (claim, dispatch, write-back) and nothing else.
"""

from __future__ import annotations

from sluice.model import Message, Outcome
from sluice.providers.base import Credentials

__all__ = ["NullProvider"]


class NullProvider:
    """Reports every message as sent, with the message id as the provider's id."""

    name = "null"

    async def send(self, message: Message, credentials: Credentials | None = None) -> Outcome:
        """Succeed immediately."""
        return Outcome.success(provider_message_id=message.id)
