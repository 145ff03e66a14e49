"""The provider simulator: a local HTTP server that plays the receiving end.

It speaks each provider's wire format on 127.0.0.1 so the demo and the tests exercise the
real adapters, counts every effect by its idempotency key (so a test over thousands of
messages can prove each landed exactly once), and injects faults on demand.

Routes::

    POST   /webhook/{path...}    a Standard Webhooks receiver (signature checked; 503
                                 saying so when the simulator has no secret)
    POST   /twilio/2010-04-01/Accounts/{sid}/Messages.json    Twilio's Messages API
    GET    /twilio/2010-04-01/Accounts/{sid}.json             Twilio's account fetch
    POST   /sendgrid/v3/mail/send                             SendGrid's Mail Send
    GET    /sendgrid/v3/scopes                                SendGrid's API key scopes
    POST   /whatsapp/{version}/{phone_number_id}/messages     WhatsApp Cloud API send
    GET    /whatsapp/{version}/{phone_number_id}              WhatsApp phone number read
    POST   /_sim/faults          install a fault set (JSON, see ``Faults``)
    GET    /_sim/faults          the installed fault sets
    DELETE /_sim/faults          remove them (``?path_prefix=`` for one)
    POST   /_sim/credentials     register a provider credential (see ``Credential``)
    GET    /_sim/credentials     the registered credentials (secrets shortened)
    DELETE /_sim/credentials     forget them (``?provider=`` for one provider's)
    POST   /_sim/credentials/revoke   {"provider", "token"}: answer 401 from now on
    POST   /_sim/credentials/scopes   {"provider", "token", "scopes"}: replace its scopes
    GET    /_sim/effects         counters: unique, total, duplicates, rejected, ...
                                 (``?by_provider=1`` adds ``by_provider``)
    GET    /_sim/effects/ids     every effect key with how often it arrived
    GET    /_sim/effects/{id}    the first body and headers received under that key
    DELETE /_sim/effects         forget every effect and reset the counters
    GET    /_sim/requests        the request log, oldest first: ``?since=`` a sequence
                                 number (``next_cursor``) or an ISO-8601 time,
                                 ``limit``, ``provider``, ``status``
    DELETE /_sim/requests        forget the logged requests
    GET    /_sim/callbacks       {"enabled": ...}: whether status callbacks are sent
    POST   /_sim/callbacks       {"enabled": false}: switch them off (or on) for all
    GET    /_sim/health          200 when up

A provider's wire format is a ``Receiver``: how a request authenticates, what key it
dedupes on and what its answers look like. Faults, effect counting and connection drops
are shared by every receiver. The Standard Webhooks receiver checks a signature; the
provider APIs check credentials registered through ``/_sim/credentials`` (unknown or
revoked ones get the provider's real 401, a missing scope its real 403) and key each
effect by Sluice's message id where the provider carries it: Twilio's ``StatusCallback``
query ``sluice_message_id``, SendGrid's ``custom_args.sluice_message_id``, WhatsApp's
``biz_opaque_callback_data`` (else by the id the simulator hands out).

Twilio's ``StatusCallback`` gets a signed ``delivered`` callback, through one shared
client; ``sim_callback=off`` in a callback URL's query skips it for that message (see
``_callbacks``). Every request to a provider route is in the request log (``_requests``):
when, method, path, provider, status answered, latency, outcome.

One module per wire format (``_webhook``, ``_twilio``, ``_sendgrid``, ``_whatsapp``);
shared parts: ``_base`` (the receiver protocol, request helpers), ``_state``,
``_faults``, ``_callbacks``, ``_requests``, ``_control`` (the ``/_sim/`` routes),
``_app`` (``create_app``) and ``_server``.

Run it with ``serve`` (the ``sluice simulator`` command) or, inside a test or
``sluice run``, with ``SimulatorThread``.
"""

from __future__ import annotations

from sluice.providers.simulator._app import create_app
from sluice.providers.simulator._base import PROVIDERS
from sluice.providers.simulator._faults import Faults
from sluice.providers.simulator._requests import LoggedRequest, RequestLog
from sluice.providers.simulator._server import SimulatorThread, serve
from sluice.providers.simulator._state import Credential, Effect, SimulatorState

__all__ = [
    "DEFAULT_PORT",
    "PROVIDERS",
    "Credential",
    "Effect",
    "Faults",
    "LoggedRequest",
    "RequestLog",
    "SimulatorState",
    "SimulatorThread",
    "create_app",
    "serve",
]

DEFAULT_PORT = 8025
