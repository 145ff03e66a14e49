"""Every field of ``NewMessage`` is checked before anything is stored, and the error names it."""

from __future__ import annotations

import dataclasses
import json
import types
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from sluice import NewMessage, ValidationError
from sluice.addressing import Addressing
from sluice.model import content_hash

RUN_AT = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
LIMITS = {"tenant": 128, "channel": 64, "provider": 64, "action": 128, "recipient": 2048}


def msg(**kw: Any) -> NewMessage:
    fields: dict[str, Any] = {
        "tenant": "acme",
        "channel": "webhook",
        "provider": "null",
        "recipient": "https://example.test/hook",
    }
    fields.update(kw)
    return NewMessage(**fields)


def rejected(field: str, **kw: Any) -> ValidationError:
    with pytest.raises(ValidationError) as excinfo:
        msg(**kw).validate()
    assert excinfo.value.field == field, str(excinfo.value)
    assert str(excinfo.value).startswith(f"{field}: ")
    return excinfo.value


# -- valid messages -----------------------------------------------------------------


def test_validate__minimal_message_is_valid_with_empty_payload() -> None:
    assert msg().validate() == "{}"


def test_validate__returns_canonical_payload_json() -> None:
    payload = {"b": [1, 2.5, None, True], "a": {"z": "é", "y": "x"}}
    out = msg(payload=payload).validate()
    assert out == '{"a":{"y":"x","z":"\\u00e9"},"b":[1,2.5,null,true]}'
    assert json.loads(out) == payload


def test_validate__every_field_at_its_limit_is_valid() -> None:
    at_limits = {name: "x" * limit for name, limit in LIMITS.items()}
    message = msg(
        **at_limits,
        priority=1000,
        max_attempts=100,
        run_at=RUN_AT.astimezone(timezone(timedelta(hours=-5))),
        idempotency_key="k" * 255,
        correlation_id="c" * 255,
        scopes=["s" * 128, "messages:send"],
    )
    # A provider name of 64 characters exists only as an alias in someone's sluice.toml.
    message.validate(addressing=Addressing(providers={"x" * 64: "null"}))
    msg(priority=-1000, max_attempts=1, scopes=("a",)).validate()


def test_validate__a_batch_prefix_is_put_before_the_field() -> None:
    with pytest.raises(ValidationError) as excinfo:
        msg(recipient="").validate("messages[3].")
    assert excinfo.value.field == "messages[3].recipient"


# -- the address fields -------------------------------------------------------------


@pytest.mark.parametrize("field", sorted(LIMITS))
@pytest.mark.parametrize("value", ["", "   ", None, 42])
def test_validate__address_field_is_required(field: str, value: Any) -> None:
    rejected(field, **{field: value})


@pytest.mark.parametrize("field", sorted(LIMITS))
def test_validate__address_field_over_its_limit_is_rejected(field: str) -> None:
    error = rejected(field, **{field: "x" * (LIMITS[field] + 1)})
    assert str(LIMITS[field]) in error.problem


@pytest.mark.parametrize("field", sorted(LIMITS))
def test_validate__address_field_with_nul_is_rejected(field: str) -> None:
    rejected(field, **{field: "ab\x00c"})


@pytest.mark.parametrize("field", ["tenant", "channel", "provider", "action"])
@pytest.mark.parametrize("pad", [" {}", "{} ", "\t{}", "{}\n", "\u00a0{}"])
def test_validate__name_with_leading_or_trailing_whitespace_is_rejected(
    field: str, pad: str
) -> None:
    # " acme" would be a tenant of its own: its controls, limits and keys would not apply.
    value = pad.format({"tenant": "acme", "channel": "webhook", "provider": "null",
                        "action": "send"}[field])  # fmt: skip
    error = rejected(field, **{field: value})
    assert "whitespace" in error.problem
    assert repr(value) in error.problem


# -- payload ------------------------------------------------------------------------


@pytest.mark.parametrize("payload", [[1, 2], "text", 7, None])
def test_validate__payload_must_be_an_object(payload: Any) -> None:
    rejected("payload", payload=payload)


@pytest.mark.parametrize(
    "payload",
    [
        {"when": datetime(2026, 1, 1, tzinfo=UTC)},
        {"tags": {"a", "b"}},
        {"x": object()},
        {1: "a", "b": 2},
    ],
)
def test_validate__payload_must_be_json_serialisable(payload: dict[Any, Any]) -> None:
    rejected("payload", payload=payload)


@pytest.mark.parametrize("number", [float("nan"), float("inf"), float("-inf")])
def test_validate__payload_must_not_hold_nan_or_infinity(number: float) -> None:
    rejected("payload", payload={"amount": number})


@pytest.mark.parametrize(
    "payload", [{"text": "a\x00b"}, {"a\x00": 1}, {"nested": [{"deep": "\x00"}]}]
)
def test_validate__payload_with_nul_is_rejected(payload: dict[str, Any]) -> None:
    rejected("payload", payload=payload)


@pytest.mark.parametrize(
    "text",
    [
        "\\u0000",  # backslash, 'u', '0', '0', '0', '0': no NUL character
        "\\\\u0000",  # two backslashes, then the same text
        "C:\\u0000dir\\file",
    ],
)
def test_validate__payload_with_backslash_u0000_text_is_valid(text: str) -> None:
    assert "\x00" not in text
    assert json.loads(msg(payload={"pattern": text}).validate()) == {"pattern": text}


@pytest.mark.parametrize("text", ["\\\x00", "\\\\\x00", "\\u0000\x00"])
def test_validate__payload_with_nul_after_backslashes_is_rejected(text: str) -> None:
    rejected("payload", payload={"pattern": text})


def test_validate__payload_may_be_any_mapping() -> None:
    payload = types.MappingProxyType({"order": 7, "lines": types.MappingProxyType({"a": 1})})
    assert msg(payload=payload).validate() == '{"lines":{"a":1},"order":7}'


def test_validate__payload_up_to_256_kib_is_valid_and_beyond_is_not() -> None:
    overhead = len('{"x":""}')
    msg(payload={"x": "a" * (256 * 1024 - overhead)}).validate()
    error = rejected("payload", payload={"x": "a" * (256 * 1024 - overhead + 1)})
    assert "262144" in error.problem


# -- numbers and times --------------------------------------------------------------


@pytest.mark.parametrize("priority", [True, False, 1.0, "1", None, -1001, 1001])
def test_validate__priority_must_be_an_integer_within_range(priority: Any) -> None:
    rejected("priority", priority=priority)


@pytest.mark.parametrize("max_attempts", [0, -1, 101, True, 2.0, "5", None])
def test_validate__max_attempts_must_be_between_1_and_100(max_attempts: Any) -> None:
    rejected("max_attempts", max_attempts=max_attempts)


def test_validate__run_at_must_be_timezone_aware() -> None:
    error = rejected("run_at", run_at=datetime(2026, 1, 1, 12, 0))
    assert "timezone" in error.problem


@pytest.mark.parametrize("run_at", ["2026-01-01T12:00:00Z", 1767268800, RUN_AT.date()])
def test_validate__run_at_must_be_a_datetime(run_at: Any) -> None:
    rejected("run_at", run_at=run_at)


# -- keys and scopes ----------------------------------------------------------------


@pytest.mark.parametrize("field", ["idempotency_key", "correlation_id"])
@pytest.mark.parametrize("value", ["", "k" * 256, "a\x00b", 42])
def test_validate__optional_key_must_be_a_short_non_empty_string(field: str, value: Any) -> None:
    rejected(field, **{field: value})


@pytest.mark.parametrize("scopes", ["messages:send", ["ok", ""], ["s" * 129], [None], ["ok", 3]])
def test_validate__scopes_must_be_a_list_of_non_empty_strings(scopes: Any) -> None:
    rejected("scopes", scopes=scopes)


# -- content hash ---------------------------------------------------------------------


def fingerprint(message: NewMessage) -> str:
    return content_hash(message, message.validate())


def test_content_hash__ignores_correlation_id() -> None:
    first = msg(payload={"n": 1}, idempotency_key="k", correlation_id="trace-1")
    retry = dataclasses.replace(first, correlation_id="trace-2")
    assert fingerprint(first) == fingerprint(retry)


def test_content_hash__ignores_key_order_of_the_payload() -> None:
    assert fingerprint(msg(payload={"a": 1, "b": 2})) == fingerprint(msg(payload={"b": 2, "a": 1}))


def test_content_hash__ignores_order_of_scopes() -> None:
    assert fingerprint(msg(scopes=["a", "b"])) == fingerprint(msg(scopes=["b", "a"]))


@pytest.mark.parametrize(
    "change",
    [
        {"payload": {"n": 2}},
        {"recipient": "https://example.test/other"},
        {"channel": "orders"},
        {"provider": "webhook"},
        {"action": "order.created"},
        {"priority": 1},
        {"run_at": RUN_AT},
        {"max_attempts": 6},
        {"scopes": ["extra"]},
    ],
)
def test_content_hash__changes_with_what_is_sent(change: dict[str, Any]) -> None:
    base = msg(payload={"n": 1})
    assert fingerprint(base) != fingerprint(dataclasses.replace(base, **change))


@pytest.mark.parametrize(
    "run_at",
    [
        datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-15))),  # year 10000
        datetime(2000, 1, 1, tzinfo=timezone(timedelta(hours=16))),  # offset PostgreSQL refuses
        datetime(1, 1, 1, tzinfo=UTC),
    ],
)
def test_validate__run_at_outside_what_every_store_can_hold_is_rejected(run_at: datetime) -> None:
    assert "run_at" in str(rejected("run_at", run_at=run_at))


def test_validate__a_scope_with_nul_is_rejected() -> None:
    assert "NUL" in str(rejected("scopes", scopes=["messages:send", "a\x00b"]))
