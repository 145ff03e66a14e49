"""Annotations in a SQL store (``sluice_annotations``): the part of
:class:`sluice.store._driver.SqlDriver` that records and lists them, the same for both
dialects."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sluice.store._codec import Codec
from sluice.store._hooks import DriverHooks
from sluice.store.base import Annotation, AuditEntry

__all__ = ["AnnotationStore"]


def _annotation(c: Codec, r: Sequence[Any]) -> Annotation:
    detail = r[6]
    return Annotation(
        id=int(r[0]),
        at=c.read_time(r[1]),
        actor=r[2],
        kind=r[3],
        text=r[4],
        tenant=r[5],
        detail=json.loads(detail) if isinstance(detail, str) else dict(detail),
    )


class AnnotationStore(DriverHooks):
    """Store methods of annotations, over the driver's named queries."""

    async def annotation_add(self, annotation: Annotation, audit: AuditEntry) -> Annotation:
        a = annotation
        params = {
            "at": self.codec.write_time(a.at),
            "actor": a.actor,
            "kind": a.kind,
            "text": a.text,
            "tenant": a.tenant,
            "detail": json.dumps(a.detail, sort_keys=True),
        }
        rows = await self._script([("annotation_insert", params)], audit)
        return dataclasses.replace(a, id=int(rows[0][0][0]))

    async def annotation_list(
        self,
        since: datetime | None = None,
        until: datetime | None = None,
        *,
        tenant: str | None = None,
        kind: str | None = None,
        before_id: int | None = None,
        limit: int = 100,
    ) -> list[Annotation]:
        c = self.codec
        params = {"since": c.param(since), "until": c.param(until), "tenant": tenant,
                  "kind": kind, "before": before_id, "limit": limit}  # fmt: skip
        return [_annotation(c, r) for r in await self._fetch("annotation_list", params)]
