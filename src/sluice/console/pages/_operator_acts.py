"""What the operator pages (controls, limits, connections) share: a form's fields read
with refusals that name the field, an act done through the two-person rule as the
signed-in person, and the outcome the page then shows.

A form is read by hand rather than by FastAPI's ``Form`` parameters: a bad value must
come back as a sentence on the page, never as a JSON 422.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import Depends
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request

from sluice.console.sessions import Viewer
from sluice.console.web import ConsoleError
from sluice.errors import ConfigError, Conflict, NotFound, ValidationError
from sluice.flow.controls import OPERATOR_TENANT
from sluice.ops.requests import Filed, perform
from sluice.store.base import MessageFilter, Store

__all__ = [
    "MAX_NAME",
    "MAX_REASON",
    "Fields",
    "Outcome",
    "Submitted",
    "act",
    "check_tenant_known",
    "operator",
    "refused",
]

#: As the HTTP API takes them: a reason of at most 1,000 characters, names of at most 128.
MAX_REASON = 1000
MAX_NAME = 128
#: A refused form is filled again with what was typed, up to this many characters.
MAX_ECHO = 2000
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


class Fields:
    """The fields of one submitted form, each read with the checks its kind needs."""

    def __init__(self, form: FormData) -> None:
        self._form = form

    @classmethod
    async def of(cls, request: Request) -> Fields:
        """The request's form. A URL-encoded body is decoded here, keeping bytes that are
        not UTF-8 as lone surrogates (``surrogateescape``) so that ``text`` refuses them
        by name; Starlette's parser would turn them into U+FFFD and store that.

        Used as a dependency (``Submitted``) declared before ``Acting``: reading the body
        first keeps it for the CSRF check's ``request.form()`` too."""
        kind = request.headers.get("content-type", "")
        if not kind.startswith("application/x-www-form-urlencoded"):
            return cls(await request.form())
        body = (await request.body()).decode("latin-1")
        pairs = parse_qsl(body, keep_blank_values=True, encoding="utf-8", errors="surrogateescape")
        items: list[tuple[str, str | UploadFile]] = list(pairs)
        return cls(FormData(items))

    def text(self, name: str, *, max_len: int, required: bool = False) -> str:
        """The field as text ('' when left empty); ``ValidationError`` naming it when it
        is too long, holds a NUL or half a surrogate pair, or is required and empty."""
        raw = self._form.get(name)
        value = raw if isinstance(raw, str) else ""
        if "\x00" in value:
            raise ValidationError(name, "must not contain NUL characters")
        if _LONE_SURROGATE.search(value):
            raise ValidationError(name, "must be valid Unicode (it has a lone surrogate)")
        if len(value) > max_len:
            raise ValidationError(name, f"is {len(value):,} characters; at most {max_len:,}")
        if required and not value.strip():
            raise ValidationError(name, "is required")
        return value

    def name(self, name: str) -> str:
        """A tenant, channel, provider or action ('' for any), matched exactly: a name
        with spaces around it would be a scope of its own, so it is refused."""
        value = self.text(name, max_len=MAX_NAME)
        if value != value.strip():
            raise ValidationError(name, f"{value!r} must not start or end with spaces")
        return value

    def reason(self) -> str:
        """Why: required on every act, and written to the audit log."""
        return self.text("reason", max_len=MAX_REASON, required=True).strip()

    def number(self, name: str, *, integer: bool = False) -> float | int | None:
        """A positive finite number, or None when the field is empty."""
        raw = self.text(name, max_len=40).strip()
        if not raw:
            return None
        try:
            value: float | int = int(raw) if integer else float(raw)
        except ValueError:
            kind = "a whole number" if integer else "a number"
            raise ValidationError(name, f"{raw!r} is not {kind}") from None
        if not math.isfinite(value) or value <= 0:
            raise ValidationError(name, f"{raw!r} must be a positive, finite number")
        return value

    def echo(self, *names: str) -> dict[str, str]:
        """The fields as typed, made safe to show again in the form (no NUL, no half
        surrogate, at most ``MAX_ECHO`` characters) after a refusal."""
        out = {}
        for name in names:
            raw = self._form.get(name)
            value = raw if isinstance(raw, str) else ""
            value = value.encode("utf-8", "replace").decode("utf-8").replace("\x00", "")
            out[name] = value[:MAX_ECHO]
        return out

    def checked(self, name: str) -> bool:
        return self._form.get(name) in ("on", "true", "1")


#: An act's form, read before the CSRF check (declare it before ``Acting``).
Submitted = Annotated[Fields, Depends(Fields.of)]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an act did, as the page says it: a notice, or an error and its status."""

    notice: str | None = None
    error: str | None = None
    status: int = 200
    #: The act was filed for a second operator (the two-person rule), not done.
    filed: bool = False


def refused(exc: Exception) -> Outcome:
    """The page's words for an error ``sluice.ops`` raised; nothing was changed."""
    status = 404 if isinstance(exc, NotFound) else 409 if isinstance(exc, Conflict) else 400
    said = str(exc).encode("utf-8", "replace").decode("utf-8")[:MAX_ECHO]
    return Outcome(error=f"Nothing was changed. {said}", status=status)


async def act(
    request: Request,
    viewer: Viewer,
    name: str,
    args: Mapping[str, Any],
    reason: str,
    done: Callable[[Any], Outcome],
) -> Outcome:
    """Do the act ``name`` with ``args`` through the two-person rule, as the viewer;
    ``done`` words what it returned. A refusal from ``sluice.ops`` becomes an error
    saying that nothing was changed."""
    state = request.app.state
    try:
        result = await perform(
            state.store, state.settings, name, args,
            actor=viewer.actor, reason=reason, clock=state.clock,
        )  # fmt: skip
        if isinstance(result, Filed):
            return Outcome(notice=_filed(result), filed=True)
        return done(result)
    except (ValidationError, NotFound, Conflict, ConfigError) as exc:
        return refused(exc)


def _filed(filed: Filed) -> str:
    r = filed.request
    return (
        f"Filed as request {r.id}: {r.act} waits for a second operator (rule "
        f"{', '.join(filed.rules)}); it expires at {r.expires_at:%Y-%m-%d %H:%M} UTC."
    )


async def check_tenant_known(store: Store, tenant: str) -> None:
    """A tenant Sluice has seen: a message, a connection, a key, a control or a limit.
    Anything else is most likely a typo, and a control or limit on it would leave the
    real tenant as it was; ``ValidationError`` says so."""
    if not tenant or tenant == OPERATOR_TENANT:
        return
    if await store.message_list(MessageFilter(tenant=tenant), None, None, 1):
        return
    if await store.connection_list(tenant):
        return
    if any(k.tenant == tenant for k in await store.api_key_list()):
        return
    if any(c.scope.tenant == tenant for c in await store.control_list()):
        return
    if any(r.tenant == tenant for r in await store.limit_list()):
        return
    raise ValidationError(
        "tenant",
        f"Sluice knows no tenant {tenant!r} (no message, connection, key, control or "
        "limit names it); check the spelling",
    )


def operator(viewer: Viewer) -> Viewer:
    """Acts on operator pages: a tenant's session is refused as on every operator page."""
    if not viewer.operator:
        raise ConsoleError(403, "This page is for operators; your key is a tenant's.")
    return viewer
