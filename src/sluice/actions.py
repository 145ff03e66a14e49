"""Action definitions for the ``http`` provider: one HTTP call per action type.

An *action* is a named call on a tenant's behalf (``calendar.create_event``,
``crm.create_ticket``) against an API that the tenant connected with OAuth 2.0. The
operator declares each one in ``sluice.toml``, outside the ``[sluice]`` table::

    [actions."calendar.create_event"]
    method = "POST"
    url = "https://www.googleapis.com/calendar/v3/calendars/{recipient}/events"
    scopes = ["https://www.googleapis.com/auth/calendar.events"]
    headers = { "X-Request-Source" = "sluice" }

    [actions."calendar.create_event".body]
    summary = "{payload.title}"
    attendees = "{payload.attendees}"      # the whole value: the JSON list, not its text
    description = "Booked for {tenant}"

A message with ``provider="http"`` and ``action="calendar.create_event"`` is sent as that
call. Placeholders: ``{recipient}``, ``{tenant}``, ``{message_id}`` and
``{payload.<key>}`` (a dotted path into the payload; a number indexes a list). In the URL
every value is percent-encoded, so a payload can never change the path, the query or the
host it is sent to; the scheme and host themselves take no placeholders at all, so a
tenant's bearer token only ever goes where the operator wrote. Encoding alone does not
stop a value of ``..`` (dots need no encoding), which a client or server resolves like
a directory: ``/users/{payload.user_id}/sessions/x`` with ``user_id = ".."`` would be
``DELETE /sessions/x``. So a path segment that holds a placeholder is refused
(``UnsafePathValue``) when it would be empty, ``.`` or ``..``, also once
percent-decoded any number of times (``%2e%2e``), or when its decoded form climbs with
a ``.``/``..`` between slashes (for a server that decodes ``%2F`` before it resolves).
In a table or array body, a string that is exactly one placeholder becomes the value
itself (a list stays a list);
placeholders inside longer strings are replaced by their text. A string body is sent as
it is rendered (``text/plain`` unless ``headers`` say otherwise): JSON written as a
string is not escaped, so prefer tables. ``scopes`` are the scopes the action needs: a
message for it is held before any call while its tenant's connection lacks one of them.

Each ``{...}`` that looks like a placeholder but is none of these is refused when the
file is loaded, so a typo is a start-up error, not a stream of bad requests. A payload
without a key the action needs fails at send time (``BAD_REQUEST``, naming the key).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, time
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, unquote

from sluice.errors import ConfigError

__all__ = [
    "METHODS",
    "ActionSpec",
    "MissingValue",
    "Renderable",
    "RenderedAction",
    "UnsafePathValue",
    "configured_actions",
    "load_actions",
    "parse_actions",
]


class Renderable(Protocol):
    """What an action is rendered from: a message, new or stored (``sluice.model``'s
    ``NewMessage`` and ``Message``). Named by its fields, not imported, because
    ``NewMessage.validate`` renders actions through ``sluice.addressing``, below the model."""

    @property
    def id(self) -> str:
        """The message id, ``{message_id}``."""
        ...

    @property
    def tenant(self) -> str:
        """``{tenant}``."""
        ...

    @property
    def recipient(self) -> str:
        """``{recipient}``."""
        ...

    @property
    def payload(self) -> Mapping[str, Any]:
        """``{payload.<key>}``."""
        ...


#: The HTTP methods an action may use.
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
_KEYS = frozenset({"method", "url", "body", "scopes", "headers"})
#: Headers Sluice sets itself; an action may not override them.
_RESERVED_HEADERS = frozenset({"authorization", "idempotency-key", "host", "content-length"})

#: A real placeholder; group 1 is its name.
_PLACEHOLDER = re.compile(r"\{(recipient|tenant|message_id|payload(?:\.[^{}.\s]+)+)\}")
#: Anything a person would read as a placeholder (``{recipent}``, ``{payload}``); JSON
#: written in a string (``{"a": 1}``) does not match because it starts with a quote.
_LOOKS_LIKE = re.compile(r"\{([A-Za-z_][^{}\s\"']*)\}")
_SCHEME_AND_HOST = re.compile(r"^(https?)://([^/?#]*)", re.IGNORECASE)
#: Where a URL's path ends: the query or the fragment.
_PATH_END = re.compile(r"[?#]")
#: What a path segment must never become, decoded: "here", "up one", or nothing.
_CLIMBING = frozenset({"", ".", ".."})


class MissingValue(LookupError):
    """A placeholder names a payload key the message does not have."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


class UnsafePathValue(ValueError):
    """A placeholder's value would make a URL path segment empty, ``.`` or ``..``: the
    request would go to another path than the one configured. ``placeholder`` is its
    name (``payload.user_id``)."""

    def __init__(self, placeholder: str, value: str, segment: str) -> None:
        super().__init__(
            f"{{{placeholder}}} = {value[:100]!r} would make the URL path segment "
            f"{segment[:100]!r}, which moves the request to another path: a value in the "
            "path must not be empty, '.' or '..' (nor encode them, as %2e%2e)"
        )
        self.placeholder = placeholder
        self.value = value


@dataclass(frozen=True, slots=True)
class RenderedAction:
    """One action made concrete for one message: what goes on the wire."""

    method: str
    url: str
    headers: dict[str, str]
    #: ``None`` for no body; ``bytes`` ready to send otherwise.
    content: bytes | None


@dataclass(frozen=True, slots=True)
class ActionSpec:
    """An HTTP call on a tenant's behalf, as configured under ``[actions."<name>"]``.

    Construction checks everything ``load_actions`` checks and raises ``ConfigError``
    naming the action and the key.
    """

    name: str
    method: str
    url: str
    body: Any = None
    scopes: tuple[str, ...] = ()
    headers: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"action {self.name!r}"
        if not isinstance(self.name, str) or not self.name.strip() or len(self.name) > 128:
            raise ConfigError(f"{where}: the name must be 1 to 128 characters")
        if not isinstance(self.method, str) or self.method.upper() not in METHODS:
            raise ConfigError(
                f"{where}: method = {self.method!r} is not one of {', '.join(sorted(METHODS))}"
            )
        object.__setattr__(self, "method", self.method.upper())
        _check_url(where, self.url)
        if self.body is not None:
            if self.method == "GET":
                raise ConfigError(f"{where}: body is not allowed with method = 'GET'")
            _check_body(f"{where}: body", self.body)
        scopes = self.scopes
        if isinstance(scopes, str) or not isinstance(scopes, list | tuple):
            raise ConfigError(f"{where}: scopes must be a list of strings")
        if not all(isinstance(s, str) and s.strip() and len(s) <= 128 for s in scopes):
            raise ConfigError(f"{where}: scopes must be non-empty strings of at most 128 chars")
        object.__setattr__(self, "scopes", tuple(scopes))
        if not isinstance(self.headers, Mapping):
            raise ConfigError(f"{where}: headers must be a table of strings")
        for key, value in self.headers.items():
            if not isinstance(key, str) or not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", key):
                raise ConfigError(f"{where}: headers: {key!r} is not a valid header name")
            if key.lower() in _RESERVED_HEADERS:
                raise ConfigError(
                    f"{where}: headers.{key} is set by Sluice (the connection's bearer token, "
                    "the message id) and cannot be configured"
                )
            if not isinstance(value, str) or "\r" in value or "\n" in value:
                raise ConfigError(f"{where}: headers.{key} must be a single-line string")
            _check_placeholders(f"{where}: headers.{key}", value)
        object.__setattr__(self, "headers", dict(self.headers))

    def render(self, message: Renderable) -> RenderedAction:
        """The request for ``message``: ``MissingValue`` if its payload lacks a key,
        ``UnsafePathValue`` if a value would move the request to another path."""
        values = _Values(message.recipient, message.tenant, message.id, message.payload)
        url = _render_url(self.url, values)
        headers = {k: _substitute(v, values) for k, v in self.headers.items()}
        content: bytes | None = None
        if isinstance(self.body, str):
            content = _substitute(self.body, values).encode()
            if not any(k.lower() == "content-type" for k in headers):
                headers["content-type"] = "text/plain; charset=utf-8"
        elif self.body is not None:
            document = _render_value(self.body, values)
            content = json.dumps(
                document, separators=(",", ":"), ensure_ascii=False, allow_nan=False
            ).encode()
            if not any(k.lower() == "content-type" for k in headers):
                headers["content-type"] = "application/json"
        return RenderedAction(self.method, url, headers, content)


def parse_actions(table: Any, source: str = "sluice.toml") -> dict[str, ActionSpec]:
    """``ActionSpec`` by name from the ``[actions]`` table of a parsed TOML document."""
    if table is None:
        return {}
    if not isinstance(table, Mapping):
        raise ConfigError(f"{source}: [actions] must be a table of action tables")
    actions: dict[str, ActionSpec] = {}
    for name, entry in table.items():
        where = f"{source}: action {name!r}"
        if not isinstance(entry, Mapping):
            raise ConfigError(f'{where} must be a table: [actions."{name}"]')
        unknown = sorted(set(entry) - _KEYS)
        if unknown:
            hint = ""
            if all(isinstance(entry[k], Mapping) for k in unknown):
                # [actions.calendar.create_event] nests; the name needs quotes.
                hint = f' (a dotted action name needs quotes: [actions."{name}.{unknown[0]}"])'
            raise ConfigError(f"{where}: unknown key {unknown[0]!r}{hint}")
        if "url" not in entry:
            raise ConfigError(f"{where}: url is required")
        if "method" not in entry:
            raise ConfigError(f"{where}: method is required")
        try:
            actions[name] = ActionSpec(
                name=name,
                method=entry["method"],
                url=entry["url"],
                body=entry.get("body"),
                scopes=entry.get("scopes", ()),
                headers=entry.get("headers", {}),
            )
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    return actions


def load_actions(path: str | Path) -> dict[str, ActionSpec]:
    """The actions declared in the TOML file at ``path`` (none if it declares none).

    Raises ``ConfigError`` naming the file, the action and the key on bad input.
    """
    import tomllib

    path = Path(path)
    try:
        document = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_actions(document.get("actions"), str(path))


def configured_actions(
    env: Mapping[str, str] | None = None, config_path: str | Path | None = None
) -> dict[str, ActionSpec]:
    """The actions of the ``sluice.toml`` that ``load_settings`` reads (none without one)."""
    from sluice.config import config_file

    path = config_file(env, config_path)
    return {} if path is None else load_actions(path)


# -- loading checks -----------------------------------------------------------------


def _check_url(where: str, url: Any) -> None:
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(f"{where}: url must be a non-empty string")
    match = _SCHEME_AND_HOST.match(url)
    if match is None or not match.group(2):
        raise ConfigError(f"{where}: url = {url!r} is not an http:// or https:// URL")
    if "{" in match.group(2) or "}" in match.group(2):
        # The bearer token goes wherever the URL points: the payload must not choose.
        raise ConfigError(f"{where}: url: the host cannot contain placeholders")
    _check_placeholders(f"{where}: url", url)


def _check_placeholders(where: str, text: str) -> None:
    for match in _LOOKS_LIKE.finditer(text):
        if _PLACEHOLDER.fullmatch(match.group(0)) is None:
            raise ConfigError(
                f"{where}: unknown placeholder {match.group(0)} (use {{recipient}}, {{tenant}}, "
                "{message_id} or {payload.<key>})"
            )


def _check_body(where: str, value: Any) -> None:
    if isinstance(value, str):
        _check_placeholders(where, value)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _check_body(f"{where}.{key}", item)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_body(f"{where}[{i}]", item)
    elif isinstance(value, date | time):
        raise ConfigError(f"{where}: TOML dates and times are not JSON; write them as strings")
    elif not isinstance(value, bool | int | float):
        raise ConfigError(f"{where}: {type(value).__name__} is not a JSON value")


# -- rendering ----------------------------------------------------------------------


class _Values:
    def __init__(self, recipient: str, tenant: str, message_id: str, payload: Any) -> None:
        self._fixed = {"recipient": recipient, "tenant": tenant, "message_id": message_id}
        self._payload = payload

    def get(self, name: str) -> Any:
        if name in self._fixed:
            return self._fixed[name]
        value = self._payload
        for part in name.split(".")[1:]:
            if isinstance(value, Mapping) and part in value:
                value = value[part]
            elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
                value = value[int(part)]
            else:
                raise MissingValue(name)
        return value


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _render_url(template: str, values: _Values) -> str:
    """``template`` with every placeholder percent-encoded; ``UnsafePathValue`` when a
    path segment holding one would climb (see the module docstring)."""

    def encoded(match: re.Match[str]) -> str:
        return quote(_text(values.get(match.group(1))), safe="")

    end = _PATH_END.search(template)
    cut = end.start() if end is not None else len(template)
    segments = []
    # The scheme and host hold no placeholders (checked when loaded), and an encoded
    # value holds no '/', so template and rendered segments pair up one to one.
    for segment in template[:cut].split("/"):
        first = _PLACEHOLDER.search(segment)
        rendered = _PLACEHOLDER.sub(encoded, segment)
        if first is not None:
            decoded = _fully_decoded(rendered)
            if decoded in _CLIMBING or any(p in (".", "..") for p in re.split(r"[/\\]", decoded)):
                raise UnsafePathValue(first.group(1), _text(values.get(first.group(1))), decoded)
        segments.append(rendered)
    return "/".join(segments) + _PLACEHOLDER.sub(encoded, template[cut:])


def _fully_decoded(text: str) -> str:
    """``text`` percent-decoded until nothing changes: what the most credulous server
    along the way could end up seeing."""
    while True:
        decoded = unquote(text)
        if decoded == text:
            return text
        text = decoded  # each round is shorter, so this ends


def _substitute(template: str, values: _Values) -> str:
    return _PLACEHOLDER.sub(lambda m: _text(values.get(m.group(1))), template)


def _render_value(template: Any, values: _Values) -> Any:
    if isinstance(template, str):
        whole = _PLACEHOLDER.fullmatch(template)
        if whole is not None:
            return values.get(whole.group(1))
        return _substitute(template, values)
    if isinstance(template, Mapping):
        return {key: _render_value(item, values) for key, item in template.items()}
    if isinstance(template, list):
        return [_render_value(item, values) for item in template]
    return template
