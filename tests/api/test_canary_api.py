"""Canaries end to end (issue 15): ``POST /v1/canary/run`` sends a marked message through
a real worker (a ``Dispatcher`` with its ``Projector``) and the real webhook adapter, the
receiver faked at the wire; the "provider" calls back with a signed delivery receipt
through ``/v1/ingress``, which the worker's projector applies. Outcomes: ok, failed (the
provider answers errors), missing (no receipt in time); the last two open incidents.
Every test runs against PostgreSQL and SQLite."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from api_harness import Api
from prometheus_client import REGISTRY
from standardwebhooks import Webhook

from sluice.config import Settings
from sluice.ingress.config import IngressConfig, IngressSource
from sluice.ingress.projector import Projector
from sluice.model import NewMessage, Status
from sluice.netguard import static_resolver
from sluice.ops.canary import CANARY_RULE, Canaries, canary_config
from sluice.ops.listings import status_view, top
from sluice.providers.webhook import WebhookProvider
from sluice.store import AuditFilter, MessageFilter, Store, create_store
from sluice.store.canaries import CANARY_ACTION
from sluice.worker import Dispatcher

SIGNING = "whsec_" + base64.b64encode(os.urandom(24)).decode()
PARTNER = "whsec_" + base64.b64encode(b"c" * 32).decode()
URL = "https://receiver.example/canary"


@pytest.fixture
def ingress_config() -> IngressConfig:
    return IngressConfig(
        sources={"partner": IngressSource("partner", "webhook", secrets=(PARTNER,))}
    )


@pytest.fixture
def sluice_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A ``sluice.toml`` with one canary target (the webhook receiver), in effect."""
    path = tmp_path / "sluice.toml"
    path.write_text(
        '[canary]\ninterval = "1h"\ntimeout = "20s"\n'
        f'targets = [{{ provider = "webhook", recipient = "{URL}" }}]\n'
    )
    monkeypatch.setenv("SLUICE_CONFIG", str(path))
    monkeypatch.delenv("SLUICE_CANARY_INTERVAL", raising=False)
    return path


class Provider:
    """The receiver of canaries: answers ``status`` to every send and, when
    ``callbacks``, sends a signed delivery receipt through ingress once Sluice has
    recorded the send (as a provider's status callback would)."""

    def __init__(self, api: Api, status: int = 200, callbacks: bool = True) -> None:
        self.api, self.status, self.callbacks = api, status, callbacks
        self.received: list[str] = []
        self.receipts: list[str] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.received.append(request.headers["webhook-id"])
        return httpx.Response(self.status)

    async def call_back(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            for mid in [m for m in self.received if m not in self.receipts]:
                if (await self.api.store.message_get(mid)).status is Status.SENT:
                    await self._receipt(mid)
                    self.receipts.append(mid)
            await asyncio.sleep(0.05)

    async def _receipt(self, mid: str) -> None:
        body = json.dumps({"type": "message.delivered", "timestamp": "2026-01-01T00:00:00Z",
                           "data": {"message_id": mid}})  # fmt: skip
        now = datetime.now(UTC)
        headers = {
            "webhook-id": f"evt-{mid}",
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": Webhook(PARTNER).sign(f"evt-{mid}", now, body),
            "content-type": "application/json",
        }
        r = await self.api.client.post("/v1/ingress/partner", content=body, headers=headers)
        assert r.status_code == 200, r.text


@contextlib.asynccontextmanager
async def worker(api: Api, config: IngressConfig, provider: Provider) -> AsyncIterator[Dispatcher]:
    """A real worker (dispatcher and projector) sending to ``provider``, with its
    callbacks, for the block."""
    settings = Settings(
        database_url="sqlite:///unused.db", poll_interval=0.05, flush_interval=0,
        reaper_interval=3600, retry_base=30, retry_cap=60,
    )  # fmt: skip
    async with httpx.AsyncClient(transport=httpx.MockTransport(provider.handle)) as client:
        adapter = WebhookProvider(client, SIGNING, resolve=static_resolver("93.184.216.34"))
        projector = Projector(api.store, settings, config, worker_id="w-canary")
        d = Dispatcher(api.store, {"webhook": adapter}, settings, worker_id="w-canary",
                       projector=projector)  # fmt: skip
        stopping = asyncio.Event()
        tasks = [asyncio.create_task(d.run())]
        if provider.callbacks:
            tasks.append(asyncio.create_task(provider.call_back(stopping)))
        try:
            yield d
        finally:
            d.stop()
            stopping.set()
            await asyncio.gather(*tasks)


async def open_incidents(store: Store) -> list[tuple[str, str]]:
    return [(i.rule, i.scope_key) for i in await store.incident_list("open", 10)]


# -- outcomes ----------------------------------------------------------------------------


async def test_canary_run__delivered_is_ok_and_recorded(
    api: Api, ingress_config: IngressConfig, sluice_toml: Path
) -> None:
    provider = Provider(api)
    async with worker(api, ingress_config, provider):
        r = await api.client.post("/v1/canary/run", json={"reason": "verify"}, headers=api.ops)

    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["count"], body["ok"]) == (1, True)
    (run,) = body["items"]
    assert (run["target"], run["provider"], run["tenant"], run["outcome"]) == (
        "webhook",
        "webhook",
        "_sluice",
        "ok",
    )
    assert run["receipt_at"] is not None and run["error"] is None
    # One message sent, one receipt: what went in came out, marked as a canary.
    assert provider.received == provider.receipts == [run["message_id"]]
    msg = await api.store.message_get(run["message_id"])
    assert (msg.status, msg.action, msg.tenant) == (Status.DELIVERED, CANARY_ACTION, "_sluice")
    assert await open_incidents(api.store) == []
    listed = (await api.client.get("/v1/canary", headers=api.ops)).json()
    assert [c["id"] for c in listed["items"]] == [run["id"]]
    assert listed["next_cursor"] is None
    (audit,) = await api.store.audit_list(10, AuditFilter(action="canary.run"))
    assert audit.reason == "verify" and audit.detail["runs"][0]["outcome"] == "ok"


async def test_canary_run__provider_errors_fail_it_and_open_an_incident(
    api: Api, ingress_config: IngressConfig, sluice_toml: Path
) -> None:
    provider = Provider(api, status=503)
    async with worker(api, ingress_config, provider):
        r = await api.client.post("/v1/canary/run", json={"wait": 2}, headers=api.ops)

    body = r.json()
    assert body["ok"] is False
    (run,) = body["items"]
    assert run["outcome"] == "failed"
    assert "PROVIDER_UNAVAILABLE" in run["error"]
    assert provider.received and provider.receipts == []
    assert await open_incidents(api.store) == [(CANARY_RULE, "provider=webhook target=webhook")]
    (incident,) = await api.store.incident_list("open", 10)
    assert incident.runbook == "003#RB-09"


async def test_canary_run__no_receipt_in_time_is_missing_and_opens_an_incident(
    api: Api, ingress_config: IngressConfig, sluice_toml: Path
) -> None:
    provider = Provider(api, callbacks=False)
    async with worker(api, ingress_config, provider):
        r = await api.client.post("/v1/canary/run", json={"wait": 1}, headers=api.ops)

    (run,) = r.json()["items"]
    assert run["outcome"] == "missing"
    assert "no delivery receipt" in run["error"]
    assert (await api.store.message_get(run["message_id"])).status is Status.SENT
    assert await open_incidents(api.store) == [(CANARY_RULE, "provider=webhook target=webhook")]


# -- input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"wait": 0}, "wait"),
        ({"wait": 601}, "wait"),
        ({"wait": "nan"}, "wait"),
        ({"provider": "twilio"}, "provider"),
        ('{"provider": "web\\ud800hook"}', "provider"),
        ({"surprise": 1}, "surprise"),
    ],
)
async def test_canary_run__bad_input_names_the_field_and_sends_nothing(
    api: Api, sluice_toml: Path, body: dict[str, object] | str, field: str
) -> None:
    raw = body if isinstance(body, str) else json.dumps(body)
    headers = {**api.ops, "content-type": "application/json"}
    r = await api.client.post("/v1/canary/run", content=raw, headers=headers)

    assert r.status_code == 422, r.text
    assert field in r.text
    assert await api.store.canary_list(None, 10) == []
    assert await api.store.message_list(MessageFilter(), None, None, 10) == []


async def test_canary__operator_keys_only(api: Api, sluice_toml: Path) -> None:
    assert (await api.client.post("/v1/canary/run", json={}, headers=api.acme)).status_code == 403
    assert (await api.client.get("/v1/canary", headers=api.acme)).status_code == 403


async def test_messages__a_tenant_cannot_mark_its_message_as_a_canary(api: Api) -> None:
    m = {"channel": "webhook", "provider": "webhook", "recipient": URL, "action": CANARY_ACTION}
    r = await api.client.post("/v1/messages", json=m, headers=api.acme)

    assert r.status_code == 422 and "action" in r.text
    assert await api.store.message_list(MessageFilter(), None, None, 10) == []


# -- the schedule: one worker at a time --------------------------------------------------


async def test_schedule__the_leading_worker_runs_a_due_canary_to_ok(
    api: Api, ingress_config: IngressConfig, sluice_toml: Path
) -> None:
    provider = Provider(api)
    canaries = Canaries(api.store, canary_config(), tick=0.05, poll=0.05)
    stopping = asyncio.Event()
    async with worker(api, ingress_config, provider):
        task = asyncio.create_task(canaries.run(stopping))
        for _ in range(400):
            runs = await api.store.canary_list(None, 10)
            if runs and runs[0].outcome != "pending":
                break
            await asyncio.sleep(0.05)
        stopping.set()
        await task

    (run,) = await api.store.canary_list(None, 10)
    assert (run.outcome, run.actor, run.error) == ("ok", "sluice:canary", None)
    assert provider.received == provider.receipts == [run.message_id]
    assert await open_incidents(api.store) == []


async def test_schedule__two_workers_send_one_canary_per_interval(
    store_url: str, sluice_toml: Path
) -> None:
    sluice_toml.write_text(
        '[canary]\ninterval = "1h"\ntimeout = "1s"\n'
        f'targets = [{{ provider = "webhook", recipient = "{URL}" }}]\n'
    )
    config = canary_config()
    stores = [create_store(store_url), create_store(store_url)]
    for s in stores:
        await s.open()  # type: ignore[attr-defined]
    try:
        workers = [Canaries(s, config, tick=0.05, poll=0.05) for s in stores]
        stopping = asyncio.Event()
        tasks = [asyncio.create_task(w.run(stopping)) for w in workers]
        for _ in range(200):  # until the canary has an outcome (missing: no worker sends)
            runs = await stores[0].canary_list(None, 10)
            if runs and runs[0].outcome != "pending":
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # more rounds of both: none is due
        stopping.set()
        await asyncio.gather(*tasks)
        # A new leader finds the target not due either.
        assert await Canaries(stores[1], config).round() == []

        assert sorted(w.started for w in workers) == [[], ["webhook"]]
        runs = await stores[0].canary_list(None, 10)
        assert [r.outcome for r in runs] == ["missing"]
        assert len(await stores[0].message_list(MessageFilter(), None, None, 10)) == 1
    finally:
        for s in stores:
            await s.close()


# -- canaries stay out of tenants' figures -----------------------------------------------


def enqueued(tenant: str) -> float:
    labels = {"tenant": tenant, "channel": "webhook", "provider": "webhook"}
    return REGISTRY.get_sample_value("sluice_messages_enqueued_total", labels) or 0.0


async def test_figures__canaries_are_not_counted_as_a_tenants_messages(store: Store) -> None:
    def new(tenant: str, action: str = "send") -> NewMessage:
        return NewMessage(tenant=tenant, channel="webhook", provider="webhook",
                          recipient=URL, action=action)  # fmt: skip

    before = {t: enqueued(t) for t in ("acme", "_sluice", "_canary")}
    await store.enqueue_many(
        [new("acme"), new("acme"), new("acme", CANARY_ACTION), new("_sluice", CANARY_ACTION)]
    )

    # Counted as Sluice's canaries, not as acme's (or _sluice's) messages.
    after = {t: enqueued(t) - n for t, n in before.items()}
    assert after == {"acme": 2, "_sluice": 0, "_canary": 2}

    by_tenant = (await status_view(store, by="tenant")).groups
    assert [(g.group, g.total) for g in by_tenant] == [("acme", 2)]
    top_tenants = (await top(store, "tenant", 3600)).items
    assert [(t.group, t.created) for t in top_tenants] == [("acme", 2)]
    only_acme = await top(store, "provider", 3600, flt=MessageFilter(tenant="acme"))
    assert [(t.group, t.created) for t in only_acme.items] == [("webhook", 2)]
    # Sluice's own figures still see every message sent.
    by_provider = (await status_view(store, by="provider")).groups
    assert [(g.group, g.total) for g in by_provider] == [("webhook", 4)]
