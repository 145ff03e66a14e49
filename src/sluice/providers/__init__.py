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
    must never go out unsigned.
    """
    from sluice.providers.null import NullProvider

    providers: dict[str, Provider] = {"null": NullProvider()}
    if settings.webhook_secret:
        from sluice.providers.webhook import WebhookProvider

        providers["webhook"] = WebhookProvider(
            client, settings.webhook_secret, timeout=settings.http_timeout, clock=clock
        )
    return providers
