"""The console's pages, one module each; ``ROUTERS`` is what ``web.install`` mounts.

A page module has a ``router`` (an ``APIRouter``) whose handlers take ``SignedIn``,
``OperatorViewer`` or ``Acting`` (from ``sluice.console.web``) and return
``render(request, "<page>.html", ...)``. Acts call ``sluice.ops`` with
``viewer.actor`` and the reason the form asked for.
"""

from __future__ import annotations

from fastapi import APIRouter

from sluice.console.pages import (
    audit,
    auth,
    connections,
    controls,
    dlq,
    held,
    incidents,
    limits,
    messages,
    overview,
    tenant,
)

__all__ = ["ROUTERS"]

ROUTERS: list[APIRouter] = [
    auth.router,
    overview.router,
    messages.router,
    audit.router,
    incidents.router,
    controls.router,
    limits.router,
    connections.router,
    dlq.router,
    held.router,
    tenant.router,
]
