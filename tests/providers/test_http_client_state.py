"""The worker's shared HTTP client keeps no state between sends: a cookie one endpoint
sets never rides along on another tenant's request to the same host.

Every adapter in a worker process shares one client (``sluice.providers.http_client``).
A receiver behind a load balancer that sets a session cookie (sticky sessions do) would
otherwise have that cookie sent back with the next tenant's webhook to the same host:
one tenant's session handed to another, and requests no longer independent. The real
adapter and client talk to a server on loopback that sets a cookie on every answer.
"""

from __future__ import annotations

import base64

from _wire import loopback_server, message

from sluice.config import Settings
from sluice.providers import http_client
from sluice.providers.webhook import WebhookProvider

SECRET = "whsec_" + base64.b64encode(b"c" * 24).decode()


def session_cookie(head: bytes) -> bytes:
    """A Set-Cookie naming the request's path (the tenant, in this test)."""
    path = head.split(b" ")[1].decode()
    return f"set-cookie: session={path.strip('/')}; Path=/\r\n".encode()


async def test_a_cookie_set_for_one_tenant_is_never_sent_with_the_next_request() -> None:
    async with loopback_server(session_cookie) as (port, heads), http_client(Settings()) as client:
        adapter = WebhookProvider(client, SECRET, allow_loopback=True)
        for n, tenant in enumerate(["acme", "globex", "acme"]):
            url = f"http://127.0.0.1:{port}/{tenant}"
            sent = message(channel="webhook", provider="webhook", recipient=url,
                           payload={"n": n}, tenant=tenant)  # fmt: skip
            outcome = await adapter.send(sent)
            assert outcome.ok, outcome
        kept = len(client.cookies)
    assert len(heads) == 3
    cookies = [[x for x in h.lower().split(b"\r\n") if x.startswith(b"cookie")] for h in heads]
    assert cookies == [[], [], []]
    assert kept == 0
