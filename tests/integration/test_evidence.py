"""An incident's evidence archive (issue 15, seed 003 §3) on both stores: an incident
built with messages, attempts, receipts, audit rows, a control and annotations; then
every part of the archive is read back — files and their sha256, the audit chain
verified, the sample's size and scope, the gauges, and no configured secret anywhere."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sluice.clock import FrozenClock
from sluice.config import Settings
from sluice.errors import NotFound, ValidationError
from sluice.flow.controls import Mode, Scope
from sluice.model import Attempt, AttemptOutcome, Completion, NewMessage, Status
from sluice.ops.annotations import annotation_add
from sluice.ops.controls import control_set
from sluice.ops.evidence import REDACTED, build_evidence, write_evidence
from sluice.store import Store
from sluice.store.base import Firing, InboxItem, Receipt

#: Every secret the settings and sluice.toml below carry; none may appear in the archive.
SECRETS = {
    "db password": "Db-Pa55word-Zq7",
    "webhook secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "encryption key": "q2K0b3VhcGVzYXJlbm90c2VjcmV0c2F0YWxsMTIzNDU=",
    "previous encryption key": "cHJldmlvdXNrZXlwcmV2aW91c2tleXByZXZpb3VzMTI=",
    "redis password": "Redis-Pa55-Xy9",
    "callback token": "CallbackTok3n-77",
    "alert hook path": "SlackHookSecretPath99",
    "alert target secret": "AlertTargetSecret-42",
    "twilio auth token": "TwilioAuthTok-5150",
    "tenant twilio secret": "AcmeTwilioSecret-808",
    "action bearer": "ActionBearerTok-321",
    "sendgrid key from env": "SendgridEnvKey-6060",
    "provider api key": "ProviderApiKey-4242",
}

HOOK, TGT = SECRETS["alert hook path"], SECRETS["alert target secret"]
TOML = f"""
[sluice]
http_timeout = 5.0

[alerts]
targets = [
  {{ name = "slack", kind = "webhook", url = "https://hooks.slack.com/services/T0/{HOOK}" }},
  {{ name = "pager", kind = "webhook", url = "https://pager.example.com/h", secret = "{TGT}" }},
]

[ingress.twilio]
auth_token = "{SECRETS["twilio auth token"]}"

[ingress.twilio.tenant_secrets]
acme = "{SECRETS["tenant twilio secret"]}"

[ingress.sendgrid]
public_key = "env:SLUICE_TEST_SG_KEY"

[providers."twilio-backup"]
kind = "twilio"
api_key = "{SECRETS["provider api key"]}"

[actions."crm.create"]
method = "POST"
url = "https://crm.example.com/tickets"
headers = {{ Authorization = "Bearer {SECRETS["action bearer"]}" }}
"""


def secret_settings() -> Settings:
    return Settings(
        database_url=f"postgresql://sluice:{SECRETS['db password']}@db.example.com:5432/sluice",
        webhook_secret=SECRETS["webhook secret"],
        secret_key=SECRETS["encryption key"],
        secret_key_previous=SECRETS["previous encryption key"],
        redis_url=f"redis://:{SECRETS['redis password']}@redis.example.com:6379/0",
        status_callback_url=f"https://in.example.com/receipts?token={SECRETS['callback token']}",
    )


def firing(value: float) -> Firing:
    return Firing("SluiceDeadLetters", {"channel": "sms"}, "P2", ("QUEUE",), "002#2",
                  f"{value:g} dead letters on sms", value)  # fmt: skip


async def traffic(store: Store, clock: FrozenClock, channel: str, n: int, dead: int) -> list[str]:
    """``n`` messages on ``channel``: ``dead`` dead-lettered, the rest sent."""
    ids = await store.enqueue_many(  # type: ignore[call-arg]
        [NewMessage(tenant="acme", channel=channel, provider="null",
                    recipient="+15550001111" if channel == "sms" else "a@example.com",
                    payload={"i": i}) for i in range(n)],
        clock.now(),
    )  # fmt: skip
    claimed = await store.message_claim("w1", n, 30, clock.now())
    now = clock.now()
    done = []
    for k, m in enumerate(claimed):
        bad = k < dead
        outcome = AttemptOutcome.FAILED if bad else AttemptOutcome.SENT
        attempt = Attempt(m.id, 1, "w1", "null", now, now, outcome,
                          error_code="INVALID_RECIPIENT" if bad else None)  # fmt: skip
        done.append(Completion(m.id, m.claim_seq, "w1", Status.DEAD if bad else Status.SENT,
                               attempt))  # fmt: skip
    await store.message_complete_many("w1", done, now)
    return ids


async def receipt(store: Store, mid: str, now: datetime) -> None:
    event = InboxItem(
        id=0, provider="twilio", event_id=f"e-{mid}", kind="receipt", status="delivered",
        message_id=mid, provider_message_id=None, occurred_at=now, error_code=None,
        detail=None, address=None, data={}, received_at=now,
    )  # fmt: skip
    await store.inbox_put([event], now)
    (item,) = await store.inbox_claim("w1", 1, 30, now)
    got = Receipt(mid, "twilio", "delivered", now, now)
    assert await store.inbox_finish(item.id, item.attempts, "", now, got) == "applied"


async def build_incident(store: Store, clock: FrozenClock) -> str:
    await annotation_add(store, "long before", actor="ann", kind="deploy",
                         at=clock.now() - timedelta(hours=3), clock=clock)  # fmt: skip
    await annotation_add(store, "deployed v1.4.2", actor="ann", kind="deploy", clock=clock)
    clock.advance(60)
    ids = await traffic(store, clock, "sms", 30, dead=24)
    await traffic(store, clock, "email", 5, dead=5)  # out of the incident's scope
    await receipt(store, ids[-1], clock.now())
    incident, opened = await store.incident_fire(firing(24), clock.now())
    assert opened
    clock.advance(60)
    await store.incident_fire(firing(30), clock.now())  # the peak
    await control_set(store, Scope(channel="sms"), Mode.PAUSED, actor="ann",
                      reason="stop the bleeding", wait=False, clock=clock)  # fmt: skip
    await annotation_add(store, "rolled back to v1.4.1", actor="ann", kind="rollback",
                         tenant="acme", clock=clock)  # fmt: skip
    clock.advance(300)
    await store.incident_act(incident.id, "resolve", actor="ann", text="rolled back",
                             now=clock.now())  # fmt: skip
    clock.advance(3600)
    await annotation_add(store, "after the window", actor="ann", clock=clock)
    return incident.id


def read(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        out = {}
        for member in tar.getmembers():
            assert member.isfile() and member.name.startswith("evidence-")
            fh = tar.extractfile(member)
            assert fh is not None
            out[member.name.split("/", 1)[1]] = fh.read()
    return out


async def test_evidence__holds_what_seed_003_asks_and_no_secret(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLUICE_TEST_SG_KEY", SECRETS["sendgrid key from env"])
    config = tmp_path / "sluice.toml"
    config.write_text(TOML)
    clock = FrozenClock(datetime.now(UTC) - timedelta(hours=2))
    iid = await build_incident(store, clock)

    ev = await build_evidence(store, iid, actor="scribe", settings=secret_settings(),
                              config_path=config, clock=clock)  # fmt: skip
    files = read(ev.data)
    assert set(files) == {
        "README.md", "manifest.json", "incident.json", "audit.json", "changes.json",
        "gauges.json", "messages.json", "settings.json", "annotations.json",
    }  # fmt: skip
    # The manifest lists every other file with its sha256.
    manifest = json.loads(files["manifest.json"])
    assert manifest["incident_id"] == iid
    listed = {f["name"]: f["sha256"] for f in manifest["files"]}
    assert listed == {n: hashlib.sha256(b).hexdigest() for n, b in files.items()
                      if n != "manifest.json"}  # fmt: skip
    doc = {n: json.loads(b) for n, b in files.items() if n.endswith(".json")}

    incident = doc["incident.json"]
    assert (incident["id"], incident["state"], incident["peak"]) == (iid, "resolved", 30)
    assert [e["kind"] for e in incident["events"]][:2] == ["fired", "peak"]

    audit = doc["audit.json"]
    assert audit["chain"]["ok"] is True and audit["chain"]["checked"] >= audit["count"]
    actions = [a["action"] for a in audit["items"]]
    assert "control.set" in actions and "incident.resolve" in actions
    assert "annotation.add" in actions
    ats = [a["at"] for a in audit["items"]]
    assert ats == sorted(ats)

    changes = doc["changes.json"]
    assert [a["action"] for a in changes["in_window"]] == ["control.set"]
    assert len(changes["current"]["controls"]) == 1
    assert set(changes["current"]) == {"controls", "limits", "breakers", "connections"}

    gauges = doc["gauges.json"]
    assert gauges["resolved"] is True
    assert set(gauges) >= {"at_open", "at_peak", "at_resolve", "now"}
    at_open = gauges["at_open"]
    assert at_open["messages_created_by_then_by_current_status"]["dead"]["count"] == 24
    attempts = at_open["attempts_in_the_5_minutes_before"]
    assert attempts["by_outcome"] == {"failed": 24, "sent": 6}  # the email ones left out
    assert attempts["by_error_code"] == {"INVALID_RECIPIENT": 24}
    assert b"no history" in files["README.md"] or b"stores no history" in files["README.md"]

    sample = doc["messages.json"]
    assert 10 <= sample["count"] <= 20 and sample["count"] == len(sample["items"])
    assert all(s["message"]["channel"] == "sms" for s in sample["items"])
    assert all(len(s["attempts"]) == 1 for s in sample["items"])
    # The failed ones first: 20 of the 24 dead letters.
    assert [s["message"]["status"] for s in sample["items"]] == ["dead"] * 20

    notes = doc["annotations.json"]
    assert [a["text"] for a in notes["items"]] == ["deployed v1.4.2", "rolled back to v1.4.1"]

    settings = doc["settings.json"]
    assert settings["settings"]["webhook_secret"] == REDACTED
    assert settings["settings"]["secret_key"] == REDACTED
    assert "db.example.com" in settings["settings"]["database_url"]
    assert settings["config"]["ingress"]["twilio"]["auth_token"] == REDACTED
    assert settings["config"]["sluice"]["http_timeout"] == 5.0
    # No secret anywhere, in any file, in any spelling JSON might give it.
    for name, body in files.items():
        text = body.decode()
        for what, secret in SECRETS.items():
            assert secret not in text, f"{what} found in {name}"
            assert json.dumps(secret)[1:-1] not in text, f"{what} found in {name}"
    # Building it is audited.
    last = (await store.audit_list(1))[0]
    assert (last.action, last.actor, last.target) == ("incident.evidence", "scribe", iid)


async def test_evidence__a_receipt_travels_with_its_message(store: Store) -> None:
    clock = FrozenClock(datetime.now(UTC) - timedelta(hours=1))
    ids = await traffic(store, clock, "sms", 3, dead=0)
    await receipt(store, ids[0], clock.now())
    incident, _ = await store.incident_fire(firing(1), clock.now())
    plain = Settings(database_url="sqlite:///x.db")
    ev = await build_evidence(store, incident.id, actor="scribe", settings=plain, clock=clock)
    doc = json.loads(read(ev.data)["messages.json"])
    by_id = {s["message"]["id"]: s for s in doc["items"]}
    assert [r["status"] for r in by_id[ids[0]]["receipts"]] == ["delivered"]
    readme = read(ev.data)["README.md"].decode()
    assert "Only 3 messages" in readme  # fewer than ten: said, not hidden
    gauges = json.loads(read(ev.data)["gauges.json"])
    assert gauges["resolved"] is False


async def test_evidence__refuses_an_unknown_incident_and_an_existing_file(
    store: Store, tmp_path: Path
) -> None:
    settings = Settings(database_url="sqlite:///x.db")
    with pytest.raises(NotFound):
        await build_evidence(store, "00000000-0000-0000-0000-000000000000", actor="a",
                             settings=settings)  # fmt: skip
    with pytest.raises(NotFound):
        await build_evidence(store, "not-an-id", actor="a", settings=settings)
    incident, _ = await store.incident_fire(firing(1), datetime.now(UTC))
    out = tmp_path / "ev.tar.gz"
    out.write_bytes(b"keep me")
    with pytest.raises(ValidationError) as err:
        await write_evidence(store, incident.id, out, actor="a", settings=settings)
    assert err.value.field == "out" and out.read_bytes() == b"keep me"
    for bad, field in (("", "incident_id"), ("x" * 500, "incident_id")):
        with pytest.raises(ValidationError) as err:
            await build_evidence(store, bad, actor="a", settings=settings)
        assert err.value.field == field
    with pytest.raises(ValidationError) as err:
        await build_evidence(store, incident.id, actor="a", settings=settings, margin=-1)
    assert err.value.field == "margin"
    fresh = tmp_path / "new.tar.gz"
    ev = await write_evidence(store, incident.id, fresh, actor="a", settings=settings)
    assert fresh.read_bytes() == ev.data


async def test_evidence__a_tenants_incident_shows_its_own_and_global_markers(
    store: Store,
) -> None:
    clock = FrozenClock(datetime.now(UTC) - timedelta(hours=1))
    for text, tenant in (("global deploy", None), ("acme flag", "acme"), ("beta flag", "beta")):
        await annotation_add(store, text, actor="ann", kind="config", tenant=tenant, clock=clock)
    scoped = Firing("SluiceDeadLetters", {"tenant": "acme", "channel": "sms"}, "P2",
                    ("QUEUE",), "002#2", "dead letters", 1.0)  # fmt: skip
    incident, _ = await store.incident_fire(scoped, clock.now())
    plain = Settings(database_url="sqlite:///x.db")
    ev = await build_evidence(store, incident.id, actor="scribe", settings=plain, clock=clock)
    notes = json.loads(read(ev.data)["annotations.json"])
    assert sorted(a["text"] for a in notes["items"]) == ["acme flag", "global deploy"]
    assert "not resolved" in read(ev.data)["README.md"].decode()
