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
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sluice.connections import Connection, ConnectionState, hold_reason
from sluice.errors import ConfigError, NotFound, SluiceError
from sluice.model import Message
from sluice.secrets import SecretBox
from sluice.store.base import AuditEntry, Store

__all__ = ["ConnectionGate", "Connections", "Ticket"]

#: The connections of one claimed batch, by (tenant, provider).
Connections = Mapping[tuple[str, str], Connection | None]


@dataclass(frozen=True, slots=True)
class Ticket:
    """The gate's answer for one message: credentials to send with, or a hold."""

    credentials: Mapping[str, str] | None = None
    connection: Connection | None = None
    hold: str | None = None


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
    ) -> None:
        self.store = store
        self.box = box
        self.requires = frozenset(requires_connection)
        self.worker_id = worker_id
        self.log = logger

    async def load(self, batch: Iterable[Message]) -> Connections:
        """The connections of this batch's (tenant, provider) pairs, fetched once each."""
        pairs = {(m.tenant, m.provider) for m in batch}
        loaded: dict[tuple[str, str], Connection | None] = {}
        for tenant, provider in pairs:
            try:
                loaded[(tenant, provider)] = await self.store.connection_get(tenant, provider)  # type: ignore[attr-defined]
            except NotFound:
                loaded[(tenant, provider)] = None
        return loaded

    async def admit(self, msg: Message, connections: Connections, now: datetime) -> Ticket:
        """Credentials for ``msg``, or the reason it must wait."""
        conn = connections.get((msg.tenant, msg.provider))
        if conn is None:
            if msg.provider in self.requires:
                return Ticket(
                    hold=hold_reason(
                        f"tenant {msg.tenant!r} has no {msg.provider} connection; add one "
                        "with: sluice connections add"
                    )
                )
            if msg.scopes:
                return Ticket(
                    hold=hold_reason(
                        f"scopes {', '.join(msg.scopes)} required but tenant {msg.tenant!r} "
                        f"has no {msg.provider} connection"
                    )
                )
            return Ticket()
        if conn.tenant != msg.tenant:
            return await self._violation(msg, conn, now, "connection belongs to another tenant")
        if conn.state is not ConnectionState.ACTIVE:
            return Ticket(
                connection=conn,
                hold=hold_reason(f"{conn.state.value}: {conn.state_reason or 'no reason given'}"),
            )
        missing = sorted(set(msg.scopes) - set(conn.scopes))
        if missing:
            return Ticket(
                connection=conn,
                hold=hold_reason(f"scope not granted: {', '.join(missing)} (re-consent needed)"),
            )
        if self.box is None:
            return Ticket(
                connection=conn,
                hold=hold_reason("SLUICE_SECRET_KEY is not set; credentials cannot be opened"),
            )
        try:
            secrets = self.box.decrypt(
                conn.ciphertext, conn.key_id, conn.id, msg.tenant, msg.provider
            )
        except ConfigError as exc:
            return Ticket(connection=conn, hold=hold_reason(str(exc)))
        except ValueError as exc:
            return await self._violation(msg, conn, now, str(exc))
        return Ticket(credentials=secrets, connection=conn)

    async def _violation(self, msg: Message, conn: Connection, now: datetime, why: str) -> Ticket:
        # RB-01: a side effect under the wrong account is the worst thing this system can
        # do. Refuse, keep the evidence, and page at the highest severity.
        self.log.critical(
            "TENANCY VIOLATION refused",
            alert="SEV0",
            runbook="RB-01",
            message_id=msg.id,
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
