"""The HTTP API in-process (httpx's ASGI transport) on the test's real store."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from api_harness import Api, bearer

from sluice.api import create_app
from sluice.clock import SystemClock
from sluice.config import Settings
from sluice.ingress.config import IngressConfig
from sluice.ops.apikeys import api_key_create
from sluice.store import Store


@pytest.fixture
def ingress_config() -> IngressConfig:
    return IngressConfig()


@pytest.fixture
def api_settings(store_url: str) -> Settings:
    return Settings(database_url=store_url, api_max_body=65_536)


@pytest.fixture
async def api(
    store: Store, api_settings: Settings, ingress_config: IngressConfig
) -> AsyncIterator[Api]:
    app = create_app(api_settings, store=store, clock=SystemClock(), ingress_config=ingress_config)
    acme = await api_key_create(store, "acme-app", "tenant", "acme", actor="test")
    other = await api_key_create(store, "other-app", "tenant", "other", actor="test")
    ops = await api_key_create(store, "oncall", "operator", None, actor="test")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sluice.test") as client:
        yield Api(store, client, bearer(acme.token), bearer(other.token), bearer(ops.token))
