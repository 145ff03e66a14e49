"""The connection gate: what a message must pass before any provider is called.

For each claimed message the gate finds its tenant's connection to its provider and
answers with the credentials to send with, or with the reason to *hold* it:

- no connection (for a provider that needs one);
- the connection is not ``active`` (``pending_reauth``, ``needs_reconsent``, ``revoked``);
- a scope the message requires is not granted (the seed postmortem's root cause:
  the message waits, visibly, instead of failing three times into the DLQ);
- the tenancy guard: a connection of another tenant, or credentials that do not
  decrypt for this tenant, are refused, audited, and raised as the most severe
  alert Sluice has (``SEV0``, RB-01). Nothing leaves.

The scopes a message requires are its own ``scopes`` plus those its action implies:
a provider given in ``providers`` with a ``scopes_for(message)`` method (the ``http``
provider: the scopes configured for the action) adds them.

With a ``Refresher``, credentials whose access token expires soon are refreshed before
they are handed out (once per connection across all workers; see
``sluice.worker.refresh``); a refresh the token endpoint refuses for good moves the
connection to ``pending_reauth`` and holds the message.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sluice.connections import Connection, ConnectionState, hold_reason
from sluice.errors import ConfigError, SluiceError
from sluice.model import Message
from sluice.secrets import SecretBox
from sluice.store.base import AuditEntry, Store

if TYPE_CHECKING:
    from sluice.worker.refresh import Refresher

__all__ = ["ConnectionGate", "Connections", "Ticket"]

#: The connections of one claimed batch, by (tenant, provider).
Connections = Mapping[tuple[str, str], Connection | None]


@dataclass(frozen=True, slots=True)
class Ticket:
    """The gate's answer for one message: credentials to send with, or a hold."""

    credentials: Mapping[str, str] | None = None
    connection: Connection | None = None
    hold: str | None = None
    #: A problem of this worker, not of the message or its connection (no key, an old
    #: key): put the message back for a worker that can open the credentials.
    defer: str | None = None


class ConnectionGate:
    """Loads connections per claimed batch and admits or holds each message."""

    def __init__(
        self,
        store: Store,
        box: SecretBox | None,
        *,
        requires_connection: Iterable[str],
        worker_id: str,
        logger: Any,
        refresher: Refresher | None = None,
        providers: Mapping[str, object] | None = None,
    ) -> None:
        self.store = store
        self.box = box
        self.requires = frozenset(requires_connection)
        self.worker_id = worker_id
        self.log = logger
        self.refresher = refresher
        # Providers whose messages imply scopes of their own (an http action's scopes).
        self._implied: dict[str, Callable[[Message], Iterable[str]]] = {}
        for name, provider in (providers or {}).items():
            scopes_for = getattr(provider, "scopes_for", None)
            if callable(scopes_for):
                self._implied[name] = scopes_for

    async def load(self, batch: Iterable[Message], known: Connections | None = None) -> Connections:
        """The connections of this batch's (tenant, provider) pairs. ``known``: pairs
        already looked up (read with the claim, ``message_claim_with_connections``;
        ``None`` where there is no connection); the others, as when a failover sent a
        message to another provider after the claim, are read in one query."""
        pairs = sorted({(m.tenant, m.provider) for m in batch})
        known = known or {}
        loaded: dict[tuple[str, str], Connection | None] = {p: known.get(p) for p in pairs}
        missing = [p for p in pairs if p not in known]
        if missing:
            for conn in await self.store.connection_find(missing):
                loaded[(conn.tenant, conn.provider)] = conn
        return loaded

    async def admit(self, msg: Message, connections: Connections, now: datetime) -> Ticket:
        """Credentials for ``msg``, or the reason it must wait."""
        conn = connections.get((msg.tenant, msg.provider))
        required = self._required_scopes(msg)
        if conn is None:
            if msg.provider in self.requires:
                return Ticket(
                    hold=hold_reason(
                        f"tenant {msg.tenant!r} has no {msg.provider} connection; add one "
                        "with: sluice connections add"
                    )
                )
            if required:
                return Ticket(
                    hold=hold_reason(
                        f"scopes {', '.join(required)} required but tenant {msg.tenant!r} "
                        f"has no {msg.provider} connection"
                    )
                )
            return Ticket()
        if conn.tenant != msg.tenant:
            return await self._violation(msg, conn, now, "connection belongs to another tenant")
        blocked = _blocked(conn, required)
        if blocked is not None:
            return Ticket(connection=conn, hold=blocked)
        if self.box is None:
            # This worker's problem, not the message's: another worker may have the key.
            return Ticket(
                connection=conn,
                defer="this worker has no SLUICE_SECRET_KEY; the credentials cannot be opened",
            )
        try:
            secrets = self.box.decrypt(
                conn.ciphertext, conn.key_id, conn.id, msg.tenant, msg.provider
            )
            if self.refresher is not None:
                fresh = await self.refresher.ensure_fresh(conn, secrets, now)
                if fresh.hold is not None:
                    return Ticket(connection=fresh.connection, hold=fresh.hold)
                if fresh.connection is not conn:
                    # Re-read under the refresh lock: its state or granted scopes may differ.
                    conn = fresh.connection
                    if conn.tenant != msg.tenant:
                        return await self._violation(
                            msg, conn, now, "connection belongs to another tenant"
                        )
                    blocked = _blocked(conn, required)
                    if blocked is not None:
                        return Ticket(connection=conn, hold=blocked)
                secrets = fresh.credentials or secrets
        except ConfigError as exc:
            return Ticket(connection=conn, defer=str(exc))
        except ValueError as exc:
            return await self._violation(msg, conn, now, str(exc))
        return Ticket(credentials=secrets, connection=conn)

    def _required_scopes(self, msg: Message) -> list[str]:
        """The message's own scopes and those its action implies, sorted, no repeats."""
        scopes_for = self._implied.get(msg.provider)
        implied = scopes_for(msg) if scopes_for is not None else ()
        return sorted(set(msg.scopes) | set(implied))

    async def _violation(self, msg: Message, conn: Connection, now: datetime, why: str) -> Ticket:
        # RB-01: a side effect under the wrong account is the worst thing this system can
        # do. Refuse, keep the evidence, and page at the highest severity.
        self.log.critical(
            "TENANCY VIOLATION refused",
            alert="SEV0",
            runbook="RB-01",
            message_id=msg.id,
            tenant=msg.tenant,
            correlation_id=msg.correlation_id,
            message_tenant=msg.tenant,
            connection_id=conn.id,
            connection_tenant=conn.tenant,
            provider=msg.provider,
            reason=why,
        )
        try:
            await self.store.audit_append(
                AuditEntry(
                    at=now,
                    actor=f"worker:{self.worker_id}",
                    action="tenancy.violation",
                    target=msg.id,
                    reason=why,
                    detail={
                        "severity": "SEV0",
                        "message_tenant": msg.tenant,
                        "connection_id": conn.id,
                        "connection_tenant": conn.tenant,
                        "provider": msg.provider,
                    },
                )
            )
        except SluiceError as exc:
            self.log.error("could not audit the tenancy violation", error=str(exc))
        return Ticket(hold=hold_reason(f"tenancy guard refused the send: {why}"))


def _blocked(conn: Connection, required: Iterable[str]) -> str | None:
    """Why ``conn`` cannot carry a message that needs ``required``, or ``None``."""
    if conn.state is not ConnectionState.ACTIVE:
        return hold_reason(f"{conn.state.value}: {conn.state_reason or 'no reason given'}")
    missing = sorted(set(required) - set(conn.scopes))
    if missing:
        return hold_reason(f"scope not granted: {', '.join(missing)} (re-consent needed)")
    return None
