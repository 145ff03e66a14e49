"""The worker: claims messages and sends them, applying the policy of ``sluice.flow``.

Of the three packages that share controls, limits and breakers (ARCHITECTURE.md, "One
concern, three packages"), ``sluice.flow`` decides, the worker *applies* the decisions
while sending, and ``sluice.ops`` is what an operator does about them.

- ``dispatcher``: the claim loop and one message's way through breakers, limits,
  controls, the connection gate and the provider call, outcomes written back in batches;
- ``controls``: the worker's snapshot of the controls and its acknowledgement of each change;
- ``limits``: limits applied to claimed batches, in Redis or in the store;
- ``gate``: the connection gate (credentials, scopes, the tenancy guard);
- ``refresh``: OAuth token refresh; ``retry``: what a failed attempt comes to;
- ``assemble``: the production dispatcher as ``sluice worker`` and ``sluice run`` build it.

The worker imports ground, flow, store, providers and ingress (it runs the receipt
projector), never ``sluice.ops``, the API or the CLI.
"""

from __future__ import annotations

from sluice.worker.dispatcher import Dispatcher, WorkerStats, new_worker_id
from sluice.worker.retry import Decision, RetryPolicy

__all__ = ["Decision", "Dispatcher", "RetryPolicy", "WorkerStats", "new_worker_id"]
