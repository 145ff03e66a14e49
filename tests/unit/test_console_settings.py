"""The console's settings: ``[console]`` in ``sluice.toml`` and ``SLUICE_TENANT_RETRY_*``
bound a tenant's own dead-letter retries; bad values stop the process, named."""

from __future__ import annotations

from pathlib import Path

import pytest

from sluice import ConfigError, Settings, load_settings


@pytest.fixture(autouse=True)
def _empty_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def test_console_settings__default_to_100_per_act_and_1000_per_hour() -> None:
    s = load_settings(env={})
    assert (s.tenant_retry_max, s.tenant_retry_per_hour) == (100, 1000)


def test_console_settings__come_from_the_console_table_and_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text("[console]\ntenant_retry_max = 5\ntenant_retry_per_hour = 0\n")
    s = load_settings(env={}, config_path=path)
    assert (s.tenant_retry_max, s.tenant_retry_per_hour) == (5, 0)
    s = load_settings(env={"SLUICE_TENANT_RETRY_MAX": "7"}, config_path=path)
    assert s.tenant_retry_max == 7


def test_console_settings__an_unknown_key_or_a_bad_value_is_named(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text("[console]\ntenant_retries = 5\n")
    with pytest.raises(ConfigError, match=r"unknown setting \[console\]\.tenant_retries"):
        load_settings(env={}, config_path=path)
    path.write_text('[console]\ntenant_retry_max = "many"\n')
    with pytest.raises(ConfigError, match=r"\[console\]\.tenant_retry_max = 'many'"):
        load_settings(env={}, config_path=path)
    with pytest.raises(ConfigError, match="SLUICE_TENANT_RETRY_PER_HOUR must not be negative"):
        Settings(tenant_retry_per_hour=-1)
