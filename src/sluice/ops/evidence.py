"""An incident's evidence archive (seed 003 §3): one ``tar.gz`` that keeps what on-call
will need afterwards, built once for ``sluice incidents evidence ID --out FILE`` and
``GET /v1/incidents/{id}/evidence``.

The window is the incident's: from ``margin`` before it opened to when it resolved (or
now, while it is active). The archive holds, under ``evidence-<id>/``:

- ``incident.json``: the incident and its timeline;
- ``audit.json``: the audit rows of the window, and the result of verifying the whole
  hash chain at the moment the archive was built;
- ``changes.json``: control, limit, breaker and connection changes in the window (from
  the audit log), and those lists as they are now;
- ``gauges.json``: the state at open, at peak and at resolve (see ``README.md`` for what
  the store can still tell about a past instant);
- ``messages.json``: a sample of affected messages with their attempts and receipts;
- ``settings.json``: the settings and ``sluice.toml`` in force, every secret redacted;
- ``annotations.json``: deploy, config and note markers in the window;
- ``README.md``; and ``manifest.json``: every other file with its size and sha256.

Nothing secret goes in: secret-bearing settings and configuration entries are replaced by
``[redacted]``, URLs lose their password and query, and every file is scrubbed of each
secret value found in the configuration before it is written. Building one is audited
(``incident.evidence``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
import tarfile
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sluice.clock import Clock, SystemClock
from sluice.config import Settings, config_file
from sluice.errors import ConfigError, ValidationError
from sluice.ops.actions import require_actor
from sluice.ops.annotations import annotation_as_dict
from sluice.ops.audit import audit_verify
from sluice.ops.render import jsonable
from sluice.store.base import AuditEntry, AuditFilter, Incident, MessageFilter, Store

__all__ = [
    "MAX_AUDIT",
    "REDACTED",
    "SAMPLE_MAX",
    "Evidence",
    "build_evidence",
    "redact_config",
    "redact_settings",
    "write_evidence",
]

#: What a secret is replaced by.
REDACTED = "[redacted]"
#: The most audit rows of the window an archive keeps (the newest, when there are more).
MAX_AUDIT = 5000
#: The sample of affected messages: at most this many.
SAMPLE_MAX = 20
#: Messages of the window looked at to choose the sample from.
_SAMPLE_POOL = 500
#: Default seconds of the window before the incident opened.
DEFAULT_MARGIN = 900.0
#: Seconds of attempts each gauge snapshot counts, up to its instant.
_GAUGE_SPAN = timedelta(minutes=5)
#: The audit actions that change what flows (``changes.json``).
_CHANGE_PREFIXES = ("control.", "limit.", "breaker.", "connection.", "kill", "pause", "resume")
#: The incident scope labels a message filter can apply.
_SCOPE_FILTERS = {"tenant": "tenant", "channel": "channel", "provider": "provider",
                  "action": "action", "error_code": "error_code"}  # fmt: skip
_OK = {"sent", "delivered", "read"}
#: Shorter values are not scrubbed from the text (they would match ordinary words); the
#: field that held them is redacted regardless.
_SCRUB_MIN = 8

#: Setting and configuration names whose values are secrets.
_SECRET_NAME = re.compile(
    r"secret|passw|pwd|token|credential|api_?key|private_?key|auth|signing|cookie|bearer|dsn|"
    r"(^|_)keys?$|^headers$",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Evidence:
    """A built archive: its bytes, the name it suggests, and what it holds."""

    incident_id: str
    filename: str
    data: bytes
    files: dict[str, str]  # name -> sha256


# -- redaction ------------------------------------------------------------------------


def _url(value: str, found: set[str], *, keep_path: bool = True) -> str:
    """A URL without its password, query and fragment (and path, unless ``keep_path``);
    what was taken out goes to ``found``."""
    try:
        parts = urlsplit(value)
        password = parts.password
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        found.add(value)
        return REDACTED
    if not parts.scheme or not (host or parts.path):
        return value
    if not (password or parts.query or parts.fragment) and (keep_path or not parts.path):
        return value  # nothing in it to hide: kept as written
    netloc = host if ":" not in host else f"[{host}]"
    if port is not None:
        netloc += f":{port}"
    if parts.username:
        netloc = f"{parts.username}{':' + REDACTED if password else ''}@{netloc}"
    if password:
        found.add(password)
    for piece in (parts.query, parts.fragment):
        if piece:
            found.add(piece)
            found.update(pair.partition("=")[2] for pair in piece.split("&"))
    path = parts.path
    if path and not keep_path:
        # The whole path, and segments long enough to be a token rather than a word.
        found.add(path)
        found.update(seg for seg in path.split("/") if len(seg) >= 12)
        path = "/" + REDACTED
    query = REDACTED if parts.query else ""
    return urlunsplit((parts.scheme, netloc, path, query, ""))


def _collect(value: Any, found: set[str]) -> None:
    if isinstance(value, str):
        if value and not value.startswith("env:"):
            found.add(value)
        elif value.startswith("env:") and os.environ.get(value[4:]):
            found.add(os.environ[value[4:]])
    elif isinstance(value, Mapping):
        for v in value.values():
            _collect(v, found)
    elif isinstance(value, list | tuple):
        for v in value:
            _collect(v, found)


def _redact(value: Any, found: set[str], *, keep_path: bool = True) -> Any:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if _SECRET_NAME.search(str(k)) and v not in (None, "", [], {}):
                _collect(v, found)
                out[str(k)] = REDACTED
            else:
                out[str(k)] = _redact(v, found, keep_path=keep_path)
        return out
    if isinstance(value, list | tuple):
        return [_redact(v, found, keep_path=keep_path) for v in value]
    if isinstance(value, str):
        if value.startswith("env:") and os.environ.get(value[4:]):
            found.add(os.environ[value[4:]])  # a reference stays; what it names is scrubbed
        if "://" in value:
            return _url(value, found, keep_path=keep_path)
    return value


def redact_settings(settings: Settings, found: set[str] | None = None) -> dict[str, Any]:
    """The settings as JSON, every secret-bearing one ``[redacted]`` and every URL without
    its password and query; the secrets taken out are added to ``found``."""
    found = set() if found is None else found
    return dict(_redact(jsonable(dataclasses.asdict(settings)), found))


def redact_config(document: Mapping[str, Any], found: set[str] | None = None) -> dict[str, Any]:
    """A ``sluice.toml`` document, redacted the same way; under ``[alerts]`` URLs also lose
    their path (a chat service's hook URL is itself the secret)."""
    found = set() if found is None else found
    out: dict[str, Any] = {}
    for k, v in document.items():
        if _SECRET_NAME.search(str(k)) and v not in (None, "", [], {}):
            _collect(v, found)
            out[str(k)] = REDACTED
        else:
            out[str(k)] = _redact(jsonable(v), found, keep_path=k != "alerts")
    return out


def _scrub(text: str, secrets: Iterable[str]) -> str:
    for s in sorted(secrets, key=len, reverse=True):
        if len(s) >= _SCRUB_MIN and s != REDACTED:
            text = text.replace(s, REDACTED)
            escaped = json.dumps(s)[1:-1]
            if escaped != s:
                text = text.replace(escaped, REDACTED)
    return text


# -- the parts --------------------------------------------------------------------------


def _scope_filter(incident: Incident, **window: Any) -> MessageFilter:
    picked: dict[str, Any] = {
        _SCOPE_FILTERS[k]: v for k, v in incident.scope.items() if k in _SCOPE_FILTERS
    }
    return MessageFilter(**picked, **window)


async def _audit_window(
    store: Store, since: datetime, until: datetime
) -> tuple[list[AuditEntry], bool]:
    rows: list[AuditEntry] = []
    before: int | None = None
    while len(rows) < MAX_AUDIT:
        flt = AuditFilter(since=since, until=until, before_id=before)
        page = await store.audit_list(min(1000, MAX_AUDIT - len(rows)) + 1, flt)
        more = len(page) > min(1000, MAX_AUDIT - len(rows))
        page = page[: min(1000, MAX_AUDIT - len(rows))]
        rows += page
        if not more or not page:
            return list(reversed(rows)), more
        before = page[-1].id
    return list(reversed(rows)), True


async def _gauges_at(store: Store, incident: Incident, at: datetime) -> dict[str, Any]:
    # "By then" includes the instant itself (the filter's bound is exclusive).
    by_then = _scope_filter(incident, until=at + timedelta(microseconds=1))
    breakdown = await store.message_breakdown("", by_then, None, at)
    by_status = {
        b.status: {"count": b.count, "errored": b.errored,
                   "oldest_created_at": b.oldest_created_at,
                   "oldest_updated_at": b.oldest_updated_at}
        for b in breakdown
    }  # fmt: skip
    outcomes: dict[str, int] = {}
    codes: dict[str, int] = {}
    for labels, n in await store.tally("attempts", at - _GAUGE_SPAN, at):
        if any(labels.get(k) != v for k, v in incident.scope.items() if k in labels):
            continue
        outcomes[labels["outcome"]] = outcomes.get(labels["outcome"], 0) + n
        if labels.get("error_code"):
            codes[labels["error_code"]] = codes.get(labels["error_code"], 0) + n
    total = sum(outcomes.values())
    failed = total - outcomes.get("sent", 0)
    snapshot: dict[str, Any] = jsonable({
        "at": at,
        "messages_created_by_then_by_current_status": by_status,
        "attempts_in_the_5_minutes_before": {
            "by_outcome": outcomes, "by_error_code": codes, "total": total,
            "failure_rate": (failed / total) if total else None,
        },
    })  # fmt: skip
    return snapshot


def _affected(status: str, last_error: str | None) -> int:
    return 0 if status not in _OK or last_error else 1


async def _sample(
    store: Store, incident: Incident, since: datetime, until: datetime
) -> tuple[list[dict[str, Any]], int]:
    seen: dict[str, Any] = {}
    for window in ({"updated_since": since, "updated_until": until},
                   {"since": since, "until": until}):  # fmt: skip
        for m in await store.message_list(
            _scope_filter(incident, **window), None, None, _SAMPLE_POOL
        ):
            seen.setdefault(m.id, m)
    pool = sorted(seen.values(), key=lambda m: (_affected(m.status.value, m.last_error_code),
                                               m.id))  # fmt: skip
    out = []
    for m in pool[:SAMPLE_MAX]:
        attempts = await store.attempt_list(m.id)
        receipts = await store.receipt_list(m.id)
        out.append(jsonable({"message": m, "attempts": attempts, "receipts": receipts}))
    return out, len(pool)


def _readme(incident: Incident, since: datetime, until: datetime, notes: list[str]) -> str:
    lines = [
        f"# Evidence: incident {incident.id}",
        "",
        f"{incident.severity} {incident.rule} ({incident.scope_key or 'everything'}): "
        f"{incident.summary}",
        f"Window: {since.isoformat()} to {until.isoformat()} (opened less the margin, to "
        "resolved or to when this archive was built).",
        "",
        "## Files",
        "- incident.json: the incident and its timeline.",
        "- audit.json: audit rows in the window (oldest first) and `chain`, the result of "
        "verifying the whole audit hash chain when this archive was built.",
        "- changes.json: control, limit, breaker and connection changes in the window (from "
        "the audit log), and the current controls, limits, breakers and connections.",
        "- gauges.json: the state at open, at peak and at resolve (see below).",
        "- messages.json: a sample of affected messages in the incident's scope and window "
        "(failed, dead, held or waiting first), each with its attempts and receipts.",
        f"- settings.json: the settings and sluice.toml in force; every secret is `{REDACTED}`.",
        "- annotations.json: deploy, config and note markers in the window.",
        "- manifest.json: every other file with its size and sha256.",
        "",
        "## What the gauges are",
        "Sluice stores no history of its state gauges, so gauges.json records what the store "
        "can still compute for each instant: the messages in scope created by then, counted "
        "by the status they have now (with their oldest created and updated times), and the "
        "attempts in scope finished in the five minutes before the instant, by outcome and "
        "error code, with their failure rate. `now` is the live observation the state "
        "metrics export at the moment the archive was built. For the gauges as they were, "
        "see your Prometheus for the same window.",
    ]
    if notes:
        lines += ["", "## Notes", *[f"- {n}" for n in notes]]
    return "\n".join(lines) + "\n"


def _config(settings_path: str | Path | None) -> tuple[str | None, dict[str, Any] | None]:
    try:
        path = config_file(None, settings_path)
    except ConfigError as exc:
        return str(exc), None
    if path is None:
        return None, None
    try:
        return str(path), tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        return f"{path}: {exc}", None


# -- the archive ------------------------------------------------------------------------


async def build_evidence(
    store: Store,
    incident_id: str,
    *,
    actor: str,
    settings: Settings,
    config_path: str | Path | None = None,
    margin: float = DEFAULT_MARGIN,
    clock: Clock | None = None,
) -> Evidence:
    """Gather an incident's evidence into one ``tar.gz`` (in memory); audited as
    ``incident.evidence``. ``NotFound`` for an unknown incident id."""
    require_actor(actor)
    if (
        isinstance(margin, bool)
        or not isinstance(margin, int | float)
        or not (0 <= margin <= 7 * 86_400)
    ):
        raise ValidationError("margin", "must be 0 to 604800 seconds")
    if not isinstance(incident_id, str) or not incident_id.strip() or len(incident_id) > 100:
        raise ValidationError("incident_id", "must be an incident id (sluice incidents list)")
    now = (clock or SystemClock()).now()
    incident = await store.incident_get(incident_id)
    since = incident.opened_at - timedelta(seconds=margin)
    until = max(incident.resolved_at or now, since + timedelta(seconds=1))
    notes: list[str] = []

    found: set[str] = set()
    settings_doc = redact_settings(settings, found)
    where, document = _config(config_path)
    config_doc = redact_config(document, found) if document is not None else None

    # The queries' upper bounds are exclusive; the window includes its last instant.
    end = until + timedelta(milliseconds=1)
    audit_rows, truncated = await _audit_window(store, since, end)
    if truncated:
        notes.append(f"The window holds more than {MAX_AUDIT} audit rows; the newest are kept.")
    chain = await audit_verify(store)
    changes = [a for a in audit_rows if a.action.startswith(_CHANGE_PREFIXES)]
    peaks = [e.at for e in incident.events if e.kind == "peak"]
    peak_at = peaks[-1] if peaks else incident.opened_at
    if not peaks:
        notes.append("The timeline records no peak; the gauges at peak are those at open.")
    sample, pool = await _sample(store, incident, since, end)
    if len(sample) < 10:
        notes.append(f"Only {pool} messages are in the incident's scope and window.")
    annotations = await store.annotation_list(since, end, limit=1000)
    if incident.scope.get("tenant"):  # everyone's markers, and this tenant's; no other's
        annotations = [a for a in annotations if a.tenant in ("", incident.scope["tenant"])]
    if incident.resolved_at is None:
        notes.append("The incident is not resolved: at_resolve is the state when this "
                     "archive was built.")  # fmt: skip
    unfiltered = sorted(set(incident.scope) - set(_SCOPE_FILTERS))
    if unfiltered:
        notes.append(f"Scope labels {', '.join(unfiltered)} do not select messages; the sample "
                     "and gauges are for the rest of the scope.")  # fmt: skip
    observed = await store.observe(now)

    parts: dict[str, Any] = {
        "incident.json": jsonable(incident),
        "audit.json": {
            "window": {"since": since, "until": until},
            "items": [jsonable(a) for a in audit_rows],
            "count": len(audit_rows),
            "truncated": truncated,
            "chain": chain.as_dict(),
        },
        "changes.json": {
            "in_window": [jsonable(a) for a in changes],
            "current": {
                "controls": jsonable(await store.control_list()),
                "limits": jsonable(await store.limit_list()),
                "breakers": jsonable(await store.breaker_list()),
                "connections": [c.public() for c in await store.connection_list()],
            },
        },
        "gauges.json": {
            "at_open": await _gauges_at(store, incident, incident.opened_at),
            "at_peak": await _gauges_at(store, incident, peak_at),
            "at_resolve": await _gauges_at(store, incident, until),
            "resolved": incident.resolved_at is not None,
            "now": jsonable(observed),
        },
        "messages.json": {"items": sample, "count": len(sample), "pool": pool},
        "settings.json": {"settings": settings_doc, "config_file": where, "config": config_doc},
        "annotations.json": {
            "items": [annotation_as_dict(a) for a in reversed(annotations)],
            "count": len(annotations),
        },
    }
    texts = {name: json.dumps(jsonable(body), indent=2, sort_keys=True, ensure_ascii=False)
             for name, body in parts.items()}  # fmt: skip
    texts["README.md"] = _readme(incident, since, until, notes)
    texts = {name: _scrub(text, found) for name, text in texts.items()}
    blobs = {name: text.encode("utf-8", "backslashreplace") for name, text in texts.items()}
    files = {name: hashlib.sha256(b).hexdigest() for name, b in blobs.items()}
    manifest = {
        "incident_id": incident.id,
        "generated_at": now.isoformat(),
        "generated_by": actor,
        "window": {"since": since.isoformat(), "until": until.isoformat()},
        "files": [{"name": n, "bytes": len(blobs[n]), "sha256": files[n]} for n in sorted(blobs)],
    }
    blobs["manifest.json"] = json.dumps(manifest, indent=2, sort_keys=True).encode()
    top = f"evidence-{incident.id}"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in sorted(blobs):
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(blobs[name])
            info.mtime = int(now.timestamp())
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(blobs[name]))
    await store.audit_append(
        AuditEntry(
            at=now,
            actor=actor,
            action="incident.evidence",
            target=incident.id,
            detail={
                "files": sorted(blobs),
                "audit_rows": len(audit_rows),
                "chain_ok": chain.ok,
                "sample": len(sample),
            },
        )
    )
    return Evidence(incident.id, f"{top}.tar.gz", buf.getvalue(), files)


def _create(path: Path, data: bytes) -> None:
    """Write a new file; ``FileExistsError`` when one is there (never overwritten)."""
    with open(path, "xb") as fh:
        fh.write(data)


async def write_evidence(
    store: Store,
    incident_id: str,
    out: str | Path,
    *,
    actor: str,
    settings: Settings,
    config_path: str | Path | None = None,
    margin: float = DEFAULT_MARGIN,
    clock: Clock | None = None,
) -> Evidence:
    """``build_evidence`` written to ``out``, which must not exist (never overwritten)."""
    path = Path(out)
    if path.exists() or path.is_symlink():
        raise ValidationError("out", f"{str(path)!r} exists; name a new file")
    if not path.parent.is_dir():
        raise ValidationError("out", f"{str(path.parent)!r} is not a directory")
    ev = await build_evidence(store, incident_id, actor=actor, settings=settings,
                              config_path=config_path, margin=margin, clock=clock)  # fmt: skip
    try:
        _create(path, ev.data)
    except FileExistsError:
        raise ValidationError("out", f"{str(path)!r} exists; name a new file") from None
    return ev
