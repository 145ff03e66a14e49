"""The HTTP API (FastAPI): messages for tenants, operator endpoints, provider ingress.

Served by ``sluice serve``; the OpenAPI document is at ``/openapi.json``.
"""

from __future__ import annotations

from sluice.api.app import create_app

__all__ = ["create_app"]
