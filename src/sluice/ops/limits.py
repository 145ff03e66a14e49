"""Limits at run time: list (with quota use), set, clear — audited, shared with every
worker through the flow epoch. Shared by the CLI and the Python API."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sluice.clock import Clock, SystemClock
from sluice.config import Settings
from sluice.errors import NotFound
from sluice.flow.limits import (
    Cell,
    LimitSpec,
    merge,
    quota_check,
    slot_keys,
    uses,
    validate_runtime,
    window_start,
)
from sluice.ops.actions import require_actor
from sluice.store.base import LimitRow, Store

__all__ = ["LimitView", "limit_clear", "limit_list", "limit_set"]


@dataclass(frozen=True, slots=True)
class LimitView:
    """A limit in force, where it comes from, and — for quotas — how much is used and
    when room comes back (``window_ends``, Unix seconds)."""

    spec: LimitSpec
    used: int | None = None
    remaining: int | None = None
    window_ends: float | None = None

    def as_dict(self) -> dict[str, Any]:
        out = self.spec.as_dict()
        out["label"] = self.spec.label()
        if self.used is not None:
            out.update(used=self.used, remaining=self.remaining, window_ends=self.window_ends)
        return out


async def limit_set(
    store: Store,
    raw: Mapping[str, Any],
    *,
    actor: str,
    reason: str,
    clock: Clock | None = None,
) -> LimitSpec:
    """Set a limit at run time (replacing the file's of the same scope); audited."""
    require_actor(actor, reason, need_reason=True)
    spec = validate_runtime(raw)
    now = (clock or SystemClock()).now()
    await store.limit_set(
        LimitRow(
            spec.kind, spec.tenant, spec.provider, spec.action, spec.spec_dict(), actor, reason, now
        )
    )
    return spec


async def limit_clear(
    store: Store,
    kind: str,
    *,
    tenant: str = "",
    provider: str = "",
    action: str = "",
    actor: str,
    reason: str,
    clock: Clock | None = None,
) -> None:
    """Remove a run-time limit; ``NotFound`` if there is none of that scope."""
    require_actor(actor, reason, need_reason=True)
    now = (clock or SystemClock()).now()
    if not await store.limit_clear(
        kind, tenant, provider, action, actor=actor, reason=reason, now=now
    ):
        raise NotFound(f"no run-time {kind} limit for that scope (limits in sluice.toml stay)")


async def limit_list(
    store: Store,
    configured: Sequence[LimitSpec],
    settings: Settings | None = None,
    clock: Clock | None = None,
) -> list[LimitView]:
    """Every limit in force; quotas with their use in the window now, read where the
    workers keep it (Redis when ``settings.redis_url`` is set, else the store), and when
    room comes back: the end of a fixed window, or when the oldest use counted leaves a
    rolling one (None: nothing used)."""
    now = (clock or SystemClock()).now().timestamp()
    runtime = [
        LimitSpec.parse(
            {
                **r.spec,
                "kind": r.kind,
                "tenant": r.tenant,
                "provider": r.provider,
                "action": r.action,
            },
            "run-time limit",
            source="runtime",
        )
        for r in await store.limit_list()
    ]
    views = []
    for spec in merge(configured, runtime):
        if spec.kind != "quota" or spec.limit is None or spec.window is None:
            views.append(LimitView(spec))
            continue
        check = quota_check(spec)
        keys = slot_keys(check)
        if settings is not None and settings.redis_url:
            state = await _redis_cells(settings, keys)
        else:

            def read(cells: dict[str, Cell], _now: float) -> dict[str, Cell]:
                return dict(cells)

            state = await store.flow_state_apply(keys, read)
        counted = uses(check, state, now)
        used = int(sum(n for _, n in counted))
        if check.anchor is not None:
            room_at: float | None = window_start(check, now) + check.window
        else:
            room_at = min((at for at, _ in counted), default=None)
        views.append(LimitView(spec, used, max(0, spec.limit - used), room_at))
    return views


async def _redis_cells(settings: Settings, keys: Sequence[str]) -> dict[str, Cell]:
    import redis.asyncio as aioredis

    assert settings.redis_url is not None
    client = aioredis.from_url(settings.redis_url, socket_connect_timeout=2.0)
    prefix = settings.redis_prefix + "limit:"
    try:
        async with client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hmget(prefix + key, "v", "s")
            rows = await pipe.execute()
    finally:
        await client.aclose()
    return {
        key: Cell(float(v), float(s))
        for key, (v, s) in zip(keys, rows, strict=True)
        if v is not None and s is not None
    }
