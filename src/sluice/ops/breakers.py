"""Circuit breakers under the operator's hand: list them, force one open or closed, reset.

A forced breaker stays as the operator left it — no worker opens, probes or closes it —
until ``breaker_reset`` hands it back to the workers, closed and with an empty window.
Every act writes one audit row in the same transaction as the change.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sluice.addressing import addressing_in_effect
from sluice.config import Settings
from sluice.errors import ValidationError
from sluice.flow.breakers import (
    BreakerPolicy,
    BreakerState,
    BreakerStatus,
    breaker_status,
    parse_key,
)
from sluice.store.base import AuditEntry, BreakerInfo, Store

__all__ = ["breaker_force", "breaker_reset", "breakers_list"]


async def breakers_list(
    store: Store, settings: Settings, now: datetime | None = None
) -> list[BreakerStatus]:
    """Every breaker with a row or with outcomes in its window: state, since, retry_at,
    forced, reason, and the window's ok, failed and failure rate; by key."""
    policy = BreakerPolicy.from_settings(settings)
    now = now or datetime.now(UTC)
    rows = {r.key: r for r in await store.breaker_list()}
    window = await store.breaker_window(None, policy.window_start(now))
    out = []
    for key in sorted(set(rows) | set(window)):
        try:
            _, provider, tenant = parse_key(key)
        except ValidationError:  # not written by Sluice; show it as it is
            provider, tenant = "", ""
        out.append(breaker_status(key, rows.get(key), window.get(key, (0, 0)), provider, tenant))
    return out


def _check(actor: str, reason: str) -> None:
    if not actor or not actor.strip():
        raise ValidationError("actor", "is required: who is doing this")
    if not reason or not reason.strip():
        raise ValidationError("reason", "is required: say why (it goes to the audit log)")


async def _set(
    store: Store,
    key_or_provider: str,
    state: BreakerState,
    *,
    forced: bool,
    action: str,
    actor: str,
    reason: str,
    now: datetime | None,
) -> BreakerInfo:
    key, provider, tenant = parse_key(key_or_provider)
    _check(actor, reason)
    now = now or datetime.now(UTC)
    before: BreakerInfo | None = next((r for r in await store.breaker_list() if r.key == key), None)
    # (An endpoint's key, e:<tenant>:<URL>, names no provider: its URL is what it names.)
    if provider and before is None and not await store.breaker_window([key], 0):
        # No worker would ever consult a breaker of a provider that does not exist: forcing
        # one is a typo (`twillio`) that would leave the real one as it was. A breaker
        # the store already knows (a row, outcomes) stays reachable, whatever the
        # configuration says now.
        try:
            addressing_in_effect().kind_of(provider, "key")
        except ValidationError as exc:
            raise ValidationError(
                "key", f"{key!r} is not a breaker of any provider: {exc.problem}"
            ) from None
    audit = AuditEntry(
        at=now,
        actor=actor,
        action=action,
        target=key,
        reason=reason,
        detail={
            "from": before.state if before else BreakerState.CLOSED.value,
            "from_forced": bool(before and before.forced),
            "to": state.value,
            "forced": forced,
        },
    )
    await store.breaker_transition(
        key,
        provider or (before.provider if before else ""),  # an e: key names no provider
        tenant,
        None,
        state.value,
        retry_at=None,
        reason=reason,
        forced=forced,
        now=now,
        audit=audit,
    )
    return next(r for r in await store.breaker_list() if r.key == key)


async def breaker_force(
    store: Store,
    key_or_provider: str,
    state: str,
    *,
    actor: str,
    reason: str,
    now: datetime | None = None,
) -> BreakerInfo:
    """Force a breaker ``open`` (nothing goes) or ``closed`` (everything goes) until
    reset. ``key_or_provider``: ``p:<provider>``, ``c:<tenant>:<provider>`` or a bare
    provider name. Audited as ``breaker.force_open`` / ``breaker.force_closed``; returns
    the breaker as stored."""
    wanted = (state or "").strip().lower()
    if wanted not in (BreakerState.OPEN, BreakerState.CLOSED):
        raise ValidationError("state", f"must be open or closed, not {state!r}")
    target = BreakerState(wanted)
    return await _set(
        store,
        key_or_provider,
        target,
        forced=True,
        action=f"breaker.force_{target.value}",
        actor=actor,
        reason=reason,
        now=now,
    )


async def breaker_reset(
    store: Store,
    key_or_provider: str,
    *,
    actor: str,
    reason: str,
    now: datetime | None = None,
) -> BreakerInfo:
    """Hand a breaker back to the workers: closed, not forced, its window emptied.
    Audited as ``breaker.reset``."""
    return await _set(
        store,
        key_or_provider,
        BreakerState.CLOSED,
        forced=False,
        action="breaker.reset",
        actor=actor,
        reason=reason,
        now=now,
    )
