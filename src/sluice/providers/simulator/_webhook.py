"""The Standard Webhooks receiver, under ``/webhook``: signatures checked, keyed by
``webhook-id``. Without a secret (``sluice simulator`` started without
``SLUICE_WEBHOOK_SECRET``) it answers every request 503 saying so, and the provider
routes work as ever."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sluice.clock import Clock
from sluice.providers.simulator._base import Delivery, Lookup
from sluice.providers.webhook import decode_secret

#: Signatures older or newer than this are refused, as the Standard Webhooks spec advises.
SIGNATURE_TOLERANCE = timedelta(minutes=5)
#: What the receiver answers when the simulator has no secret to verify with.
RECEIVER_OFF = (
    "the simulator's webhook receiver is off: it was started without a webhook secret "
    "(set SLUICE_WEBHOOK_SECRET or pass --webhook-secret to verify Standard Webhooks)"
)


class _ClockedWebhook(Webhook):
    """``Webhook`` whose timestamp tolerance is checked against the simulator's clock.

    The library reads the wall clock; a test that moves a ``FrozenClock`` forward (to skip
    a backoff) signs with the moved time, so the receiver must judge by the same clock.
    Overriding the name-mangled private check keeps the library's own signature code.
    """

    def __init__(self, secret: str, clock: Clock) -> None:
        super().__init__(decode_secret(secret))
        self._clock = clock

    def _Webhook__verify_timestamp(self, timestamp_header: str) -> datetime:
        try:
            timestamp = datetime.fromtimestamp(float(timestamp_header), tz=UTC)
        except (ValueError, OverflowError, OSError) as exc:
            raise WebhookVerificationError("Invalid Signature Headers") from exc
        now = self._clock.now()
        if timestamp < now - SIGNATURE_TOLERANCE:
            raise WebhookVerificationError("Message timestamp too old")
        if timestamp > now + SIGNATURE_TOLERANCE:
            raise WebhookVerificationError("Message timestamp too new")
        return timestamp


class WebhookReceiver:
    """A Standard Webhooks receiver: verifies the signature, dedupes on ``webhook-id``."""

    provider = "webhook"
    prefix = "/webhook"
    effect_paths: tuple[str, ...] = ("", "/{path:path}")

    def __init__(self, secret: str | None, clock: Clock) -> None:
        self._verifier = _ClockedWebhook(secret, clock) if secret else None

    def authenticate(self, request: Request, body: bytes) -> Delivery | Response:
        if self._verifier is None:
            return JSONResponse({"error": RECEIVER_OFF}, status_code=503)
        headers = dict(request.headers)
        try:
            self._verifier.verify(body, headers, json_parse=False)
        # The library lets malformed headers and non-UTF-8 bodies escape as ValueError.
        except (WebhookVerificationError, ValueError) as exc:
            return JSONResponse(
                {"error": "invalid signature", "detail": str(exc)[:200]}, status_code=401
            )
        return Delivery(key=headers["webhook-id"], headers=headers)

    def accepted(self, delivery: Delivery, count: int) -> Response:
        return JSONResponse({"id": delivery.key, "received": count})

    def refused(self, status: int, retry_after: str | None) -> Response:
        headers = {"retry-after": retry_after} if retry_after is not None else None
        return JSONResponse(
            {"error": "injected fault", "status": status}, status_code=status, headers=headers
        )

    def invalid_recipient(self, delivery: Delivery) -> Response:
        # Never asked: a webhook's recipient is its URL, and deliveries carry none.
        return self.refused(400, None)

    def lookups(self) -> list[tuple[str, Lookup]]:
        return []
