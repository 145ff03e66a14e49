"""Bad input to controls, held-message acts, limits, routes and provider aliases: a clear
error naming what is wrong, and nothing changed (no control, no epoch bump, no audit)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from sluice.config import Settings
from sluice.errors import ConfigError, NotFound, ValidationError
from sluice.flow.controls import Mode, Scope
from sluice.flow.limits import parse_routes
from sluice.ops import controls as ops
from sluice.ops.limits import limit_clear, limit_set
from sluice.providers import provider_aliases
from sluice.store import MessageFilter, Store


async def unchanged(store: Store) -> None:
    assert await store.flow_version() == 0
    assert await store.control_list() == []
    assert await store.limit_list() == []
    assert await store.audit_list() == []


@pytest.mark.parametrize(
    ("kwargs", "field", "problem"),
    [
        ({"mode": "frozen"}, "mode", "must be one of live, approval, shadow, paused, killed"),
        ({"reason": "  "}, "reason", "is required"),
        ({"actor": ""}, "actor", "is required"),
        ({"expires_in": 0}, "expires", "must be a positive number"),
        ({"expires_in": -5.0}, "expires", "must be a positive number"),
    ],
)
async def test_control_set__bad_input_is_named_and_changes_nothing(
    store: Store, kwargs: dict[str, object], field: str, problem: str
) -> None:
    args: dict[str, object] = {"mode": "killed", "actor": "ops", "reason": "x", "wait": False}
    args.update(kwargs)
    mode = args.pop("mode")
    with pytest.raises(ValidationError) as excinfo:
        await ops.control_set(store, Scope(), mode, **args)  # type: ignore[arg-type]
    assert excinfo.value.field == field and problem in str(excinfo.value)
    await unchanged(store)


@pytest.mark.parametrize(
    ("scope", "field"),
    [({"tenant": " acme"}, "tenant"), ({"provider": "x" * 201}, "provider"),
     ({"action": 7}, "action")],
)  # fmt: skip
def test_scope__bad_fields_are_named(scope: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as excinfo:
        Scope(**scope)  # type: ignore[arg-type]
    assert excinfo.value.field == field


@pytest.mark.parametrize("text", ["soon", "", "-5m", "0s", "infs"])
def test_parse_duration__names_the_bad_value(text: str) -> None:
    with pytest.raises(ValidationError, match="expires"):
        ops.parse_duration(text)


async def test_control_clear__nothing_there_is_not_found_and_changes_nothing(
    store: Store,
) -> None:
    with pytest.raises(NotFound, match="no control is set on scope tenant=acme"):
        await ops.control_clear(store, Scope.of(tenant="acme"), actor="ops", reason="x")
    await unchanged(store)


async def test_held__empty_ids_bad_limit_or_no_actor_change_nothing(store: Store) -> None:
    with pytest.raises(ValidationError, match="ids"):
        await ops.held_approve(store, MessageFilter(), [], actor="ops")
    with pytest.raises(ValidationError, match="limit"):
        await ops.held_release(store, MessageFilter(limit=0), actor="ops")
    with pytest.raises(ValidationError, match="actor"):
        await ops.held_cancel(store, MessageFilter(tenant="a"), actor=" ")
    await unchanged(store)


async def test_limit_set__bad_limits_are_named_and_change_nothing(store: Store) -> None:
    with pytest.raises(ValidationError, match="must be greater than 0") as excinfo:
        await limit_set(store, {"kind": "rate", "rate": 0}, actor="ops", reason="x")
    assert excinfo.value.field == "rate"
    with pytest.raises(ValidationError, match="a concurrency limit is per provider"):
        await limit_set(
            store, {"kind": "concurrency", "tenant": "a", "max": 2}, actor="ops", reason="x"
        )
    with pytest.raises(ValidationError, match="reason"):
        await limit_set(store, {"kind": "rate", "rate": 1}, actor="ops", reason="")
    with pytest.raises(NotFound, match="no run-time rate limit"):
        await limit_clear(store, "rate", tenant="a", actor="ops", reason="x")
    await unchanged(store)


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ({"sms": "twilio"}, "routes.sms must be a non-empty list of providers"),
        ({"sms": []}, "routes.sms must be a non-empty list of providers"),
        ({"sms": ["twilio", "twilio"]}, "routes.sms names a provider twice"),
        (["twilio"], "routes must be a table"),
    ],
)
def test_routes__bad_tables_are_named(table: object, problem: str) -> None:
    with pytest.raises(ConfigError, match=r"sluice\.toml: ") as excinfo:
        parse_routes(table)
    assert problem in str(excinfo.value)


@pytest.mark.parametrize(
    ("toml", "problem"),
    [
        ('[providers.twilio]\nkind = "twilio"\n', "'twilio' is a built-in provider"),
        ('[providers.b]\nkind = "pigeon"\n', "providers.b.kind must be one of"),
        ('[providers.b]\nkind = "twilio"\nregion = "eu"\n', "unknown field 'region'"),
        ('[providers.b]\nkind = "twilio"\nbase_url = "ftp://x"\n', "base_url must be an http"),
    ],
)
async def test_provider_aliases__bad_entries_are_named(
    tmp_path: Path, toml: str, problem: str
) -> None:
    path = tmp_path / "sluice.toml"
    path.write_text(toml)
    async with httpx.AsyncClient() as client:
        with pytest.raises(ConfigError) as excinfo:
            provider_aliases(path, Settings(database_url="sqlite:///x.db"), client)
    assert problem in str(excinfo.value)


def test_mode__ranks_most_restrictive_last() -> None:
    ranks = [m.rank for m in (Mode.LIVE, Mode.APPROVAL, Mode.SHADOW, Mode.PAUSED, Mode.KILLED)]
    assert ranks == sorted(ranks) and len(set(ranks)) == 5
