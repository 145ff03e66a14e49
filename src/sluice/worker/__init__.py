"""The dispatcher and its retry policy."""

from __future__ import annotations

from sluice.worker.dispatcher import Dispatcher, WorkerStats, new_worker_id
from sluice.worker.retry import Decision, RetryPolicy

__all__ = ["Decision", "Dispatcher", "RetryPolicy", "WorkerStats", "new_worker_id"]
