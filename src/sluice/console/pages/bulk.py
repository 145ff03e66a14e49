"""What the dead-letter and held pages share: reading their filters and forms strictly,
and the preview-then-act of a bulk move.

A bulk act in the console is two steps. The preview is the act's dry run (through
``sluice.ops.requests.perform``, as ``sluice dlq retry --dry-run`` does): exactly which
messages, oldest first, at most ``limit``. The act then names those ids and nothing
else, so a message that died or was held after the preview is never touched; ids that
are no longer in the state the preview saw are refused with their ids, and nothing moves.
The act goes through ``perform`` too, so the two-person rule of ``[ops] two_person``
may file it as a request instead.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fastapi import Request

from sluice.console.sessions import Viewer
from sluice.errors import Conflict, NotFound, SluiceError, ValidationError
from sluice.model import Message, Status
from sluice.ops.actions import DlqAction, parse_since
from sluice.ops.requests import Filed, message_args, perform
from sluice.store.base import MessageFilter

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "MAX_REASON",
    "Outcome",
    "act",
    "age_text",
    "form_filter",
    "messages_of",
    "preview",
    "previewed_again",
    "raw_fields",
    "read_ids",
    "read_limit",
    "read_reason",
    "read_since",
    "read_text",
    "status_of",
    "time_text",
]

#: The most messages one console act moves (the CLI and the API take more at once).
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
#: As the API's operator bodies allow.
MAX_REASON = 1000
MAX_NAME = 128
#: NUL, lone surrogates, and U+FFFD: what a form decodes bytes that are not UTF-8 to
#: (a lone surrogate typed into a form arrives as one).
_UNFIT = re.compile("[\x00\ud800-\udfff\ufffd]")
_WHOLE = re.compile(r"[0-9]{1,7}")


def read_text(field: str, raw: object, most: int = MAX_NAME) -> str | None:
    """A text field: ``None`` when empty; ``ValidationError`` naming ``field`` when it is
    too long or is not text a store can keep."""
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise ValidationError(field, "must be text, not a file")
    value = raw.strip()
    if not value:
        return None
    if _UNFIT.search(value):
        raise ValidationError(
            field, "is not valid text (a NUL, a lone surrogate or bytes that are not UTF-8)"
        )
    if len(value) > most:
        raise ValidationError(field, f"must be at most {most:,} characters, not {len(value):,}")
    return value


def read_limit(raw: object) -> int:
    """How many messages at most: a whole number from 1 to ``MAX_LIMIT``."""
    text = read_text("limit", raw, 40)
    if text is None:
        return DEFAULT_LIMIT
    if not _WHOLE.fullmatch(text) or not 1 <= int(text) <= MAX_LIMIT:
        raise ValidationError(
            "limit", f"must be a whole number from 1 to {MAX_LIMIT:,}, not {text!r}"
        )
    return int(text)


def read_since(raw: object, now: datetime) -> datetime | None:
    """``since``: an ISO time or a span back from now (``15m``, ``2h``, ``7d``)."""
    text = read_text("since", raw, 40)
    if text is None:
        return None
    try:
        return parse_since(text, now)
    except OverflowError:
        raise ValidationError("since", f"{text!r} reaches too far back") from None


def read_reason(raw: object) -> str:
    """The reason every act asks for: required, it goes to the audit log."""
    reason = read_text("reason", raw, MAX_REASON)
    if reason is None:
        raise ValidationError("reason", "is required: say why (it goes to the audit log)")
    return reason


def read_ids(raw: object) -> list[str]:
    """The previewed ids the act form carries: message ids, at most ``MAX_LIMIT``."""
    if not isinstance(raw, str) or not raw.split():
        raise ValidationError("ids", "no messages were previewed; preview first")
    ids = raw.split()
    if len(ids) > MAX_LIMIT:
        raise ValidationError("ids", f"at most {MAX_LIMIT:,} messages at once, not {len(ids):,}")
    for value in ids:
        try:
            uuid.UUID(value)
        except ValueError:
            shown = value.encode("ascii", "backslashreplace").decode()[:60]
            raise ValidationError("ids", f"{shown!r} is not a message id") from None
    return list(dict.fromkeys(ids))


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an act did: moved (``result``), or filed for a second operator (``filed``)."""

    verb: str
    asked: int
    result: DlqAction | None = None
    filed: Filed | None = None


async def preview(request: Request, viewer: Viewer, act: str, flt: MessageFilter) -> list[Message]:
    """The dry run of ``act`` (``dlq.retry``, ``held.approve``...) on ``flt``: the
    messages it would move, oldest first."""
    state = request.app.state
    dry = await perform(
        state.store, state.settings, act, message_args(flt, dry_run=True),
        actor=viewer.actor, clock=state.clock,
    )  # fmt: skip
    assert isinstance(dry, DlqAction)  # a dry run is never filed
    return await messages_of(request, dry.ids)


async def messages_of(request: Request, ids: list[str]) -> list[Message]:
    """The messages of ``ids`` as they are now (an id of none is left out)."""
    store = request.app.state.store
    found = []
    for mid in ids:
        try:
            found.append(await store.message_get(mid))
        except NotFound:
            continue
    return found


async def previewed_again(
    request: Request, form: Mapping[str, Any], verbs: Mapping[str, str], status: Status
) -> dict[str, Any]:
    """After a refused act, the preview it came from, as those messages are now: with
    the act's form again when all are still ``status`` (only the reason was wrong, say),
    without it (``stale``) when some moved; nothing when its ids are bad."""
    try:
        ids = read_ids(form.get("ids"))
    except ValidationError:
        return {}
    found = await messages_of(request, ids)
    stale = len(found) < len(ids) or any(m.status is not status for m in found)
    verb = form.get("verb")
    return {"preview": found, "verb": verb if verb in verbs else "", "stale": stale}


async def act(
    request: Request, viewer: Viewer, act: str, ids: list[str], status: Status, reason: str
) -> Outcome:
    """Do ``act`` on exactly ``ids``, each still ``status`` (``Conflict`` naming those
    that are not: nothing moves then), as ``viewer``, with ``reason``."""
    await _all_in(request, ids, status)
    state = request.app.state
    done = await perform(
        state.store, state.settings, act, message_args(MessageFilter(), ids),
        actor=viewer.actor, reason=reason, clock=state.clock,
    )  # fmt: skip
    verb = act.split(".", 1)[1]
    if isinstance(done, Filed):
        return Outcome(verb, len(ids), filed=done)
    return Outcome(verb, len(ids), result=done)


async def _all_in(request: Request, ids: list[str], status: Status) -> None:
    store = request.app.state.store
    astray = []
    for mid in ids:
        try:
            msg = await store.message_get(mid)
        except NotFound:
            astray.append(mid)
            continue
        if msg.status is not status:
            astray.append(mid)
    if astray:
        shown = ", ".join(astray[:10]) + (
            f" and {len(astray) - 10} more" if len(astray) > 10 else ""
        )
        raise Conflict(
            f"{len(astray)} of the {len(ids)} messages are not {status.value} (any more): "
            f"{shown}. Nothing was changed; preview again."
        )


def time_text(when: datetime | None) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S UTC") if when else "—"


def age_text(seconds: float | None) -> str:
    """``42 s``, ``3 min``, ``5 h 10 min``, ``2 d 3 h``: how long, at a glance."""
    if seconds is None:
        return "—"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def raw_fields(params: Mapping[str, Any], names: tuple[str, ...]) -> dict[str, str]:
    """The fields as typed, to fill the forms again (never trusted: see ``form_filter``)."""
    return {n: v for n in names if isinstance(v := params.get(n), str) and v}


def status_of(exc: SluiceError) -> int:
    """The HTTP status of a refused preview or act."""
    return 404 if isinstance(exc, NotFound) else 409 if isinstance(exc, Conflict) else 400


def form_filter(params: Mapping[str, Any], now: datetime, names: tuple[str, ...]) -> dict[str, Any]:
    """The filter fields ``names`` of a query or form, checked (``ValidationError``)."""
    out: dict[str, Any] = {}
    for name in names:
        if name == "since":
            out["since"] = read_since(params.get("since"), now)
        elif name == "contains":
            out["reason"] = read_text("reason contains", params.get("contains"), 500)
        else:
            out[name] = read_text(name, params.get(name))
    return out
