"""Where a message may go: the checks of ``NewMessage.validate`` that need configuration.

A message is refused at enqueue, before anything is stored, when it could only ever
end in the dead-letter queue:

- its ``provider`` is neither a built-in provider (``BUILTIN_PROVIDERS``: the catalog of
  provider names and media is kept here, below the adapters, and re-exported by
  ``sluice.providers``) nor an alias declared under ``[providers."name"]`` in
  ``sluice.toml``;
- its ``channel`` names a medium (``sms``, ``email``, ``whatsapp``, ``webhook``) the
  provider does not deliver (SendGrid sends only email). Any other channel name is a
  label of the operator's own (``otp``), sent by the provider's first medium;
- its ``recipient`` is not of the form its medium needs (the channel's, or for a
  channel of the operator's own the provider's; none for ``null`` and ``http`` there):

  ``sms``       a phone number in E.164 form: ``+``, then 8 to 15 digits, the first
                not 0, and nothing else (``+14155550100``);
  ``whatsapp``  the same; through Twilio also with Twilio's ``whatsapp:`` prefix
                (``whatsapp:+14155550100``), through Meta's Cloud API also the digits
                without ``+`` (``14155550100``, the ``wa_id`` its webhooks carry);
  ``email``     one address: a local part, one ``@``, a domain with a dot; no spaces
                or control characters; at most 254 characters (64 before the ``@``);
  ``webhook``   (and any message for the ``webhook`` provider) an ``http://`` or
                ``https://`` URL whose host, as written, is not refused by the SSRF
                guard (``sluice.netguard.check_url_syntax``): no loopback unless
                ``SLUICE_ALLOW_LOOPBACK_TARGETS`` is set, no private or carrier-grade
                NAT address outside the networks the operator lists in
                ``SLUICE_ALLOW_PRIVATE_TARGETS``, never a link-local or metadata
                address, in any spelling.

  Phone numbers are refused with spaces, hyphens or parentheses although some APIs
  tolerate them: the recipient is also the key of per-recipient caps and receipts, and
  ``+1 415-555-0100`` must not count apart from ``+14155550100``. No DNS is resolved
  here: a host name that resolves to a refused address is the send-time guard's to
  refuse, at every send;
- it is for the ``http`` provider, the ``sluice.toml`` in effect declares actions, and
  its ``action`` is not one of them; or rendering that action for it fails: a payload
  key the action uses is missing, or a value would move the request to another path
  (``sluice.actions.UnsafePathValue``: ``..`` in ``/users/{payload.user_id}/...``).
  Without a ``sluice.toml`` the actions are not known here, and the worker checks the
  same at send time (``BAD_REQUEST``, nothing sent).

What enqueue knows comes from the configuration in effect, read the way every other
setting is read: the ``sluice.toml`` named by ``SLUICE_CONFIG`` (else ``./sluice.toml``
when it exists), parsed again only when the file changes. An application enqueuing
through the Python API must therefore see the same ``sluice.toml`` as its workers to
use provider aliases; without one, only the built-in providers are accepted. Loopback
and private webhook targets follow ``SLUICE_ALLOW_LOOPBACK_TARGETS`` and
``SLUICE_ALLOW_PRIVATE_TARGETS`` from the same places (environment, then ``[sluice]``
of ``sluice.toml``), or the settings of the store or API doing the enqueue, exactly as
the worker's guard does at send time (a list that cannot be read admits nothing, as a
worker would refuse to start on it).

A ``sluice.toml`` that cannot be read (not TOML, a malformed ``[providers]`` or
``[actions]`` entry) does not stop every enqueue: enqueue runs inside the
application's own transaction. Only a message that needs what could not be read (a
provider that is not built-in, an ``http`` action) is refused, with a ``ConfigError``
naming the file and the problem; the workers refuse to start on the same file.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

from sluice.actions import Renderable
from sluice.errors import ConfigError, ValidationError
from sluice.netguard import NO_PRIVATE_TARGETS, PrivateTargets, private_targets

if TYPE_CHECKING:
    from sluice.actions import ActionSpec
    from sluice.config import ConfigLookup, Settings

__all__ = [
    "ALIAS_KINDS",
    "BUILTIN_PROVIDERS",
    "MEDIA",
    "Addressed",
    "Addressing",
    "addressing_in_effect",
    "alias_specs",
    "provider_kinds",
]


class Addressed(Renderable, Protocol):
    """What ``Addressing.check`` reads of a message (a ``sluice.model.NewMessage``, which
    calls it: named by its fields so that this module need not import the model)."""

    @property
    def provider(self) -> str:
        """The provider (or alias) named."""
        ...

    @property
    def channel(self) -> str:
        """A medium (``MEDIA``) or a channel name of the operator's own."""
        ...

    @property
    def action(self) -> str:
        """The action (for ``http``, one declared in ``sluice.toml``)."""
        ...


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
        # Tenants' operational events (sluice.store.tenant_events): a webhook signed
        # with the tenant's own sluice_events connection.
        "sluice_events": ("webhook",),
        "twilio": ("sms", "whatsapp"),
        "webhook": ("webhook",),
        "whatsapp": ("whatsapp",),
    }
)


#: Kinds a ``[providers."name"]`` entry can take, and the base-URL setting each defaults to.
ALIAS_KINDS = {
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
    for name, spec in alias_specs(document, source).items():
        kinds[name] = spec["kind"]
    return kinds


def alias_specs(document: Mapping[str, Any] | None, source: str) -> dict[str, dict[str, Any]]:
    """The ``[providers]`` entries of ``document``, checked: name -> its table."""
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
        if kind not in ALIAS_KINDS:
            raise ConfigError(f"{where}.kind must be one of {sorted(ALIAS_KINDS)}, not {kind!r}")
        base_url = spec.get("base_url")
        if base_url is not None and (
            not isinstance(base_url, str) or not base_url.startswith(("http://", "https://"))
        ):
            raise ConfigError(f"{where}.base_url must be an http(s) URL")
        out[name] = dict(spec)
    return out


@dataclass(frozen=True, slots=True)
class Addressing:
    """What enqueue accepts as a message's destination.

    ``providers`` maps every accepted provider name to the built-in kind it stands for
    (a built-in names itself); ``source`` is where the aliases came from, for errors.
    ``allow_loopback`` admits loopback webhook targets, as
    ``SLUICE_ALLOW_LOOPBACK_TARGETS`` does at send time, and ``private`` the operator's
    private networks, as ``SLUICE_ALLOW_PRIVATE_TARGETS`` does. ``actions`` are the declared
    http actions (``None``: not known here). ``problems`` says why the aliases or the
    actions could not be read, if they could not.
    """

    providers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType(_builtin_kinds()))
    source: str = "sluice.toml"
    allow_loopback: bool = False
    actions: Mapping[str, ActionSpec] | None = None
    private: PrivateTargets = NO_PRIVATE_TARGETS
    problems: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_document(
        cls,
        document: Mapping[str, object] | None,
        source: str = "sluice.toml",
        problem: str | None = None,
    ) -> Addressing:
        """The rules of a parsed ``sluice.toml`` (``None``: no file, built-ins only;
        with ``problem``: a file that could not be read, and why)."""
        from sluice.actions import parse_actions

        problems = {"providers": problem, "actions": problem} if problem is not None else {}
        kinds = _builtin_kinds()
        actions = None
        if document is not None:
            try:
                kinds = provider_kinds(document, source)
            except ConfigError as exc:
                problems["providers"] = str(exc)
            try:
                actions = MappingProxyType(parse_actions(document.get("actions"), source))
            except ConfigError as exc:
                problems["actions"] = str(exc)
        return cls(MappingProxyType(kinds), source, actions=actions, problems=problems)

    def check(self, message: Addressed, where: str = "") -> None:
        """Raise ``ValidationError`` naming the first field of ``message`` (prefixed with
        ``where``) that cannot reach a destination."""
        kind = self.kind_of(message.provider, where + "provider")
        media = BUILTIN_PROVIDERS[kind]
        channel = message.channel
        if media is not None and channel in MEDIA and channel not in media:
            what = message.provider if kind == message.provider else f"{message.provider} ({kind})"
            raise ValidationError(
                where + "channel",
                f"{channel!r} is not a channel provider {what} sends on: use "
                f"{_either(list(media))}, or a channel name of your own (not "
                f"{_either(sorted(MEDIA - set(media)))}), sent as {media[0]}",
            )
        medium = channel if channel in MEDIA else (media[0] if media is not None else None)
        problem = self._recipient_problem(message.recipient, medium, kind)
        if problem is not None:
            raise ValidationError(where + "recipient", problem)
        if kind == "http":
            self._check_action(message, where)

    def _check_action(self, message: Addressed, where: str) -> None:
        """The declared action of ``message`` renders for it, to the configured path."""
        from sluice.actions import MissingValue, UnsafePathValue

        if "actions" in self.problems:
            raise ConfigError(
                f"cannot check http action {message.action!r}: {self.problems['actions']}"
            )
        if self.actions is None:
            return  # no sluice.toml here: the worker checks it when it sends
        spec = self.actions.get(message.action)
        if spec is None:
            declared = ", ".join(sorted(self.actions)) or "none"
            raise ValidationError(
                where + "action",
                f"{message.action!r} is not an http action declared in {self.source} "
                f'(declared: {declared}); declare it as [actions."{message.action}"]',
            )
        try:
            rendered = spec.render(message)
        except MissingValue as exc:
            raise ValidationError(
                where + "payload",
                f"lacks {exc.path.removeprefix('payload.')!r}, which action {spec.name} "
                f"uses as {{{exc.path}}}",
            ) from None
        except UnsafePathValue as exc:
            raise ValidationError(where + exc.placeholder, f"action {spec.name}: {exc}") from None
        except (TypeError, ValueError) as exc:
            raise ValidationError(where + "payload", f"action {spec.name}: {exc}") from None
        for name, value in rendered.headers.items():
            if "\r" in value or "\n" in value:
                raise ValidationError(
                    where + "payload", f"would make header {name} of action {spec.name} span lines"
                )

    def _recipient_problem(self, recipient: str, medium: str | None, kind: str) -> str | None:
        """Why ``recipient`` cannot be reached by ``medium`` through a ``kind`` provider
        (``medium`` None: a channel of the operator's own for ``null`` or ``http``,
        whose recipient is whatever the caller says)."""
        if medium == "webhook":
            from sluice.netguard import check_url_syntax

            problem = check_url_syntax(
                recipient, allow_loopback=self.allow_loopback, private=self.private
            )
            if problem is None:
                return None
            return (
                f"{recipient[:200]!r} is refused: {problem}; a webhook's recipient is the URL "
                "it is POSTed to: http:// or "
                "https:// and a public host (e.g. https://hooks.example.com/orders)"
            )
        if medium == "sms":
            return None if _E164.fullmatch(recipient) else f"{recipient!r} {_NOT_E164}"
        if medium == "whatsapp":
            if _E164.fullmatch(recipient):
                return None
            if kind == "twilio":
                if _E164.fullmatch(recipient.removeprefix(_TWILIO_WHATSAPP)):
                    return None
                return (
                    f"{recipient!r} {_NOT_E164}; through Twilio also with Twilio's "
                    "'whatsapp:' prefix (whatsapp:+14155550100)"
                )
            if kind == "whatsapp":
                if _WA_ID.fullmatch(recipient):
                    return None
                return (
                    f"{recipient!r} {_NOT_E164}; Meta's Cloud API also takes the same "
                    "digits without the '+' (14155550100, a WhatsApp ID)"
                )
            return f"{recipient!r} {_NOT_E164}"
        if medium == "email":
            problem = _email_problem(recipient)
            if problem is None:
                return None
            return (
                f"{recipient!r} is not an email address: {problem} (expected one address "
                "like ann@example.com: a name, one @, a domain with a dot; no spaces; at "
                "most 254 characters)"
            )
        return None

    def kind_of(self, provider: str, field: str = "provider") -> str:
        """The built-in kind ``provider`` stands for; ``ValidationError`` on ``field``
        naming what is accepted when it is no provider at all."""
        kind = self.providers.get(provider)
        if kind is None and "providers" in self.problems:
            why = self.problems["providers"]
            raise ConfigError(f"cannot tell whether {provider!r} is a provider alias: {why}")
        if kind is None:
            raise ValidationError(field, self._unknown(provider))
        return kind

    def _unknown(self, name: str) -> str:
        aliases = sorted(set(self.providers) - set(BUILTIN_PROVIDERS))
        close = difflib.get_close_matches(name, list(self.providers), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return (
            f"{name!r} is not a provider{hint}: use a built-in provider "
            f"({', '.join(sorted(BUILTIN_PROVIDERS))}) or an alias declared as "
            f'[providers."name"] in {self.source} '
            f"({'declared: ' + ', '.join(aliases) if aliases else 'none declared'})"
        )


#: E.164: a '+', then the country code and the national number, at most 15 digits in
#: all (the ITU's limit) and at least 8 (shorter ones are short codes or typos).
_E164 = re.compile(r"\+[1-9][0-9]{7,14}")
#: The same digits without the '+': a WhatsApp ID (``wa_id``), which Meta's API takes.
_WA_ID = re.compile(r"[1-9][0-9]{7,14}")
_TWILIO_WHATSAPP = "whatsapp:"
_NOT_E164 = (
    "is not a phone number in E.164 form: '+', then the country code and number, 8 to 15 "
    "digits in all, the first not 0, without spaces, hyphens or parentheses "
    "(e.g. +14155550100)"
)
#: Characters no domain name has, but a pasted "Ann <ann@x.com>, ..." does.
_NOT_IN_DOMAIN = frozenset('()<>[]:;,\\"')


def _email_problem(address: str) -> str | None:
    """What makes ``address`` no email address, or ``None``: a syntactic check, not
    RFC 5322 (the provider and the receiving server have the last word)."""
    if len(address) > 254:
        return "it is longer than 254 characters"
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in address):
        return "it contains spaces or control characters"
    if address.count("@") != 1:
        return "it must contain exactly one @"
    local, _, domain = address.partition("@")
    if not local:
        return "nothing comes before the @"
    if len(local) > 64:
        return "the part before the @ is longer than 64 characters"
    labels = domain.split(".")
    if len(labels) < 2 or not all(labels):
        return f"the domain {domain!r} is not a name with a dot (like example.com)"
    if _NOT_IN_DOMAIN.intersection(domain):
        return f"the domain {domain!r} has characters no domain name has"
    return None


def _builtin_kinds() -> dict[str, str]:
    return {name: name for name in BUILTIN_PROVIDERS}


def _either(options: list[str]) -> str:
    quoted = [repr(o) for o in options]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


#: config path -> (its document, the rules made from it); see ``addressing_in_effect``.
_MADE: dict[Path | None, tuple[object, Addressing]] = {}
#: The last answer of ``addressing_in_effect`` without settings, with what it came from:
#: (path, document, the two settings' environment values) -> the rules.
_LAST: tuple[tuple[object, ...], Addressing] | None = None
_ENV_NAMES = ("SLUICE_ALLOW_LOOPBACK_TARGETS", "SLUICE_ALLOW_PRIVATE_TARGETS")


def addressing_in_effect(
    settings: Settings | None = None, lookup: ConfigLookup | None = None
) -> Addressing:
    """The rules of the configuration in effect: the ``sluice.toml`` that
    ``sluice.config.look_up_config`` finds now (or ``lookup``, what it found a moment
    ago), re-read when it changes.

    ``settings`` are those of the process enqueuing (a store's, the HTTP API's): they
    say whether loopback targets are allowed. Without them the environment and
    ``sluice.toml`` say it, as ``load_settings`` would read it.
    """
    global _LAST
    from sluice.config import load_setting, look_up_config, setting_in

    if lookup is None:
        lookup = look_up_config()
    if isinstance(lookup, ConfigError):  # named but missing, or not TOML: see the docstring
        path, document = None, None
        rules = Addressing.from_document(None, problem=str(lookup))
    else:
        path, document = lookup
        made = _MADE.get(path)
        # config_document hands out the same object until the file changes.
        if made is None or made[0] is not document:
            rules = Addressing.from_document(document, str(path) if path else "sluice.toml")
            made = _MADE[path] = (document, rules)
        rules = made[1]
    key: tuple[object, ...] | None = None
    if settings is not None:
        allow = settings.allow_loopback_targets
        private = settings.private_targets
    else:
        # The same file and environment give the same answer, and an enqueue asks on
        # every call: the last answer is kept (not for a file that cannot be read).
        found = not isinstance(lookup, ConfigError)
        key = (path, document, *map(os.environ.get, _ENV_NAMES)) if found else None
        last = _LAST
        if key is not None and last is not None and _same(last[0], key):
            return last[1]

        def setting(name: str) -> Any:
            # The file found above, unless looking for it failed (then as load_setting
            # reads it: the environment still wins over a file that cannot be read).
            return setting_in(name, path) if found else load_setting(name)

        try:
            allow = bool(setting("allow_loopback_targets"))
        except ConfigError:
            allow = False  # unreadable: refuse loopback, as a worker that started would
        try:
            private = private_targets(tuple(setting("allow_private_targets")))
        except ConfigError:
            private = NO_PRIVATE_TARGETS  # likewise
    if rules.allow_loopback != allow or rules.private != private:
        rules = dataclasses.replace(rules, allow_loopback=allow, private=private)
    if settings is None and key is not None:
        _LAST = (key, rules)
    return rules


def _same(a: tuple[object, ...], b: tuple[object, ...]) -> bool:
    """The same file (by path), the same parse of it (by identity), the same values."""
    return a[0] == b[0] and a[1] is b[1] and a[2:] == b[2:]
