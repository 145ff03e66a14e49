"""How Sluice's types are shown: plain JSON (the same for the CLI's ``--json`` and the HTTP
API) and the text tables and ages the CLI prints."""

from __future__ import annotations

import json
from dataclasses import asdict, is_dataclass
from datetime import datetime
from enum import Enum
from typing import Any

__all__ = ["age", "json_text", "jsonable", "listing", "table"]


def jsonable(value: Any) -> Any:
    """Dataclasses, enums and datetimes as JSON values, recursively."""
    if is_dataclass(value) and not isinstance(value, type):
        return jsonable(asdict(value))
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    return value


def listing(items: Any, next_cursor: str | None = None, **extra: Any) -> dict[str, Any]:
    """The one shape of every listing (CLI ``--json`` and API alike): ``items``, their
    ``count``, the ``next_cursor`` of the next page (None on the last), and any
    listing's own extra keys (e.g. the DLQ's ``total``)."""
    rows = jsonable(list(items))
    return {"items": rows, "count": len(rows), "next_cursor": next_cursor, **jsonable(extra)}


def json_text(value: Any) -> str:
    """``value`` as indented JSON with sorted keys: what ``--json`` prints."""
    return json.dumps(jsonable(value), indent=2, sort_keys=True)


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """Left-aligned columns two spaces apart, a rule under the headers; None prints empty."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def age(seconds: float | None) -> str:
    """A span in the unit that reads best: ``42.0s``, ``3.5m``, ``2.0h``; ``-`` for none."""
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"
