"""Sluice: deliver outbound side effects durably, under the operator's hand.

The public surface is what ``__all__`` lists; everything else may change.
"""

from __future__ import annotations

from sluice.clock import Clock, FrozenClock, SystemClock
from sluice.config import Settings, load_settings
from sluice.errors import (
    ConfigError,
    IdempotencyConflict,
    MigrationError,
    NotFound,
    ProviderError,
    SluiceError,
    StoreError,
    StoreUnavailable,
    ValidationError,
)
from sluice.model import (
    Attempt,
    AttemptOutcome,
    ErrorClass,
    ErrorCode,
    Message,
    NewMessage,
    Outcome,
    Status,
)
from sluice.outbox import enqueue, enqueue_async, enqueue_many, enqueue_many_async
from sluice.providers.base import Provider
from sluice.store import MessageFilter, Store, create_store, open_store
from sluice.worker import Dispatcher, RetryPolicy

__version__ = "0.1.0"

__all__ = [
    "Attempt",
    "AttemptOutcome",
    "Clock",
    "ConfigError",
    "Dispatcher",
    "ErrorClass",
    "ErrorCode",
    "FrozenClock",
    "IdempotencyConflict",
    "Message",
    "MessageFilter",
    "MigrationError",
    "NewMessage",
    "NotFound",
    "Outcome",
    "Provider",
    "ProviderError",
    "RetryPolicy",
    "Settings",
    "SluiceError",
    "Status",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "SystemClock",
    "ValidationError",
    "__version__",
    "create_store",
    "enqueue",
    "enqueue_async",
    "enqueue_many",
    "enqueue_many_async",
    "load_settings",
    "open_store",
]
