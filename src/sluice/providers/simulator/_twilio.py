"""Twilio's Messages API, under ``/twilio``: basic auth, form bodies, Twilio's errors,
and the signed ``delivered`` status callback."""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from datetime import UTC
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sluice.providers.simulator._base import (
    Callback,
    Delivery,
    Lookup,
    basic,
    form_fields,
    kept_headers,
    phrase,
)
from sluice.providers.simulator._state import Credential, SimulatorState


def _twilio_signature(auth_token: str, url: str, form: dict[str, str]) -> str:
    """``X-Twilio-Signature``: HMAC-SHA1 over the URL and the sorted form fields."""
    text = url + "".join(f"{k}{v}" for k, v in sorted(form.items()))
    digest = hmac.new(auth_token.encode(), text.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


class TwilioReceiver:
    """Twilio's Messages API: basic auth, form bodies, ``{code, message, ...}`` errors.

    The effect key is ``sluice_message_id`` from the ``StatusCallback`` URL's query, else
    the message ``sid`` the simulator hands out. With a ``StatusCallback``, a
    ``delivered`` callback (signed with ``X-Twilio-Signature``) follows in the background.
    """

    provider = "twilio"
    prefix = "/twilio"
    effect_paths: tuple[str, ...] = ("/2010-04-01/Accounts/{account_sid}/Messages.json",)

    def __init__(self, state: SimulatorState) -> None:
        self._state = state

    def _account(self, request: Request) -> Credential | Response:
        auth = basic(request)
        credential = self._state.credential("twilio", auth[1]) if auth else None
        if (
            auth is None
            or credential is None
            or credential.revoked
            or credential.account != auth[0]
            or request.path_params.get("account_sid") != auth[0]
        ):
            return _twilio_error(
                401, 20003, "Authenticate", detail="Your AccountSid or AuthToken was incorrect."
            )
        return credential

    def authenticate(self, request: Request, body: bytes) -> Delivery | Response:
        credential = self._account(request)
        if isinstance(credential, Response):
            return credential
        if credential.status != "active":
            return _twilio_error(401, 20005, f"Account not active ({credential.status})")
        form = form_fields(body)
        to, sender = form.get("To"), form.get("From")
        service = form.get("MessagingServiceSid")
        if not to:
            return _twilio_error(400, 21604, "A 'To' phone number is required.")
        if not sender and not service:
            return _twilio_error(
                400, 21603, "A 'From' or 'MessagingServiceSid' parameter is required."
            )
        if not (form.get("Body") or form.get("ContentSid") or form.get("MediaUrl")):
            return _twilio_error(400, 21602, "Message body is required.")
        sid = "SM" + uuid.uuid4().hex
        account = str(credential.account)
        key, callback = sid, None
        callback_url = form.get("StatusCallback")
        if isinstance(callback_url, str) and callback_url:
            query = dict(parse_qsl(urlsplit(callback_url).query))
            key = query.get("sluice_message_id") or sid
            fields = {
                "MessageSid": sid,
                "SmsSid": sid,
                "MessageStatus": "delivered",
                "SmsStatus": "delivered",
                "To": str(to),
                "From": str(sender or ""),
                "AccountSid": account,
                "ApiVersion": "2010-04-01",
            }
            if service:
                fields["MessagingServiceSid"] = str(service)
            signature = _twilio_signature(credential.token, callback_url, fields)
            callback = Callback(callback_url, fields, {"x-twilio-signature": signature})
        now = format_datetime(self._state.clock.now().astimezone(UTC))
        uri = f"/2010-04-01/Accounts/{account}/Messages/{sid}"
        answer = {
            "account_sid": account,
            "api_version": "2010-04-01",
            "body": form.get("Body", ""),
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": sender,
            "messaging_service_sid": service,
            "num_media": "0",
            "num_segments": "1",
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": "queued" if sender else "accepted",
            "subresource_uris": {"media": f"{uri}/Media.json"},
            "to": to,
            "uri": f"{uri}.json",
        }
        return Delivery(
            key,
            kept_headers(request),
            recipient=str(to),
            answer=answer,
            provider_id=sid,
            callback=callback,
        )

    def accepted(self, delivery: Delivery, count: int) -> Response:
        return JSONResponse(delivery.answer, status_code=201)

    def refused(self, status: int, retry_after: str | None) -> Response:
        code = 20003 if status == 401 else 20000 + status
        return _twilio_error(status, code, phrase(status), retry_after=retry_after)

    def invalid_recipient(self, delivery: Delivery) -> Response:
        return _twilio_error(
            400, 21211, f"The 'To' number {delivery.recipient} is not a valid phone number."
        )

    def lookups(self) -> list[tuple[str, Lookup]]:
        return [("/2010-04-01/Accounts/{account_sid}.json", self._fetch_account)]

    def _fetch_account(self, request: Request) -> Response:
        credential = self._account(request)
        if isinstance(credential, Response):
            return credential
        return JSONResponse(
            {
                "sid": credential.account,
                "friendly_name": "Sluice simulator account",
                "status": credential.status,
                "type": "Full",
                "uri": f"/2010-04-01/Accounts/{credential.account}.json",
            }
        )


def _twilio_error(
    status: int,
    code: int,
    message: str,
    *,
    detail: str | None = None,
    retry_after: str | None = None,
) -> Response:
    document: dict[str, Any] = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    if detail is not None:
        document["detail"] = detail
    headers = {"retry-after": retry_after} if retry_after is not None else None
    return JSONResponse(document, status_code=status, headers=headers)
