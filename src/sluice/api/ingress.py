"""``/v1/ingress/{provider}``: providers' webhooks in — verified, deduplicated, durable.

The order is the runbook's: verify the signature (401 and nothing stored when it is
bad), read the events, write them to the inbox in one statement whose unique key is
the dedupe ledger, and only then answer 2xx. A replayed delivery finds its event id
taken and is acknowledged without further effect. The projector applies the events
afterwards (``sluice.ingress.projector``), so a slow or failing projection never
delays the answer or loses an event.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

import structlog
from fastapi import APIRouter, Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from sluice.api.problems import Problem
from sluice.api.schemas import PROBLEMS
from sluice.errors import StoreUnavailable
from sluice.ingress.config import IngressSource
from sluice.ingress.parse import (
    Event,
    PayloadError,
    parse_sendgrid,
    parse_standard,
    parse_twilio,
    parse_whatsapp,
)
from sluice.ingress.verify import (
    SignatureError,
    verify_meta,
    verify_sendgrid,
    verify_standard,
    verify_twilio,
)
from sluice.metrics import (
    DUPLICATES,
    INGRESS_EVENTS,
    INGRESS_REJECTED,
    INGRESS_REQUESTS,
    of,
    tenant_label,
)
from sluice.store.base import InboxItem, Store

__all__ = ["EVENTS", "REJECTED", "InboxWriter", "first_route", "router"]

log = structlog.get_logger("sluice.ingress")

#: Kept under these names for existing readers; defined in ``sluice.metrics``.
EVENTS = INGRESS_EVENTS
REJECTED = INGRESS_REJECTED

router = APIRouter(prefix="/v1/ingress", tags=["ingress"])

_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'


#: One request's part of a group write: its events, the future that answers it, when it
#: arrived (the clock's reading, kept as the events' ``received_at``) and the event
#: loop's time then.
_Entry = tuple[list[InboxItem], asyncio.Future[list[bool]], datetime, float]


class InboxWriter:
    """Group commit for ingress: the events of the requests that arrive close together
    go to the database in one write.

    An idle server writes each request at once (no added wait). Once requests come in a
    stream (one arrives within ``gather`` seconds of the last write), the next write
    waits until ``gather`` has passed since the last one ended (or since the oldest
    request waiting arrived, if that is sooner), and takes everything that came
    meanwhile, so a busy server makes one round trip and one commit for many
    requests instead of one each. A commit costs the database and this process more
    than the rows in it; at 2,000 requests a second that wait of a few milliseconds
    takes more off the time to 2xx (less work queued in front of every request) than it
    adds. Each request still answers only after its own events are committed, and
    learns which of them were new.
    """

    #: Most events in one write.
    MAX_EVENTS = 500

    def __init__(self, store: Store, *, gather: float) -> None:
        """``gather``: seconds, see above (``SLUICE_INGRESS_GATHER``); at most this much
        is added to a request's time to 2xx."""
        self.store = store
        self.gather = gather
        self._queue: list[_Entry] = []
        self._flusher: asyncio.Task[None] | None = None
        self._written_at = float("-inf")  # the event loop's time at the last write's end

    async def put(self, items: list[InboxItem], now: datetime) -> list[bool]:
        if not items:
            return []
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[bool]] = loop.create_future()
        self._queue.append((items, future, now, loop.time()))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="sluice-inbox-writer")
            self._flusher.add_done_callback(self._ended)
        # Not shielded: the write runs in the flusher's task, so a client that hangs up
        # cancels only its own wait; the write goes on for the requests sharing it.
        return await future

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        batch: list[_Entry] = []
        try:
            while self._queue:
                wait = self._wait(loop.time())
                if wait > 0:
                    await asyncio.sleep(wait)  # a stream: let the next requests join
                batch, size = [], 0
                while self._queue and (
                    not batch or size + len(self._queue[0][0]) <= self.MAX_EVENTS
                ):
                    entry = self._queue.pop(0)
                    batch.append(entry)
                    size += len(entry[0])
                await self._write(batch)
                self._written_at = loop.time()
        except BaseException:  # cancelled (shutdown): nothing is known to be stored
            for _, future, _, _ in self._queue + batch:
                if not future.done():
                    future.cancel()
            self._queue.clear()
            raise

    def _wait(self, now: float) -> float:
        """Seconds the next write should wait at ``now`` (the event loop's time): until
        ``gather`` after the last write or after the oldest waiting request arrived,
        whichever comes first; none once the waiting events fill a write."""
        if sum(len(e[0]) for e in self._queue) >= self.MAX_EVENTS:
            return 0.0
        return min(self._written_at, self._queue[0][3]) + self.gather - now

    def _ended(self, flusher: asyncio.Task[None]) -> None:
        """A flusher cancelled before it ever ran (the server stopping) leaves its
        queue to nobody: those requests are cancelled too, rather than left waiting."""
        if flusher.cancelled() and self._flusher is flusher:
            for _, future, _, _ in self._queue:
                if not future.done():
                    future.cancel()
            self._queue.clear()

    async def _write(self, batch: list[_Entry]) -> None:
        """One statement for the batch; if the database refuses it, each request alone,
        so that one request's bad event fails that request and no other."""
        try:
            # Received when the first of them was: the wait adds at most ``gather``.
            fresh = await self.store.inbox_put([i for e in batch for i in e[0]], batch[0][2])
        except StoreUnavailable as exc:  # the database is away: every request gets 503
            for _, future, _, _ in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except Exception as exc:
            if len(batch) == 1:
                if not batch[0][1].done():
                    batch[0][1].set_exception(exc)
                return
            log.warning("inbox group write refused; writing its requests one by one",
                        requests=len(batch), error=str(exc)[:300])  # fmt: skip
            for entry in batch:
                await self._write([entry])
            return
        at = 0
        for items, future, _, _ in batch:
            if not future.done():
                future.set_result(fresh[at : at + len(items)])
            at += len(items)


class _QuietLog:
    """At most one log line per ``every`` seconds per key: an attacker hammering the
    endpoint with bad signatures must not flood the logs (the counter counts them all)."""

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warn(self, key: str, message: str, **fields: Any) -> None:
        now = time.monotonic()
        if now - self._last.get(key, -self.every) < self.every:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        self._last[key] = now
        log.warning(message, suppressed=self._suppressed.pop(key, 0), **fields)


_quiet = _QuietLog()


def _source(request: Request, provider: str) -> IngressSource:
    source: IngressSource | None = request.app.state.ingress.sources.get(provider)
    if source is None:
        REJECTED.labels("unknown", "unknown_provider").inc()
        raise Problem(404, f"no ingress is configured for {provider!r}", kind="not-found")
    return source


def _verify_and_parse(
    source: IngressSource, request: Request, body: bytes, now: datetime
) -> tuple[list[Event], str | None]:
    """The request's events and the tenant it speaks for (``None``: every tenant), as
    decided by which group of the source's credentials signed it."""
    headers = request.headers
    if source.kind == "twilio":
        params = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
        url = source.url or str(request.url)
        if source.url and request.url.query:
            url = f"{source.url}?{request.url.query}"
        tenant = _signer(
            source,
            lambda keys: verify_twilio(url, params, headers.get("x-twilio-signature"), keys),
        )
        return parse_twilio(params, dict(request.query_params)), tenant
    if source.kind == "sendgrid":
        tenant = _signer(
            source,
            lambda keys: verify_sendgrid(
                body,
                headers.get("x-twilio-email-event-webhook-signature"),
                headers.get("x-twilio-email-event-webhook-timestamp"),
                keys,
                now,
            ),
        )
        return parse_sendgrid(body), tenant
    if source.kind == "whatsapp":
        tenant = _signer(
            source, lambda keys: verify_meta(body, headers.get("x-hub-signature-256"), keys)
        )
        return parse_whatsapp(body), tenant
    webhook_ids: list[str] = []
    # What dict(headers) gives (the first of repeated names), in one pass: that looks
    # every name up again, each lookup a scan of all the headers.
    plain = {name: value for name, value in reversed(headers.items())}
    tenant = _signer(
        source,
        lambda keys: webhook_ids.append(verify_standard(body, plain, keys, now)),
    )
    return parse_standard(body, webhook_ids[0]), tenant


def _signer(source: IngressSource, verify: Callable[[tuple[str, ...]], object]) -> str | None:
    """The tenant of the first credential group whose key verifies the request; the
    first group's ``SignatureError`` when none does."""
    refused: SignatureError | None = None
    for tenant, keys in source.credentials():
        try:
            verify(keys)
        except SignatureError as exc:
            refused = refused or exc
            continue
        return tenant
    raise refused or SignatureError("no secret configured")


def _no_nul(value: Any) -> Any:
    """U+0000 cannot be stored (PostgreSQL text and jsonb refuse it); a provider may
    still send it. Replace it rather than refuse the event and have it retried forever."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_no_nul(k): _no_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_nul(v) for v in value]
    return value


def _item(provider: str, e: Event, now: datetime, tenant: str | None) -> InboxItem:
    c = _no_nul
    return InboxItem(
        id=0, provider=provider, event_id=c(e.event_id), kind=e.kind, status=e.status,
        message_id=c(e.message_id), provider_message_id=c(e.provider_message_id),
        occurred_at=e.occurred_at, error_code=c(e.error_code), detail=c(e.detail),
        address=c(e.address), data=c(e.data), received_at=now, source_tenant=tenant,
    )  # fmt: skip


@router.post(
    "/{provider}",
    responses={
        200: {"description": "Stored (or a duplicate, acknowledged)"},
        400: PROBLEMS[422] | {"description": "Signed, but not a payload this provider sends"},
        401: PROBLEMS[401] | {"description": "Missing or bad signature; nothing stored"},
        404: PROBLEMS[404] | {"description": "No ingress configured under this name"},
        413: PROBLEMS[413],
        503: PROBLEMS[503],
    },
)
async def receive(provider: str, request: Request) -> Response:
    """Take a provider's webhook: 200 once its events are durable."""
    # Named by the route only when configured: made-up names must not mint series.
    known = provider in request.app.state.ingress.sources
    status = 500
    try:
        response = await _receive(provider, request)
        status = response.status_code
        return response
    except Problem as exc:
        status = exc.status
        raise
    finally:
        of(INGRESS_REQUESTS, provider if known else "unknown", str(status)).inc()


async def _receive(provider: str, request: Request) -> Response:
    source = _source(request, provider)
    now = request.app.state.clock.now()
    body = await request.body()
    try:
        events, tenant = _verify_and_parse(source, request, body, now)
    except SignatureError as exc:
        REJECTED.labels(provider, "signature").inc()
        client = request.client.host if request.client else None
        _quiet.warn(f"sig:{provider}", "ingress signature refused", provider=provider,
                    reason=exc.reason, client=client)  # fmt: skip
        raise Problem(401, f"signature refused: {exc.reason}", kind="bad-signature") from None
    except PayloadError as exc:
        REJECTED.labels(provider, "payload").inc()
        _quiet.warn(f"payload:{provider}", "ingress payload refused", provider=provider,
                    field=exc.field, problem=exc.problem)  # fmt: skip
        raise Problem(400, str(exc), field=exc.field, kind="bad-payload") from None
    items = [_item(provider, e, now, tenant) for e in events]
    fresh = await request.app.state.inbox.put(items, now)
    accepted = sum(fresh)
    if accepted:
        of(EVENTS, provider, "accepted").inc(accepted)
    if len(fresh) - accepted:
        of(EVENTS, provider, "duplicate").inc(len(fresh) - accepted)
        for item, new in zip(items, fresh, strict=True):
            if not new:
                DUPLICATES.labels("ingress", tenant_label(item.source_tenant or "")).inc()
    if source.kind == "twilio":  # an empty TwiML answer: no reply to an inbound SMS
        return Response(_TWIML, media_type="text/xml")
    # Written out: JSONResponse's encoder costs more, for two integers, than the rest
    # of the answer.
    answer = f'{{"received":{len(fresh)},"duplicates":{len(fresh) - accepted}}}'
    return Response(answer, media_type="application/json")


def first_route() -> Route:
    """``POST /v1/ingress/{provider}`` as a plain Starlette route, for the front of the
    app's routes: the same handler as the documented FastAPI route below, without
    walking every other route first or solving dependencies it does not have. Those
    took about a third of the server's CPU per webhook; at thousands a second, the
    ingress is the API's hot path. ``GET`` (Meta's handshake) still goes to the router.

    The endpoint is an ASGI app, not a request handler: Starlette then calls it as it
    is, without wrapping each request in a second exception-handling layer. A
    ``Problem`` it raises is answered by the app's exception middleware, with the same
    handlers."""

    return Route(f"{router.prefix}/{{provider}}", _Endpoint(), methods=["POST"])


class _Endpoint:
    """``receive`` as an ASGI app (an object, so that ``Route`` takes it as one)."""

    async def __call__(self, scope: Scope, receive_: Receive, send: Send) -> None:
        response = await receive(scope["path_params"]["provider"], Request(scope, receive_))
        await response(scope, receive_, send)


@router.get(
    "/{provider}",
    response_class=PlainTextResponse,
    responses={
        403: PROBLEMS[403] | {"description": "Wrong verify token"},
        404: PROBLEMS[404] | {"description": "No ingress configured under this name"},
    },
)
async def verify_subscription(provider: str, request: Request) -> Response:
    """Meta's webhook verification handshake: echo ``hub.challenge`` when
    ``hub.verify_token`` is ours."""
    source = _source(request, provider)
    q = request.query_params
    token = q.get("hub.verify_token")
    if (
        source.kind != "whatsapp"
        or source.verify_token is None
        or q.get("hub.mode") != "subscribe"
        or token is None
        or not hmac.compare_digest(token.encode(), source.verify_token.encode())
    ):
        REJECTED.labels(provider, "verify_token").inc()
        raise Problem(403, "verification refused", kind="forbidden")
    return PlainTextResponse(q.get("hub.challenge", ""))
