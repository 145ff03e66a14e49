"""Provider adapters and the registry that builds them from settings."""

from __future__ import annotations

import httpx

from sluice.clock import Clock
from sluice.config import Settings
from sluice.providers.base import Credentials, Provider

__all__ = ["Credentials", "Provider", "build_providers", "http_client"]


def http_client(settings: Settings) -> httpx.AsyncClient:
    """The one HTTP client pool a worker process shares across all adapters.

    Redirects are not followed: a provider answering 3xx is a misconfiguration to
    surface, and following it could send a tenant's data somewhere it never named.
    """
    from sluice.providers._transport import AiohttpTransport

    transport = AiohttpTransport(max_connections=max(10, settings.worker_concurrency))
    return httpx.AsyncClient(
        transport=transport, timeout=settings.http_timeout, follow_redirects=False, trust_env=False
    )


def build_providers(
    settings: Settings, client: httpx.AsyncClient, clock: Clock | None = None
) -> dict[str, Provider]:
    """Every adapter this process can send with, by name.

    ``webhook`` is configured only when ``SLUICE_WEBHOOK_SECRET`` is set: a webhook
    must never go out unsigned. ``twilio``, ``sendgrid`` and ``whatsapp`` are always
    there; they send only with a tenant's connection, which the gate supplies.
    """
    from sluice.providers.null import NullProvider
    from sluice.providers.sendgrid import SendGridProvider
    from sluice.providers.twilio import TwilioProvider
    from sluice.providers.whatsapp import WhatsAppProvider

    timeout, callback = settings.http_timeout, settings.status_callback_url
    providers: dict[str, Provider] = {
        "null": NullProvider(),
        "twilio": TwilioProvider(
            client,
            base_url=settings.twilio_base_url,
            status_callback_url=callback,
            timeout=timeout,
            clock=clock,
        ),
        "sendgrid": SendGridProvider(
            client,
            base_url=settings.sendgrid_base_url,
            status_callback_url=callback,
            timeout=timeout,
            clock=clock,
        ),
        "whatsapp": WhatsAppProvider(
            client,
            base_url=settings.whatsapp_base_url,
            status_callback_url=callback,
            timeout=timeout,
            clock=clock,
        ),
    }
    from sluice.actions import configured_actions
    from sluice.providers.http_action import HttpActionProvider

    # Always registered, so `connections check` works for http connections; a message
    # naming an action not in sluice.toml fails as BAD_REQUEST listing the known ones.
    providers["http"] = HttpActionProvider(
        client, configured_actions(), timeout=settings.http_timeout, clock=clock
    )
    if settings.webhook_secret:
        from sluice.providers.webhook import WebhookProvider

        providers["webhook"] = WebhookProvider(
            client, settings.webhook_secret, timeout=settings.http_timeout, clock=clock
        )
    return providers
