"""Status callbacks: what the simulator posts back after it accepted a message.

Twilio's ``StatusCallback`` is the one the simulator plays: a signed ``delivered``
callback in the background once the effect is recorded. All of them go through one
``httpx.AsyncClient``, made on first use and closed when the server stops: a client per
callback costs an SSL context each (~14 ms of the simulator's event loop), which with
callbacks on slowed every sender down twenty-fold. The client is the workers' own
(aiohttp's pool under httpx), at most ``_CONNECTIONS`` callbacks in flight.

Callbacks can be switched off for the whole simulator (``sluice simulator
--no-callbacks``, ``SLUICE_SIMULATOR_CALLBACKS=false``, ``POST /_sim/callbacks
{"enabled": false}``) or for one message: a ``StatusCallback`` URL whose query has
``sim_callback=off`` (or ``0``, ``false``, ``no``) gets none. Skipped callbacks are
counted as ``callbacks_skipped``.
"""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qsl, urlsplit

import httpx

from sluice.providers._transport import AiohttpTransport
from sluice.providers.simulator._base import Callback

#: The query parameter of a callback URL that switches its callback off.
OPT_OUT_PARAM = "sim_callback"
_OFF = frozenset({"off", "0", "false", "no"})
#: Callbacks in flight at once (connections of the shared client).
_CONNECTIONS = 50


def opted_out(url: str) -> bool:
    """Whether the callback URL asks for no callback (``sim_callback=off``)."""
    query = dict(parse_qsl(urlsplit(url).query))
    return query.get(OPT_OUT_PARAM, "").strip().lower() in _OFF


class Callbacks:
    """The switch for every callback and the one client that posts them."""

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self._client: httpx.AsyncClient | None = None
        self._slots: asyncio.Semaphore | None = None

    def wanted(self, callback: Callback) -> bool:
        """Whether to post this callback (globally on, and not opted out)."""
        return self.enabled and not opted_out(callback.url)

    async def post(self, callback: Callback) -> bool:
        """POST one callback (form-encoded); True on a 2xx. Never raises."""
        if self._client is None or self._slots is None:
            # Both made on the loop that uses them. Callbacks beyond the connections wait
            # for a slot, so that waiting is not timed: only the call itself is.
            self._client = httpx.AsyncClient(
                transport=AiohttpTransport(max_connections=_CONNECTIONS),
                timeout=5.0,
                trust_env=False,
            )
            self._slots = asyncio.Semaphore(_CONNECTIONS)
        try:
            async with self._slots:
                response = await self._client.post(
                    callback.url, data=callback.form, headers=callback.headers
                )
        # Whatever goes wrong (bad URL, refused, timeout) is the receiver's problem, as
        # with the real provider: the caller counts it, the simulator's loop carries on.
        except Exception:
            return False
        return response.is_success

    async def aclose(self) -> None:
        """Close the client (on the loop that made it), if one was made."""
        client, self._client, self._slots = self._client, None, None
        if client is not None:
            await client.aclose()
