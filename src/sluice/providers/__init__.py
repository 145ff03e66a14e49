"""Provider adapters and the registry that builds them from settings.

A message names its provider: one of ``BUILTIN_PROVIDERS``, or an alias declared in
``sluice.toml`` as ``[providers."name"]`` (another account or region of a built-in
kind). ``provider_kinds`` lists both, as enqueue checks them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import httpx

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

#: The channels that name a medium. Any other channel name is a label of the operator's
#: own (``otp``, ``alerts``) for routes, controls and limits, and goes with any provider.
MEDIA = frozenset({"email", "sms", "webhook", "whatsapp"})

#: The providers every Sluice has, each with the media its adapter delivers, the first
#: being what it sends under a channel of the operator's own naming (``None``: any
#: medium; the recipient is whatever the channel says). Twilio sends SMS and, on the
#: ``whatsapp`` channel, WhatsApp; SendGrid only email; Meta's Cloud API only WhatsApp;
#: a webhook only webhooks. ``http`` runs configured actions, whatever they do, and
#: ``null`` sends nothing.
BUILTIN_PROVIDERS: Mapping[str, tuple[str, ...] | None] = MappingProxyType(
    {
        "http": None,
        "null": None,
        "sendgrid": ("email",),
        "twilio": ("sms", "whatsapp"),
        "webhook": ("webhook",),
        "whatsapp": ("whatsapp",),
    }
)


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
    from sluice.config import config_file

    path = config_file()
    if path is not None:
        providers.update(provider_aliases(path, settings, client, clock))
    return providers


#: Kinds a ``[providers."name"]`` entry can take, and the base-URL setting each defaults to.
_ALIAS_KINDS = {
    "twilio": "twilio_base_url",
    "sendgrid": "sendgrid_base_url",
    "whatsapp": "whatsapp_base_url",
}


def provider_kinds(
    document: Mapping[str, Any] | None = None, source: str = "sluice.toml"
) -> dict[str, str]:
    """Every provider name a message may give, with the built-in kind it stands for: the
    built-ins (each its own kind) and the ``[providers."name"]`` aliases of ``document``
    (a parsed ``sluice.toml``; ``None``: no file, built-ins only).

    Raises ``ConfigError`` naming ``source`` and the entry when an alias is malformed.
    """
    kinds = {name: name for name in BUILTIN_PROVIDERS}
    for name, spec in _alias_specs(document, source).items():
        kinds[name] = spec["kind"]
    return kinds


def _alias_specs(document: Mapping[str, Any] | None, source: str) -> dict[str, dict[str, Any]]:
    """The ``[providers]`` entries of ``document``, checked: name -> its table."""
    from sluice.errors import ConfigError

    table = (document or {}).get("providers", {})
    if not isinstance(table, Mapping):
        raise ConfigError(f'{source}: providers must be tables [providers."name"]')
    out: dict[str, dict[str, Any]] = {}
    for name, spec in table.items():
        where = f"{source}: providers.{name}"
        if name in BUILTIN_PROVIDERS:
            raise ConfigError(f"{where}: {name!r} is a built-in provider; choose another name")
        if not isinstance(spec, Mapping):
            raise ConfigError(f"{where} must be a table")
        unknown = sorted(set(spec) - {"kind", "base_url"})
        if unknown:
            raise ConfigError(f"{where}: unknown field {unknown[0]!r} (known: kind, base_url)")
        kind = spec.get("kind")
        if kind not in _ALIAS_KINDS:
            raise ConfigError(f"{where}.kind must be one of {sorted(_ALIAS_KINDS)}, not {kind!r}")
        base_url = spec.get("base_url")
        if base_url is not None and (
            not isinstance(base_url, str) or not base_url.startswith(("http://", "https://"))
        ):
            raise ConfigError(f"{where}.base_url must be an http(s) URL")
        out[name] = dict(spec)
    return out


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
    for name, spec in _alias_specs(config_document(path), str(path)).items():
        kind = spec["kind"]
        out[name] = classes[kind](
            client,
            base_url=spec.get("base_url", getattr(settings, _ALIAS_KINDS[kind])),
            status_callback_url=settings.status_callback_url,
            timeout=settings.http_timeout,
            clock=clock,
        )
    return out
