"""Provider adapters and the registry that builds them from settings.

A message names its provider: one of ``BUILTIN_PROVIDERS``, or an alias declared in
``sluice.toml`` as ``[providers."name"]`` (another account or region of a built-in
kind). ``provider_kinds`` lists both, as enqueue checks them.
"""

from __future__ import annotations

from http.cookiejar import Cookie, CookieJar
from pathlib import Path
from typing import Any

import httpx

# The catalog of provider names and media is ground-level (enqueue checks it before any
# adapter exists); it lives in sluice.addressing and is re-exported here.
from sluice.addressing import ALIAS_KINDS, BUILTIN_PROVIDERS, MEDIA, alias_specs, provider_kinds
from sluice.clock import Clock
from sluice.config import Settings
from sluice.providers.base import Credentials, Provider

__all__ = [
    "BUILTIN_PROVIDERS",
    "MEDIA",
    "Credentials",
    "Provider",
    "build_providers",
    "http_client",
    "provider_kinds",
]


def http_client(settings: Settings) -> httpx.AsyncClient:
    """The one HTTP client pool a worker process shares across all adapters.

    Redirects are not followed: a provider answering 3xx is a misconfiguration to
    surface, and following it could send a tenant's data somewhere it never named.
    Cookies are not kept: the client is shared by every tenant, and a cookie one
    tenant's endpoint set would go out with the next tenant's request to that host.
    """
    from sluice.providers._transport import AiohttpTransport

    transport = AiohttpTransport(max_connections=max(10, settings.worker_concurrency))
    return httpx.AsyncClient(
        transport=transport,
        timeout=settings.http_timeout,
        follow_redirects=False,
        trust_env=False,
        cookies=_NoCookies(),
    )


class _NoCookies(CookieJar):
    """A cookie jar that keeps nothing: httpx's client stores every ``Set-Cookie`` it
    sees and sends it back to the same host, whoever the next request is for."""

    def extract_cookies(self, response: Any, request: Any) -> None:
        return None

    def set_cookie(self, cookie: Cookie) -> None:
        return None


def build_providers(
    settings: Settings, client: httpx.AsyncClient, clock: Clock | None = None
) -> dict[str, Provider]:
    """Every adapter this process can send with, by name.

    ``webhook`` signs with ``SLUICE_WEBHOOK_SECRET``, or with the secret of the tenant's
    webhook connection; a webhook never goes out unsigned. Without the setting it signs
    only with connections' secrets, and the dispatcher leaves every other webhook for a
    worker that has it (``WebhookProvider.worker_problem``). ``twilio``, ``sendgrid``
    and ``whatsapp`` send only with a tenant's connection, which the gate supplies.

    ``webhook`` and ``http`` call URLs a tenant chose, so they call public addresses
    only (``sluice.netguard``); ``SLUICE_ALLOW_LOOPBACK_TARGETS`` admits loopback too,
    ``SLUICE_ALLOW_PRIVATE_TARGETS`` the private networks and names it lists.
    The other adapters call the operator's base URLs, which are not checked.
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
        client,
        configured_actions(),
        timeout=settings.http_timeout,
        clock=clock,
        allow_loopback=settings.allow_loopback_targets,
        private=settings.private_targets,
    )
    from sluice.providers.webhook import WebhookProvider

    providers["webhook"] = WebhookProvider(
        client,
        settings.webhook_secret or None,
        timeout=settings.http_timeout,
        clock=clock,
        allow_loopback=settings.allow_loopback_targets,
        private=settings.private_targets,
    )
    from sluice.providers.webhook import TenantEventsProvider

    providers["sluice_events"] = TenantEventsProvider(
        client,
        timeout=settings.http_timeout,
        clock=clock,
        allow_loopback=settings.allow_loopback_targets,
        private=settings.private_targets,
    )
    from sluice.config import config_file

    path = config_file()
    if path is not None:
        providers.update(provider_aliases(path, settings, client, clock))
    return providers


def provider_aliases(
    path: Path, settings: Settings, client: httpx.AsyncClient, clock: Clock | None = None
) -> dict[str, Provider]:
    """More instances of an adapter, from ``[providers."name"]`` tables of ``sluice.toml``:
    a second account or region to fail over to (``[routes]``). Each has its own tenant
    connections, named by its own name; ``base_url`` defaults to the kind's setting.

        [providers."twilio-backup"]
        kind = "twilio"
    """
    from sluice.config import config_document
    from sluice.providers.sendgrid import SendGridProvider
    from sluice.providers.twilio import TwilioProvider
    from sluice.providers.whatsapp import WhatsAppProvider

    classes: dict[str, type[TwilioProvider] | type[SendGridProvider] | type[WhatsAppProvider]]
    classes = {"twilio": TwilioProvider, "sendgrid": SendGridProvider, "whatsapp": WhatsAppProvider}
    out: dict[str, Provider] = {}
    for name, spec in alias_specs(config_document(path), str(path)).items():
        kind = spec["kind"]
        out[name] = classes[kind](
            client,
            base_url=spec.get("base_url", getattr(settings, ALIAS_KINDS[kind])),
            status_callback_url=settings.status_callback_url,
            timeout=settings.http_timeout,
            clock=clock,
        )
    return out
