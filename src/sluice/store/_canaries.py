"""Canaries in a SQL store (``sluice_canaries``, issue 15): the part of
:class:`sluice.store._driver.SqlDriver` that records and lists them, the same for both
dialects."""

from __future__ import annotations

from typing import Any

from sluice.errors import ValidationError
from sluice.store._codec import Codec
from sluice.store._hooks import DriverHooks
from sluice.store.canaries import CANARY_OUTCOMES, CanaryRun

__all__ = ["CanaryMethods"]


def _run(c: Codec, r: Any) -> CanaryRun:
    return CanaryRun(
        id=r[0], target=r[1], provider=r[2], tenant=r[3], recipient=r[4], message_id=r[5],
        sent_at=c.read_time(r[6]), receipt_at=c.time(r[7]), outcome=r[8], error=r[9],
        actor=r[10],
    )  # fmt: skip


class CanaryMethods(DriverHooks):
    """``canary_*`` of the ``Store`` protocol."""

    async def canary_record(self, run: CanaryRun) -> None:
        if run.outcome not in CANARY_OUTCOMES:
            raise ValidationError("outcome", f"must be one of {', '.join(CANARY_OUTCOMES)}")
        c = self.codec
        await self._fetch(
            "canary_record",
            {
                "id": run.id, "target": run.target, "provider": run.provider,
                "tenant": run.tenant, "recipient": run.recipient, "message_id": run.message_id,
                "sent_at": c.write_time(run.sent_at), "receipt_at": c.param(run.receipt_at),
                "outcome": run.outcome, "error": run.error, "actor": run.actor,
            },
        )  # fmt: skip

    async def canary_list(self, provider: str | None, limit: int) -> list[CanaryRun]:
        rows = await self._fetch("canary_list", {"provider": provider, "limit": limit})
        return [_run(self.codec, r) for r in rows]

    async def canary_latest(self, *, finished: bool = False) -> list[CanaryRun]:
        rows = await self._fetch("canary_latest", {"finished": finished})
        return sorted((_run(self.codec, r) for r in rows), key=lambda r: r.target)
