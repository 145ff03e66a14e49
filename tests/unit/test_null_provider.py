"""The null provider: instant success, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime

from sluice.model import Message, Status, new_message_id
from sluice.providers.base import Provider
from sluice.providers.null import NullProvider


def _message() -> Message:
    return Message(
        id=new_message_id(),
        tenant="t",
        channel="webhook",
        provider="null",
        action="order.created",
        recipient="nobody",
        payload={"n": 1},
        priority=0,
        status=Status.SENDING,
        run_at=datetime.now(UTC),
        attempts=1,
        max_attempts=5,
    )


async def test_send__succeeds_with_the_message_id() -> None:
    message = _message()

    outcome = await NullProvider().send(message)

    assert outcome.ok
    assert outcome.code is None
    assert outcome.provider_message_id == message.id


async def test_send__ignores_credentials() -> None:
    message = _message()

    outcome = await NullProvider().send(message, {"secret": "anything"})

    assert outcome.ok


def test_null_provider__satisfies_the_provider_protocol() -> None:
    provider = NullProvider()

    assert isinstance(provider, Provider)
    assert provider.name == "null"
