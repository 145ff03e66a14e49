"""The WhatsApp Cloud API, under ``/whatsapp``: bearer tokens per phone number id."""

from __future__ import annotations

import base64
import secrets
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sluice.providers.simulator._base import Delivery, Lookup, bearer, json_object, kept_headers
from sluice.providers.simulator._state import Credential, SimulatorState


class WhatsAppReceiver:
    """The WhatsApp Cloud API: bearer tokens per phone number id, Graph error bodies.

    The effect key is ``biz_opaque_callback_data``, else the ``wamid`` the simulator
    hands out. Sending needs ``whatsapp_business_messaging``; reading the phone number
    needs that or ``whatsapp_business_management``.
    """

    provider = "whatsapp"
    prefix = "/whatsapp"
    effect_paths: tuple[str, ...] = ("/{version}/{phone_number_id}/messages",)

    def __init__(self, state: SimulatorState) -> None:
        self._state = state

    def _token(self, request: Request, method: str, needs: set[str]) -> Credential | Response:
        token = bearer(request)
        credential = self._state.credential("whatsapp", token) if token else None
        if credential is None:
            return _graph_error(401, 190, "Invalid OAuth access token - Cannot parse access token")
        if credential.revoked:
            return _graph_error(
                401,
                190,
                "Error validating access token: The user has not authorized application.",
                subcode=458,
            )
        number = request.path_params.get("phone_number_id")
        if credential.account != number:
            return _graph_error(
                400,
                100,
                f"Unsupported {method} request. Object with ID '{number}' does not exist, cannot "
                "be loaded due to missing permissions, or does not support this operation.",
                subcode=33,
            )
        if not credential.scopes & needs:
            return _graph_error(
                403, 10, "(#10) Application does not have permission for this action"
            )
        return credential

    def authenticate(self, request: Request, body: bytes) -> Delivery | Response:
        credential = self._token(request, "post", {"whatsapp_business_messaging"})
        if isinstance(credential, Response):
            return credential
        document = json_object(body)
        if document is None:
            return _graph_error(400, 100, "(#100) Invalid parameter")
        if document.get("messaging_product") != "whatsapp":
            return _graph_error(400, 100, "(#100) The parameter messaging_product is required.")
        to = document.get("to")
        if not isinstance(to, str) or not to:
            return _graph_error(400, 100, "(#100) The parameter to is required.")
        kind = document.get("type", "text")
        content = document.get(kind)
        if kind == "text":
            valid = isinstance(content, dict) and bool(content.get("body"))
        elif kind == "template":
            language = content.get("language") if isinstance(content, dict) else None
            valid = (
                isinstance(content, dict)
                and bool(content.get("name"))
                and isinstance(language, dict)
                and bool(language.get("code"))
            )
        else:
            valid = isinstance(content, dict)
        if not valid:
            return _graph_error(400, 131008, f"(#131008) Required parameter is missing: {kind}")
        wamid = "wamid." + base64.b64encode(secrets.token_bytes(30)).decode()
        opaque = document.get("biz_opaque_callback_data")
        key = opaque if isinstance(opaque, str) and opaque else wamid
        answer = {
            "messaging_product": "whatsapp",
            "contacts": [{"input": to, "wa_id": "".join(c for c in to if c.isdigit())}],
            "messages": [{"id": wamid, "message_status": "accepted"}],
        }
        return Delivery(key, kept_headers(request), recipient=to, answer=answer, provider_id=wamid)

    def accepted(self, delivery: Delivery, count: int) -> Response:
        return JSONResponse(delivery.answer)

    def refused(self, status: int, retry_after: str | None) -> Response:
        if status == 429:
            code, message = 130429, "(#130429) Rate limit hit"
        elif status == 401:
            code, message = 190, "Error validating access token"
        elif status == 403:
            code, message = 10, "(#10) Application does not have permission for this action"
        elif status >= 500:
            code, message = 2, "(#2) Service temporarily unavailable"
        else:
            code, message = 100, "(#100) Invalid parameter"
        headers = {"retry-after": retry_after} if retry_after is not None else None
        return _graph_error(status, code, message, headers=headers)

    def invalid_recipient(self, delivery: Delivery) -> Response:
        return _graph_error(
            400,
            131030,
            "(#131030) Recipient phone number not in allowed list",
            details="Recipient phone number not in allowed list: Add recipient phone number "
            "to recipient list and try again.",
        )

    def lookups(self) -> list[tuple[str, Lookup]]:
        return [("/{version}/{phone_number_id}", self._phone_number)]

    def _phone_number(self, request: Request) -> Response:
        credential = self._token(
            request, "get", {"whatsapp_business_messaging", "whatsapp_business_management"}
        )
        if isinstance(credential, Response):
            return credential
        return JSONResponse(
            {
                "id": credential.account,
                "display_phone_number": credential.display_phone_number,
                "quality_rating": "GREEN",
                "verified_name": "Sluice Simulator",
            }
        )


def _graph_error(
    status: int,
    code: int,
    message: str,
    *,
    subcode: int | None = None,
    details: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    error: dict[str, Any] = {"message": message, "type": "OAuthException", "code": code}
    if subcode is not None:
        error["error_subcode"] = subcode
    if details is not None:
        error["error_data"] = {"messaging_product": "whatsapp", "details": details}
    error["fbtrace_id"] = secrets.token_urlsafe(12)
    return JSONResponse({"error": error}, status_code=status, headers=headers)
