"""The console's plumbing: templates, the signed-in viewer of a request, the CSRF check
every form goes through, and the locally served API docs.

Pages are server-rendered Jinja2 templates; htmx (vendored under ``static/vendor``)
swaps in the parts that refresh or act, so there is no front-end build and no script
from anywhere but this process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.responses import HTMLResponse, RedirectResponse, Response

from sluice import __version__
from sluice.console.sessions import Viewer, session_viewer

__all__ = [
    "COOKIE",
    "Acting",
    "ConsoleError",
    "OperatorViewer",
    "SignedIn",
    "console_error",
    "redoc",
    "render",
    "swagger",
]

HERE = Path(__file__).parent
COOKIE = "sluice_session"
templates = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


class ConsoleError(Exception):
    """A console request that cannot go on: answered with ``status`` and a page (or,
    for htmx, a fragment) saying ``message``; ``login`` sends the browser to sign in."""

    def __init__(self, status: int, message: str, *, login: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.login = login


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    """``template`` with ``context``, plus what every page needs (viewer, csrf, path)."""
    viewer: Viewer | None = getattr(request.state, "viewer", None)
    html = templates.get_template(template).render(
        request=request, viewer=viewer, csrf=viewer.csrf if viewer else "",
        path=request.url.path, version=__version__, **context,
    )  # fmt: skip
    return HTMLResponse(html, status_code=status, headers=_NO_STORE)


#: Console pages show live state and may show personal data: never cached.
_NO_STORE = {"Cache-Control": "no-store"}


async def signed_in(request: Request) -> Viewer:
    """The viewer of this request's session cookie, or a ``ConsoleError`` that sends
    the browser to the login page."""
    token = request.cookies.get(COOKIE)
    state = request.app.state
    viewer = (
        await session_viewer(state.store, token, state.clock.now(), state.keys.get)
        if token
        else None
    )
    if viewer is None:
        raise ConsoleError(401, "Please sign in.", login=True)
    request.state.viewer = viewer
    return viewer


async def operator_only(viewer: Annotated[Viewer, Depends(signed_in)]) -> Viewer:
    """Operator pages: a tenant's session gets 403 (and a page saying so)."""
    if not viewer.operator:
        raise ConsoleError(403, "This page is for operators; your key is a tenant's.")
    return viewer


async def csrf_checked(request: Request, viewer: Annotated[Viewer, Depends(signed_in)]) -> Viewer:
    """Every state-changing request: the session's CSRF token, from the form field
    ``csrf`` or the ``X-CSRF-Token`` header htmx sends, and a same-origin ``Origin``."""
    origin = request.headers.get("origin")
    if origin is not None and origin != _origin_of(request):
        raise ConsoleError(403, "The request came from another site; it was refused.")
    presented = request.headers.get("x-csrf-token")
    if presented is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        value = (await request.form()).get("csrf")
        presented = value if isinstance(value, str) else None
    if not viewer.csrf_ok(presented):
        raise ConsoleError(403, "The form had expired or was not ours; reload and try again.")
    return viewer


def _origin_of(request: Request) -> str:
    return f"{request.url.scheme}://{request.url.netloc}"


#: A signed-in viewer (any key), an operator, and a viewer acting (CSRF checked).
SignedIn = Annotated[Viewer, Depends(signed_in)]
OperatorViewer = Annotated[Viewer, Depends(operator_only)]
Acting = Annotated[Viewer, Depends(csrf_checked)]


async def console_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ConsoleError)
    htmx = request.headers.get("hx-request") == "true"
    if exc.login:
        target = "/login?next=" + quote(_page_path(request, htmx))
        if htmx:
            return Response(status_code=401, headers={"HX-Redirect": target})
        return RedirectResponse(target, status_code=303)
    if htmx:
        return render(request, "_error.html", exc.status, message=exc.message)
    return render(request, "error.html", exc.status, message=exc.message)


def _page_path(request: Request, htmx: bool) -> str:
    """The page to come back to after signing in: for an htmx request, the page that
    made it (``HX-Current-URL``, when it is on this site), not the fragment it asked for."""
    current = request.headers.get("hx-current-url", "") if htmx else ""
    here = _origin_of(request)
    if current.startswith(here + "/"):
        return current[len(here) :]
    return request.url.path


async def swagger() -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url="/openapi.json", title="Sluice API",
        swagger_js_url="/static/vendor/swagger-ui-bundle.js",
        swagger_css_url="/static/vendor/swagger-ui.css",
        swagger_favicon_url="/static/favicon.svg",
        swagger_ui_parameters={"validatorUrl": None},  # no badge fetched from elsewhere
    )  # fmt: skip


async def redoc() -> HTMLResponse:
    return get_redoc_html(
        openapi_url="/openapi.json", title="Sluice API",
        redoc_js_url="/static/vendor/redoc.standalone.js",
        redoc_favicon_url="/static/favicon.svg", with_google_fonts=False,
    )  # fmt: skip
