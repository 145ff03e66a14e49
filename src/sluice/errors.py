"""Sluice's exceptions: one root, decided by type, never by message text.

::

    SluiceError
    ├── ConfigError              settings that cannot work (bad URL, missing key)
    ├── ValidationError          bad input; names the field; nothing was stored
    ├── IdempotencyConflict      same idempotency key, different content
    ├── NotFound                 no such message (or not visible to the caller)
    ├── Conflict                 the thing is in a state that does not allow the act
    ├── StoreError               the database failed underneath us
    │   └── StoreUnavailable     the database cannot be reached
    ├── MigrationError           the schema is missing, newer than us, or broken
    └── ProviderError            an adapter could not be built or used
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "Conflict",
    "IdempotencyConflict",
    "MigrationError",
    "NotFound",
    "ProviderError",
    "SluiceError",
    "StoreError",
    "StoreUnavailable",
    "ValidationError",
]


class SluiceError(Exception):
    """Root of every error Sluice raises on purpose."""


class ConfigError(SluiceError):
    """A setting is missing or cannot work; the message says which and how to fix it."""


class ValidationError(SluiceError, ValueError):
    """Input was rejected before anything was stored.

    ``field`` names the offending field (``"messages[3].recipient"`` for batches).
    """

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class IdempotencyConflict(SluiceError):
    """An idempotency key was reused for different content; the first message stands."""

    def __init__(self, tenant: str, key: str, existing_id: str) -> None:
        super().__init__(
            f"idempotency key {key!r} of tenant {tenant!r} was already used for message "
            f"{existing_id} with different content; use a new key or resend the same content"
        )
        self.tenant = tenant
        self.key = key
        self.existing_id = existing_id


class NotFound(SluiceError, LookupError):
    """The thing asked for does not exist."""


class Conflict(SluiceError):
    """The act does not fit the state the thing is in (cancel a message already sent)."""


class StoreError(SluiceError):
    """The database reported an error we did not expect."""


class StoreUnavailable(StoreError):
    """The database could not be reached."""


class MigrationError(SluiceError):
    """The schema is not at the version this code expects."""


class ProviderError(SluiceError):
    """A provider adapter is unknown or misconfigured."""
