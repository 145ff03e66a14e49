"""Provider webhook bodies, read into ``Event``s. Pure: no database, no network, no clock.

Run these only after the request's signature has been checked (``sluice.ingress.verify``).
Each parser turns one request into the events it reports, in the order the provider
listed them:

- a **receipt** is news about a message Sluice sent; its ``status`` is one of the
  canonical values (``accepted``, ``sent``, ``delivered``, ``read``, ``undelivered``,
  ``failed``, ``bounced``, ``deferred``) whatever word the provider used;
- an **inbound** event is anything else worth handing to a tenant: a reply, a click, an
  unsubscribe, and also a status word we do not know. An unknown status is forwarded
  rather than refused: refusing would make the provider retry it for days and, for Meta,
  eventually switch the webhook off, losing every receipt behind it.

``event_id`` is the key to drop re-deliveries on; it is stable across the provider's
retries of the same event and unique within one provider.

Malformed input (not JSON, a wrong type, a missing required field, something absurdly
large or deep) raises ``PayloadError`` naming the field by its path, e.g.
``entry[0].changes[1].value.statuses[0].id``; no other exception escapes a parser. Fields
Sluice does not read are not checked beyond being well-formed JSON: providers add fields
without notice, and that must not break ingress.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, NoReturn, overload

from sluice.errors import ValidationError

__all__ = [
    "Event",
    "PayloadError",
    "parse_sendgrid",
    "parse_standard",
    "parse_twilio",
    "parse_whatsapp",
]

RECEIPT = "receipt"
INBOUND = "inbound"
_STATUSES = frozenset(
    {"accepted", "sent", "delivered", "read", "undelivered", "failed", "bounced", "deferred"}
)

# Limits: generous for any real webhook, small enough that a hostile body cannot make the
# rest of Sluice (the inbox table, a tenant's consumer) pay for it.
_MAX_BODY_BYTES = 4 * 1024 * 1024
_MAX_DEPTH = 64  # Meta's deepest payloads nest about 10 levels
_MAX_ID_CHARS = 512  # ids, addresses, idempotency tokens (Meta allows 512 of opaque data)
_MAX_WORD_CHARS = 64  # status words, event names, error codes
_MAX_TYPE_CHARS = 256  # a Standard Webhooks event type
_MAX_FIELD_CHARS = 64 * 1024  # one Twilio form value
_MAX_FORM_FIELDS = 1000
_MAX_DETAIL_CHARS = 500
_MAX_UNIX = 253_402_300_799  # 9999-12-31T23:59:59Z, the last second a datetime holds

#: Twilio's message statuses, mapped to ours. ``canceled`` (a scheduled message withdrawn)
#: will never arrive, so it counts as failed. ``partially_delivered`` is neither delivered
#: nor undelivered and is forwarded as an unknown status.
_TWILIO_STATUSES = {
    "queued": "accepted",
    "accepted": "accepted",
    "scheduled": "accepted",
    "sending": "accepted",
    "sent": "sent",
    "delivered": "delivered",
    "undelivered": "undelivered",
    "failed": "failed",
    "read": "read",
    "canceled": "failed",
}
_TWILIO_INBOUND = frozenset({"received", "receiving"})
_SENDGRID_RECEIPTS = {
    "processed": "accepted",
    "deferred": "deferred",
    "delivered": "delivered",
    "open": "read",
    "bounce": "bounced",
    "dropped": "bounced",
}
_SENDGRID_BOUNCES = frozenset({"bounce", "dropped"})
#: ``played`` is reported for voice messages, after (and instead of) ``read``.
_WHATSAPP_STATUSES = {
    "sent": "sent",
    "delivered": "delivered",
    "read": "read",
    "played": "read",
    "failed": "failed",
}
_WHATSAPP_OBJECT = "whatsapp_business_account"


class PayloadError(ValidationError):
    """A webhook body Sluice cannot read; ``field`` is the path to the offending field.

    The message reads ``"{field}: {problem}"``. A ``ValidationError`` (and so a
    ``ValueError``): bad input, nothing stored.
    """


@dataclass(frozen=True, slots=True)
class Event:
    """One thing a provider told us, in Sluice's words.

    - ``event_id``: the dedupe key within one provider, stable across re-deliveries.
    - ``kind``: ``"receipt"`` (about a message we sent) or ``"inbound"`` (for the tenant).
    - ``status``: for receipts, the canonical status; ``None`` for inbound events.
    - ``message_id``: Sluice's own message id, when the provider echoes it back.
    - ``provider_message_id``: the provider's id for the message (SID, wamid, ...).
    - ``occurred_at``: when the provider says it happened (aware, UTC), if it says.
    - ``error_code`` / ``detail``: the provider's error code as text, and human text
      (at most 500 characters).
    - ``address``: for inbound events, the address it was sent *to* (our number, our
      WhatsApp phone number id), which tells whose it is.
    - ``data``: the provider's fields for this event, JSON-safe, to forward to the tenant.
    """

    event_id: str
    kind: str
    status: str | None
    message_id: str | None
    provider_message_id: str | None
    occurred_at: datetime | None
    error_code: str | None
    detail: str | None
    address: str | None
    data: dict[str, Any]


def parse_twilio(
    params: Sequence[tuple[str, str]],
    query: Mapping[str, str],
) -> list[Event]:
    """Read a Twilio Messaging webhook: a status callback, or an incoming message.

    ``params`` are the form fields as (name, value) pairs, ``query`` the callback URL's
    query (our ``StatusCallback`` carries ``sluice_message_id``). A status callback
    (``MessageStatus``, or the older ``SmsStatus``) becomes a receipt keyed on
    ``{MessageSid}:{status}``; an incoming message (status ``received``, or a ``Body``
    with no status at all) becomes an inbound event keyed on its ``MessageSid``.

    Keys are made of signed fields only. Twilio's ``I-Twilio-Idempotency-Token`` header is
    not covered by the signature: keyed on it, one captured callback replayed with new
    tokens was stored once per token.
    """
    fields = _form_fields(params)
    message_id = _query_value(query, "sluice_message_id")
    message_status = _form_value(fields, "MessageStatus", limit=_MAX_WORD_CHARS)
    sms_status = _form_value(fields, "SmsStatus", limit=_MAX_WORD_CHARS)
    raw_status = message_status if message_status is not None else sms_status
    if raw_status is None and "Body" not in fields:
        _fail("MessageStatus", "is required (neither a status callback nor an incoming message)")
    sid = _form_value(fields, "MessageSid") or _form_value(fields, "SmsSid")
    if sid is None:
        _fail("MessageSid", "is required")
    data: dict[str, Any] = {
        name: values[0] if len(values) == 1 else list(values) for name, values in fields.items()
    }

    if raw_status is None or raw_status in _TWILIO_INBOUND:
        to = _form_value(fields, "To")
        if to is None:
            _fail("To", "is required for an incoming message")
        return [
            _event(
                event_id=sid,
                kind=INBOUND,
                message_id=message_id,
                provider_message_id=sid,
                address=to,
                data=data,
            )
        ]

    status = _TWILIO_STATUSES.get(raw_status)
    return [
        _event(
            event_id=f"{sid}:{raw_status}",
            kind=RECEIPT if status else INBOUND,
            status=status,
            message_id=message_id,
            provider_message_id=sid,
            error_code=_form_value(fields, "ErrorCode", limit=_MAX_WORD_CHARS),
            detail=_form_value(fields, "ErrorMessage", limit=_MAX_FIELD_CHARS),
            data=data,
        )
    ]


def parse_sendgrid(body: bytes) -> list[Event]:
    """Read a SendGrid Event Webhook batch: a JSON array of event objects.

    ``processed``, ``deferred``, ``delivered``, ``open``, ``bounce`` and ``dropped`` are
    receipts (``accepted``, ``deferred``, ``delivered``, ``read``, ``bounced``,
    ``bounced``); every other event (``click``, ``spamreport``, the unsubscribes, and
    types SendGrid adds later) is inbound. Both kinds carry our ``sluice_message_id``
    custom argument and the ``sg_message_id`` (without the ``.filter...`` suffix SendGrid
    appends, so it matches the ``X-Message-Id`` we got when sending).
    """
    batch = _load_json(body)
    if not isinstance(batch, list):
        _fail("body", f"expected a JSON array of events, got {_kind(batch)}")
    events: list[Event] = []
    for index, item in enumerate(batch):
        path = f"[{index}]"
        record = _object(item, path)
        name = _string(record, "event", path, required=True, limit=_MAX_WORD_CHARS)
        event_id = _string(record, "sg_event_id", path, required=True)
        status = _SENDGRID_RECEIPTS.get(name)
        sg_message_id = _string(record, "sg_message_id", path)
        error_code = None
        if name in _SENDGRID_BOUNCES:
            error_code = _code(record, "status", path)
        detail = _string(record, "reason", path, limit=None) or _string(
            record, "response", path, limit=None
        )
        events.append(
            _event(
                event_id=event_id,
                kind=RECEIPT if status else INBOUND,
                status=status,
                message_id=_string(record, "sluice_message_id", path),
                provider_message_id=_sendgrid_message_id(sg_message_id),
                occurred_at=_unix(record, "timestamp", path),
                error_code=error_code,
                detail=detail,
                data=dict(record),
            )
        )
    return events


def parse_whatsapp(body: bytes) -> list[Event]:
    """Read a WhatsApp Cloud API webhook (``object`` = ``whatsapp_business_account``).

    Every ``entry[].changes[]`` of field ``messages`` is read; changes of other fields
    (template and account updates) carry no message events and are skipped. Each
    ``value.statuses[]`` item is a receipt keyed on ``{wamid}:{status}`` (plus the
    participant for group messages), carrying ``biz_opaque_callback_data`` as our message
    id and, when failed, the first of its ``errors``. Each ``value.messages[]`` item is an
    inbound message keyed on its wamid and addressed to ``metadata.phone_number_id``.
    ``data`` holds the item with the ``metadata`` (and, for messages, ``contacts``) of the
    change it came in.
    """
    document = _object(_load_json(body), "")
    kind = _string(document, "object", "", required=True, limit=_MAX_TYPE_CHARS)
    if kind != _WHATSAPP_OBJECT:
        _fail("object", f"expected {_WHATSAPP_OBJECT!r}, got {kind!r}")
    events: list[Event] = []
    for e, entry in enumerate(_array(document.get("entry"), "entry", required=True)):
        entry_path = f"entry[{e}]"
        changes_path = f"{entry_path}.changes"
        changes = _object(entry, entry_path).get("changes")
        for c, change in enumerate(_array(changes, changes_path, required=True)):
            change_path = f"{changes_path}[{c}]"
            record = _object(change, change_path)
            field = _string(record, "field", change_path, limit=_MAX_TYPE_CHARS)
            if field is not None and field != "messages":
                continue
            events.extend(_whatsapp_value(record.get("value"), f"{change_path}.value"))
    return events


def parse_standard(body: bytes, webhook_id: str) -> list[Event]:
    """Read a Standard Webhooks body: ``{"type": ..., "timestamp": ..., "data": {...}}``.

    ``type`` ``message.<status>`` (a canonical status) with a ``data.message_id`` is a
    receipt for that message; anything else is inbound. ``event_id`` is the (verified)
    ``webhook-id``. Optional ``data`` fields read: ``message_id``,
    ``provider_message_id``, ``error_code``, ``detail``. ``data`` is the whole body.
    """
    if not isinstance(webhook_id, str) or not webhook_id.strip():
        _fail("webhook-id", "is required")
    if len(webhook_id) > _MAX_ID_CHARS or not _is_unicode(webhook_id):
        _fail("webhook-id", f"is not a string of at most {_MAX_ID_CHARS} characters")
    document = _object(_load_json(body), "")
    event_type = _string(document, "type", "", required=True, limit=_MAX_TYPE_CHARS)
    occurred_at = _iso_time(document, "timestamp")
    payload = _object(document.get("data"), "data")
    message_id = _string(payload, "message_id", "data")
    family, _, word = event_type.partition(".")
    status = word if family == "message" and word in _STATUSES and message_id else None
    return [
        _event(
            event_id=webhook_id,
            kind=RECEIPT if status else INBOUND,
            status=status,
            message_id=message_id,
            provider_message_id=_string(payload, "provider_message_id", "data"),
            occurred_at=occurred_at,
            error_code=_code(payload, "error_code", "data"),
            detail=_string(payload, "detail", "data", limit=None),
            data=dict(document),
        )
    ]


def _sendgrid_message_id(sg_message_id: str | None) -> str | None:
    """``sg_message_id`` up to its first dot: SendGrid appends ``.filter...`` to the id."""
    if sg_message_id is None:
        return None
    return sg_message_id.split(".", 1)[0] or None


# -- WhatsApp --------------------------------------------------------------------------


def _whatsapp_value(value: Any, path: str) -> list[Event]:
    record = _object(value, path)
    metadata = _object(record.get("metadata"), f"{path}.metadata")
    phone_number_id = _code(metadata, "phone_number_id", f"{path}.metadata", required=True)
    statuses = _array(record.get("statuses"), f"{path}.statuses")
    messages = _array(record.get("messages"), f"{path}.messages")
    contacts = _array(record.get("contacts"), f"{path}.contacts")
    events: list[Event] = []
    for index, item in enumerate(statuses):
        item_path = f"{path}.statuses[{index}]"
        status = _object(item, item_path)
        wamid = _string(status, "id", item_path, required=True)
        word = _string(status, "status", item_path, required=True, limit=_MAX_WORD_CHARS)
        canonical = _WHATSAPP_STATUSES.get(word)
        event_id = f"{wamid}:{word}"
        # A group message gets one status per participant; each is its own event.
        participant = _string(status, "recipient_participant_id", item_path)
        if participant:
            event_id = f"{event_id}:{participant}"
        error_code, detail = _whatsapp_error(status, item_path)
        events.append(
            _event(
                event_id=event_id,
                kind=RECEIPT if canonical else INBOUND,
                status=canonical,
                message_id=_string(status, "biz_opaque_callback_data", item_path),
                provider_message_id=wamid,
                occurred_at=_unix(status, "timestamp", item_path),
                error_code=error_code,
                detail=detail,
                data={"metadata": dict(metadata), "status": dict(status)},
            )
        )
    for index, item in enumerate(messages):
        item_path = f"{path}.messages[{index}]"
        message = _object(item, item_path)
        wamid = _string(message, "id", item_path, required=True)
        _string(message, "from", item_path)
        _string(message, "type", item_path, limit=_MAX_TYPE_CHARS)
        text = message.get("text")
        if text is not None:
            _string(_object(text, f"{item_path}.text"), "body", f"{item_path}.text", limit=None)
        error_code, detail = _whatsapp_error(message, item_path)
        data: dict[str, Any] = {"metadata": dict(metadata), "message": dict(message)}
        if contacts:
            data["contacts"] = list(contacts)
        events.append(
            _event(
                event_id=wamid,
                kind=INBOUND,
                provider_message_id=wamid,
                occurred_at=_unix(message, "timestamp", item_path),
                error_code=error_code,
                detail=detail,
                address=phone_number_id,
                data=data,
            )
        )
    return events


def _whatsapp_error(record: dict[str, Any], path: str) -> tuple[str | None, str | None]:
    """The code and human text of the first of ``errors``, if there are any."""
    errors = _array(record.get("errors"), f"{path}.errors")
    if not errors:
        return None, None
    first_path = f"{path}.errors[0]"
    first = _object(errors[0], first_path)
    code = _code(first, "code", first_path)
    title = _string(first, "title", first_path, limit=None)
    message = _string(first, "message", first_path, limit=None)
    details = None
    if first.get("error_data") is not None:
        error_data = _object(first["error_data"], f"{first_path}.error_data")
        details = _string(error_data, "details", f"{first_path}.error_data", limit=None)
    summary = title or message
    if summary and details and details != summary:
        return code, f"{summary}: {details}"
    return code, summary or details


# -- Twilio's form fields ----------------------------------------------------------------


def _form_fields(params: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    fields: dict[str, list[str]] = {}
    for count, pair in enumerate(params, start=1):
        if count > _MAX_FORM_FIELDS:
            _fail("params", f"has more than {_MAX_FORM_FIELDS} fields")
        if not isinstance(pair, tuple | list) or len(pair) != 2:
            _fail("params", "expected (name, value) pairs")
        name, value = pair
        if not isinstance(name, str) or not isinstance(value, str):
            _fail("params", "field names and values must be strings")
        if not name or len(name) > _MAX_TYPE_CHARS or not _is_unicode(name):
            _fail("params", "has an empty, overlong or undecodable field name")
        if len(value) > _MAX_FIELD_CHARS:
            _fail(name, f"is longer than {_MAX_FIELD_CHARS} characters")
        if not _is_unicode(value):
            _fail(name, "is not valid Unicode")
        fields.setdefault(name, []).append(value)
    return fields


def _form_value(
    fields: Mapping[str, list[str]], name: str, *, limit: int = _MAX_ID_CHARS
) -> str | None:
    """The single value of form field ``name``; ``None`` when absent or empty."""
    values = fields.get(name)
    if not values:
        return None
    if any(value != values[0] for value in values):
        _fail(name, "is given more than once with different values")
    if len(values[0]) > limit:
        _fail(name, f"is longer than {limit} characters")
    return values[0] or None


def _query_value(query: Mapping[str, str], name: str) -> str | None:
    value = query.get(name)
    where = f"query.{name}"
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        _fail(where, f"expected a string, got {_kind(value)}")
    if len(value) > _MAX_ID_CHARS or not _is_unicode(value):
        _fail(where, f"is not a string of at most {_MAX_ID_CHARS} characters")
    return value


# -- JSON ------------------------------------------------------------------------------


def _load_json(body: bytes) -> Any:
    if not isinstance(body, bytes | bytearray | memoryview):
        _fail("body", "expected the raw request body as bytes")
    if len(body) > _MAX_BODY_BYTES:
        _fail("body", f"is larger than {_MAX_BODY_BYTES} bytes")
    try:
        text = bytes(body).decode("utf-8")
    except UnicodeDecodeError:
        _fail("body", "is not UTF-8")
    try:
        if text.startswith("\ufeff"):  # as json.loads refuses it
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        document = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        _fail("body", f"is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})")
    except ValueError as exc:  # a number too long for int(), or NaN / Infinity
        _fail("body", f"is not valid JSON ({str(exc)[:120]})")
    except RecursionError:
        _fail("body", "is not valid JSON (nested too deeply)")
    if _may_be_hostile(text):
        _check_tree(document)
    return document


#: A JSON number that may read as infinity: an exponent of three digits or more, or a run
#: of 210 digits or more. Anything else is under 10**308 (JSON has no leading zeros, so an
#: integer part of at most 209 digits is under 10**209, and an exponent of two digits
#: multiplies it by at most 10**99), and the largest double is 1.8 * 10**308.
_HUGE_NUMBER = re.compile(r"[eE][+-]?[0-9]{3}|[0-9]{210}")


def _may_be_hostile(text: str) -> bool:
    """Whether ``_check_tree`` could find anything in the document read from ``text``,
    judged from the text alone: walking the tree was about 7 % of the API's own time
    for a small webhook (sampled in process), and nearly every body is plainly clean.

    A lone surrogate can only come from a ``\\u`` escape (the text itself was decoded
    from UTF-8, which cannot hold one); nesting deeper than ``_MAX_DEPTH`` takes more
    opening brackets than that; a number that is not finite takes an exponent of three
    digits or a long run of digits (``_HUGE_NUMBER``). Each test errs towards the walk:
    brackets, escapes and digits inside strings count as well.
    """
    return (
        "\\u" in text
        or text.count("{") + text.count("[") > _MAX_DEPTH
        or _HUGE_NUMBER.search(text) is not None
    )


def _refuse_constant(name: str) -> NoReturn:
    # NaN and Infinity are Python's extension to JSON; nothing downstream could store them.
    raise ValueError(f"{name} is not a JSON number")


#: One decoder for every body (``json.loads`` with an option builds one per call).
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)


def _check_tree(document: Any) -> None:
    """Refuse nesting deeper than ``_MAX_DEPTH``, strings that are not valid Unicode and
    numbers that are not finite.

    JSON's ``\\ud800``-style escapes can produce lone surrogates, which cannot be encoded
    as UTF-8 and so could be neither stored nor forwarded. A number too large for a double
    (``1e400``) reads as infinity, which is not JSON either: PostgreSQL's jsonb refuses
    it, and SQLite would keep text no JSON reader accepts. Paths are only rendered when
    something is wrong: ``links`` remembers each container's parent and key.
    """
    links: list[tuple[int, str | int]] = [(-1, "")]
    stack: list[tuple[Any, int, int]] = [(document, 1, 0)]
    while stack:
        value, depth, node = stack.pop()
        if isinstance(value, str):
            if not _is_unicode(value):
                _fail(_render(links, node), "is not valid Unicode (a lone surrogate)")
            continue
        if isinstance(value, float):
            if not math.isfinite(value):
                _fail(_render(links, node), "is a number too large to represent (not finite)")
            continue
        if isinstance(value, dict):
            children: Any = value.items()
        elif isinstance(value, list):
            children = enumerate(value)
        else:
            continue
        if depth > _MAX_DEPTH:
            _fail(_render(links, node), f"is nested deeper than {_MAX_DEPTH} levels")
        for key, child in children:
            if isinstance(key, str) and not _is_unicode(key):
                _fail(_render(links, node), "has a key that is not valid Unicode")
            if isinstance(child, str | dict | list | float):
                links.append((node, key))
                stack.append((child, depth + 1, len(links) - 1))


def _render(links: list[tuple[int, str | int]], node: int) -> str:
    keys: list[str | int] = []
    while node > 0:
        node, key = links[node][0], links[node][1]
        keys.append(key)
    path = ""
    for key in reversed(keys):
        path = _at(path, key)
    return path or "body"


# -- fields ----------------------------------------------------------------------------


def _at(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _object(value: Any, path: str) -> dict[str, Any]:
    if value is None:
        _fail(path or "body", "is required")
    if not isinstance(value, dict):
        _fail(path or "body", f"expected an object, got {_kind(value)}")
    return value


def _array(value: Any, path: str, *, required: bool = False) -> list[Any]:
    if value is None:
        if required:
            _fail(path, "is required")
        return []
    if not isinstance(value, list):
        _fail(path, f"expected an array, got {_kind(value)}")
    return value


@overload
def _string(
    record: dict[str, Any], key: str, path: str, *, required: Literal[True], limit: int | None = ...
) -> str: ...
@overload
def _string(
    record: dict[str, Any], key: str, path: str, *, required: bool = ..., limit: int | None = ...
) -> str | None: ...
def _string(
    record: dict[str, Any],
    key: str,
    path: str,
    *,
    required: bool = False,
    limit: int | None = _MAX_ID_CHARS,
) -> str | None:
    """``record[key]`` as a non-empty string, or ``None`` when absent or empty."""
    where = _at(path, key)
    value = record.get(key)
    if value is None or value == "":
        if required:
            _fail(where, "is required" if value is None else "must not be empty")
        return None
    if not isinstance(value, str):
        _fail(where, f"expected a string, got {_kind(value)}")
    if limit is not None and len(value) > limit:
        _fail(where, f"is longer than {limit} characters")
    return value


@overload
def _code(record: dict[str, Any], key: str, path: str, *, required: Literal[True]) -> str: ...
@overload
def _code(record: dict[str, Any], key: str, path: str, *, required: bool = ...) -> str | None: ...
def _code(record: dict[str, Any], key: str, path: str, *, required: bool = False) -> str | None:
    """``record[key]``, a string or an integer (codes and ids come as either), as text."""
    value = record.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        text = str(value) if abs(value) < 10**_MAX_WORD_CHARS else None
        if text is None:
            _fail(_at(path, key), "is too large")
        return text
    return _string(record, key, path, required=required)


def _unix(record: dict[str, Any], key: str, path: str) -> datetime | None:
    """``record[key]`` as unix seconds (an integer, or a string of digits), if present."""
    where = _at(path, key)
    value = record.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 12:
        seconds = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    else:
        _fail(where, "expected unix seconds")
    if not 0 <= seconds <= _MAX_UNIX:
        _fail(where, "is out of range for unix seconds")
    return datetime.fromtimestamp(seconds, UTC)


def _iso_time(record: dict[str, Any], key: str) -> datetime:
    text = _string(record, key, "", required=True, limit=_MAX_WORD_CHARS)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        _fail(key, "expected an ISO-8601 date and time")
    if moment.tzinfo is None:  # no offset given: read as UTC, which is what senders mean
        moment = moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00+01:00 falls off the calendar
        _fail(key, "is out of range")


def _event(
    *,
    event_id: str,
    kind: str,
    data: dict[str, Any],
    status: str | None = None,
    message_id: str | None = None,
    provider_message_id: str | None = None,
    occurred_at: datetime | None = None,
    error_code: str | None = None,
    detail: str | None = None,
    address: str | None = None,
) -> Event:
    if detail is not None and len(detail) > _MAX_DETAIL_CHARS:
        detail = detail[: _MAX_DETAIL_CHARS - 1] + "…"
    return Event(
        event_id=event_id,
        kind=kind,
        status=status,
        message_id=message_id,
        provider_message_id=provider_message_id,
        occurred_at=occurred_at,
        error_code=error_code,
        detail=detail,
        address=address,
        data=data,
    )


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "a number"
    return names.get(type(value), type(value).__name__)


def _fail(field: str, problem: str) -> NoReturn:
    raise PayloadError(field, problem)
