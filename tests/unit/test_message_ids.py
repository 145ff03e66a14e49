"""Message ids are time-ordered (``new_message_id``), and ``first_message_id`` bounds
from below the ids made since a moment: the store seeks the primary key with it for
windows on created_at (``sluice top``)."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

from sluice.model import first_message_id, new_message_id


def test_first_message_id__is_below_ids_made_since_and_above_ids_made_before() -> None:
    before = new_message_id()
    time.sleep(0.003)
    at = datetime.now(UTC)
    after = new_message_id()
    floor = first_message_id(at)
    assert before < floor <= after  # as text (SQLite)
    assert uuid.UUID(before) < uuid.UUID(floor) <= uuid.UUID(after)  # as uuid (PostgreSQL)


def test_first_message_id__is_a_uuid_in_time_order() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    ids = [first_message_id(at + timedelta(milliseconds=n)) for n in (0, 1, 1000, 86_400_000)]
    assert ids == sorted(ids)
    assert all(str(uuid.UUID(i)) == i for i in ids)
