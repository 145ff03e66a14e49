"""The control routes under ``/_sim/``: faults, credentials, effects, the request log,
the status-callback switch, health. Bad input is a 400 whose ``error`` names the field."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from sluice.providers.simulator._base import PROVIDERS, json_document, required_text, scope_set
from sluice.providers.simulator._faults import Faults
from sluice.providers.simulator._state import SimulatorState

#: Most entries one ``GET /_sim/requests`` returns.
MAX_REQUESTS_PAGE = 10_000


def control_routes(state: SimulatorState) -> list[BaseRoute]:
    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def put_faults(request: Request) -> Response:
        try:
            faults = Faults.from_json(json.loads(await request.body()))
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        state.set_faults(faults)
        return JSONResponse({"faults": [f.to_json() for f in state.faults()]})

    async def get_faults(request: Request) -> Response:
        return JSONResponse({"faults": [f.to_json() for f in state.faults()]})

    async def delete_faults(request: Request) -> Response:
        state.clear_faults(request.query_params.get("path_prefix"))
        return JSONResponse({"faults": [f.to_json() for f in state.faults()]})

    async def summary(request: Request) -> Response:
        document: dict[str, Any] = dict(state.summary())
        if request.query_params.get("by_provider", "").lower() in ("1", "true", "yes"):
            document["by_provider"] = state.by_provider()
        return JSONResponse(document)

    async def ids(request: Request) -> Response:
        return JSONResponse({"ids": state.counts()})

    async def one(request: Request) -> Response:
        effect = state.effect(request.path_params["key"])
        if effect is None:
            return JSONResponse({"error": "no such effect"}, status_code=404)
        return JSONResponse(effect.to_json())

    async def reset(request: Request) -> Response:
        state.reset_effects()
        return JSONResponse(state.summary())

    def listing() -> Response:
        return JSONResponse({"credentials": [c.to_json() for c in state.credentials()]})

    async def register(request: Request) -> Response:
        try:
            credential = state.register_credential(json_document(await request.body()))
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"credential": credential.to_json()})

    async def get_credentials(request: Request) -> Response:
        return listing()

    async def delete_credentials(request: Request) -> Response:
        state.clear_credentials(request.query_params.get("provider"))
        return listing()

    async def revoke(request: Request) -> Response:
        try:
            document = json_document(await request.body())
            provider, token = (
                required_text(document, "provider"),
                required_text(document, "token"),
            )
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        if not state.revoke_credential(provider, token):
            return JSONResponse({"error": "no such credential"}, status_code=404)
        return listing()

    async def scopes(request: Request) -> Response:
        try:
            document = json_document(await request.body())
            provider, token = (
                required_text(document, "provider"),
                required_text(document, "token"),
            )
            granted = scope_set(document.get("scopes"))
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        if not state.set_scopes(provider, token, granted):
            return JSONResponse({"error": "no such credential"}, status_code=404)
        return listing()

    async def requests(request: Request) -> Response:
        try:
            since, limit, provider, status = _request_filters(request)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        items = state.requests.since(since, limit=limit, provider=provider, status=status)
        return JSONResponse(
            {
                "items": [entry.to_json() for entry in items],
                "count": len(items),
                # Pass as ``since`` to read on; ``None`` when nothing new was there.
                "next_cursor": str(items[-1].seq) if items else None,
                **state.requests.stats(),
            }
        )

    async def clear_requests(request: Request) -> Response:
        state.requests.clear()
        return JSONResponse(state.requests.stats())

    async def get_callbacks(request: Request) -> Response:
        return JSONResponse({"enabled": state.callbacks.enabled})

    async def set_callbacks(request: Request) -> Response:
        try:
            enabled = json_document(await request.body()).get("enabled")
            if not isinstance(enabled, bool):
                raise ValueError("enabled is required and must be true or false")
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        state.callbacks.enabled = enabled
        return JSONResponse({"enabled": enabled})

    return [
        Route("/_sim/callbacks", get_callbacks, methods=["GET"]),
        Route("/_sim/callbacks", set_callbacks, methods=["POST"]),
        Route("/_sim/requests", requests, methods=["GET"]),
        Route("/_sim/requests", clear_requests, methods=["DELETE"]),
        Route("/_sim/credentials", register, methods=["POST"]),
        Route("/_sim/credentials", get_credentials, methods=["GET"]),
        Route("/_sim/credentials", delete_credentials, methods=["DELETE"]),
        Route("/_sim/credentials/revoke", revoke, methods=["POST"]),
        Route("/_sim/credentials/scopes", scopes, methods=["POST"]),
        Route("/_sim/health", health, methods=["GET"]),
        Route("/_sim/faults", put_faults, methods=["POST"]),
        Route("/_sim/faults", get_faults, methods=["GET"]),
        Route("/_sim/faults", delete_faults, methods=["DELETE"]),
        Route("/_sim/effects", summary, methods=["GET"]),
        Route("/_sim/effects", reset, methods=["DELETE"]),
        Route("/_sim/effects/ids", ids, methods=["GET"]),
        Route("/_sim/effects/{key}", one, methods=["GET"]),
    ]


def _request_filters(
    request: Request,
) -> tuple[int | datetime | None, int, str | None, int | None]:
    """``since`` (a sequence number, or an ISO-8601 time with its offset), ``limit``,
    ``provider`` and ``status`` of ``GET /_sim/requests``; ``ValueError`` names the bad one."""
    query = request.query_params
    since: int | datetime | None = None
    raw = query.get("since")
    if raw:
        if raw.isascii() and raw.isdigit() and len(raw) <= 18:
            since = int(raw)
        else:
            try:
                since = datetime.fromisoformat(raw)
            except ValueError:
                since = None
            if since is None or since.tzinfo is None:
                raise ValueError(
                    "since must be a sequence number (the next_cursor of a previous answer) "
                    "or an ISO-8601 time with its UTC offset"
                )
    limit = _int_param(query.get("limit"), "limit", 1, MAX_REQUESTS_PAGE, default=1000)
    provider = query.get("provider") or None
    if provider is not None and provider not in PROVIDERS:
        raise ValueError(f"provider must be one of {list(PROVIDERS)}")
    status = _int_param(query.get("status"), "status", 100, 599, default=None)
    return since, limit, provider, status


def _int_param(raw: str | None, name: str, low: int, high: int, *, default: Any) -> Any:
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 9 or not low <= int(raw) <= high:
        raise ValueError(f"{name} must be a whole number between {low} and {high}")
    return int(raw)
