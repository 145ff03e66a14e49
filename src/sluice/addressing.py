"""Where a message may go: the checks of ``NewMessage.validate`` that need configuration.

A message is refused at enqueue, before anything is stored, when it could only ever
end in the dead-letter queue:

- its ``provider`` is neither a built-in provider (``sluice.providers.BUILTIN_PROVIDERS``)
  nor an alias declared under ``[providers."name"]`` in ``sluice.toml``;
- its ``channel`` is not one the provider serves (SendGrid sends only email).

What enqueue knows comes from the configuration in effect, read the way every other
setting is read: the ``sluice.toml`` named by ``SLUICE_CONFIG`` (else ``./sluice.toml``
when it exists), parsed again only when the file changes. An application enqueuing
through the Python API must therefore see the same ``sluice.toml`` as its workers to
use provider aliases; without one, only the built-in providers are accepted.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

from sluice.errors import ValidationError

if TYPE_CHECKING:
    from sluice.model import NewMessage

__all__ = ["Addressing", "addressing_in_effect"]


@dataclass(frozen=True, slots=True)
class Addressing:
    """What enqueue accepts as a message's destination.

    ``providers`` maps every accepted provider name to the built-in kind it stands for
    (a built-in names itself); ``source`` is where the aliases came from, for errors.
    """

    providers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType(_builtin_kinds()))
    source: str = "sluice.toml"

    @classmethod
    def from_document(
        cls, document: Mapping[str, object] | None, source: str = "sluice.toml"
    ) -> Addressing:
        """The rules of a parsed ``sluice.toml`` (``None``: no file, built-ins only)."""
        from sluice.providers import provider_kinds

        return cls(MappingProxyType(provider_kinds(document, source)), source)

    def check(self, message: NewMessage, where: str = "") -> None:
        """Raise ``ValidationError`` naming the first field of ``message`` (prefixed with
        ``where``) that cannot reach a destination."""
        kind = self.providers.get(message.provider)
        if kind is None:
            raise ValidationError(where + "provider", self._unknown(message.provider))
        from sluice.providers import BUILTIN_PROVIDERS

        channels = BUILTIN_PROVIDERS[kind]
        if channels is not None and message.channel not in channels:
            what = message.provider if kind == message.provider else f"{message.provider} ({kind})"
            raise ValidationError(
                where + "channel",
                f"{message.channel!r} is not a channel provider {what} sends on; "
                f"use {_either(sorted(channels))}",
            )

    def _unknown(self, name: str) -> str:
        from sluice.providers import BUILTIN_PROVIDERS

        aliases = sorted(set(self.providers) - set(BUILTIN_PROVIDERS))
        close = difflib.get_close_matches(name, list(self.providers), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return (
            f"{name!r} is not a provider{hint}: use a built-in provider "
            f"({', '.join(sorted(BUILTIN_PROVIDERS))}) or an alias declared as "
            f'[providers."name"] in {self.source} '
            f"({'declared: ' + ', '.join(aliases) if aliases else 'none declared'})"
        )


def _builtin_kinds() -> dict[str, str]:
    from sluice.providers import BUILTIN_PROVIDERS

    return {name: name for name in BUILTIN_PROVIDERS}


def _either(options: list[str]) -> str:
    quoted = [repr(o) for o in options]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


#: config path -> (its document, the rules made from it); see ``addressing_in_effect``.
_MADE: dict[Path | None, tuple[object, Addressing]] = {}


def addressing_in_effect() -> Addressing:
    """The rules of the configuration in effect: the ``sluice.toml`` that
    ``sluice.config.config_file`` finds now, re-read when it changes."""
    from sluice.config import config_document, config_file

    path = config_file()
    document = config_document(path) if path is not None else None
    made = _MADE.get(path)
    # config_document hands out the same object until the file changes.
    if made is None or made[0] is not document:
        rules = Addressing.from_document(document, str(path) if path else "sluice.toml")
        made = _MADE[path] = (document, rules)
    return made[1]
