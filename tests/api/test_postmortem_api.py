"""``GET /v1/incidents/{id}/postmortem`` and ``GET /v1/incidents/stats``: operator keys
only, the same draft and numbers as ``sluice.ops.postmortem``, bad input answered by name."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from api_harness import Api

from incident_scene import build
from sluice.clock import FrozenClock
from sluice.ops.postmortem import SECTIONS, incident_stats, postmortem_draft


def recent() -> datetime:
    return datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)


def body(text: str) -> str:
    """The draft without its 'generated at' line (the one line that depends on now)."""
    return "\n".join(ln for ln in text.splitlines() if not ln.startswith("> Draft generated"))


async def test_postmortem__markdown_the_same_as_the_cli_gets(api: Api) -> None:
    scene = await build(api.store, recent())
    r = await api.client.get(f"/v1/incidents/{scene.incident_id}/postmortem", headers=api.ops)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/markdown")
    assert re.findall(r"^### (.+)$", r.text, re.M) == list(SECTIONS)
    direct = await postmortem_draft(api.store, scene.incident_id, clock=FrozenClock())
    assert body(r.text) == body(direct)
    assert "Time to contain: 2 min 0 s" in r.text and "No loss" in r.text


async def test_stats__per_rule_in_the_listing_shape(api: Api) -> None:
    scene = await build(api.store, recent())
    r = await api.client.get("/v1/incidents/stats?since=1d", headers=api.ops)
    assert r.status_code == 200, r.text
    got = r.json()
    assert (got["count"], got["next_cursor"], got["by_severity"]) == (1, None, {"P2": 1})
    [row] = got["items"]
    assert (row["rule"], row["incidents"], row["mttd_seconds"], row["mttc_seconds"],
            row["mttr_seconds"]) == ("SluiceDeadLetters", 1, 420.0, 120.0, 720.0)  # fmt: skip
    direct = await incident_stats(api.store, "1d")
    assert got["overall"]["mttr_seconds"] == direct.overall.mttr_seconds == 720.0
    assert scene.incident_id


async def test_bad_input__refused_by_name_and_operator_keys_only(api: Api) -> None:
    scene = await build(api.store, recent())
    for path, status, field in [
        ("/v1/incidents/not-a-uuid/postmortem", 404, None),
        ("/v1/incidents/00000000-0000-0000-0000-000000000000/postmortem", 404, None),
        ("/v1/incidents/stats?since=yesterday", 422, "since"),
        ("/v1/incidents/stats?since=0d", 422, "since"),
        ("/v1/incidents/stats?since=900d", 422, "since"),
        ("/v1/incidents/stats?since=", 422, "since"),
        ("/v1/incidents/stats?since=%ED%A0%80", 422, "since"),  # a lone surrogate
    ]:
        r = await api.client.get(path, headers=api.ops)
        assert r.status_code == status, (path, r.text)
        if field:
            assert field in r.text, (path, r.text)
    for path in (f"/v1/incidents/{scene.incident_id}/postmortem", "/v1/incidents/stats"):
        assert (await api.client.get(path, headers=api.acme)).status_code == 403
