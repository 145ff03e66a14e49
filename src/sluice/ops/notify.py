"""Telling on-call: each incident's transitions (opened, resolved) sent to the targets in
``[alerts]`` of ``sluice.toml``, through Sluice's own outbox.

A notification is an ordinary message of the reserved tenant ``_sluice`` (channel
``alerts``): durable from the moment it is written, retried, dead-lettered with a reason
if a target never takes it, visible in ``sluice messages``. Global and fail-closed
controls leave that tenant alone, so a kill switch thrown during an incident does not also
silence the incident; a control naming ``_sluice`` does.

Transitions: ``opened``; ``escalated`` when an incident stays open and unacknowledged
past ``SLUICE_ALERTS_ESCALATE_AFTER`` (15 minutes; seed 002 answers a P1 within 15);
``resolved``. Exactly one notification per transition and target: each is enqueued under the key
``incident:<id>:<transition>:<target>`` (a repeat after a crash finds the first), and only
then is the transition marked as announced.

    [alerts]
    targets = [
      { name = "oncall-hook", kind = "webhook", url = "https://hooks.example.com/sluice" },
      { name = "oncall-mail", kind = "email", to = "oncall@example.com", provider = "sendgrid" },
      { name = "slack", kind = "http", action = "slack.post" },  # a declared http action
    ]

``webhook``: a Standard Webhooks POST signed with ``SLUICE_WEBHOOK_SECRET`` (event
type ``incident.opened`` / ``incident.escalated`` / ``incident.resolved``). ``email``:
through the named provider (``sendgrid`` by default), to ``to``. ``http``: an
``[actions."..."]`` the operator declares, rendered from the notification's fields
(``text``, ``rule``, ``severity``, ``state``, ``summary``, ``runbook``, ``incident_id``,
``scope``); a Slack-compatible incoming webhook is an action whose
``body = { text = "{payload.text}" }``.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from sluice.config import config_file
from sluice.errors import ConfigError
from sluice.flow.controls import OPERATOR_TENANT
from sluice.model import NewMessage
from sluice.store.base import Incident, Store

__all__ = ["OPERATOR_TENANT", "Target", "alert_settings", "alert_targets", "send_notifications"]

log = structlog.get_logger("sluice.alerts")

_KINDS = ("webhook", "email", "http")


@dataclass(frozen=True, slots=True)
class Target:
    """Where incident notifications go."""

    name: str
    kind: str
    url: str = ""
    to: str = ""
    provider: str = ""
    action: str = ""


def alert_targets(
    env: Mapping[str, str] | None = None, config_path: str | Path | None = None
) -> list[Target]:
    """The ``[alerts] targets`` of the ``sluice.toml`` in effect (none without one);
    ``ConfigError`` naming the entry and field that is wrong."""
    path = config_file(env, config_path)
    if path is None:
        return []
    try:
        document = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read: {exc}") from None
    alerts = document.get("alerts", {})
    if not isinstance(alerts, dict):
        raise ConfigError(f"{path}: [alerts] must be a table")
    raw = alerts.get("targets", [])
    if not isinstance(raw, list):
        raise ConfigError(f"{path}: [alerts] targets must be a list of tables")
    targets: list[Target] = []
    for i, entry in enumerate(raw):
        where = f"{path}: [alerts] targets[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} must be a table")
        unknown = set(entry) - {"name", "kind", "url", "to", "provider", "action"}
        if unknown:
            raise ConfigError(f"{where}: unknown field(s) {sorted(unknown)}")
        values = {k: entry.get(k, "") for k in ("name", "kind", "url", "to", "provider", "action")}
        for k, v in values.items():
            if not isinstance(v, str):
                raise ConfigError(f"{where}.{k} must be a string, not {v!r}")
        kind = values["kind"]
        if kind not in _KINDS:
            raise ConfigError(f"{where}.kind must be one of {', '.join(_KINDS)}, not {kind!r}")
        need = {"webhook": "url", "email": "to", "http": "action"}[kind]
        if not values[need]:
            raise ConfigError(f"{where}: a {kind} target needs {need}")
        name = values["name"] or f"{kind}-{i}"
        if any(t.name == name for t in targets):
            raise ConfigError(f"{where}: the name {name!r} is used twice")
        default = {"webhook": "webhook", "email": "sendgrid"}.get(kind, "http")
        provider = values["provider"] or default
        targets.append(Target(name, kind, values["url"], values["to"], provider, values["action"]))
    return targets


def alert_settings(
    env: Mapping[str, str] | None = None, config_path: str | Path | None = None
) -> tuple[list[Target], dict[str, int]]:
    """The ``[alerts]`` of the ``sluice.toml`` in effect: its targets, and ``[alerts.for]``
    — seconds a rule's condition must hold before it fires, per rule name, where the
    operator wants other than the rule's own (a staging system that should page sooner)."""
    targets = alert_targets(env, config_path)
    path = config_file(env, config_path)
    if path is None:
        return targets, {}
    from sluice.alerts.rules import RULES

    raw = tomllib.loads(path.read_text()).get("alerts", {}).get("for", {})
    where = f"{path}: [alerts.for]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table of rule names to seconds")
    names = {r.name for r in RULES}
    durations: dict[str, int] = {}
    for name, seconds in raw.items():
        if name not in names:
            raise ConfigError(f"{where}: no rule is named {name!r} (see docs/alerts.md)")
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not math.isfinite(seconds)
            or seconds < 0
        ):
            raise ConfigError(f"{where}.{name} must be a number of seconds >= 0, not {seconds!r}")
        durations[name] = round(seconds)
    return targets, durations


def _fields(incident: Incident, transition: str) -> dict[str, Any]:
    scope = " ".join(f"{k}={v}" for k, v in sorted(incident.scope.items())) or "everything"
    verb = transition
    text = (
        f"[{incident.severity}] {incident.rule} {verb}: {incident.summary} "
        f"({scope}; runbook {incident.runbook}; incident {incident.id})"
    )
    return {
        "text": text,
        "incident_id": incident.id,
        "rule": incident.rule,
        "severity": incident.severity,
        "types": list(incident.types),
        "state": verb,
        "summary": incident.summary,
        "runbook": incident.runbook,
        "scope": dict(incident.scope),
        "opened_at": incident.opened_at.isoformat(),
        "peak": incident.peak,
    }


def notification(target: Target, incident: Incident, transition: str) -> NewMessage:
    """The message that tells ``target`` about ``transition`` of ``incident``."""
    fields = _fields(incident, transition)
    key = f"incident:{incident.id}:{transition}:{target.name}"
    if target.kind == "webhook":
        channel, provider, recipient, payload = "webhook", target.provider, target.url, fields
    elif target.kind == "email":
        subject = fields["text"].split(" (", 1)[0]
        channel, provider, recipient = "email", target.provider, target.to
        payload = {"subject": subject[:200], "text": fields["text"]}
    else:
        channel, provider, recipient, payload = "alerts", "http", target.name, fields
    return NewMessage(
        tenant=OPERATOR_TENANT,
        channel=channel,
        provider=provider,
        recipient=recipient,
        action=f"incident.{transition}" if target.kind != "http" else target.action,
        payload=payload,
        idempotency_key=key,
        correlation_id=f"incident:{incident.id}",
        priority=100,
    )


async def send_notifications(store: Store, targets: Sequence[Target], now: datetime) -> int:
    """Enqueue the notifications of every incident transition not yet announced; return
    how many messages that wrote (a repeat of one already written counts as none)."""
    sent = 0
    for incident in await store.incident_unnotified():
        transitions = ["opened"] if incident.notified == "" else []
        if incident.escalated_at is not None and incident.notified in ("", "opened"):
            transitions.append("escalated")
        if incident.state == "resolved":
            transitions.append("resolved")
        for transition in transitions:
            messages = [notification(t, incident, transition) for t in targets]
            if messages:
                ids = await store.enqueue_many(messages)
                sent += len(set(ids))
                log.info(
                    "incident announced", incident_id=incident.id, rule=incident.rule,
                    transition=transition, targets=[t.name for t in targets],
                )  # fmt: skip
            await store.incident_notified(incident.id, transition, now)
    return sent
