"""Who is calling: an API key from ``Authorization: Bearer sk_…`` (or ``X-API-Key``).

Tenant keys act for their one tenant, which comes from the key and never from the
request; operator keys act for every tenant and may use the operator endpoints.
Keys are cached per process for ``CACHE_SECONDS``, so a revocation reaches a running
server within that time without a database read on every request.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from sluice.api.problems import Problem
from sluice.errors import NotFound
from sluice.ops.apikeys import secret_matches, split_key
from sluice.store.base import ApiKey, Store

__all__ = ["CACHE_SECONDS", "KeyCache", "Operator", "Principal", "Tenant", "principal"]

CACHE_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: str
    name: str
    role: str
    tenant: str | None

    @property
    def operator(self) -> bool:
        return self.role == "operator"

    @property
    def actor(self) -> str:
        """How the audit log names this caller."""
        return f"api:{self.name}"

    @property
    def idem_scope(self) -> str:
        """Idempotency keys are unique per tenant (tenant keys) or per operator key."""
        return f"t:{self.tenant}" if self.tenant else f"k:{self.key_id}"

    def sees(self, tenant: str) -> bool:
        return self.operator or tenant == self.tenant


class KeyCache:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._keys: dict[str, tuple[float, ApiKey | None]] = {}

    async def get(self, key_id: str) -> ApiKey | None:
        now = time.monotonic()
        hit = self._keys.get(key_id)
        if hit is not None and now - hit[0] < CACHE_SECONDS:
            return hit[1]
        try:
            key: ApiKey | None = await self.store.api_key_get(key_id)
        except NotFound:
            key = None
        if len(self._keys) > 10_000:  # unknown ids are cached too; keep the dict bounded
            self._keys.clear()
        self._keys[key_id] = (now, key)
        return key


_UNAUTHORIZED = {"WWW-Authenticate": 'Bearer realm="sluice"'}


async def principal(request: Request) -> Principal:
    """The caller, or 401 (no key, malformed, unknown, wrong secret, revoked — alike)."""
    header = request.headers.get("authorization", "")
    token = header[7:] if header[:7].lower() == "bearer " else request.headers.get("x-api-key")
    if not token:
        raise Problem(
            401, "an API key is required: Authorization: Bearer sk_…", kind="unauthorized",
            headers=_UNAUTHORIZED,
        )  # fmt: skip
    parts = split_key(token)
    key = await request.app.state.keys.get(parts[0]) if parts else None
    if (
        parts is None
        or key is None
        or key.revoked_at is not None
        or not secret_matches(key, parts[1])
    ):
        raise Problem(401, "the API key is not valid", kind="unauthorized", headers=_UNAUTHORIZED)
    return Principal(key.id, key.name, key.role, key.tenant)


async def operator(who: Annotated[Principal, Depends(principal)]) -> Principal:
    if not who.operator:
        raise Problem(403, "this endpoint needs an operator key", kind="forbidden")
    return who


Tenant = Annotated[Principal, Depends(principal)]
Operator = Annotated[Principal, Depends(operator)]
