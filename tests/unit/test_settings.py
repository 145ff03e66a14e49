"""Settings: defaults, ``sluice.toml``, ``SLUICE_*`` variables, and errors that say what to fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from sluice import ConfigError, Settings, load_settings


@pytest.fixture(autouse=True)
def _empty_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # load_settings reads ./sluice.toml when present: run every test in a clean directory.
    monkeypatch.chdir(tmp_path)


def write_toml(tmp_path: Path, text: str, name: str = "custom.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# -- where values come from -----------------------------------------------------------


def test_load_settings__defaults_without_env_or_file() -> None:
    s = load_settings(env={})
    assert s == Settings()
    assert s.database_url == "sqlite:///sluice.db"
    assert s.webhook_secret is None
    assert s.http_timeout == 10.0
    assert s.lease_seconds == 30.0
    assert s.worker_concurrency == 100
    assert s.worker_batch_size == 200
    assert s.retry_base == 2.0
    assert s.retry_cap == 600.0
    assert s.log_level == "info"


def test_load_settings__environment_overrides_defaults() -> None:
    s = load_settings(
        env={
            "SLUICE_DATABASE_URL": "postgresql://app@db:5432/app",
            "SLUICE_WORKER_CONCURRENCY": "7",
            "SLUICE_LEASE_SECONDS": "45.5",
            "SLUICE_WEBHOOK_SECRET": "whsec_c2VjcmV0",
            "SLUICE_LOG_LEVEL": "debug",
        }
    )
    assert s.database_url == "postgresql://app@db:5432/app"
    assert s.worker_concurrency == 7
    assert s.lease_seconds == 45.5
    assert s.webhook_secret == "whsec_c2VjcmV0"
    assert s.log_level == "debug"
    assert s.http_timeout == 10.0  # untouched


def test_load_settings__empty_variable_means_unset() -> None:
    assert load_settings(env={"SLUICE_WORKER_CONCURRENCY": ""}).worker_concurrency == 100


def test_load_settings__toml_file_overrides_defaults(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path,
        '[sluice]\ndatabase_url = "postgresql://app@db/app"\nworker_concurrency = 12\n'
        "http_timeout = 5\n",
    )
    s = load_settings(env={}, config_path=path)
    assert s.database_url == "postgresql://app@db/app"
    assert s.worker_concurrency == 12
    assert s.http_timeout == 5.0
    assert s.lease_seconds == 30.0


def test_load_settings__environment_beats_toml_beats_default(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[sluice]\nworker_concurrency = 12\nworker_batch_size = 50\n")
    s = load_settings(env={"SLUICE_WORKER_CONCURRENCY": "3"}, config_path=path)
    assert s.worker_concurrency == 3  # environment
    assert s.worker_batch_size == 50  # toml
    assert s.pool_size == 8  # default


def test_load_settings__explicit_arguments_beat_environment(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[sluice]\nworker_concurrency = 12\n")
    s = load_settings(
        env={"SLUICE_WORKER_CONCURRENCY": "3"},
        config_path=path,
        worker_concurrency=9,
        pool_size=None,  # an unset CLI flag changes nothing
    )
    assert s.worker_concurrency == 9
    assert s.pool_size == 8


def test_load_settings__sluice_config_variable_names_the_file(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[sluice]\nworker_batch_size = 25\n", name="elsewhere.toml")
    assert load_settings(env={"SLUICE_CONFIG": str(path)}).worker_batch_size == 25


def test_load_settings__reads_sluice_toml_in_working_directory(tmp_path: Path) -> None:
    write_toml(tmp_path, "[sluice]\npool_size = 3\n", name="sluice.toml")
    assert load_settings(env={}).pool_size == 3


def test_load_settings__ignores_other_tables_of_the_file(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[tool.other]\nanything = 1\n\n[sluice]\npool_size = 4\n")
    assert load_settings(env={}, config_path=path).pool_size == 4


# -- bad values ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"SLUICE_LEASE_SECONDS": "thirty"}, ["SLUICE_LEASE_SECONDS", "thirty"]),
        ({"SLUICE_WORKER_CONCURRENCY": "2.5"}, ["SLUICE_WORKER_CONCURRENCY"]),
        ({"SLUICE_WORKER_CONCURRENCY": "0"}, ["SLUICE_WORKER_CONCURRENCY"]),
        ({"SLUICE_WORKER_BATCH_SIZE": "-1"}, ["SLUICE_WORKER_BATCH_SIZE"]),
        ({"SLUICE_POOL_SIZE": "0"}, ["SLUICE_POOL_SIZE"]),
        ({"SLUICE_HTTP_TIMEOUT": "0"}, ["SLUICE_HTTP_TIMEOUT"]),
        ({"SLUICE_NOTIFY_INTERVAL": "-0.1"}, ["SLUICE_NOTIFY_INTERVAL"]),
        (
            {"SLUICE_LEASE_SECONDS": "10", "SLUICE_HTTP_TIMEOUT": "10"},
            ["SLUICE_LEASE_SECONDS", "SLUICE_HTTP_TIMEOUT"],
        ),
        (
            {"SLUICE_LEASE_SECONDS": "5", "SLUICE_HTTP_TIMEOUT": "20"},
            ["SLUICE_LEASE_SECONDS", "SLUICE_HTTP_TIMEOUT"],
        ),
        ({"SLUICE_RETRY_BASE": "10", "SLUICE_RETRY_CAP": "5"}, ["SLUICE_RETRY_CAP"]),
        ({"SLUICE_DATABASE_URL": "mysql://app@db/app"}, ["SLUICE_DATABASE_URL", "mysql://"]),
        ({"SLUICE_DATABASE_URL": "db.sqlite"}, ["SLUICE_DATABASE_URL"]),
        ({"SLUICE_DB_TIMEOUT": "0"}, ["SLUICE_DB_TIMEOUT"]),
        ({"SLUICE_API_HEADER_TIMEOUT": "0"}, ["SLUICE_API_HEADER_TIMEOUT"]),
        ({"SLUICE_API_BODY_TIMEOUT": "-1"}, ["SLUICE_API_BODY_TIMEOUT"]),
        ({"SLUICE_API_MAX_CONNECTIONS": "0"}, ["SLUICE_API_MAX_CONNECTIONS"]),
        ({"SLUICE_API_MAX_CONNECTIONS": "many"}, ["SLUICE_API_MAX_CONNECTIONS"]),
        ({"SLUICE_INGRESS_GATHER": "-0.001"}, ["SLUICE_INGRESS_GATHER"]),
        ({"SLUICE_INGRESS_GATHER": "3"}, ["SLUICE_INGRESS_GATHER", "at most 1"]),
        ({"SLUICE_INGRESS_GATHER": "3ms"}, ["SLUICE_INGRESS_GATHER"]),
        ({"SLUICE_INGRESS_GATHER": "inf"}, ["SLUICE_INGRESS_GATHER"]),
    ],
)
def test_load_settings__bad_environment_value_names_the_variable(
    env: dict[str, str], names: list[str]
) -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_settings(env=env)
    for name in names:
        assert name in str(excinfo.value)


def test_load_settings__unsupported_database_url_says_what_is_supported() -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_settings(env={"SLUICE_DATABASE_URL": "mysql://app@db/app"})
    assert "sqlite:///" in str(excinfo.value)
    assert "postgresql://" in str(excinfo.value)


@pytest.mark.parametrize(
    "variable",
    [
        "SLUICE_LEASE_SECONDS",
        "SLUICE_HTTP_TIMEOUT",
        "SLUICE_RETRY_CAP",
        "SLUICE_POLL_INTERVAL",
        "SLUICE_INGRESS_GATHER",
    ],
)
def test_load_settings__nan_is_rejected_naming_the_variable(variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        load_settings(env={variable: "nan"})


def test_load_settings__unknown_toml_key_is_named(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[sluice]\nworker_concurency = 5\n")
    with pytest.raises(ConfigError) as excinfo:
        load_settings(env={}, config_path=path)
    assert "worker_concurency" in str(excinfo.value)
    assert str(path) in str(excinfo.value)


def test_load_settings__toml_value_of_wrong_type_is_named(tmp_path: Path) -> None:
    path = write_toml(tmp_path, '[sluice]\nlease_seconds = "half a minute"\n')
    with pytest.raises(ConfigError) as excinfo:
        load_settings(env={}, config_path=path)
    assert "lease_seconds" in str(excinfo.value)
    assert str(path) in str(excinfo.value)


@pytest.mark.parametrize("value", ["2.5", "true"])
def test_load_settings__toml_non_integer_for_integer_setting_is_rejected(
    tmp_path: Path, value: str
) -> None:
    path = write_toml(tmp_path, f"[sluice]\nworker_concurrency = {value}\n")
    with pytest.raises(ConfigError, match="worker_concurrency"):
        load_settings(env={}, config_path=path)


def test_load_settings__invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[sluice\nworker_concurrency = \n")
    with pytest.raises(ConfigError) as excinfo:
        load_settings(env={}, config_path=path)
    assert str(path) in str(excinfo.value)
    assert "TOML" in str(excinfo.value)


def test_load_settings__sluice_config_pointing_at_missing_file_is_an_error(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "nope" / "sluice.toml"
    with pytest.raises(ConfigError) as excinfo:
        load_settings(env={"SLUICE_CONFIG": str(missing)})
    assert str(missing) in str(excinfo.value)
    assert "does not exist" in str(excinfo.value)


def test_load_settings__explicit_missing_config_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(env={}, config_path=tmp_path / "missing.toml")


def test_settings__are_checked_when_built_directly() -> None:
    with pytest.raises(ConfigError, match="SLUICE_WORKER_CONCURRENCY"):
        Settings(worker_concurrency=0)


def test_settings_replace__ignores_none_and_revalidates() -> None:
    s = Settings()
    assert s.replace(pool_size=None, worker_concurrency=4).worker_concurrency == 4
    with pytest.raises(ConfigError, match="SLUICE_LEASE_SECONDS"):
        s.replace(lease_seconds=1.0)


def test_load_settings__slow_client_limits_of_the_api(tmp_path: Path) -> None:
    assert (Settings().api_header_timeout, Settings().api_body_timeout) == (10.0, 20.0)
    assert Settings().api_max_connections == 1000
    path = write_toml(tmp_path, "[sluice]\napi_header_timeout = 2.5\napi_max_connections = 50\n")
    s = load_settings(env={"SLUICE_API_BODY_TIMEOUT": "4"}, config_path=path)
    assert (s.api_header_timeout, s.api_body_timeout, s.api_max_connections) == (2.5, 4.0, 50)


def test_load_settings__database_timeout_is_seconds_and_defaults_to_five(tmp_path: Path) -> None:
    assert Settings().db_timeout == 5.0
    assert load_settings(env={"SLUICE_DB_TIMEOUT": "2.5"}).db_timeout == 2.5
    path = write_toml(tmp_path, "[sluice]\ndb_timeout = 3\n")
    assert load_settings(env={}, config_path=path).db_timeout == 3.0
