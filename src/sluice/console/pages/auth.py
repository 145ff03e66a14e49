"""Sign in (an API key, or a one-time link from ``sluice run``) and sign out."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Form, Request
from starlette.responses import RedirectResponse, Response

from sluice.console.sessions import (
    SESSION_TTL,
    Viewer,
    session_end,
    session_from_key,
    session_from_ticket,
)
from sluice.console.web import COOKIE, Acting, render
from sluice.errors import ValidationError

__all__ = ["router"]

router = APIRouter()

#: The login form's own CSRF token (double-submit: cookie and field must agree), so a
#: page elsewhere cannot sign a browser in to a session of its choosing.
LOGIN_COOKIE = "sluice_login"


def _home(viewer: Viewer) -> str:
    return "/" if viewer.operator else f"/tenant/{viewer.tenant}"


def _safe_next(target: str | None) -> str | None:
    """Only a path on this site (never ``//host`` or a scheme): no open redirect."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return None


def _signed_in(request: Request, token: str, target: str) -> Response:
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE, token, max_age=int(SESSION_TTL.total_seconds()), path="/", httponly=True,
        samesite="strict", secure=request.url.scheme == "https",
    )  # fmt: skip
    response.delete_cookie(LOGIN_COOKIE, path="/login")
    return response


def _login_page(request: Request, status: int = 200, error: str | None = None) -> Response:
    nonce = secrets.token_urlsafe(16)
    response = render(
        request, "login.html", status, nonce=nonce, error=error,
        next=_safe_next(request.query_params.get("next")) or "",
    )  # fmt: skip
    response.set_cookie(
        LOGIN_COOKIE, nonce, path="/login", httponly=True, samesite="strict",
        secure=request.url.scheme == "https",
    )  # fmt: skip
    return response


@router.get("/login")
async def login_form(request: Request) -> Response:
    return _login_page(request)


@router.post("/login")
async def login(
    request: Request,
    key: Annotated[str, Form(max_length=200)] = "",
    name: Annotated[str, Form(max_length=64)] = "",
    nonce: Annotated[str, Form(max_length=64)] = "",
    next: Annotated[str, Form(max_length=2000)] = "",  # the form's field
) -> Response:
    cookie = request.cookies.get(LOGIN_COOKIE, "")
    if not nonce or not secrets.compare_digest(nonce, cookie):
        return _login_page(request, 403, "The sign-in form had expired; please try again.")
    state = request.app.state
    try:
        token, viewer = await session_from_key(state.store, key, name, state.clock.now())
    except ValidationError as exc:
        return _login_page(request, 401, str(exc))
    return _signed_in(request, token, _safe_next(next) or _home(viewer))


@router.get("/login/link")
async def link_form(request: Request, t: str = "") -> Response:
    """The one-time link shows a button; only pressing it uses the link (a chat
    client's preview fetching the URL must not spend it)."""
    return render(request, "login_link.html", ticket=t)


@router.post("/login/link")
async def link_login(request: Request, t: Annotated[str, Form(max_length=200)] = "") -> Response:
    state = request.app.state
    try:
        token, viewer = await session_from_ticket(state.store, t, state.clock.now())
    except ValidationError as exc:
        return _login_page(request, 401, str(exc))
    return _signed_in(request, token, _home(viewer))


@router.post("/logout")
async def logout(request: Request, viewer: Acting) -> Response:
    token = request.cookies.get(COOKIE)
    if token:
        await session_end(request.app.state.store, token)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response
