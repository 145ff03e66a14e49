"""Who may post to ingress, and where inbound events go: ``[ingress.*]`` and
``[tenants.*]`` of ``sluice.toml``.

::

    [ingress.twilio]                 # POST /v1/ingress/twilio
    secrets = ["env:TWILIO_AUTH_TOKEN"]   # auth tokens; several while rotating
    url = "https://sluice.example.com/v1/ingress/twilio"   # as Twilio calls it
    routes = { "+15550001111" = "acme" }  # inbound: the number written to -> tenant

    [ingress.sendgrid]
    public_keys = ["MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE..."]

    [ingress.whatsapp]
    secrets = ["env:META_APP_SECRET"]
    verify_token = "env:META_VERIFY_TOKEN"
    routes = { "106540352242922" = "acme" }  # phone number id -> tenant

    [ingress.partner]                # any name; kind says which scheme
    kind = "webhook"                 # Standard Webhooks
    secrets = ["whsec_..."]
    tenant = "acme"                  # this source speaks for acme only

    [ingress.twilio.tenant_secrets]  # per-tenant provider accounts: each tenant's
    acme = ["env:ACME_TWILIO_TOKEN"]      # token speaks for that tenant only
    globex = ["env:GLOBEX_TWILIO_TOKEN"]

    [tenants.acme]
    inbound_url = "https://acme.example.com/hooks/sluice"

A value ``env:NAME`` is read from the environment variable ``NAME`` (secrets stay out
of the file).

Who a request speaks for is decided by the credential that verified it: a secret (or
SendGrid key) under ``tenant_secrets`` / ``tenant_public_keys`` speaks for its tenant; one
under ``secrets`` / ``public_keys`` for the source's ``tenant``, or, without one, for
every tenant (the operator's own provider account). An event is applied only to a message
of the tenant it speaks for, sent through a provider of the source's kind, with the
provider message id the event names (``sluice.ingress.binding``); anything else is
refused and kept as ``rejected``. Inbound events not about a message go to
``routes[address]``, else to the tenant the request speaks for.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sluice.errors import ConfigError

__all__ = ["KINDS", "IngressConfig", "IngressSource", "configured_ingress", "parse_ingress"]

KINDS = ("twilio", "sendgrid", "whatsapp", "webhook")


@dataclass(frozen=True, slots=True)
class IngressSource:
    """One ``POST /v1/ingress/{name}`` endpoint and how its senders prove who they are."""

    name: str
    kind: str
    secrets: tuple[str, ...] = ()
    public_keys: tuple[str, ...] = ()
    verify_token: str | None = None
    url: str | None = None
    tenant: str | None = None
    routes: Mapping[str, str] = field(default_factory=dict)
    #: tenant -> the secrets (auth tokens, app secrets) of that tenant's own account.
    tenant_secrets: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: tenant -> the SendGrid verification keys of that tenant's own account.
    tenant_public_keys: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def tenant_for(self, address: str | None) -> str | None:
        """The tenant an inbound event written to ``address`` belongs to."""
        if address is not None and address in self.routes:
            return self.routes[address]
        return self.tenant

    def credentials(self) -> list[tuple[str | None, tuple[str, ...]]]:
        """(tenant it speaks for, secrets) per group of credentials, the source's own
        first; ``None`` speaks for every tenant. Empty groups are left out."""
        shared = self.public_keys if self.kind == "sendgrid" else self.secrets
        own = self.tenant_public_keys if self.kind == "sendgrid" else self.tenant_secrets
        groups: list[tuple[str | None, tuple[str, ...]]] = []
        if shared:
            groups.append((self.tenant, shared))
        groups.extend((tenant, keys) for tenant, keys in sorted(own.items()) if keys)
        return groups


@dataclass(frozen=True, slots=True)
class IngressConfig:
    sources: Mapping[str, IngressSource] = field(default_factory=dict)
    #: tenant -> the URL its inbound events are delivered to (as outbound webhooks).
    inbound_urls: Mapping[str, str] = field(default_factory=dict)


def _value(text: Any, where: str, env: Mapping[str, str]) -> str:
    if not isinstance(text, str) or not text:
        raise ConfigError(f"{where} must be a non-empty string")
    if text.startswith("env:"):
        name = text[4:]
        if not env.get(name):
            raise ConfigError(f"{where} names the environment variable {name}, which is not set")
        return env[name]
    return text


def _list(value: Any, where: str, env: Mapping[str, str]) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise ConfigError(f"{where} must be a list of strings")
    return tuple(_value(v, f"{where}[{i}]", env) for i, v in enumerate(value))


_KEYS = {
    "kind",
    "secrets",
    "public_keys",
    "verify_token",
    "url",
    "tenant",
    "routes",
    "tenant_secrets",
    "tenant_public_keys",
}


def _per_tenant(value: Any, where: str, env: Mapping[str, str]) -> dict[str, tuple[str, ...]]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must map tenant names to lists of secrets")
    out: dict[str, tuple[str, ...]] = {}
    for tenant, secrets in value.items():
        if not isinstance(tenant, str) or not tenant.strip() or tenant != tenant.strip():
            raise ConfigError(f"{where}: {tenant!r} is not a tenant name")
        out[tenant] = _list(secrets, f"{where}.{tenant}", env)
        if not out[tenant]:
            raise ConfigError(f"{where}.{tenant} lists no secrets")
    return out


def _source(name: str, spec: Any, where: str, env: Mapping[str, str]) -> IngressSource:
    if not isinstance(spec, dict):
        raise ConfigError(f"{where} must be a table")
    unknown = sorted(set(spec) - _KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown} (known: {sorted(_KEYS)})")
    kind = spec.get("kind", name)
    if kind not in KINDS:
        raise ConfigError(f"{where}.kind must be one of {list(KINDS)}, not {kind!r}")
    routes = spec.get("routes", {})
    if not isinstance(routes, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v for k, v in routes.items()
    ):
        raise ConfigError(f"{where}.routes must map addresses to tenant names")
    tenant = spec.get("tenant")
    if tenant is not None and (not isinstance(tenant, str) or not tenant):
        raise ConfigError(f"{where}.tenant must be a non-empty string")
    url = spec.get("url")
    if url is not None and (not isinstance(url, str) or not url.startswith("http")):
        raise ConfigError(f"{where}.url must be the http(s) URL the provider posts to")
    verify_token = spec.get("verify_token")
    tenant_secrets = _per_tenant(spec.get("tenant_secrets"), f"{where}.tenant_secrets", env)
    tenant_keys = _per_tenant(spec.get("tenant_public_keys"), f"{where}.tenant_public_keys", env)
    if tenant is not None and (tenant_secrets or tenant_keys):
        raise ConfigError(
            f"{where}: tenant and tenant_secrets/tenant_public_keys exclude each other "
            "(tenant makes every secret of the source speak for that one tenant)"
        )
    found = IngressSource(
        name=name,
        kind=kind,
        secrets=_list(spec.get("secrets"), f"{where}.secrets", env),
        public_keys=_list(spec.get("public_keys"), f"{where}.public_keys", env),
        verify_token=(
            _value(verify_token, f"{where}.verify_token", env) if verify_token is not None else None
        ),
        url=url,
        tenant=tenant,
        routes=dict(routes),
        tenant_secrets=tenant_secrets,
        tenant_public_keys=tenant_keys,
    )
    if kind == "sendgrid" and (found.secrets or found.tenant_secrets):
        raise ConfigError(f"{where}: SendGrid signs with keys: use public_keys, not secrets")
    if kind != "sendgrid" and (found.public_keys or found.tenant_public_keys):
        raise ConfigError(f"{where}: {kind} signs with secrets: use secrets, not public_keys")
    if not found.credentials():
        what = "public_keys" if kind == "sendgrid" else "secrets"
        raise ConfigError(
            f"{where} needs {what} (or tenant_{what}) to verify signatures with"
            + (" (the Event Webhook verification key)" if kind == "sendgrid" else "")
        )
    owners: dict[str, str | None] = {}
    for owner, keys in found.credentials():
        for key in keys:
            if key in owners and owners[key] != owner:
                # One secret for two tenants: a request it signs could speak for either.
                raise ConfigError(
                    f"{where}: the same secret is listed for {owners[key] or 'every tenant'!s} "
                    f"and for {owner or 'every tenant'!s}; each secret belongs to one tenant"
                )
            owners[key] = owner
    return found


def parse_ingress(
    document: Mapping[str, Any], source: str = "sluice.toml", env: Mapping[str, str] | None = None
) -> IngressConfig:
    """Read ``[ingress.*]`` and ``[tenants.*]`` of a parsed ``sluice.toml``."""
    env = os.environ if env is None else env
    table = document.get("ingress", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: [ingress] must be a table of tables")
    sources = {
        name: _source(name, spec, f"{source}: [ingress.{name}]", env)
        for name, spec in table.items()
    }
    tenants = document.get("tenants", {})
    if not isinstance(tenants, dict):
        raise ConfigError(f"{source}: [tenants] must be a table of tables")
    urls: dict[str, str] = {}
    for tenant, spec in tenants.items():
        if not isinstance(spec, dict):
            raise ConfigError(f"{source}: [tenants.{tenant}] must be a table")
        url = spec.get("inbound_url")
        if url is None:
            continue
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ConfigError(f"{source}: [tenants.{tenant}].inbound_url must be an http(s) URL")
        urls[tenant] = url
    return IngressConfig(sources, urls)


def configured_ingress(
    env: Mapping[str, str] | None = None, config_path: str | Path | None = None
) -> IngressConfig:
    """The ingress configuration of the ``sluice.toml`` in effect (empty without one)."""
    from sluice.config import config_file

    path = config_file(env, config_path)
    if path is None:
        return IngressConfig()
    try:
        document = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_ingress(document, str(path), env)
