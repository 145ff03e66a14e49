"""Flow: what decides whether, when and through which provider a claimed message goes.

Controls, limits and breakers each live in three packages, one concern split three
ways (ARCHITECTURE.md, "One concern, three packages"):

- ``sluice.flow`` (here) *decides*: the policy, as plain types and pure functions;
- ``sluice.worker`` *applies* it while sending (``worker/controls.py``,
  ``worker/limits.py``, the dispatcher's use of ``flow.breakers.Breakers``);
- ``sluice.ops`` is what an *operator* does about it (``ops/controls.py``,
  ``ops/limits.py``, ``ops/breakers.py``), one implementation under the CLI and the API.

The modules:

- ``controls``: scoped modes (live, paused, shadow, approval, killed), most restrictive wins;
- ``limits``: token buckets, windowed quotas, per-recipient caps, throttle-until marks;
- ``breakers``: circuit breakers per provider and per connection, shared by all workers.

Flow imports only the ground layer (``sluice.model``, ``errors``, ``config``, ``clock``):
never the store, the worker or ops. Where a policy keeps shared state (the breakers'
sync) it names the store methods it needs as a protocol (``breakers.BreakerStore``),
and the store keeps the policy's state in the policy's own types (``Control``, ``Cell``,
``BreakerInfo``).
"""
