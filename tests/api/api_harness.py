"""What the API tests share: the in-process client and three keys."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from sluice.store import Store


@dataclass
class Api:
    store: Store
    client: httpx.AsyncClient
    #: Authorization headers: tenant ``acme``, tenant ``other``, an operator.
    acme: dict[str, str]
    other: dict[str, str]
    ops: dict[str, str]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
