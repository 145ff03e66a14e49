"""Connections: each tenant's credentials for a provider — state, scopes, credential
version, last check, days to expiry — and a check run from the page (the same call as
``sluice connections check``), with what to do about a connection that is not active
said in words. No secret ever reaches a page: rows are ``Connection.public()``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from sluice.connections import Connection, ConnectionState
from sluice.console.pages._operator_acts import (
    MAX_NAME,
    Outcome,
    Submitted,
    operator,
    refused,
)
from sluice.console.web import Acting, OperatorViewer, render
from sluice.errors import ConfigError, NotFound, ValidationError
from sluice.ops.connections import CheckReport, connection_check

__all__ = ["router"]

router = APIRouter()

#: A connection whose token expires within this many days is flagged.
EXPIRY_WARNING_DAYS = 7


@dataclass(frozen=True, slots=True)
class ConnectionLine:
    """A connection as the table shows it (no secrets: ``public()`` fields only)."""

    row: dict[str, Any]
    days_left: float | None
    advice: str


def _advice(c: Connection, days_left: float | None) -> str:
    """What on-call does about this connection, in words."""
    who = f"{c.tenant}'s {c.provider} connection"
    if c.state is ConnectionState.NEEDS_RECONSENT:
        missing = ", ".join(c.missing_scopes) or "a scope it needs"
        return (
            f"The provider no longer grants {missing}. Ask {c.tenant} to connect {c.provider} "
            "again and grant it; recording the new scopes (sluice connections rotate) then "
            "releases its held messages, oldest first."
        )
    if c.state is ConnectionState.PENDING_REAUTH:
        return (
            f"The provider refused {who}'s credentials (revoked, or a refresh failed). Ask "
            f"{c.tenant} to sign in to {c.provider} again; storing the new credentials "
            "(sluice connections rotate) then releases its held messages."
        )
    if c.state is ConnectionState.REVOKED:
        return (
            f"An operator revoked {who}; its messages are held until it is given new "
            "credentials (sluice connections rotate)."
        )
    if days_left is not None and days_left < EXPIRY_WARNING_DAYS:
        return f"The token expires in {days_left:.1f} days: have {c.tenant} renew it before then."
    if c.last_check_error:
        return "The last check failed; run a check again once the provider answers."
    return ""


def _line(c: Connection, now: datetime) -> ConnectionLine:
    days = (c.expires_at - now).total_seconds() / 86400 if c.expires_at else None
    return ConnectionLine(c.public(), days, _advice(c, days))


async def _page(request: Request, outcome: Outcome | None = None,
                checks: list[CheckReport] | None = None) -> Response:  # fmt: skip
    state = request.app.state
    outcome = outcome or Outcome()
    now = state.clock.now()
    rows = [_line(c, now) for c in await state.store.connection_list()]
    return render(
        request, "connections.html", outcome.status, outcome=outcome,
        connections=sorted(rows, key=lambda r: (r.row["tenant"], r.row["provider"])),
        checks=checks or [],
    )  # fmt: skip


@router.get("/connections")
async def connections_page(request: Request, viewer: OperatorViewer) -> Response:
    return await _page(request)


@router.post("/connections/check")
async def connections_check(request: Request, fields: Submitted, viewer: Acting) -> Response:
    """Check connections at their providers (all, or one tenant's and/or provider's):
    credentials valid, scopes still granted, days until the token expires."""
    operator(viewer)
    state = request.app.state
    try:
        tenant = fields.text("tenant", max_len=MAX_NAME) or None
        provider = fields.text("provider", max_len=MAX_NAME) or None
        chosen = await state.store.connection_list(tenant, provider)
        if not chosen:
            raise NotFound("no connection matches that tenant and provider")
        reports = await _check(request, chosen)
    except (ValidationError, NotFound, ConfigError) as exc:
        return await _page(request, refused(exc))
    failed = sum(1 for r in reports if not r.ok)
    said = f"{len(reports)} checked, {failed} failed" if reports else "no provider can check these"
    return await _page(request, Outcome(notice=said), reports)


async def _check(request: Request, chosen: list[Connection]) -> list[CheckReport]:
    from sluice.providers import build_providers, http_client
    from sluice.worker.assemble import secret_box

    settings = request.app.state.settings
    box = secret_box(settings)
    if box is None:
        raise ConfigError("SLUICE_SECRET_KEY is not set here: credentials cannot be opened")
    reports = []
    async with http_client(settings) as client:
        impls = build_providers(settings, client, request.app.state.clock)
        for conn in chosen:
            impl = impls.get(conn.provider)
            if impl is not None and hasattr(impl, "check"):
                reports.append(
                    await connection_check(
                        request.app.state.store, box, impl, conn, request.app.state.clock
                    )
                )
    return reports
