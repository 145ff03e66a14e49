"""The overview: what is happening now, refreshing itself (the first page on-call opens)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from sluice.console.web import OperatorViewer, render
from sluice.ops.actions import status

__all__ = ["router"]

router = APIRouter()


async def _figures(request: Request) -> dict[str, Any]:
    state = request.app.state
    report = await status(state.store, state.clock)
    return {"report": report}


@router.get("/")
async def overview(request: Request, viewer: OperatorViewer) -> Response:
    return render(request, "overview.html", **await _figures(request))


@router.get("/overview/live")
async def overview_live(request: Request, viewer: OperatorViewer) -> Response:
    """The part of the overview that htmx reloads every few seconds."""
    return render(request, "_overview_live.html", **await _figures(request))
