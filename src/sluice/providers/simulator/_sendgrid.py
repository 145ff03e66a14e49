"""SendGrid's v3 Mail Send API, under ``/sendgrid``: bearer keys with scopes."""

from __future__ import annotations

import secrets

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sluice.providers.simulator._base import (
    Delivery,
    Lookup,
    bearer,
    json_object,
    kept_headers,
    phrase,
)
from sluice.providers.simulator._state import Credential, SimulatorState


class SendGridReceiver:
    """SendGrid's v3 API: bearer API keys with scopes, ``{"errors": [...]}`` bodies.

    The effect key is ``custom_args.sluice_message_id`` (the first personalization's,
    else the message's), else the ``X-Message-Id`` the simulator hands out.
    """

    provider = "sendgrid"
    prefix = "/sendgrid"
    effect_paths: tuple[str, ...] = ("/v3/mail/send",)

    def __init__(self, state: SimulatorState) -> None:
        self._state = state

    def _key(self, request: Request, scope: str | None) -> Credential | Response:
        token = bearer(request)
        credential = self._state.credential("sendgrid", token) if token else None
        if credential is None or credential.revoked:
            return _sendgrid_error(
                401, "The provided authorization grant is invalid, expired, or revoked"
            )
        if scope is not None and scope not in credential.scopes:
            return _sendgrid_error(403, "access forbidden")
        return credential

    def authenticate(self, request: Request, body: bytes) -> Delivery | Response:
        credential = self._key(request, "mail.send")
        if isinstance(credential, Response):
            return credential
        document = json_object(body)
        if document is None:
            return _sendgrid_error(400, "Bad Request")
        personalizations = document.get("personalizations")
        if not isinstance(personalizations, list) or not personalizations:
            return _sendgrid_error(
                400, "The personalizations field is required.", field="personalizations"
            )
        first = personalizations[0] if isinstance(personalizations[0], dict) else {}
        to = first.get("to")
        email = (
            to[0].get("email") if isinstance(to, list) and to and isinstance(to[0], dict) else None
        )
        if not isinstance(email, str) or "@" not in email:
            return _sendgrid_error(
                400,
                "The to email does not contain a valid address.",
                field="personalizations.0.to.0.email",
            )
        sender = document.get("from")
        if not isinstance(sender, dict) or not sender.get("email"):
            return _sendgrid_error(
                400, "The from email does not contain a valid address.", field="from.email"
            )
        if not document.get("template_id"):
            if not document.get("content"):
                return _sendgrid_error(
                    400,
                    "Unless a valid template_id is provided, the content parameter is required.",
                    field="content",
                )
            if not document.get("subject") and not first.get("subject"):
                return _sendgrid_error(400, "The subject is required.", field="subject")
        message_id = secrets.token_urlsafe(16)
        key = message_id
        for args in (first.get("custom_args"), document.get("custom_args")):
            if isinstance(args, dict) and isinstance(args.get("sluice_message_id"), str):
                key = args["sluice_message_id"]
                break
        return Delivery(key, kept_headers(request), recipient=email, provider_id=message_id)

    def accepted(self, delivery: Delivery, count: int) -> Response:
        return Response(status_code=202, headers={"x-message-id": delivery.provider_id})

    def refused(self, status: int, retry_after: str | None) -> Response:
        headers: dict[str, str] = {}
        if status == 429:
            # SendGrid says when the window resets; a fault's Retry-After sets it too.
            wait = float(retry_after) if retry_after and _is_number(retry_after) else 1.0
            reset = int(self._state.clock.now().timestamp() + wait)
            headers.update(
                {
                    "x-ratelimit-limit": "600",
                    "x-ratelimit-remaining": "0",
                    "x-ratelimit-reset": str(reset),
                }
            )
        if retry_after is not None:
            headers["retry-after"] = retry_after
        message = "too many requests" if status == 429 else phrase(status)
        return _sendgrid_error(status, message, headers=headers)

    def invalid_recipient(self, delivery: Delivery) -> Response:
        return _sendgrid_error(
            400,
            "The to email does not contain a valid address.",
            field="personalizations.0.to.0.email",
        )

    def lookups(self) -> list[tuple[str, Lookup]]:
        return [("/v3/scopes", self._scopes)]

    def _scopes(self, request: Request) -> Response:
        credential = self._key(request, None)  # any key may list its own scopes
        if isinstance(credential, Response):
            return credential
        return JSONResponse({"scopes": sorted(credential.scopes)})


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _sendgrid_error(
    status: int,
    message: str,
    *,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    error = {"message": message, "field": field, "help": None}
    return JSONResponse({"errors": [error]}, status_code=status, headers=headers or None)
