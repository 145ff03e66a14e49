"""Schemathesis over the published ``/openapi.json``: no operation answers 5xx, and what
each one answers is what the document says (response body schema, content type).

Everything runs in-process on the ``api`` fixture (httpx's ASGI transport, the real
store). Schemathesis builds the requests; they are sent on the test's own event loop —
where the store's connections live — from a worker thread that waits for each answer
(Hypothesis is synchronous), so there is no second event loop and no network.

Every operation is exercised with an operator key (which reaches all of them), and the
``/v1/messages`` operations once more with a tenant key, in two phases:

- coverage: Schemathesis's deterministic boundary and type-mutation cases, valid and
  invalid (the phase its CLI runs first);
- fuzzing: Hypothesis-generated valid (``positive``) and invalid (``negative``) input,
  derandomized so that every run sends the same cases.

Invalid input must be refused with a 4xx, never a 5xx. The one 5xx that is by design
is ``/readyz`` answering 503 while no worker has been seen (none runs here): it is
checked to be exactly that. With no live worker, ``POST /v1/controls`` and
``/v1/controls/clear`` with ``wait=true`` have nothing to wait for and must answer at
once; that is checked too, so they stay in.

A failure names the operation, the check, the request (as ``curl``, the key filtered
out) and, for an exception in the app, its traceback.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
import traceback
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import httpx
import pytest
import schemathesis
import structlog
from api_harness import Api
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import FlakyFailure, Unsatisfiable
from hypothesis.strategies import SearchStrategy
from schemathesis import APIOperation, BaseSchema, Case, CheckContext, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Err
from schemathesis.core.transport import Response
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
)

from sluice.ingress.config import IngressConfig, IngressSource
from sluice.model import Attempt, AttemptOutcome, Completion, NewMessage, Status
from sluice.ops.controls import live_workers
from sluice.store.base import InboxItem

BASE_URL = "http://sluice.test"
#: Hypothesis examples per operation and generation mode; raise it for a deeper run.
MAX_EXAMPLES = int(os.environ.get("SLUICE_FUZZ_EXAMPLES", "60"))
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
#: A request that takes longer than this has hung (none should take a second).
REQUEST_TIMEOUT = 30.0
#: ``wait=true`` on a control must not wait for acks while no worker is live.
CONTROL_WAIT_LIMIT_MS = 2000.0

FUZZ = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,  # the same cases every run: CI is stable
    database=None,
    phases=(Phase.explicit, Phase.generate, Phase.shrink),
    suppress_health_check=list(HealthCheck),
    report_multiple_bugs=False,
    print_blob=False,
)

Operation = APIOperation[Any, Any, Any, Any]
AnyCase = Case[Any]
Check = Callable[[CheckContext, Response, AnyCase], Any]

#: The ``store`` fixture runs on PostgreSQL and SQLite; to stay within its time budget
#: the fuzz runs on PostgreSQL, the stricter (its types refuse values SQLite stores).
on_postgres = pytest.mark.parametrize("store_url", ["postgres"], indirect=True)


# -- fixtures ---------------------------------------------------------------------------


def _sendgrid_public_key() -> str:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


@pytest.fixture
def ingress_config() -> IngressConfig:
    """One source of every kind, so fuzzed webhooks reach signature verification."""
    secret = "whsec_" + base64.b64encode(b"fuzz-secret-0123456789abcdef").decode()
    sources = [
        IngressSource(name="twilio", kind="twilio", secrets=("twilio-token",)),
        IngressSource(name="sendgrid", kind="sendgrid", public_keys=(_sendgrid_public_key(),)),
        IngressSource(
            name="whatsapp", kind="whatsapp", secrets=("meta-secret",), verify_token="vt"
        ),
        IngressSource(name="partner", kind="webhook", secrets=(secret,), tenant="acme"),
    ]
    return IngressConfig(sources={s.name: s for s in sources})


async def _seed(api: Api) -> None:
    """Messages in several states and inbox events, so that reads return real rows."""
    store = api.store
    sms = partial(NewMessage, tenant="acme", channel="sms", provider="null", payload={"body": "hi"})
    ids = await store.enqueue_many(
        [sms(recipient=f"+1555000{i:04d}", correlation_id=f"c{i}") for i in range(4)]
    )
    now = datetime.now(UTC) + timedelta(seconds=1)  # every message is due
    claimed = await store.message_claim("w-seed", 3, 30, now)
    sent, dead, held = claimed
    attempt = partial(Attempt, attempt_no=1, worker_id="w-seed", provider="null",
                      started_at=now, finished_at=now, detail="seeded", latency_ms=2.5)  # fmt: skip
    done = [
        Completion(sent.id, sent.claim_seq, "w-seed", Status.SENT,
                   attempt(sent.id, outcome=AttemptOutcome.SENT)),
        Completion(dead.id, dead.claim_seq, "w-seed", Status.DEAD,
                   attempt(dead.id, outcome=AttemptOutcome.FAILED, error_code="rejected")),
        Completion(held.id, held.claim_seq, "w-seed", Status.HELD, None,
                   hold_reason="held by an operator for the fuzz"),
    ]  # fmt: skip
    await store.message_complete_many("w-seed", done, now)
    event = partial(InboxItem, id=0, provider="partner", kind="receipt", status="delivered",
                    message_id=ids[0], provider_message_id=None, occurred_at=now,
                    error_code=None, detail=None, address=None, received_at=now)  # fmt: skip
    await store.inbox_put([event(event_id=f"evt-{i}", data={"i": i}) for i in range(2)], now)
    (gave_up,) = await store.inbox_claim("w-seed", 1, 30, now)
    await store.inbox_dead(gave_up.id, gave_up.attempts, "seeded: gave up", now)


# -- checks -----------------------------------------------------------------------------


def _readyz_not_ready_only(ctx: CheckContext, response: Response, case: AnyCase) -> None:
    """``/readyz`` may answer 503 (documented), but only for "no worker seen"."""
    if response.status_code < 500:
        return
    assert response.status_code == 503, f"/readyz answered {response.status_code}"
    checks = json.loads(response.content)["checks"]
    assert checks["store"] == "ok" and checks["migrations"] == "ok", checks
    assert not isinstance(checks["workers"], int), checks


def _controls_answer_at_once(ctx: CheckContext, response: Response, case: AnyCase) -> None:
    """With no live worker, ``wait=true`` has nothing to wait for: the ack is immediate."""
    if response.status_code != 200:
        return
    ack = json.loads(response.content).get("ack")
    if ack is not None:
        assert ack["missing"] == [] and ack["acked"] == [], ack
        assert ack["elapsed_ms"] < CONTROL_WAIT_LIMIT_MS, ack


#: Checked on every answer; a failure is shrunk to a minimal request by Hypothesis.
HARD: list[Check] = [not_a_server_error]
#: Checked on every answer below 500; a failure is recorded (the shortest request of
#: each kind, per operation and phase) and does not stop the search for server errors.
SOFT: list[Check] = [response_schema_conformance, content_type_conformance]


def _hard_checks(operation: Operation) -> list[Check]:
    if operation.path == "/readyz":
        return [_readyz_not_ready_only]
    if operation.method == "post" and operation.path.startswith("/v1/controls"):
        return [*HARD, _controls_answer_at_once]
    return list(HARD)


# -- sending a case and checking the answer ------------------------------------------


def _request(client: httpx.AsyncClient, case: AnyCase, auth: dict[str, str]) -> httpx.Request:
    """The case as an httpx request, with the key's ``Authorization`` header."""
    kwargs = case.as_transport_kwargs(base_url=BASE_URL, headers=auth)
    unknown = set(kwargs) - {"method", "url", "headers", "params", "cookies", "json", "data"}
    assert not unknown, f"transport arguments this test does not send: {unknown}"
    assert not kwargs.get("cookies"), "the API documents no cookies"
    content = kwargs.get("data")
    if "json" in kwargs:
        content = json.dumps(kwargs["json"]).encode()
    headers = kwargs["headers"]
    assert headers["Authorization"] == auth["Authorization"]
    return client.build_request(
        kwargs["method"], kwargs["url"], params=kwargs.get("params"), headers=headers,
        content=content,
    )  # fmt: skip


def _raised_at(exc: BaseException) -> str:
    """Where in Sluice ``exc`` was raised, and what caused it."""
    frames = [
        f"  {f.filename.rsplit('/src/', 1)[-1]}:{f.lineno} in {f.name}"
        for f in traceback.extract_tb(exc.__traceback__)
        if "/src/sluice/" in f.filename
    ]
    cause = exc.__cause__ or exc.__context__
    caused = f"\n  caused by {type(cause).__name__}: {cause}" if cause else ""
    return "\n".join(frames) + caused


def _kind(exc: BaseException) -> str:
    """What went wrong, so that each kind is reported once per operation and phase."""
    if isinstance(exc, FailureGroup):
        return ",".join(sorted(f"{f.code} {f.title}" for f in exc.exceptions))
    return str(exc).split("\n", 1)[0][:200]


class Run:
    """Sends cases on the test's event loop from a worker thread; collects failures."""

    def __init__(self, api: Api, loop: asyncio.AbstractEventLoop, auth: dict[str, str]):
        self.client = api.client
        self.loop = loop
        self.auth = auth
        self.failures: dict[tuple[str, str], str] = {}

    def note(self, where: str, exc: BaseException) -> None:
        """Keep the shortest report of each kind of failure per operation and phase."""
        text = f"{where}\n{exc.message if isinstance(exc, FailureGroup) else exc}"
        key = (where, _kind(exc))
        if key not in self.failures or len(text) < len(self.failures[key]):
            self.failures[key] = text

    def send(self, case: AnyCase) -> httpx.Response:
        request = _request(self.client, case, self.auth)
        future = asyncio.run_coroutine_threadsafe(self.client.send(request), self.loop)
        curl = case.as_curl_command(headers=self.auth, base_url=BASE_URL)
        try:
            return future.result(timeout=REQUEST_TIMEOUT)
        except TimeoutError:
            future.cancel()
            raise AssertionError(f"no answer in {REQUEST_TIMEOUT} s\n{curl}") from None
        except Exception as exc:  # the app raised: a client gets a bare 500
            raise AssertionError(
                f"server error: the app raised {type(exc).__name__}: {exc}\n"
                f"{curl}\n{_raised_at(exc)}"
            ) from exc

    def check(self, case: AnyCase, where: str) -> None:
        """Send ``case``; record soft failures; raise hard ones (Hypothesis shrinks them)."""
        response = self.send(case)
        if response.status_code < 500:
            try:
                case.validate_response(response, checks=SOFT, headers=self.auth)
            except FailureGroup as exc:
                self.note(where, exc)
        checks = _hard_checks(case.operation)
        case.validate_response(response, checks=checks, headers=self.auth)

    def coverage(self, schema: BaseSchema, operation: Operation) -> None:
        """Schemathesis's deterministic boundary and mutation cases, each sent once."""
        where = f"{operation.label} [coverage]"
        config = schema.config.generation_for(operation=operation, phase="coverage")
        for case in schema.iter_coverage_cases(
            operation, generation_modes=list(MODES), generation_config=config
        ):
            try:
                self.check(case, where)
            except (AssertionError, FailureGroup) as exc:
                self.note(where, exc)

    def fuzzing(self, operation: Operation, ingress: list[str]) -> None:
        """Hypothesis-generated cases, valid and invalid, for ``operation``."""
        paths: list[dict[str, str] | None] = [None]
        if operation.path == "/v1/ingress/{provider}":  # also reach the configured sources
            paths += [{"provider": name} for name in ingress]
        for mode in MODES:
            for path_parameters in paths:
                where = f"{operation.label} [fuzzing, {mode.value}" + (
                    f", {path_parameters}]" if path_parameters else "]"
                )
                strategy = operation.as_strategy(
                    mode, headers=dict(self.auth), path_parameters=path_parameters
                )
                try:
                    self._fuzz_test(strategy, where)()
                except Unsatisfiable:
                    # Nothing in the operation can be made invalid (no parameters, no body).
                    assert mode is GenerationMode.NEGATIVE, where
                except (AssertionError, FailureGroup, FlakyFailure) as exc:
                    self.note(where, exc)

    def _fuzz_test(self, strategy: SearchStrategy[AnyCase], where: str) -> Callable[[], None]:
        @FUZZ
        @given(case=strategy)
        def fuzz(case: AnyCase) -> None:
            self.check(case, where)

        return fuzz


# -- the tests --------------------------------------------------------------------------


def _operations(schema: BaseSchema, prefix: str) -> Iterator[Operation]:
    for result in schema.get_all_operations():
        if isinstance(result, Err):  # an operation Schemathesis cannot read
            raise result.err()
        operation = result.ok()
        if operation.path.startswith(prefix):
            yield operation


async def _run(api: Api, auth: dict[str, str], prefix: str, ingress: list[str]) -> None:
    assert not await live_workers(api.store, datetime.now(UTC)), "the fuzz expects no workers"
    await _seed(api)
    published = await api.client.get("/openapi.json")
    assert published.status_code == 200
    schema = schemathesis.openapi.from_dict(published.json())
    operations = list(_operations(schema, prefix))
    assert operations
    run = Run(api, asyncio.get_running_loop(), auth)

    def run_all() -> None:
        for operation in operations:
            run.coverage(schema, operation)
            run.fuzzing(operation, ingress)

    # The app logs each unhandled error with a rendered traceback; the failure report
    # carries it already, and rendering it on every shrinking step is slow.
    with structlog.testing.capture_logs():
        await asyncio.to_thread(run_all)
    failures = list(run.failures.values())
    assert not failures, f"{len(failures)} failure(s):\n\n" + "\n\n".join(failures)


async def test_controls_do_not_wait_when_no_worker_is_live(api: Api) -> None:
    """Why the fuzz may send ``wait=true`` (with ``timeout`` up to 60 s) to the controls
    endpoints: with no live worker there is nothing to wait for."""
    started = time.monotonic()
    body = {"tenant": "acme", "reason": "fuzz", "wait": True, "timeout": 60}
    r = await api.client.post("/v1/controls", json={**body, "mode": "paused"}, headers=api.ops)
    assert r.status_code == 200, r.text
    assert r.json()["ack"]["missing"] == []
    r = await api.client.post("/v1/controls/clear", json=body, headers=api.ops)
    assert r.status_code == 200, r.text
    assert r.json()["ack"]["missing"] == []
    assert time.monotonic() - started < CONTROL_WAIT_LIMIT_MS / 1000


@on_postgres
async def test_every_operation_with_an_operator_key(
    api: Api, ingress_config: IngressConfig
) -> None:
    await _run(api, api.ops, "/", sorted(ingress_config.sources))


@on_postgres
async def test_messages_operations_with_a_tenant_key(api: Api) -> None:
    await _run(api, api.acme, "/v1/messages", [])
