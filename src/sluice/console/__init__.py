"""The operator console: a web UI served by ``sluice serve`` and ``sluice run`` at ``/``
(the API stays under ``/v1``). Server-rendered pages with htmx; every asset ships in
this package. Acts go through ``sluice.ops``, as the CLI's and the API's do."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from sluice.console.pages import ROUTERS
from sluice.console.web import HERE, ConsoleError, console_error, redoc, swagger

__all__ = ["install"]


def install(app: FastAPI) -> None:
    """Mount the console on ``app``: static files, the pages, and Swagger UI and ReDoc
    served from this process (so ``/docs`` works with no internet)."""
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="console-static")
    app.add_exception_handler(ConsoleError, console_error)
    for router in ROUTERS:
        app.include_router(router, include_in_schema=False)
    app.add_api_route("/docs", swagger, methods=["GET"], include_in_schema=False)
    app.add_api_route("/redoc", redoc, methods=["GET"], include_in_schema=False)
