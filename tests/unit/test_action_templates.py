"""Expanding an http action's URL template: a value can fill a path segment, never move
the request to another path (issue 10, item 4: ``user_id = ".."`` turned
``DELETE /api/users/../sessions/abc`` into ``DELETE /api/sessions/abc``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from sluice.actions import ActionSpec, UnsafePathValue
from sluice.model import Message, NewMessage, Status, new_message_id

REVOKE = ActionSpec(
    name="sessions.revoke",
    method="DELETE",
    url="https://api.example/api/users/{payload.user_id}/sessions/{payload.session_id}",
)


def message(payload: dict[str, Any], recipient: str = "team@acme.example") -> Message:
    return Message(
        id=new_message_id(), tenant="acme", channel="crm", provider="http",
        action="sessions.revoke", recipient=recipient, payload=payload, priority=0,
        status=Status.SENDING, run_at=datetime.now(UTC), attempts=1, max_attempts=5,
    )  # fmt: skip


def url_for(spec: ActionSpec, **payload: Any) -> str:
    return spec.render(message(payload)).url


@pytest.mark.parametrize(
    "user_id",
    [
        "..",
        ".",
        "",
        None,  # rendered as empty text
        "%2e%2e",
        "%2E%2e",
        ".%2e",
        "%2e",
        "%252e%252e",  # encoded twice: a server that decodes twice sees ".."
        "../admin",  # sent as ..%2Fadmin; a server decoding %2F first would climb
        "x/../../admin",
        "..\\admin",
        "%2e%2e%2fadmin",
    ],
)
def test_render__a_path_value_that_would_climb_is_refused_naming_it(user_id: Any) -> None:
    with pytest.raises(UnsafePathValue) as excinfo:
        url_for(REVOKE, user_id=user_id, session_id="abc")
    assert excinfo.value.placeholder == "payload.user_id"
    assert "{payload.user_id}" in str(excinfo.value)
    assert "another path" in str(excinfo.value)


def test_render__without_the_check_httpx_would_resolve_the_dots() -> None:
    # Why the check exists: the client itself removes dot segments before sending.
    url = httpx.URL("https://api.example/api/users/../sessions/abc")
    assert url.path == "/api/sessions/abc"


@pytest.mark.parametrize(
    ("user_id", "segment"),
    [
        ("42", "42"),
        ("...", "..."),
        ("a..b", "a..b"),
        (".hidden", ".hidden"),
        ("1.0", "1.0"),
        ("ev/1", "ev%2F1"),
        ("..a", "..a"),
        ("ann@acme.example", "ann%40acme.example"),
    ],
)
def test_render__ordinary_values_fill_their_segment(user_id: str, segment: str) -> None:
    url = url_for(REVOKE, user_id=user_id, session_id="abc")
    assert url == f"https://api.example/api/users/{segment}/sessions/abc"
    assert httpx.URL(url).path.startswith("/api/users/")


def test_render__two_placeholders_making_dots_together_are_refused() -> None:
    joined = ActionSpec("x", "GET", "https://api.example/v/{payload.a}{payload.b}/x")
    with pytest.raises(UnsafePathValue) as excinfo:
        url_for(joined, a=".", b=".")
    assert excinfo.value.placeholder == "payload.a"
    assert url_for(joined, a=".", b="x") == "https://api.example/v/.x/x"


def test_render__values_in_the_query_may_be_anything() -> None:
    query = ActionSpec("q", "GET", "https://api.example/find?user={payload.user_id}#{tenant}")
    assert url_for(query, user_id="..") == "https://api.example/find?user=..#acme"
    assert url_for(query, user_id="") == "https://api.example/find?user=#acme"


def test_render__the_recipient_in_the_path_is_checked_too() -> None:
    events = ActionSpec("e", "POST", "https://api.example/calendars/{recipient}/events")
    with pytest.raises(UnsafePathValue) as excinfo:
        events.render(message({}, recipient=".."))
    assert excinfo.value.placeholder == "recipient"


def test_render__dots_the_operator_wrote_are_the_operators_business() -> None:
    written = ActionSpec("w", "GET", "https://api.example/a/../b/{payload.x}")
    assert url_for(written, x="y") == "https://api.example/a/../b/y"


def test_render__takes_a_message_not_yet_stored() -> None:
    new = NewMessage(
        tenant="acme", channel="crm", provider="http", recipient="r",
        action="sessions.revoke", payload={"user_id": "..", "session_id": "abc"},
    )  # fmt: skip
    with pytest.raises(UnsafePathValue):
        REVOKE.render(new)
