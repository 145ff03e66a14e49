"""Webhook bodies read into events: what each provider's real payloads become, and what
malformed ones are refused with (a ``PayloadError`` naming the field, nothing else)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sluice.ingress.parse as parse_module
from sluice.errors import SluiceError, ValidationError
from sluice.ingress import (
    Event,
    PayloadError,
    parse_sendgrid,
    parse_standard,
    parse_twilio,
    parse_whatsapp,
)

CANONICAL = {
    "accepted",
    "sent",
    "delivered",
    "read",
    "undelivered",
    "failed",
    "bounced",
    "deferred",
}


def _dump(document: Any) -> bytes:
    return json.dumps(document).encode()


def _payload_error(call: Any, *args: Any) -> PayloadError:
    with pytest.raises(PayloadError) as caught:
        call(*args)
    return caught.value


def _only(events: list[Event]) -> Event:
    assert len(events) == 1
    return events[0]


def test_payload_error__names_field_and_problem() -> None:
    error = PayloadError("[3].sg_event_id", "is required")
    assert str(error) == "[3].sg_event_id: is required"
    assert (error.field, error.problem) == ("[3].sg_event_id", "is required")
    assert isinstance(error, ValueError)
    assert isinstance(error, ValidationError)
    assert isinstance(error, SluiceError)


# -- Twilio ---------------------------------------------------------------------------------

SID = "SM5a8e2c0b4f6d4e7a9c1b2d3e4f5a6b7c"
ACCOUNT = "AC0123456789abcdef0123456789abcdef"
CALLBACK_QUERY = {"sluice_message_id": "msg_01HZX5"}


def _status_callback(status: str = "delivered", **extra: str) -> list[tuple[str, str]]:
    """The fields Twilio posts to a message's StatusCallback."""
    fields = {
        "SmsSid": SID,
        "SmsStatus": status,
        "MessageStatus": status,
        "To": "+15558675310",
        "MessagingServiceSid": "MG0123456789abcdef0123456789abcdef",
        "MessageSid": SID,
        "AccountSid": ACCOUNT,
        "From": "+15017122661",
        "ApiVersion": "2010-04-01",
        **extra,
    }
    return list(fields.items())


INBOUND_SMS = [
    ("ToCountry", "US"),
    ("ToState", "CA"),
    ("SmsMessageSid", "SM9f8e7d6c5b4a39281706f5e4d3c2b1a0"),
    ("NumMedia", "0"),
    ("ToCity", "SAN FRANCISCO"),
    ("FromZip", "94105"),
    ("SmsSid", "SM9f8e7d6c5b4a39281706f5e4d3c2b1a0"),
    ("FromState", "CA"),
    ("SmsStatus", "received"),
    ("FromCity", "SAN FRANCISCO"),
    ("Body", "STOP sending me these please"),
    ("FromCountry", "US"),
    ("To", "+15550001111"),
    ("ToZip", "94105"),
    ("NumSegments", "1"),
    ("MessageSid", "SM9f8e7d6c5b4a39281706f5e4d3c2b1a0"),
    ("AccountSid", ACCOUNT),
    ("From", "+15017122661"),
    ("ApiVersion", "2010-04-01"),
]


def test_twilio__status_callback_is_a_receipt_keyed_on_sid_and_status() -> None:
    event = _only(parse_twilio(_status_callback(), CALLBACK_QUERY))
    assert event == Event(
        event_id=f"{SID}:delivered",
        kind="receipt",
        status="delivered",
        message_id="msg_01HZX5",
        provider_message_id=SID,
        occurred_at=None,
        error_code=None,
        detail=None,
        address=None,
        data=dict(_status_callback()),
    )


def test_twilio__the_key_is_signed_content_never_the_unsigned_idempotency_header() -> None:
    # The header is not covered by X-Twilio-Signature: keyed on it, one captured callback
    # replayed with six made-up tokens was stored six times.
    keys = {_only(parse_twilio(_status_callback(), CALLBACK_QUERY)).event_id for _ in range(6)}
    assert keys == {f"{SID}:delivered"}


def test_twilio__the_key_is_sid_and_status() -> None:
    event = _only(parse_twilio(_status_callback("sent"), CALLBACK_QUERY))
    assert event.event_id == f"{SID}:sent"
    assert event.status == "sent"


def test_twilio__the_same_callback_twice_has_the_same_key() -> None:
    first = parse_twilio(_status_callback(), CALLBACK_QUERY)
    again = parse_twilio(list(reversed(_status_callback())), CALLBACK_QUERY)
    assert first[0].event_id == again[0].event_id


def test_twilio__failed_callback_carries_the_error_code() -> None:
    params = _status_callback("undelivered", ErrorCode="30003", ErrorMessage="Unreachable handset")
    event = _only(parse_twilio(params, CALLBACK_QUERY))
    assert (event.status, event.error_code, event.detail) == (
        "undelivered",
        "30003",
        "Unreachable handset",
    )


@pytest.mark.parametrize(
    ("twilio", "ours"),
    [
        ("queued", "accepted"),
        ("accepted", "accepted"),
        ("scheduled", "accepted"),
        ("sending", "accepted"),
        ("sent", "sent"),
        ("delivered", "delivered"),
        ("undelivered", "undelivered"),
        ("failed", "failed"),
        ("read", "read"),
        ("canceled", "failed"),
    ],
)
def test_twilio__statuses_map_to_canonical_ones(twilio: str, ours: str) -> None:
    event = _only(parse_twilio(_status_callback(twilio), CALLBACK_QUERY))
    assert (event.kind, event.status) == ("receipt", ours)


def test_twilio__legacy_callback_with_only_sms_status_is_a_receipt() -> None:
    params = [(n, v) for n, v in _status_callback("delivered") if n != "MessageStatus"]
    event = _only(parse_twilio(params, {}))
    assert (event.kind, event.status, event.message_id) == ("receipt", "delivered", None)


def test_twilio__unknown_status_is_forwarded_not_refused() -> None:
    event = _only(parse_twilio(_status_callback("partially_delivered"), CALLBACK_QUERY))
    assert (event.kind, event.status) == ("inbound", None)
    assert event.message_id == "msg_01HZX5"  # so the tenant is found from the message
    assert event.event_id == f"{SID}:partially_delivered"


def test_twilio__incoming_sms_is_inbound_addressed_to_our_number() -> None:
    event = _only(parse_twilio(INBOUND_SMS, {}))
    assert event.kind == "inbound"
    assert event.status is None
    assert event.event_id == "SM9f8e7d6c5b4a39281706f5e4d3c2b1a0"
    assert event.provider_message_id == "SM9f8e7d6c5b4a39281706f5e4d3c2b1a0"
    assert event.address == "+15550001111"
    assert event.data["Body"] == "STOP sending me these please"
    assert event.data["From"] == "+15017122661"


def test_twilio__body_without_any_status_is_an_incoming_message() -> None:
    params = [("MessageSid", "SM1"), ("Body", "hi"), ("To", "+15550001111")]
    assert _only(parse_twilio(params, {})).kind == "inbound"


def test_twilio__repeated_fields_keep_every_value() -> None:
    params = [*INBOUND_SMS, ("MediaUrl", "https://a.example/1"), ("MediaUrl", "https://b/2")]
    event = _only(parse_twilio(params, {}))
    assert event.data["MediaUrl"] == ["https://a.example/1", "https://b/2"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        (
            [(n, v) for n, v in _status_callback() if n not in ("MessageSid", "SmsSid")],
            "MessageSid",
        ),
        ([("AccountSid", ACCOUNT), ("To", "+1555")], "MessageStatus"),
        ([(n, v) for n, v in INBOUND_SMS if n != "To"], "To"),
        ([*_status_callback(), ("MessageSid", "SMother")], "MessageSid"),
        ([*_status_callback(), ("MessageStatus", "failed")], "MessageStatus"),
        (_status_callback(ErrorCode="3" * 100), "ErrorCode"),
        (_status_callback(Body="x" * 70_000), "Body"),
        (_status_callback(MessageSid="S" * 600), "MessageSid"),
        ([*_status_callback(), ("", "x")], "params"),
        ([*_status_callback(), ("Body", "\ud800")], "Body"),
        ([("Field", "1")] * 1001, "params"),
    ],
    ids=[
        "no-sid",
        "no-status-no-body",
        "inbound-without-to",
        "two-sids",
        "two-statuses",
        "huge-error-code",
        "huge-value",
        "huge-sid",
        "empty-name",
        "lone-surrogate",
        "too-many-fields",
    ],
)
def test_twilio__malformed_form_names_the_field(params: list[tuple[str, str]], field: str) -> None:
    assert _payload_error(parse_twilio, params, CALLBACK_QUERY).field == field


@pytest.mark.parametrize(
    "params",
    [[("MessageSid",)], [("MessageSid", 5)], [None]],
    ids=["one-tuple", "int-value", "none"],
)
def test_twilio__params_that_are_not_string_pairs_are_refused(params: Any) -> None:
    assert _payload_error(parse_twilio, params, {}).field == "params"


def test_twilio__overlong_message_id_in_query_is_refused() -> None:
    query = {"sluice_message_id": "m" * 513}
    assert _payload_error(parse_twilio, _status_callback(), query).field == (
        "query.sluice_message_id"
    )


# -- SendGrid -------------------------------------------------------------------------------

SG_ID = "5Zz_Xdp9RDWD4Y6JwI-bBQ"
SG_MESSAGE_ID = f"{SG_ID}.filterdrecv-5645d9c87f-78wbd-1-5F5FC76C-9.0"
SG_TIME = 1717243200  # 2024-06-01T12:00:00Z


def _sg(event: str, event_id: Any, **extra: Any) -> dict[str, Any]:
    return {
        "email": "ada@example.com",
        "timestamp": SG_TIME,
        "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>",
        "event": event,
        "category": ["receipts"],
        "sg_event_id": event_id,
        "sg_message_id": SG_MESSAGE_ID,
        "sluice_message_id": "msg_01HZX6",
        "tenant": "acme",
        **extra,
    }


SENDGRID_BATCH = [
    _sg("processed", "ev-processed"),
    _sg("deferred", "ev-deferred", response="400 try again later", attempt="5"),
    _sg("delivered", "ev-delivered", response="250 OK", ip="168.1.1.1"),
    _sg("open", "ev-open", useragent="Mozilla/5.0", ip="255.255.255.255", sg_machine_open=False),
    _sg("click", "ev-click", url="https://example.com/offer", url_offset={"index": 0}),
    _sg(
        "bounce",
        "ev-bounce",
        status="5.1.1",
        reason="550 5.1.1 The email account that you tried to reach does not exist.",
        type="bounce",
        bounce_classification="Invalid Address",
    ),
    _sg("dropped", "ev-dropped", reason="Bounced Address", status="5.0.0"),
    _sg("spamreport", "ev-spam"),
    _sg("unsubscribe", "ev-unsub"),
    _sg("group_unsubscribe", "ev-gunsub", asm_group_id=10),
    _sg("group_resubscribe", "ev-gresub", asm_group_id=10),
]


def test_sendgrid__batch_becomes_one_event_each_in_order() -> None:
    events = parse_sendgrid(_dump(SENDGRID_BATCH))
    assert [(e.event_id, e.kind, e.status) for e in events] == [
        ("ev-processed", "receipt", "accepted"),
        ("ev-deferred", "receipt", "deferred"),
        ("ev-delivered", "receipt", "delivered"),
        ("ev-open", "receipt", "read"),
        ("ev-click", "inbound", None),
        ("ev-bounce", "receipt", "bounced"),
        ("ev-dropped", "receipt", "bounced"),
        ("ev-spam", "inbound", None),
        ("ev-unsub", "inbound", None),
        ("ev-gunsub", "inbound", None),
        ("ev-gresub", "inbound", None),
    ]


def test_sendgrid__every_event_carries_our_id_and_theirs_without_the_filter_suffix() -> None:
    for event in parse_sendgrid(_dump(SENDGRID_BATCH)):
        assert event.message_id == "msg_01HZX6"
        assert event.provider_message_id == SG_ID
        assert event.occurred_at == datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
        assert event.address is None


def test_sendgrid__bounce_carries_status_as_code_and_reason_as_detail() -> None:
    bounce = parse_sendgrid(_dump(SENDGRID_BATCH))[5]
    assert bounce.error_code == "5.1.1"
    assert bounce.detail == "550 5.1.1 The email account that you tried to reach does not exist."
    assert bounce.data["bounce_classification"] == "Invalid Address"


def test_sendgrid__deferral_carries_the_smtp_response_as_detail() -> None:
    deferred = parse_sendgrid(_dump(SENDGRID_BATCH))[1]
    assert (deferred.error_code, deferred.detail) == (None, "400 try again later")


def test_sendgrid__click_forwards_the_provider_fields() -> None:
    click = parse_sendgrid(_dump(SENDGRID_BATCH))[4]
    assert click.data["url"] == "https://example.com/offer"
    assert click.data["email"] == "ada@example.com"


def test_sendgrid__long_reason_is_cut_to_500_characters() -> None:
    event = _only(parse_sendgrid(_dump([_sg("bounce", "e", reason="r" * 5000, status="5.0.0")])))
    assert event.detail is not None
    assert len(event.detail) == 500


def test_sendgrid__unknown_event_type_is_forwarded_as_inbound() -> None:
    event = _only(parse_sendgrid(_dump([_sg("account_status_change", "e1")])))
    assert (event.kind, event.status) == ("inbound", None)


def test_sendgrid__minimal_event_without_message_ids() -> None:
    event = _only(parse_sendgrid(b'[{"event":"processed","sg_event_id":"e1"}]'))
    assert (event.message_id, event.provider_message_id, event.occurred_at) == (None, None, None)


def test_sendgrid__empty_batch_is_no_events() -> None:
    assert parse_sendgrid(b"[]") == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"", "body"),
        (b"not json", "body"),
        (b'{"event":"processed"}', "body"),
        (b"\xff\xfe[]", "body"),
        (_dump([_sg("processed", "ok"), "processed"]), "[1]"),
        (_dump([_sg("processed", "ok"), {"event": "delivered"}]), "[1].sg_event_id"),
        (_dump([_sg("processed", "")]), "[0].sg_event_id"),
        (_dump([_sg("processed", 12)]), "[0].sg_event_id"),
        (_dump([{"sg_event_id": "e"}]), "[0].event"),
        (_dump([_sg("processed", "e", timestamp="yesterday")]), "[0].timestamp"),
        (_dump([_sg("processed", "e", timestamp=-1)]), "[0].timestamp"),
        (_dump([_sg("processed", "e", timestamp=10**20)]), "[0].timestamp"),
        (_dump([_sg("processed", "e", timestamp=True)]), "[0].timestamp"),
        (_dump([_sg("processed", "e", sg_message_id=["x"])]), "[0].sg_message_id"),
        (_dump([_sg("processed", "e", sluice_message_id={"a": 1})]), "[0].sluice_message_id"),
        (_dump([_sg("bounce", "e", status=5.0)]), "[0].status"),
        (_dump([_sg("bounce", "e", reason=["x"])]), "[0].reason"),
        (_dump([_sg("processed", "e" * 513)]), "[0].sg_event_id"),
    ],
    ids=[
        "empty",
        "not-json",
        "object",
        "not-utf8",
        "string-item",
        "missing-event-id",
        "empty-event-id",
        "numeric-event-id",
        "missing-event",
        "word-timestamp",
        "negative-timestamp",
        "huge-timestamp",
        "bool-timestamp",
        "list-message-id",
        "object-custom-arg",
        "float-status",
        "list-reason",
        "huge-event-id",
    ],
)
def test_sendgrid__malformed_batch_names_the_field(body: bytes, field: str) -> None:
    assert _payload_error(parse_sendgrid, body).field == field


def test_sendgrid__timestamp_as_digit_string_is_read() -> None:
    event = _only(parse_sendgrid(_dump([_sg("processed", "e", timestamp=str(SG_TIME))])))
    assert event.occurred_at == datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


# -- WhatsApp -------------------------------------------------------------------------------

WAMID = "wamid.HBgLMTY1MDUwNzY1MjAVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA"
METADATA = {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"}


def _wa(*values: dict[str, Any], field: str = "messages") -> dict[str, Any]:
    return {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "102290129340398",
                "changes": [{"value": value, "field": field} for value in values],
            }
        ],
    }


def _wa_status(status: Any, **extra: Any) -> dict[str, Any]:
    return {
        "id": WAMID,
        "status": status,
        "timestamp": "1750263773",
        "recipient_id": "16505551234",
        "biz_opaque_callback_data": "msg_01HZX7",
        **extra,
    }


def _statuses(*items: dict[str, Any]) -> dict[str, Any]:
    return {"messaging_product": "whatsapp", "metadata": METADATA, "statuses": list(items)}


FAILED = _wa_status(
    "failed",
    errors=[
        {
            "code": 131050,
            "title": "Unable to deliver the message. This recipient has chosen to stop "
            "receiving marketing messages on WhatsApp from your business.",
            "message": "Unable to deliver the message.",
            "error_data": {
                "details": "Unable to deliver the message. This recipient has chosen to stop "
                "receiving marketing messages on WhatsApp from your business."
            },
            "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/",
        }
    ],
)

INBOUND_TEXT: dict[str, Any] = {
    "messaging_product": "whatsapp",
    "metadata": METADATA,
    "contacts": [{"profile": {"name": "Sheena Nelson"}, "wa_id": "16505551234"}],
    "messages": [
        {
            "from": "16505551234",
            "id": "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=",
            "timestamp": "1749416383",
            "type": "text",
            "text": {"body": "Does it come in another color?"},
        }
    ],
}


def test_whatsapp__delivered_status_is_a_receipt_for_our_message() -> None:
    pricing = {"billable": True, "pricing_model": "PMP", "category": "marketing"}
    status = _wa_status("delivered", pricing=pricing)
    event = _only(parse_whatsapp(_dump(_wa(_statuses(status)))))
    assert event == Event(
        event_id=f"{WAMID}:delivered",
        kind="receipt",
        status="delivered",
        message_id="msg_01HZX7",
        provider_message_id=WAMID,
        occurred_at=datetime.fromtimestamp(1750263773, UTC),
        error_code=None,
        detail=None,
        address=None,
        data={"metadata": METADATA, "status": status},
    )


def test_whatsapp__sent_delivered_read_are_three_events() -> None:
    statuses = _statuses(_wa_status("sent"), _wa_status("delivered"), _wa_status("read"))
    events = parse_whatsapp(_dump(_wa(statuses)))
    assert [e.status for e in events] == ["sent", "delivered", "read"]
    assert len({e.event_id for e in events}) == 3


def test_whatsapp__played_voice_message_counts_as_read() -> None:
    assert _only(parse_whatsapp(_dump(_wa(_statuses(_wa_status("played")))))).status == "read"


def test_whatsapp__failed_status_carries_the_first_error() -> None:
    event = _only(parse_whatsapp(_dump(_wa(_statuses(FAILED)))))
    assert (event.kind, event.status, event.error_code) == ("receipt", "failed", "131050")
    assert event.detail == FAILED["errors"][0]["title"]


def test_whatsapp__error_details_that_add_something_are_appended() -> None:
    error = {"code": 131026, "title": "Message undeliverable", "error_data": {"details": "x"}}
    event = _only(parse_whatsapp(_dump(_wa(_statuses(_wa_status("failed", errors=[error]))))))
    assert event.detail == "Message undeliverable: x"


def test_whatsapp__status_without_our_callback_data_has_no_message_id() -> None:
    status = _wa_status("sent")
    del status["biz_opaque_callback_data"]
    assert _only(parse_whatsapp(_dump(_wa(_statuses(status))))).message_id is None


def test_whatsapp__group_statuses_are_one_event_per_participant() -> None:
    one = _wa_status("read", recipient_type="group", recipient_participant_id="16505550001")
    two = _wa_status("read", recipient_type="group", recipient_participant_id="16505550002")
    events = parse_whatsapp(_dump(_wa(_statuses(one, two))))
    assert [e.event_id for e in events] == [
        f"{WAMID}:read:16505550001",
        f"{WAMID}:read:16505550002",
    ]


def test_whatsapp__unknown_status_is_forwarded_as_inbound() -> None:
    event = _only(parse_whatsapp(_dump(_wa(_statuses(_wa_status("deleted"))))))
    assert (event.kind, event.status, event.message_id) == ("inbound", None, "msg_01HZX7")


def test_whatsapp__incoming_text_is_inbound_addressed_to_our_phone_number_id() -> None:
    event = _only(parse_whatsapp(_dump(_wa(INBOUND_TEXT))))
    message = INBOUND_TEXT["messages"][0]
    assert event == Event(
        event_id=message["id"],
        kind="inbound",
        status=None,
        message_id=None,
        provider_message_id=message["id"],
        occurred_at=datetime.fromtimestamp(1749416383, UTC),
        error_code=None,
        detail=None,
        address="106540352242922",
        data={"metadata": METADATA, "message": message, "contacts": INBOUND_TEXT["contacts"]},
    )


def test_whatsapp__unsupported_incoming_message_carries_its_error() -> None:
    message = {
        "from": "16505551234",
        "id": "wamid.X",
        "timestamp": "1749416383",
        "type": "unsupported",
        "errors": [{"code": 131051, "title": "Message type unknown"}],
    }
    value = {"messaging_product": "whatsapp", "metadata": METADATA, "messages": [message]}
    event = _only(parse_whatsapp(_dump(_wa(value))))
    assert (event.error_code, event.detail) == ("131051", "Message type unknown")


def test_whatsapp__entries_and_changes_are_read_in_order() -> None:
    document = _wa(_statuses(_wa_status("sent")), INBOUND_TEXT)
    second_entry = copy.deepcopy(document["entry"][0])
    second_entry["changes"] = [{"value": _statuses(FAILED), "field": "messages"}]
    document["entry"].append(second_entry)
    events = parse_whatsapp(_dump(document))
    assert [(e.kind, e.status) for e in events] == [
        ("receipt", "sent"),
        ("inbound", None),
        ("receipt", "failed"),
    ]


def test_whatsapp__changes_of_other_fields_are_skipped() -> None:
    update = {"event": "APPROVED", "message_template_id": 12345, "message_template_name": "promo"}
    document = _wa(update, field="message_template_status_update")
    assert parse_whatsapp(_dump(document)) == []


def test_whatsapp__numeric_phone_number_id_is_read_as_text() -> None:
    value = copy.deepcopy(INBOUND_TEXT)
    value["metadata"] = {"phone_number_id": 106540352242922}
    assert _only(parse_whatsapp(_dump(_wa(value)))).address == "106540352242922"


def _broken_status_id() -> dict[str, Any]:
    document = _wa(_statuses(_wa_status("sent")), _statuses(_wa_status("sent")))
    del document["entry"][0]["changes"][1]["value"]["statuses"][0]["id"]
    return document


@pytest.mark.parametrize(
    ("document", "field"),
    [
        (_broken_status_id(), "entry[0].changes[1].value.statuses[0].id"),
        ({**_wa(), "object": "page"}, "object"),
        ({"entry": []}, "object"),
        ({"object": "whatsapp_business_account"}, "entry"),
        ({"object": "whatsapp_business_account", "entry": {}}, "entry"),
        ({"object": "whatsapp_business_account", "entry": [{"id": "1"}]}, "entry[0].changes"),
        ({"object": "whatsapp_business_account", "entry": ["x"]}, "entry[0]"),
        (_wa({"statuses": []}), "entry[0].changes[0].value.metadata"),
        (_wa({"metadata": {}}), "entry[0].changes[0].value.metadata.phone_number_id"),
        (_wa({"metadata": METADATA, "statuses": {}}), "entry[0].changes[0].value.statuses"),
        (_wa(_statuses(_wa_status(7))), "entry[0].changes[0].value.statuses[0].status"),
        (
            _wa(_statuses(_wa_status("sent", timestamp="soon"))),
            "entry[0].changes[0].value.statuses[0].timestamp",
        ),
        (
            _wa(_statuses(_wa_status("failed", errors={"code": 1}))),
            "entry[0].changes[0].value.statuses[0].errors",
        ),
        (
            _wa(_statuses(_wa_status("failed", errors=[{"code": [1]}]))),
            "entry[0].changes[0].value.statuses[0].errors[0].code",
        ),
        (
            _wa(_statuses(_wa_status("sent", biz_opaque_callback_data="x" * 513))),
            "entry[0].changes[0].value.statuses[0].biz_opaque_callback_data",
        ),
        (
            _wa({"metadata": METADATA, "messages": [{"id": "w", "text": "hi"}]}),
            "entry[0].changes[0].value.messages[0].text",
        ),
        (
            _wa({"metadata": METADATA, "messages": [{"from": "1"}]}),
            "entry[0].changes[0].value.messages[0].id",
        ),
        (
            {"object": "whatsapp_business_account", "entry": [{"changes": [{"field": 3}]}]},
            "entry[0].changes[0].field",
        ),
        ([], "body"),
    ],
    ids=[
        "missing-status-id",
        "wrong-object",
        "missing-object",
        "missing-entry",
        "entry-not-array",
        "missing-changes",
        "entry-not-object",
        "missing-metadata",
        "missing-phone-number-id",
        "statuses-not-array",
        "numeric-status",
        "word-timestamp",
        "errors-not-array",
        "list-error-code",
        "huge-callback-data",
        "text-not-object",
        "message-without-id",
        "numeric-field",
        "array-body",
    ],
)
def test_whatsapp__malformed_payload_names_the_field(document: Any, field: str) -> None:
    assert _payload_error(parse_whatsapp, _dump(document)).field == field


# -- Standard Webhooks ------------------------------------------------------------------------


def test_standard__message_status_with_message_id_is_a_receipt() -> None:
    document = {
        "type": "message.failed",
        "timestamp": "2025-06-01T12:00:00.250Z",
        "data": {
            "message_id": "msg_01HZX8",
            "provider_message_id": "p-77",
            "error_code": 550,
            "detail": "mailbox full",
        },
    }
    event = _only(parse_standard(_dump(document), "msg_2KWPBgLlAf"))
    assert event == Event(
        event_id="msg_2KWPBgLlAf",
        kind="receipt",
        status="failed",
        message_id="msg_01HZX8",
        provider_message_id="p-77",
        occurred_at=datetime(2025, 6, 1, 12, 0, 0, 250_000, tzinfo=UTC),
        error_code="550",
        detail="mailbox full",
        address=None,
        data=document,
    )


@pytest.mark.parametrize("status", sorted(CANONICAL))
def test_standard__every_canonical_status_is_a_receipt(status: str) -> None:
    document = {"type": f"message.{status}", "timestamp": "2025-06-01T12:00:00Z", "data": {}}
    document["data"] = {"message_id": "m1"}
    assert _only(parse_standard(_dump(document), "id-1")).status == status


@pytest.mark.parametrize(
    "document",
    [
        {"type": "contact.replied", "timestamp": "2025-06-01T12:00:00Z", "data": {"text": "hi"}},
        {"type": "message.delivered", "timestamp": "2025-06-01T12:00:00Z", "data": {}},
        {
            "type": "message.received",
            "timestamp": "2025-06-01T12:00:00Z",
            "data": {"message_id": "m"},
        },
        {"type": "message", "timestamp": "2025-06-01T12:00:00Z", "data": {"message_id": "m"}},
    ],
    ids=["other-type", "no-message-id", "not-a-status", "bare-message"],
)
def test_standard__anything_else_is_inbound(document: dict[str, Any]) -> None:
    event = _only(parse_standard(_dump(document), "id-1"))
    assert (event.kind, event.status, event.event_id) == ("inbound", None, "id-1")


def test_standard__timestamp_with_an_offset_is_converted_to_utc() -> None:
    document = {"type": "x", "timestamp": "2025-06-01T14:00:00+02:00", "data": {}}
    occurred = _only(parse_standard(_dump(document), "id")).occurred_at
    assert occurred == datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
    assert occurred is not None and occurred.tzinfo is UTC


def test_standard__timestamp_without_an_offset_is_read_as_utc() -> None:
    document = {"type": "x", "timestamp": "2025-06-01T12:00:00", "data": {}}
    assert _only(parse_standard(_dump(document), "id")).occurred_at == datetime(
        2025, 6, 1, 12, 0, tzinfo=UTC
    )


@pytest.mark.parametrize(
    ("document", "webhook_id", "field"),
    [
        ({"type": "x", "timestamp": "2025-06-01T12:00:00Z", "data": {}}, "", "webhook-id"),
        ({"type": "x", "timestamp": "2025-06-01T12:00:00Z", "data": {}}, "w" * 513, "webhook-id"),
        ({"timestamp": "2025-06-01T12:00:00Z", "data": {}}, "id", "type"),
        ({"type": 5, "timestamp": "2025-06-01T12:00:00Z", "data": {}}, "id", "type"),
        ({"type": "x", "data": {}}, "id", "timestamp"),
        ({"type": "x", "timestamp": "yesterday", "data": {}}, "id", "timestamp"),
        ({"type": "x", "timestamp": 1748779200, "data": {}}, "id", "timestamp"),
        ({"type": "x", "timestamp": "0001-01-01T00:00:00+01:00", "data": {}}, "id", "timestamp"),
        ({"type": "x", "timestamp": "2025-06-01T12:00:00Z"}, "id", "data"),
        ({"type": "x", "timestamp": "2025-06-01T12:00:00Z", "data": []}, "id", "data"),
        (
            {"type": "x", "timestamp": "2025-06-01T12:00:00Z", "data": {"message_id": 1}},
            "id",
            "data.message_id",
        ),
        (
            {"type": "x", "timestamp": "2025-06-01T12:00:00Z", "data": {"error_code": {}}},
            "id",
            "data.error_code",
        ),
        (["not", "an", "object"], "id", "body"),
    ],
    ids=[
        "empty-id",
        "huge-id",
        "missing-type",
        "numeric-type",
        "missing-timestamp",
        "word-timestamp",
        "unix-timestamp",
        "off-the-calendar",
        "missing-data",
        "array-data",
        "numeric-message-id",
        "object-error-code",
        "array-body",
    ],
)
def test_standard__malformed_body_names_the_field(
    document: Any, webhook_id: str, field: str
) -> None:
    assert _payload_error(parse_standard, _dump(document), webhook_id).field == field


# -- malformed JSON, for every JSON parser -----------------------------------------------------

JSON_PARSERS = {
    "sendgrid": parse_sendgrid,
    "whatsapp": parse_whatsapp,
    "standard": lambda body: parse_standard(body, "id-1"),
}


@pytest.mark.parametrize("parse", JSON_PARSERS.values(), ids=JSON_PARSERS.keys())
@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"[" * 100_000, "body"),  # deeper than the parser's own recursion limit
        (b"[" * 70 + b"]" * 70, "[0]" * 64),  # deeper than our limit
        (b"[NaN]", "body"),
        (b'{"a": Infinity}', "body"),
        (b"[" + b"1" * 5000 + b"]", "body"),  # more digits than int() will read
        (b'["\\ud800"]', "[0]"),  # a lone surrogate cannot be stored as UTF-8
        (b'[{"\\udfff": 1}]', "[0]"),
        (b"[" + b"0," * (2 * 1024 * 1024) + b"0]", "body"),  # more than 4 MiB
        ('["caf\u00e9"]'.encode("latin-1"), "body"),
    ],
    ids=[
        "very-deep",
        "too-deep",
        "nan",
        "infinity",
        "huge-int",
        "lone-surrogate",
        "surrogate-key",
        "too-large",
        "latin-1",
    ],
)
def test_json__malformed_body_is_a_payload_error(parse: Any, body: bytes, field: str) -> None:
    assert _payload_error(parse, body).field == field


# -- fuzzing: PayloadError or events, never anything else -------------------------------------


def _check(events: list[Event]) -> None:
    """What every parsed event promises, whatever went in."""
    assert isinstance(events, list)
    for event in events:
        assert isinstance(event, Event)
        assert isinstance(event.event_id, str) and event.event_id
        assert event.kind in ("receipt", "inbound")
        if event.kind == "receipt":
            assert event.status in CANONICAL
        else:
            assert event.status is None
        for value in (
            event.message_id,
            event.provider_message_id,
            event.error_code,
            event.address,
        ):
            assert value is None or (isinstance(value, str) and len(value) <= 512)
        assert event.detail is None or len(event.detail) <= 500
        assert event.occurred_at is None or event.occurred_at.tzinfo is not None
        json.dumps(event.data, allow_nan=False).encode("utf-8")


def _parses_or_refuses(call: Any, *args: Any) -> None:
    try:
        events = call(*args)
    except PayloadError:
        return
    _check(events)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=25,
)


def _paths(document: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(document, dict):
        for key, value in document.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            yield from _paths(value, (*prefix, index))


@st.composite
def mutated(draw: st.DrawFn, valid: Any) -> Any:
    """``valid`` with one node replaced by arbitrary JSON, or removed."""
    document = copy.deepcopy(valid)
    path = draw(st.sampled_from(list(_paths(document))))
    replacement = draw(json_values)
    if not path:
        return replacement
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    if draw(st.booleans()):
        del parent[path[-1]]
    else:
        parent[path[-1]] = replacement
    return document


WHATSAPP_VALID = _wa(_statuses(_wa_status("sent"), FAILED), INBOUND_TEXT)
STANDARD_VALID = {
    "type": "message.delivered",
    "timestamp": "2025-06-01T12:00:00Z",
    "data": {"message_id": "m1", "error_code": "x", "detail": "d"},
}
FUZZ = settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)


@FUZZ
@given(body=st.binary(max_size=300))
def test_fuzz__arbitrary_bytes(body: bytes) -> None:
    for parse in JSON_PARSERS.values():
        _parses_or_refuses(parse, body)


@FUZZ
@given(document=json_values)
def test_fuzz__arbitrary_json(document: Any) -> None:
    for parse in JSON_PARSERS.values():
        _parses_or_refuses(parse, _dump(document))


@FUZZ
@given(document=mutated(SENDGRID_BATCH))
def test_fuzz__sendgrid_batch_with_one_part_changed(document: Any) -> None:
    _parses_or_refuses(parse_sendgrid, _dump(document))


@FUZZ
@given(document=mutated(WHATSAPP_VALID))
def test_fuzz__whatsapp_payload_with_one_part_changed(document: Any) -> None:
    _parses_or_refuses(parse_whatsapp, _dump(document))


@FUZZ
@given(document=mutated(STANDARD_VALID), webhook_id=st.text(max_size=20))
def test_fuzz__standard_body_with_one_part_changed(document: Any, webhook_id: str) -> None:
    _parses_or_refuses(parse_standard, _dump(document), webhook_id)


twilio_names = st.sampled_from(
    [
        "MessageSid",
        "SmsSid",
        "MessageStatus",
        "SmsStatus",
        "Body",
        "To",
        "From",
        "ErrorCode",
        "ErrorMessage",
        "AccountSid",
    ]
) | st.text(max_size=10)
twilio_values = st.sampled_from(["received", "delivered", "failed", "queued", "", "SM1"]) | st.text(
    max_size=20
)


@FUZZ
@given(
    params=st.lists(st.tuples(twilio_names, twilio_values), max_size=8),
    query=st.dictionaries(st.sampled_from(["sluice_message_id", "x"]), st.text(max_size=20)),
)
def test_fuzz__twilio_form(params: list[tuple[str, str]], query: dict[str, str]) -> None:
    _parses_or_refuses(parse_twilio, params, query)


# -- numbers that are not finite (issue 10: one such body failed a whole group write) --


@pytest.mark.parametrize(
    "number", ["1e400", "-1e400", "1E999", "2" + "0" * 209 + "e99", "-1" + "0" * 210 + ".0e99"]
)
def test_standard__a_number_too_large_for_a_double_is_refused_naming_it(number: str) -> None:
    body = f'{{"type":"x.y","timestamp":"2026-01-01T00:00:00Z","data":{{"n":{number}}}}}'
    error = _payload_error(parse_standard, body.encode(), "msg_1")
    assert (error.field, "not finite" in str(error)) == ("data.n", True)


def test_sendgrid_and_whatsapp__non_finite_numbers_are_refused_with_their_path() -> None:
    sendgrid = b'[{"event":"delivered","sg_event_id":"e1","x":[0, 1e400]}]'
    assert _payload_error(parse_sendgrid, sendgrid).field == "[0].x[1]"
    whatsapp = b'{"object":"whatsapp_business_account","entry":[{"id":1e309}]}'
    assert _payload_error(parse_whatsapp, whatsapp).field == "entry[0].id"


# -- the text-level screen in front of the tree check -----------------------------------------

_NUMBERS = st.one_of(
    st.integers().map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.from_regex(r"-?[1-9][0-9]{0,3}(\.[0-9]{1,4})?[eE][+-]?[0-9]{1,4}", fullmatch=True),
    st.integers(300, 330).map(lambda digits: "9" * digits),
    st.integers(300, 330).map(lambda digits: "0." + "0" * digits + "1e" + str(digits)),
    # A long integer part and a short exponent add up: 2 followed by 209 zeros, e99.
    st.builds(
        lambda lead, digits, fraction, exponent: f"{lead}{'0' * digits}{fraction}e{exponent}",
        st.integers(1, 9),
        st.integers(150, 320),
        st.sampled_from(["", ".0", ".5"]),
        st.sampled_from(["9", "99", "+99", "-99", "50"]),
    ),
)
_STRINGS = st.one_of(
    st.text(max_size=8).map(json.dumps),  # ASCII escapes, lone surrogates included
    st.text(st.characters(blacklist_categories=["Cs"]), max_size=8).map(
        lambda s: json.dumps(s, ensure_ascii=False)
    ),
)
_DOCUMENTS = st.recursive(
    _NUMBERS | _STRINGS | st.sampled_from(["true", "false", "null"]),
    lambda inner: st.lists(inner, max_size=4).map(lambda xs: "[" + ",".join(xs) + "]")
    | st.lists(st.tuples(_STRINGS, inner), max_size=4).map(
        lambda kvs: "{" + ",".join(f"{k}:{v}" for k, v in kvs) + "}"
    ),
    max_leaves=40,
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=st.one_of(
        _DOCUMENTS,
        st.integers(1, 80).map(lambda depth: "[" * depth + "]" * depth),
        st.integers(1, 80).map(lambda depth: '{"a":' * depth + "1" + "}" * depth),
    )
)
def test_screen__every_body_the_tree_check_refuses_is_screened_in(text: str) -> None:
    """``_may_be_hostile`` lets a body skip the tree walk only when the walk would find
    nothing: non-finite numbers, lone surrogates (keys too) and deep nesting all reach
    it."""
    try:
        document = parse_module._DECODER.decode(text)
    except (ValueError, RecursionError):
        return  # refused before the walk, as _load_json does
    try:
        parse_module._check_tree(document)
    except PayloadError:
        assert parse_module._may_be_hostile(text), text
