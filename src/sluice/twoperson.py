"""The two-person rule's language: which operator acts wait for a second operator.

``[ops] two_person`` in ``sluice.toml`` (or ``SLUICE_TWO_PERSON``, comma-separated) is
a list of rules, each one act, optionally narrowed::

    rule      = act [ ":" scope ] [ ">" count ]
    act       = a name of ACTS (``dlq.retry``), or a family: ``breaker.*``
    scope     = "global" | "tenant"
    count     = a whole number: the rule holds when the act's dry run affects more

``dlq.retry>1000`` holds for a retry of more than 1,000 dead letters; ``resume:global``
for lifting a control that is not confined to one tenant; ``held.release:tenant>50`` for
releasing more than 50 held messages of one tenant. An act any rule holds for is filed as
a request (:mod:`sluice.ops.requests`) instead of done.

An act's scope is ``tenant`` when it names one tenant (``--tenant``, a ``c:`` or ``e:``
breaker, a tenant's limit or key) and ``global`` otherwise: a control on ``channel=sms``
reaches every tenant, so it is global. A count needs an act that can count what it would
change beforehand (``ACTS[name].counts``).

Containment and protection always act at once, and a rule naming them is refused at
start (:data:`NEVER_WAIT`, with what lifts each): a kill and a pause; disabling an
endpoint (``endpoints disable``: it stops sends to a failing or misbehaving endpoint,
a kill confined to one endpoint); adding a suppression (it stops sends to someone who
opted out or bounced). Lifting them — ``resume``, ``control.set``, ``endpoint.enable``
(which releases the messages held for the endpoint), ``suppression.remove`` (which lets
a tenant send again to a recipient who opted out) — may wait.

Acts that count: the bulk moves of messages (``dlq.*``, ``held.*``,
``messages.retry_now``). ``throttles.clear`` has a dry run too, but it counts
throttle marks, not messages, so no ``>N`` applies to it; ``endpoint.enable`` releases
held messages but cannot be bounded to a number, so it does not count either.

Not acts a rule may name: those whose request would keep a credential in the request's
plain JSON (``connections add|rotate``, ``tenants events-url set`` with its signing
secret); ``tenants events-url clear`` holds no secret and is one
(``events_url.clear``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from sluice.errors import ConfigError

__all__ = ["ACTS", "NEVER_WAIT", "ActTraits", "Rule", "parse_rules"]


@dataclass(frozen=True, slots=True)
class ActTraits:
    """What a rule may say about an act: whether its dry run counts messages."""

    counts: bool = False


#: Every act a rule may name (``sluice.ops.requests`` implements each; a test keeps the
#: two lists equal).
ACTS: dict[str, ActTraits] = {
    "dlq.retry": ActTraits(counts=True),
    "dlq.cancel": ActTraits(counts=True),
    "held.approve": ActTraits(counts=True),
    "held.release": ActTraits(counts=True),
    "held.cancel": ActTraits(counts=True),
    "resume": ActTraits(),
    "control.set": ActTraits(),
    "limit.set": ActTraits(),
    "limit.clear": ActTraits(),
    "breaker.force": ActTraits(),
    "breaker.reset": ActTraits(),
    "apikeys.create": ActTraits(),
    "apikeys.revoke": ActTraits(),
    "connection.revoke": ActTraits(),
    "inbox.retry": ActTraits(),
    # -- issue 14's operator acts --
    "messages.retry_now": ActTraits(counts=True),
    "throttles.clear": ActTraits(),  # counts throttle marks, not messages
    "endpoint.enable": ActTraits(),
    "suppression.remove": ActTraits(),
    "events_url.clear": ActTraits(),
    "purge": ActTraits(counts=True),
}

#: Containment and protection: never waits for anyone (``control.set`` to killed or
#: paused is one too), and what lifts each (which may wait).
NEVER_WAIT: dict[str, str] = {
    "kill": "resume, control.set",
    "pause": "resume, control.set",
    "endpoint.disable": "endpoint.enable",
    "suppression.add": "suppression.remove",
}

_RULE = re.compile(
    r"(?P<act>[a-z_]+(?:\.(?:[a-z_]+|\*))?)(?::(?P<scope>[a-z]+))?(?:>(?P<count>[0-9]+))?"
)


@dataclass(frozen=True, slots=True)
class Rule:
    """One entry of ``two_person``: it holds for an act of one of ``acts`` whose scope
    is ``scope`` (any if None) and whose dry run affects more than ``over`` messages
    (any number if None)."""

    text: str
    acts: frozenset[str]
    scope: str | None = None
    over: int | None = None

    def holds(self, act: str, scope: str, affected: int | None) -> bool:
        """Whether this rule makes ``act`` wait (``affected``: its dry run's count)."""
        if act not in self.acts or (self.scope is not None and scope != self.scope):
            return False
        return self.over is None or (affected is not None and affected > self.over)


def parse_rules(entries: Iterable[str], source: str = "two_person") -> tuple[Rule, ...]:
    """The rules, checked: ``ConfigError`` naming the first bad entry and why."""
    rules = []
    for n, raw in enumerate(entries):
        where = f"{source}[{n}] {raw!r}"
        text = raw.strip() if isinstance(raw, str) else ""
        match = _RULE.fullmatch(text)
        if match is None:
            raise ConfigError(
                f"{where} is not a rule: write act[:global|:tenant][>N], e.g. dlq.retry>1000"
            )
        act, scope, count = match["act"], match["scope"], match["count"]
        if act in NEVER_WAIT:
            raise ConfigError(
                f"{where}: {act} is containment and always acts at once; only lifting it "
                f"({NEVER_WAIT[act]}) may wait for a second operator"
            )
        if act.endswith(".*"):
            acts = frozenset(a for a in ACTS if a.startswith(act[:-1]))
        else:
            acts = frozenset({act}) if act in ACTS else frozenset()
        if not acts:
            raise ConfigError(f"{where}: no act {act!r}; the acts are {', '.join(sorted(ACTS))}")
        if scope is not None and scope not in ("global", "tenant"):
            raise ConfigError(f"{where}: scope must be global or tenant, not {scope!r}")
        over = None
        if count is not None:
            blind = sorted(a for a in acts if not ACTS[a].counts)
            if blind:
                raise ConfigError(
                    f"{where}: {', '.join(blind)} cannot count what it would change; a >N "
                    f"threshold applies to {', '.join(a for a in ACTS if ACTS[a].counts)}"
                )
            if len(count) > 12:
                raise ConfigError(f"{where}: the threshold must be at most 12 digits")
            over = int(count)
        rules.append(Rule(text, acts, scope, over))
    return tuple(rules)
