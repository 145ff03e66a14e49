"""How one dialect holds times and JSON in its columns: what the shared row and
parameter code asks of a driver.

PostgreSQL keeps ``timestamptz`` and ``jsonb`` (psycopg hands back aware datetimes
and decoded JSON); SQLite keeps REAL epoch seconds and JSON text. Everything else a
row or a parameter set needs is the same in both, and lives in ``_rows.py`` and
``_params.py``, written once against a ``Codec``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["Codec"]


@dataclass(frozen=True, slots=True)
class Codec:
    """The few conversions that differ between the dialects."""

    #: A time column (NOT NULL) as an aware datetime.
    read_time: Callable[[Any], datetime]
    #: A datetime as the store's time parameter.
    write_time: Callable[[datetime], Any]
    #: A JSON column (``jsonb`` or text) as the value it holds.
    read_json: Callable[[Any], Any]
    #: The ``LIMIT`` parameter that means no limit (PostgreSQL: NULL, SQLite: -1).
    no_limit: int | None
    #: A list of strings as one parameter (PostgreSQL: an array; SQLite: JSON text for
    #: ``json_each``).
    write_list: Callable[[list[str]], Any] = list

    def time(self, value: Any) -> datetime | None:
        """A nullable time column: None stays None."""
        return None if value is None else self.read_time(value)

    def param(self, value: datetime | None) -> Any:
        """A nullable time parameter: None stays None."""
        return None if value is None else self.write_time(value)
