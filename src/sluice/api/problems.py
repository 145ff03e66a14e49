"""Errors as RFC 9457 problem details: ``application/problem+json`` naming the field.

Every error the API answers with goes through here, so no stack trace, SQL or secret
ever reaches a client: unexpected exceptions become a bare 500 problem (and a log line).
"""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from sluice.errors import (
    ConfigError,
    Conflict,
    IdempotencyConflict,
    MigrationError,
    NotFound,
    StoreUnavailable,
    ValidationError,
)

__all__ = ["Problem", "install", "problem_response"]

log = structlog.get_logger("sluice.api")

_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    408: "Request timeout",
    409: "Conflict",
    413: "Request too large",
    415: "Unsupported media type",
    422: "Unprocessable content",
    500: "Internal server error",
    503: "Service unavailable",
}


class Problem(Exception):
    """Raise to answer with a problem document."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        field: str | None = None,
        kind: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.field = field
        self.kind = kind
        self.headers = headers or {}
        self.extra = extra or {}


def problem_response(
    status: int,
    detail: str,
    *,
    field: str | None = None,
    kind: str | None = None,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"https://sluice.dev/problems/{kind}" if kind else "about:blank",
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    if field is not None:
        body["field"] = field
    if instance is not None:
        body["instance"] = instance
    body.update(extra or {})
    return JSONResponse(
        body, status_code=status, headers=headers, media_type="application/problem+json"
    )


def _loc(loc: tuple[Any, ...]) -> str:
    """``("body", "messages", 3, "recipient")`` → ``messages[3].recipient``."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif str(p) in ("MessageIn", "BatchIn") or str(p).startswith(("function-", "tagged-")):
            continue  # the name of a union branch, not a field
        else:
            # A key the client invented may hold text JSON cannot be encoded from.
            name = str(p).encode("utf-8", "backslashreplace").decode()
            out += f".{name}" if out else name
    return out or "body"


def _json_error(error: dict[str, Any], document: Any) -> str:
    """``Expecting ',' delimiter at line 1 column 11`` for a body that is not JSON."""
    reason = str(error.get("ctx", {}).get("error", "cannot be parsed"))
    loc = error.get("loc", ())
    pos = loc[1] if len(loc) > 1 and isinstance(loc[1], int) else None
    if pos is None or not isinstance(document, str | bytes):
        return reason
    text = document if isinstance(document, str) else document.decode("utf-8", "replace")
    line = text.count("\n", 0, pos) + 1
    column = pos - text.rfind("\n", 0, pos)
    return f"{reason} at line {line} column {column}"


_UNREADABLE: dict[type[BaseException], str] = {
    RecursionError: "is not valid JSON: nested too deeply to parse",
    UnicodeDecodeError: "is not valid JSON: not UTF-8 text",
}


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into a problem document."""

    async def on_problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Problem)
        return problem_response(
            exc.status, exc.detail, field=exc.field, kind=exc.kind,
            instance=request.url.path, headers=exc.headers, extra=exc.extra,
        )  # fmt: skip

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = exc.errors()
        first = errors[0] if errors else {"loc": ("body",), "msg": "is not valid"}
        if first.get("type") == "json_invalid":
            reason = _json_error(first, exc.body)
            return problem_response(
                422, f"body: is not valid JSON: {reason}", field="body", kind="validation",
                instance=request.url.path, extra={"errors": [{"field": "body", "problem": reason}]},
            )  # fmt: skip
        field = _loc(tuple(first.get("loc", ())))
        problems = [
            {"field": _loc(tuple(e.get("loc", ()))), "problem": str(e.get("msg", ""))}
            for e in errors[:20]
        ]
        return problem_response(
            422, f"{field}: {first.get('msg', 'is not valid')}", field=field,
            kind="validation", instance=request.url.path, extra={"errors": problems},
        )  # fmt: skip

    async def on_bad_input(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ValidationError)
        return problem_response(
            422, str(exc), field=exc.field, kind="validation", instance=request.url.path
        )

    async def on_not_found(request: Request, exc: Exception) -> JSONResponse:
        return problem_response(404, str(exc), kind="not-found", instance=request.url.path)

    async def on_conflict(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, IdempotencyConflict)
        return problem_response(
            409, str(exc), field="idempotency_key", kind="idempotency-conflict",
            instance=request.url.path, extra={"existing_id": exc.existing_id},
        )  # fmt: skip

    async def on_state(request: Request, exc: Exception) -> JSONResponse:
        return problem_response(409, str(exc), kind="conflict", instance=request.url.path)

    async def on_unavailable(request: Request, exc: Exception) -> JSONResponse:
        log.warning("store unavailable", path=request.url.path, error=str(exc))
        return problem_response(
            503, "the store is unavailable; retry later", kind="unavailable",
            instance=request.url.path, headers={"Retry-After": "1"},
        )  # fmt: skip

    async def on_config(request: Request, exc: Exception) -> JSONResponse:
        log.error("configuration error", path=request.url.path, error=str(exc))
        return problem_response(503, str(exc), kind="config", instance=request.url.path)

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        # FastAPI turns every failure to decode a body into one bare 400; the two a
        # client can cause deserve words and the field they concern.
        cause = exc.__cause__
        unreadable = _UNREADABLE.get(type(cause)) if cause and exc.status_code == 400 else None
        if unreadable is not None:
            return problem_response(
                422, f"body: {unreadable}", field="body", kind="validation",
                instance=request.url.path,
            )  # fmt: skip
        return problem_response(
            exc.status_code, str(exc.detail), instance=request.url.path,
            headers=dict(exc.headers or {}),
        )  # fmt: skip

    async def on_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", path=request.url.path)
        return problem_response(
            500, "an internal error occurred; it has been logged", instance=request.url.path
        )

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(ValidationError, on_bad_input)
    app.add_exception_handler(NotFound, on_not_found)
    app.add_exception_handler(IdempotencyConflict, on_conflict)
    app.add_exception_handler(Conflict, on_state)
    app.add_exception_handler(StoreUnavailable, on_unavailable)
    app.add_exception_handler(MigrationError, on_config)
    app.add_exception_handler(ConfigError, on_config)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_error)
