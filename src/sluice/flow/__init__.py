"""Flow: what decides whether, when and through which provider a claimed message goes.

- ``controls``: scoped modes (live, paused, shadow, approval, killed), most restrictive wins;
- ``limits``: token buckets, windowed quotas, per-recipient caps, throttle-until marks;
- ``breakers``: circuit breakers per provider and per connection, shared by all workers.
"""
