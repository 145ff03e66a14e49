"""The ``http`` provider against ``httpx.MockTransport``: actions, bearer tokens, refresh.

Everything runs the real adapter and the real action templates; only the wire is fake.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from sluice.actions import ActionSpec, configured_actions, load_actions, parse_actions
from sluice.clock import FrozenClock
from sluice.config import load_settings
from sluice.errors import ConfigError
from sluice.model import ErrorClass, ErrorCode, Message, Status, new_message_id
from sluice.netguard import static_resolver
from sluice.providers._errors import CheckResult
from sluice.providers.http_action import STATUS_CODES, HttpActionProvider

NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
TOKEN_URL = "https://auth.example/oauth/token"
#: The APIs are made-up host names; the SSRF guard gets a public address for them.
PUBLIC = static_resolver("93.184.216.34")

CALENDAR = ActionSpec(
    name="calendar.create_event",
    method="POST",
    url="https://api.example/calendars/{recipient}/events?source={tenant}",
    body={
        "summary": "{payload.title}",
        "attendees": "{payload.attendees}",
        "room": "{payload.place.room}",
        "first": "{payload.attendees.0}",
        "note": "for {tenant}, message {message_id}",
        "fixed": [1, True, "x"],
    },
    scopes=("calendar.events.write",),
    headers={"X-Tenant": "{tenant}"},
)
DELETE = ActionSpec(
    name="calendar.delete_event",
    method="delete",
    url="https://api.example/events/{payload.event_id}",
    scopes=("calendar.events.write",),
)
ACTIONS = {a.name: a for a in (CALENDAR, DELETE)}
CREDS = {"access_token": "at-1", "refresh_token": "rt-1", "token_url": TOKEN_URL}
PAYLOAD: dict[str, Any] = {
    "title": "Stand-up",
    "attendees": ["a@example.com", "b@example.com"],
    "place": {"room": "4.01"},
}


def message(action: str = "calendar.create_event", **kw: Any) -> Message:
    fields: dict[str, Any] = {
        "id": new_message_id(),
        "tenant": "acme",
        "channel": "calendar",
        "provider": "http",
        "action": action,
        "recipient": "team@acme.example",
        "payload": dict(PAYLOAD),
        "priority": 0,
        "status": Status.SENDING,
        "run_at": NOW,
        "attempts": 1,
        "max_attempts": 5,
        "claim_seq": 1,
    }
    fields.update(kw)
    return Message(**fields)


class Wire:
    """Records every request; answers with ``answer(request)`` (default: empty 200)."""

    def __init__(self, answer: Callable[[httpx.Request], Any] | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self.answer = answer

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        self.requests.append(request)
        if self.answer is None:
            return httpx.Response(200)
        result = self.answer(request)
        if asyncio.iscoroutine(result):
            result = await result
        assert isinstance(result, httpx.Response)
        return result


def provider(
    wire: Wire, timeout: float = 5.0, *, allow_loopback: bool = False
) -> HttpActionProvider:
    client = httpx.AsyncClient(transport=httpx.MockTransport(wire))
    return HttpActionProvider(
        client,
        ACTIONS,
        timeout=timeout,
        clock=FrozenClock(NOW),
        allow_loopback=allow_loopback,
        resolve=PUBLIC,
    )


# -- action configuration -----------------------------------------------------------


def test_load_actions__reads_quoted_dotted_names_with_body_scopes_and_headers(
    tmp_path: Path,
) -> None:
    path = tmp_path / "sluice.toml"
    path.write_text(
        """
[sluice]
http_timeout = 5

[actions."calendar.create_event"]
method = "post"
url = "https://api.example/calendars/{recipient}/events"
scopes = ["calendar.events.write"]
headers = { "X-Source" = "sluice" }

[actions."calendar.create_event".body]
summary = "{payload.title}"
attendees = ["{payload.who}"]

[actions."crm.note"]
method = "PUT"
url = "https://crm.example/notes/{payload.id}"
body = "note for {tenant}"
"""
    )
    actions = load_actions(path)
    assert sorted(actions) == ["calendar.create_event", "crm.note"]
    cal = actions["calendar.create_event"]
    assert (cal.method, cal.scopes, dict(cal.headers)) == (
        "POST",
        ("calendar.events.write",),
        {"X-Source": "sluice"},
    )
    assert cal.body == {"summary": "{payload.title}", "attendees": ["{payload.who}"]}
    assert actions["crm.note"].body == "note for {tenant}"
    assert actions["crm.note"].scopes == ()


def test_load_settings__ignores_the_actions_table_but_still_rejects_unknown_settings(
    tmp_path: Path,
) -> None:
    path = tmp_path / "sluice.toml"
    path.write_text(
        '[sluice]\nhttp_timeout = 5\n\n[actions."a.b"]\nmethod = "GET"\nurl = "https://x.example"\n'
    )
    assert load_settings(env={}, config_path=path).http_timeout == 5
    path.write_text('[sluice]\nactions = 1\n\n[actions."a.b"]\nmethod = "GET"\n')
    with pytest.raises(ConfigError, match=r"unknown setting \[sluice\]\.actions"):
        load_settings(env={}, config_path=path)


def test_configured_actions__reads_the_file_settings_come_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert configured_actions(env={}) == {}  # no sluice.toml: no actions, no error
    path = tmp_path / "elsewhere.toml"
    path.write_text('[actions."a.b"]\nmethod = "GET"\nurl = "https://x.example/{recipient}"\n')
    assert list(configured_actions(env={"SLUICE_CONFIG": str(path)})) == ["a.b"]
    with pytest.raises(ConfigError, match="does not exist"):
        configured_actions(env={"SLUICE_CONFIG": str(tmp_path / "missing.toml")})


@pytest.mark.parametrize(
    ("entry", "complaint"),
    [
        ({"method": "FETCH", "url": "https://x.example"}, "method = 'FETCH' is not one of"),
        ({"method": "POST"}, "url is required"),
        ({"url": "https://x.example"}, "method is required"),
        ({"method": "POST", "url": "ftp://x.example/f"}, "is not an http:// or https:// URL"),
        ({"method": "POST", "url": "/relative/path"}, "is not an http:// or https:// URL"),
        ({"method": "POST", "url": "https://x.example", "retries": 3}, "unknown key 'retries'"),
        ({"method": "POST", "url": "https://x.example/{recipent}"}, "unknown placeholder"),
        ({"method": "POST", "url": "https://x.example/{payload}"}, "unknown placeholder"),
        ({"method": "POST", "url": "https://{payload.host}/x"}, "host cannot contain"),
        ({"method": "GET", "url": "https://x.example", "body": {"a": 1}}, "body is not allowed"),
        (
            {"method": "POST", "url": "https://x.example", "body": {"a": "{tenat}"}},
            "body.a: unknown placeholder",
        ),
        (
            {"method": "POST", "url": "https://x.example", "headers": {"Authorization": "x"}},
            "headers.Authorization is set by Sluice",
        ),
        ({"method": "POST", "url": "https://x.example", "scopes": "a b"}, "scopes must be a list"),
        (
            {"method": "POST", "url": "https://x.example", "scopes": [""]},
            "scopes must be non-empty",
        ),
    ],
)
def test_parse_actions__bad_input_names_the_action_and_the_key(
    entry: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_actions({"crm.create": entry}, "sluice.toml")
    text = str(caught.value)
    assert "sluice.toml" in text
    assert "'crm.create'" in text
    assert complaint in text


def test_parse_actions__unquoted_dotted_name_says_to_quote_it() -> None:
    # [actions.calendar.create_event] nests the table one level deeper.
    nested = {"calendar": {"create_event": {"method": "POST", "url": "https://x.example"}}}
    with pytest.raises(ConfigError, match=r'needs quotes: \[actions\."calendar\.create_event"\]'):
        parse_actions(nested)


def test_load_actions__invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "sluice.toml"
    path.write_text("[actions\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_actions(path)


# -- rendering and the request ------------------------------------------------------


async def test_send__renders_url_encoded_and_body_from_dotted_payload_paths() -> None:
    wire = Wire()
    msg = message(recipient="team/ops?x=1 #a")
    outcome = await provider(wire).send(msg, CREDS)
    assert outcome.ok
    request = wire.requests[0]
    assert request.method == "POST"
    # Every placeholder value is percent-encoded: the payload cannot add a path segment
    # or a query parameter.
    assert str(request.url) == (
        "https://api.example/calendars/team%2Fops%3Fx%3D1%20%23a/events?source=acme"
    )
    assert json.loads(request.content) == {
        "summary": "Stand-up",
        "attendees": ["a@example.com", "b@example.com"],  # a whole placeholder keeps the type
        "room": "4.01",
        "first": "a@example.com",
        "note": f"for acme, message {msg.id}",
        "fixed": [1, True, "x"],
    }
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-tenant"] == "acme"


async def test_send__carries_the_bearer_token_and_the_message_id_as_idempotency_key() -> None:
    wire = Wire()
    msg = message()
    await provider(wire).send(msg, CREDS)
    request = wire.requests[0]
    assert request.headers["authorization"] == "Bearer at-1"
    assert request.headers["idempotency-key"] == msg.id


async def test_send__action_without_body_sends_none() -> None:
    wire = Wire()
    outcome = await provider(wire).send(
        message("calendar.delete_event", payload={"event_id": "ev/1"}), CREDS
    )
    assert outcome.ok
    request = wire.requests[0]
    assert (request.method, str(request.url), request.content) == (
        "DELETE",
        "https://api.example/events/ev%2F1",
        b"",
    )


async def test_send__string_body_is_sent_as_text() -> None:
    note = ActionSpec("crm.note", "PUT", "https://crm.example/n", body="hello {payload.who}")
    wire = Wire()
    client = httpx.AsyncClient(transport=httpx.MockTransport(wire))
    outcome = await HttpActionProvider(client, {"crm.note": note}, resolve=PUBLIC).send(
        message("crm.note", payload={"who": "Ann"}), CREDS
    )
    assert outcome.ok
    assert wire.requests[0].content == b"hello Ann"
    assert wire.requests[0].headers["content-type"] == "text/plain; charset=utf-8"


@pytest.mark.parametrize(
    ("payload", "missing"),
    [
        ({"attendees": [], "place": {"room": "1"}}, "title"),
        ({"title": "t", "attendees": ["a"], "place": {}}, "place.room"),
        ({"title": "t", "attendees": [], "place": {"room": "1"}}, "attendees.0"),
    ],
)
async def test_send__payload_without_a_key_the_action_needs_is_a_bad_request(
    payload: dict[str, Any], missing: str
) -> None:
    wire = Wire()
    outcome = await provider(wire).send(message(payload=payload), CREDS)
    assert outcome.code is ErrorCode.BAD_REQUEST
    assert outcome.code.error_class is ErrorClass.PERMANENT
    assert f"payload lacks {missing}" in outcome.detail
    assert wire.requests == []  # nothing was sent


REVOKE = ActionSpec(
    name="sessions.revoke",
    method="DELETE",
    url="https://api.example/api/users/{payload.user_id}/sessions/{payload.session_id}",
)


@pytest.mark.parametrize("user_id", ["..", ".", "", "%2e%2e", "%252e%252e", "../x"])
async def test_send__a_path_value_that_would_climb_is_refused_and_nothing_is_sent(
    user_id: str,
) -> None:
    wire = Wire()
    client = httpx.AsyncClient(transport=httpx.MockTransport(wire))
    adapter = HttpActionProvider(client, {REVOKE.name: REVOKE}, resolve=PUBLIC)
    payload = {"user_id": user_id, "session_id": "abc"}
    outcome = await adapter.send(message(REVOKE.name, payload=payload), CREDS)

    assert outcome.code is ErrorCode.BAD_REQUEST
    assert outcome.code.error_class is ErrorClass.PERMANENT  # dead-lettered, not retried
    assert "{payload.user_id}" in outcome.detail and "not sent" in outcome.detail
    assert wire.requests == []  # the bearer token went nowhere


async def test_send__an_ordinary_path_value_goes_to_the_configured_path() -> None:
    wire = Wire()
    client = httpx.AsyncClient(transport=httpx.MockTransport(wire))
    adapter = HttpActionProvider(client, {REVOKE.name: REVOKE}, resolve=PUBLIC)
    payload = {"user_id": "u-7", "session_id": "abc"}
    outcome = await adapter.send(message(REVOKE.name, payload=payload), CREDS)

    assert outcome.ok
    [request] = wire.requests
    assert (request.method, request.url.path) == ("DELETE", "/api/users/u-7/sessions/abc")


async def test_send__unknown_action_is_a_bad_request_naming_it() -> None:
    wire = Wire()
    outcome = await provider(wire).send(message("calendar.explode"), CREDS)
    assert outcome.code is ErrorCode.BAD_REQUEST
    assert "'calendar.explode'" in outcome.detail
    assert "calendar.create_event" in outcome.detail  # what is configured
    assert wire.requests == []


async def test_send__without_an_access_token_the_connection_is_at_fault() -> None:
    outcome = await provider(Wire()).send(message(), {"refresh_token": "rt"})
    assert outcome.code is ErrorCode.AUTH_REVOKED


async def test_send__expired_token_with_refresh_token_is_deferred_not_sent() -> None:
    wire = Wire()
    expired = {**CREDS, "expires_at": (NOW - timedelta(seconds=1)).isoformat()}
    outcome = await provider(wire).send(message(), expired)
    # The refresher has not managed to refresh it: wait for that, don't collect a 401.
    assert outcome.code is ErrorCode.PROVIDER_UNAVAILABLE
    assert outcome.code.error_class is ErrorClass.THROTTLE
    assert wire.requests == []


async def test_send__expired_token_without_refresh_token_needs_reconsent() -> None:
    wire = Wire()
    expired = {"access_token": "at", "expires_at": (NOW - timedelta(hours=1)).isoformat()}
    outcome = await provider(wire).send(message(), expired)
    assert outcome.code is ErrorCode.AUTH_REVOKED
    assert "re-consent" in outcome.detail
    assert wire.requests == []


# -- what each answer means ---------------------------------------------------------

#: The mapping table, plus the ranges it leaves to ``_code_for_status``.
MAPPING = sorted(
    {
        **{status: code for status, code in STATUS_CODES.items()},
        500: ErrorCode.PROVIDER_ERROR,
        501: ErrorCode.PROVIDER_ERROR,
        418: ErrorCode.BAD_REQUEST,
        410: ErrorCode.BAD_REQUEST,
        302: ErrorCode.BAD_REQUEST,
    }.items()
)


def test_mapping_table__says_what_the_spec_says() -> None:
    table = dict(MAPPING)
    assert table[401] is ErrorCode.AUTH_REVOKED
    assert table[403] is ErrorCode.SCOPE_MISSING
    for status in (400, 404, 409, 422):
        assert table[status] is ErrorCode.BAD_REQUEST
    assert table[429] is ErrorCode.RATE_LIMITED
    for status in (502, 503, 504):
        assert table[status] is ErrorCode.PROVIDER_UNAVAILABLE
    assert table[500] is ErrorCode.PROVIDER_ERROR


@pytest.mark.parametrize(("status", "code"), MAPPING, ids=[str(s) for s, _ in MAPPING])
async def test_send__status_maps_to_its_canonical_code(status: int, code: ErrorCode) -> None:
    wire = Wire(lambda r: httpx.Response(status, json={"error": "nope"}))
    outcome = await provider(wire).send(message(), CREDS)
    assert not outcome.ok
    assert outcome.code is code
    assert (outcome.provider_status, outcome.provider_code) == (f"HTTP {status}", str(status))


@pytest.mark.parametrize("status", [200, 201, 202, 204])
async def test_send__2xx_is_success_with_the_json_id_when_there_is_one(status: int) -> None:
    body = None if status == 204 else {"id": "evt_123", "status": "confirmed"}
    wire = Wire(lambda r: httpx.Response(status, json=body) if body else httpx.Response(status))
    outcome = await provider(wire).send(message(), CREDS)
    assert outcome.ok
    assert outcome.provider_message_id == (None if status == 204 else "evt_123")
    assert outcome.provider_status == f"HTTP {status}"


async def test_send__429_defers_to_retry_after() -> None:
    wire = Wire(lambda r: httpx.Response(429, headers={"Retry-After": "30"}))
    outcome = await provider(wire).send(message(), CREDS)
    assert (outcome.code, outcome.retry_after) == (ErrorCode.RATE_LIMITED, 30.0)


async def test_send__403_names_the_scopes_the_action_needs() -> None:
    wire = Wire(lambda r: httpx.Response(403, json={"error": "insufficient_scope"}))
    outcome = await provider(wire).send(message(), CREDS)
    assert outcome.code is ErrorCode.SCOPE_MISSING
    assert "calendar.events.write" in outcome.detail
    assert "insufficient_scope" in outcome.detail


async def test_send__read_timeout_is_a_timeout() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("read timed out", request=request)

    outcome = await provider(Wire(slow)).send(message(), CREDS)
    assert outcome.code is ErrorCode.TIMEOUT


async def test_send__whole_send_timeout_bounds_a_slow_answer() -> None:
    async def stall(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200)

    outcome = await provider(Wire(stall), timeout=0.05).send(message(), CREDS)
    assert outcome.code is ErrorCode.TIMEOUT


async def test_send__refused_connection_is_connection_failed() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    outcome = await provider(Wire(refuse)).send(message(), CREDS)
    assert outcome.code is ErrorCode.CONNECTION_FAILED
    assert outcome.code.error_class is ErrorClass.TRANSIENT


def test_scopes_for__are_the_configured_scopes_of_the_action() -> None:
    p = provider(Wire())
    assert p.scopes_for(message()) == ("calendar.events.write",)
    assert p.scopes_for(message("unknown.action")) == ()


# -- refresh (RFC 6749 §6) ----------------------------------------------------------


def token_endpoint(status: int = 200, **body: Any) -> Wire:
    return Wire(lambda r: httpx.Response(status, json=body))


async def test_refresh__success_rotates_the_refresh_token_and_sets_the_expiry() -> None:
    wire = token_endpoint(
        access_token="at-2",
        token_type="Bearer",
        expires_in=3600,
        refresh_token="rt-2",
        scope="calendar.events.write calendar.read",
    )
    creds = {**CREDS, "client_id": "cid", "client_secret": "s3cr:et", "extra": "kept"}
    result = await provider(wire).refresh(creds)
    assert result.ok and not result.transient
    assert result.credentials["access_token"] == "at-2"
    assert result.credentials["refresh_token"] == "rt-2"  # the rotated one is kept
    assert result.refresh_token_rotated
    assert result.credentials["extra"] == "kept"
    assert result.expires_at == NOW + timedelta(seconds=3600)
    assert result.credentials["expires_at"] == (NOW + timedelta(seconds=3600)).isoformat()
    assert result.credentials["refreshed_at"] == NOW.isoformat()
    assert result.granted_scopes == ("calendar.events.write", "calendar.read")
    request = wire.requests[0]
    assert (request.method, str(request.url)) == ("POST", TOKEN_URL)
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert parse_qs(request.content.decode()) == {
        "grant_type": ["refresh_token"],
        "refresh_token": ["rt-1"],
    }
    # client_secret_basic: both parts form-encoded, then base64 (RFC 6749 §2.3.1).
    scheme, _, encoded = request.headers["authorization"].partition(" ")
    assert (scheme, base64.b64decode(encoded).decode()) == ("Basic", "cid:s3cr%3Aet")


async def test_refresh__without_a_new_refresh_token_keeps_the_old_one() -> None:
    wire = token_endpoint(access_token="at-2", expires_in="120")
    result = await provider(wire).refresh(CREDS)
    assert result.ok
    assert result.credentials["refresh_token"] == "rt-1"
    assert not result.refresh_token_rotated
    assert result.expires_at == NOW + timedelta(seconds=120)
    assert result.granted_scopes is None  # same as before (RFC 6749 §5.1)


async def test_refresh__without_expires_in_drops_the_old_expiry() -> None:
    wire = token_endpoint(access_token="at-2")
    result = await provider(wire).refresh({**CREDS, "expires_at": NOW.isoformat()})
    assert result.ok
    assert result.expires_at is None
    assert "expires_at" not in result.credentials


async def test_refresh__client_secret_post_and_public_clients_send_the_id_in_the_form() -> None:
    wire = token_endpoint(access_token="at-2")
    await provider(wire).refresh(
        {**CREDS, "client_id": "cid", "client_secret": "sec", "client_auth": "client_secret_post"}
    )
    await provider(wire).refresh({**CREDS, "client_id": "public"})
    posted, public = (parse_qs(r.content.decode()) for r in wire.requests)
    assert (posted["client_id"], posted["client_secret"]) == (["cid"], ["sec"])
    assert public["client_id"] == ["public"] and "client_secret" not in public
    assert all("authorization" not in r.headers for r in wire.requests)


@pytest.mark.parametrize("status", [400, 401])
async def test_refresh__invalid_grant_means_the_connection_needs_reauth(status: int) -> None:
    wire = token_endpoint(status, error="invalid_grant", error_description="Token revoked")
    result = await provider(wire).refresh(CREDS)
    assert not result.ok and not result.transient
    assert result.code is ErrorCode.AUTH_REVOKED
    assert "invalid_grant" in result.detail and "Token revoked" in result.detail


async def test_refresh__oauth_error_in_a_200_is_still_a_refusal() -> None:
    result = await provider(token_endpoint(200, error="bad_refresh_token")).refresh(CREDS)
    assert (result.ok, result.code) == (False, ErrorCode.AUTH_REVOKED)


async def test_refresh__invalid_scope_means_reconsent() -> None:
    result = await provider(token_endpoint(400, error="invalid_scope")).refresh(CREDS)
    assert result.code is ErrorCode.SCOPE_MISSING and not result.transient


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (500, ErrorCode.PROVIDER_ERROR),
        (502, ErrorCode.PROVIDER_UNAVAILABLE),
        (503, ErrorCode.PROVIDER_UNAVAILABLE),
        (429, ErrorCode.RATE_LIMITED),
    ],
)
async def test_refresh__5xx_and_429_are_transient(status: int, code: ErrorCode) -> None:
    wire = Wire(lambda r: httpx.Response(status, headers={"Retry-After": "20"}))
    result = await provider(wire).refresh(CREDS)
    assert result.transient
    assert result.code is code
    assert result.retry_after == (20.0 if code.error_class is ErrorClass.THROTTLE else None)


async def test_refresh__timeout_and_refused_connection_are_transient() -> None:
    async def stall(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200)

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    slow = await provider(Wire(stall), timeout=0.05).refresh(CREDS)
    down = await provider(Wire(refuse)).refresh(CREDS)
    assert (slow.transient, slow.code) == (True, ErrorCode.TIMEOUT)
    assert (down.transient, down.code) == (True, ErrorCode.CONNECTION_FAILED)


async def test_refresh__2xx_without_access_token_is_transient() -> None:
    result = await provider(token_endpoint(200, token_type="Bearer")).refresh(CREDS)
    assert result.transient and result.code is ErrorCode.PROVIDER_ERROR


@pytest.mark.parametrize(
    "url", ["http://auth.example/token", "ftp://auth.example/token", "not a url"]
)
async def test_refresh__refuses_to_send_secrets_over_plain_http_to_another_host(url: str) -> None:
    wire = Wire()
    result = await provider(wire).refresh({**CREDS, "token_url": url})
    assert result.code is ErrorCode.AUTH_REVOKED and "token_url" in result.detail
    assert wire.requests == []


async def test_refresh__plain_http_on_loopback_is_allowed_where_loopback_is() -> None:
    wire = token_endpoint(access_token="at-2")
    loopback = {**CREDS, "token_url": "http://127.0.0.1:9/token"}

    allowed = await provider(wire, allow_loopback=True).refresh(loopback)
    refused = await provider(wire).refresh(loopback)

    assert allowed.ok
    assert refused.code is ErrorCode.AUTH_REVOKED and "loopback address" in refused.detail
    assert len(wire.requests) == 1


async def test_refresh__without_a_refresh_token_says_so() -> None:
    wire = Wire()
    result = await provider(wire).refresh({"access_token": "at", "token_url": TOKEN_URL})
    assert result.code is ErrorCode.AUTH_REVOKED and "refresh_token" in result.detail
    assert wire.requests == []


# -- check ----------------------------------------------------------------------------


async def test_check__gets_check_url_with_the_bearer_token() -> None:
    wire = Wire(lambda r: httpx.Response(200, json={"sub": "u1"}))
    creds = {**CREDS, "check_url": "https://api.example/me", "scope": "b a"}
    result = await provider(wire).check(creds)
    assert isinstance(result, CheckResult)
    assert result.ok
    assert result.granted_scopes == ["a", "b"]
    assert wire.requests[0].headers["authorization"] == "Bearer at-1"


@pytest.mark.parametrize(
    ("status", "code"), [(401, ErrorCode.AUTH_REVOKED), (403, ErrorCode.SCOPE_MISSING)]
)
async def test_check__refusal_maps_like_a_send(status: int, code: ErrorCode) -> None:
    wire = Wire(lambda r: httpx.Response(status))
    result = await provider(wire).check({**CREDS, "check_url": "https://api.example/me"})
    assert (result.ok, result.code) == (False, code)


async def test_check__without_check_url_reports_what_the_credentials_say() -> None:
    wire = Wire()
    expires = NOW + timedelta(days=1)
    result = await provider(wire).check({**CREDS, "expires_at": expires.isoformat()})
    assert result.ok and result.expires_at == expires
    assert "check_url" in result.detail
    assert wire.requests == []


async def test_check__expired_token_is_fine_when_it_can_be_refreshed() -> None:
    expired = (NOW - timedelta(minutes=1)).isoformat()
    refreshable = await provider(Wire()).check({**CREDS, "expires_at": expired})
    dead = await provider(Wire()).check({"access_token": "at", "expires_at": expired})
    assert refreshable.ok
    assert (dead.ok, dead.code) == (False, ErrorCode.AUTH_REVOKED)


async def test_check__unreachable_check_url_is_a_transport_code() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    result = await provider(Wire(refuse)).check({**CREDS, "check_url": "https://api.example/me"})
    assert (result.ok, result.code) == (False, ErrorCode.CONNECTION_FAILED)
