"""Settings from ``SLUICE_*`` environment variables and an optional ``sluice.toml``.

Precedence, highest first: explicit arguments (CLI flags), environment variables,
the ``[sluice]`` table of ``sluice.toml`` (path in ``SLUICE_CONFIG``, default
``./sluice.toml`` if present), then the defaults below.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import Field, dataclass, fields
from pathlib import Path
from stat import S_ISREG
from typing import TYPE_CHECKING, Any

from sluice.errors import ConfigError

if TYPE_CHECKING:
    from sluice.netguard import PrivateTargets

__all__ = [
    "DEFAULT_NOTIFY_INTERVAL",
    "ConfigLookup",
    "Settings",
    "config_document",
    "config_file",
    "load_setting",
    "load_settings",
    "look_up_config",
    "notify_interval",
]

#: Enqueue notifies workers at most once per this many seconds per channel and process.
DEFAULT_NOTIFY_INTERVAL = 0.2


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything Sluice can be told. Each field ``x`` is also ``SLUICE_X``."""

    database_url: str = "sqlite:///sluice.db"
    #: Standard Webhooks signing secret (``whsec_`` + base64) for the ``webhook`` provider.
    webhook_secret: str | None = None
    #: Seconds before an HTTP call to a provider is abandoned (recorded as TIMEOUT).
    http_timeout: float = 10.0
    #: Sends in flight at once per worker process.
    worker_concurrency: int = 100
    #: Most messages one claim takes.
    worker_batch_size: int = 200
    #: Seconds a claim lasts; a worker that dies gives its messages back after this.
    lease_seconds: float = 30.0
    #: Seconds between sweeps for expired leases.
    reaper_interval: float = 5.0
    #: Seconds between polls when no notification arrives (fallback to LISTEN/NOTIFY).
    poll_interval: float = 1.0
    #: Enqueue notifies workers at most once per this many seconds per channel and process.
    notify_interval: float = DEFAULT_NOTIFY_INTERVAL
    #: Retry backoff: full jitter over ``min(retry_cap, retry_base * 2**(n-1))`` seconds.
    retry_base: float = 2.0
    retry_cap: float = 600.0
    #: Deferrals a message may have — throttle-class answers (429, 502/503/504, quota
    #: exceeded) and put-backs, none of which spends an attempt — and seconds after the
    #: first, before it is dead-lettered with the reason.
    max_deferrals: int = 100
    max_defer_age: float = 3 * 86_400.0
    #: Seconds an outcome may wait in memory before it is written back.
    flush_interval: float = 0.005
    #: Pool size of database connections per process (PostgreSQL).
    pool_size: int = 8
    #: Seconds a caller waits for a PostgreSQL connection (from the pool, or a new one)
    #: before the store reports itself unavailable.
    db_timeout: float = 5.0
    #: Log level for the ``sluice`` loggers.
    log_level: str = "info"
    #: Key that encrypts connections' credentials (base64 of 32 bytes; ``sluice keys generate``).
    secret_key: str | None = None
    #: The key being rotated away from, while ``sluice keys rotate`` re-encrypts.
    secret_key_previous: str | None = None
    #: Provider API base URLs (the provider simulator in development and tests).
    twilio_base_url: str = "https://api.twilio.com"
    sendgrid_base_url: str = "https://api.sendgrid.com"
    whatsapp_base_url: str = "https://graph.facebook.com"
    #: Where providers send delivery receipts (Sluice's ingress), if anywhere.
    status_callback_url: str | None = None
    #: Let webhooks and http actions call loopback addresses (127.0.0.0/8, ::1), for the
    #: local provider simulator. Off in production: a tenant's URL could otherwise reach
    #: services listening on the worker's own host. Private ranges stay refused regardless.
    allow_loopback_targets: bool = False
    #: Private networks (CIDR) and host names (``hooks.corp.example``, ``*.corp.example``)
    #: that webhooks and http actions may call: the operator's own receivers. Link-local
    #: and cloud metadata addresses stay refused even inside a listed network. In the
    #: environment, separated by commas or spaces; in ``sluice.toml``, a list of strings.
    allow_private_targets: tuple[str, ...] = ()
    # -- flow controls -----------------------------------------------------------
    #: Mode of every scope no control names: ``live``, or ``approval`` to fail closed
    #: (every side effect waits for an operator's approval unless a control says live).
    default_mode: str = "live"
    #: Seconds between a worker's checks of the control epoch (how fast it acknowledges).
    control_poll: float = 0.25
    #: Redis for limits shared across hosts (``redis://127.0.0.1:6379/0``); store if unset.
    redis_url: str | None = None
    #: Prefix of every Redis key Sluice writes (several deployments can share a Redis).
    redis_prefix: str = "sluice:"
    #: When Redis is unreachable: ``closed`` (defer limited messages), ``store`` (use the
    #: database's limiter) or ``open`` (send without limits).
    redis_fallback: str = "closed"
    #: Circuit breakers: the sliding window, the volume it needs before it may open, the
    #: failure rate that opens it, how long it stays open before probing, and how many
    #: successful probes close it again (the seed's default: success < 50 % for 10 min).
    breaker_window: float = 600.0
    breaker_min_volume: int = 20
    breaker_failure_rate: float = 0.5
    breaker_cooldown: float = 30.0
    breaker_probes: int = 5
    # -- endpoint health (issue 14) ------------------------------------------------
    #: Seconds a webhook or http endpoint may fail without one success before it is
    #: disabled (its messages held until an operator enables it): 5 days, as webhook
    #: services do. The failure rate it shows counts the last ``endpoint_window`` seconds.
    endpoint_disable_after: float = 432_000.0
    endpoint_window: float = 3_600.0
    #: Adaptive concurrency per provider: a send slower than this counts as congestion.
    latency_target: float = 2.0
    # -- the HTTP API and ingress (``sluice serve``) -------------------------------
    #: Where ``sluice serve`` listens.
    api_host: str = "127.0.0.1"
    api_port: int = 8400
    #: Largest request body the API accepts, in bytes (larger: 413).
    api_max_body: int = 1_048_576
    #: Seconds a client has to send a request's headers, from the connect or from the
    #: first byte of a later request on a kept-alive connection (then 408, closed).
    api_header_timeout: float = 10.0
    #: Seconds a client has to send a request's body once its headers are in (then 408,
    #: closed). A webhook body is small; only a client holding the connection is slower.
    api_body_timeout: float = 20.0
    #: Connections one server process holds at most; past it new requests get 503.
    api_max_connections: int = 1000
    #: Seconds an ``Idempotency-Key`` is remembered: a retry inside it gets the first
    #: response; after it the key may be used again.
    idempotency_window: float = 86_400.0
    #: Seconds a request holds its key before a retry may take it over (it died).
    idempotency_lock: float = 60.0
    #: Seconds the ingress dedupe ledger remembers a provider event id.
    ingress_dedupe_window: float = 7 * 86_400.0
    #: Seconds a webhook waits, at most, to share its inbox write with the requests that
    #: follow it, once they come in a stream (an idle server writes each at once). Fewer,
    #: larger commits: less CPU per webhook and a flatter p99 under load, for up to this
    #: much more time to 2xx. 0 writes every request as soon as the last write is done.
    ingress_gather: float = 0.003
    #: Tries the projector makes at an event before it goes to the inbox's dead state.
    projector_max_attempts: int = 12
    # -- recipient hygiene (issue 14) ----------------------------------------------
    #: Stop free-form WhatsApp messages (not templates) before the call when the recipient
    #: has not written to the tenant within ``whatsapp_window_hours`` (Meta's 24-hour
    #: customer-service window); false: send them and let the provider refuse.
    whatsapp_window: bool = True
    whatsapp_window_hours: float = 24.0
    # -- metrics -----------------------------------------------------------------
    #: Port where ``sluice worker`` and ``sluice run`` serve ``/metrics`` on ``api_host``
    #: (0: not served; ``sluice serve`` always has the route).
    metrics_port: int = 0
    #: Count event metrics at all (the state metrics are read on scrape regardless). Off
    #: only to measure what counting costs (the benchmark's ``sluice-pg-nometrics``).
    metrics: bool = True
    #: Tenant labels on event metrics: ``all``, ``off``, or how many tenants a process
    #: labels by name (the rest count as ``_other``).
    metrics_tenants: str = "all"
    #: Seconds the state metrics read from the store are reused before a scrape reads
    #: them again.
    metrics_refresh: float = 5.0
    # -- tracing -----------------------------------------------------------------
    #: OTLP/HTTP collector (base URL, as ``OTEL_EXPORTER_OTLP_ENDPOINT``) to send one
    #: trace per message to; unset, and without the standard ``OTEL_EXPORTER_OTLP_*``
    #: variables, tracing is off. Needs the extra: ``pip install 'sluice[otel]'``.
    otel_endpoint: str | None = None
    # -- alerts ------------------------------------------------------------------
    #: The built-in evaluator: seconds between rounds (one worker evaluates at a time),
    #: and seconds a condition must stay clear before its incident resolves by itself.
    #: ``alerts_interval`` 0 turns the built-in evaluator off (Prometheus does it).
    alerts_interval: float = 15.0
    alerts_clear_for: float = 300.0
    #: Seconds an incident may stay open and unacknowledged before it is escalated (its
    #: targets told again, as "escalated"); 0: never. Seed 002: a P1 is answered within 15
    #: minutes.
    alerts_escalate_after: float = 900.0
    # -- the two-person rule (issue 14; sluice.twoperson, sluice.ops.requests) ----
    #: Acts that wait for a second operator (``[ops] two_person``; the language is in
    #: ``sluice.twoperson``), and seconds a request waits before it expires.
    two_person: tuple[str, ...] = ()
    two_person_expiry: float = 86_400.0
    # -- retention (issue 14; see sluice.retention) ----------------------------------
    #: Overrides of how long final messages are kept, ``status=span`` (``dead=90d``,
    #: ``sent=36h``, ``cancelled=keep``); the defaults: sent, delivered, read, bounced and
    #: shadowed 7 days; dead, cancelled, expired and suppressed 30 days.
    retention: tuple[str, ...] = ()
    #: Seconds between a worker's retention passes (one worker at a time); 0: off.
    retention_interval: float = 3600.0
    #: Messages removed per transaction, and seconds of pause between two batches.
    retention_batch: int = 1000
    retention_pause: float = 0.2
    #: Directory where each pass first writes what it removes (JSON lines); none: no export.
    retention_export_dir: str | None = None
    # -- the console (issue 16; ``[console]`` in sluice.toml) -------------------------
    #: A tenant's own retries of its dead letters (the console's tenant view): the most
    #: one act may retry, and the most of its dead letters retried in any hour (by anyone:
    #: an operator's retries of them count, and are never refused); 0 turns them off.
    tenant_retry_max: int = 100
    tenant_retry_per_hour: int = 1000

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            # NaN passes every "<= 0" comparison; refuse it here, by name.
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{_env_name(f.name)} must be a finite number, not {value!r}")
        positive = (
            "http_timeout",
            "worker_concurrency",
            "worker_batch_size",
            "lease_seconds",
            "reaper_interval",
            "poll_interval",
            "retry_base",
            "retry_cap",
            "max_deferrals",
            "max_defer_age",
            "pool_size",
            "db_timeout",
            "control_poll",
            "breaker_window",
            "breaker_min_volume",
            "breaker_cooldown",
            "breaker_probes",
            "endpoint_disable_after",
            "endpoint_window",
            "latency_target",
            "api_port",
            "api_max_body",
            "api_header_timeout",
            "api_body_timeout",
            "api_max_connections",
            "idempotency_window",
            "idempotency_lock",
            "ingress_dedupe_window",
            "projector_max_attempts",
            "metrics_refresh",
            "two_person_expiry",
            "whatsapp_window_hours",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{_env_name(name)} must be greater than 0")
        for name in (
            "notify_interval", "flush_interval", "alerts_interval", "alerts_clear_for",
            "alerts_escalate_after", "retention_interval", "retention_pause",
            "tenant_retry_max", "tenant_retry_per_hour", "ingress_gather",
        ):  # fmt: skip
            if getattr(self, name) < 0:
                raise ConfigError(f"{_env_name(name)} must not be negative")
        if self.ingress_gather > 1:
            raise ConfigError(
                f"SLUICE_INGRESS_GATHER is in seconds and at most 1 (a webhook would wait "
                f"that long for its 2xx), not {self.ingress_gather:g}"
            )
        if not 1 <= self.retention_batch <= 10_000:
            raise ConfigError("SLUICE_RETENTION_BATCH must be 1 to 10000")
        from sluice.retention import retention_policy

        retention_policy(self.retention)  # a bad entry stops the process at start, named
        if not 0 <= self.metrics_port <= 65535:
            raise ConfigError(f"SLUICE_METRICS_PORT must be 0 to 65535, not {self.metrics_port}")
        from sluice.metrics import parse_tenant_budget

        try:
            parse_tenant_budget(self.metrics_tenants)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if self.otel_endpoint is not None and not self.otel_endpoint.startswith(
            ("http://", "https://")
        ):
            raise ConfigError(
                f"SLUICE_OTEL_ENDPOINT {self.otel_endpoint!r} is not an http:// or https:// URL"
            )
        if self.default_mode not in ("live", "approval"):
            raise ConfigError(
                f"SLUICE_DEFAULT_MODE must be 'live' or 'approval', not {self.default_mode!r}"
            )
        if self.redis_fallback not in ("closed", "store", "open"):
            raise ConfigError(
                "SLUICE_REDIS_FALLBACK must be 'closed', 'store' or 'open', "
                f"not {self.redis_fallback!r}"
            )
        if not 0 < self.breaker_failure_rate <= 1:
            raise ConfigError("SLUICE_BREAKER_FAILURE_RATE must be in (0, 1]")
        if self.redis_url is not None and not self.redis_url.startswith(
            ("redis://", "rediss://", "unix://")
        ):
            raise ConfigError(
                f"SLUICE_REDIS_URL {self.redis_url!r} is not a redis:// or rediss:// URL"
            )
        if self.lease_seconds <= self.http_timeout:
            raise ConfigError(
                f"SLUICE_LEASE_SECONDS ({self.lease_seconds}) must be longer than "
                f"SLUICE_HTTP_TIMEOUT ({self.http_timeout}), or live sends would be reclaimed"
            )
        if self.retry_cap < self.retry_base:
            raise ConfigError("SLUICE_RETRY_CAP must be at least SLUICE_RETRY_BASE")
        if isinstance(self.allow_private_targets, str):
            raise ConfigError(
                "SLUICE_ALLOW_PRIVATE_TARGETS must be a list of networks and host names, "
                f"not the string {self.allow_private_targets!r}"
            )
        from sluice.twoperson import parse_rules

        parse_rules(self.two_person)  # a bad rule stops the process at start, named
        from sluice.netguard import private_targets

        # Parsed now, so that a bad entry stops the process at start, named.
        private_targets(tuple(self.allow_private_targets))
        if not self.database_url.startswith(("sqlite:", "postgresql:", "postgres:")):
            raise ConfigError(
                f"SLUICE_DATABASE_URL {self.database_url!r} is not supported: use "
                "sqlite:///path/to/file.db or postgresql://user@host:port/dbname"
            )

    @property
    def private_targets(self) -> PrivateTargets:
        """``allow_private_targets`` parsed; ``ConfigError`` naming a malformed entry."""
        from sluice.netguard import private_targets

        return private_targets(tuple(self.allow_private_targets))

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied (``None`` values are ignored)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def _env_name(field_name: str) -> str:
    return "SLUICE_" + field_name.upper()


def _coerce(name: str, kind: Any, raw: Any, source: str) -> Any:
    target = kind if isinstance(kind, type) else None
    if target is None:  # "str | None" and friends: strings
        return None if raw in ("", None) else str(raw)
    invalid = ConfigError(f"{source}: {name} = {raw!r} is not a valid {target.__name__}")
    if target is tuple:  # a list of names: TOML gives a list, the environment a string
        items = raw.replace(",", " ").split() if isinstance(raw, str) else raw
        if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
            raise ConfigError(f"{source}: {name} = {raw!r} is not a list of strings")
        return tuple(items)
    if target is bool:
        # bool("false") is True: spell the values out instead.
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise invalid
    # TOML values arrive typed: 2.5 or true must not quietly become the integer 2 or 1.
    if isinstance(raw, bool) or (target is int and isinstance(raw, float)):
        raise invalid
    try:
        return target(raw)
    except (TypeError, ValueError):
        raise invalid from None


def config_file(
    env: Mapping[str, str] | None = None, config_path: str | Path | None = None
) -> Path | None:
    """The ``sluice.toml`` in effect: ``config_path``, else ``SLUICE_CONFIG``, else
    ``./sluice.toml`` when it exists; ``None`` when there is none.

    A file that was named (argument or variable) but does not exist is a ``ConfigError``.
    Settings (``[sluice]``) and action definitions (``[actions]``, see ``sluice.actions``)
    are read from the same file.
    """
    env = os.environ if env is None else env
    path = config_path or env.get("SLUICE_CONFIG") or "sluice.toml"
    if os.path.isfile(path):  # every enqueue asks: no Path object unless there is a file
        return Path(path)
    if config_path is not None or "SLUICE_CONFIG" in env:
        raise ConfigError(f"config file {path} does not exist")
    return None


#: What ``look_up_config`` found: the ``sluice.toml`` in effect and its document
#: (``(None, None)``: there is none), or why it could not be read.
ConfigLookup = tuple[Path | None, dict[str, Any] | None] | ConfigError


def look_up_config() -> ConfigLookup:
    """``config_file()`` and its ``config_document``, with one ``stat`` of the file, or
    the ``ConfigError`` either would raise, returned rather than raised.

    What an enqueue asks on every call (addressing, then the ``[expiry]`` defaults):
    looked up once and handed to both. A ``stat`` costs far more between two database
    round trips than in a tight loop (3 µs in a loop, 12 µs between commits, measured),
    and one is all that staying true to an edited file needs.
    """
    env = os.environ
    path = env.get("SLUICE_CONFIG") or "sluice.toml"
    try:
        stat = os.stat(path)
    except (OSError, ValueError):  # as os.path.isfile: missing, unreachable, bad name
        stat = None
    if stat is None or not S_ISREG(stat.st_mode):
        if "SLUICE_CONFIG" in env:
            return ConfigError(f"config file {path} does not exist")
        return None, None
    found = Path(path)
    try:
        return found, _document(found, stat)
    except ConfigError as exc:
        return exc


#: path -> ((mtime_ns, size, inode), parsed document): see ``config_document``.
_DOCUMENTS: dict[Path, tuple[tuple[int, int, int], dict[str, Any]]] = {}


def config_document(path: Path) -> dict[str, Any]:
    """The TOML document at ``path``, parsed once and again only when the file changes.

    Enqueue reads the configuration on every call (provider aliases, actions); a stat
    per call is cheap, a parse per call is not. Treat the result as read-only: it is
    shared by every caller. Raises ``ConfigError`` naming the file when it is not TOML.
    """
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    return _document(path, stat)


def _document(path: Path, stat: os.stat_result) -> dict[str, Any]:
    """``config_document`` once the file's ``stat`` is known."""
    stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
    path = path.absolute()  # the same relative name means another file in another cwd
    cached = _DOCUMENTS.get(path)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    try:
        document = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    _DOCUMENTS[path] = (stamp, document)
    return document


def load_setting(
    name: str, env: Mapping[str, str] | None = None, config_path: str | Path | None = None
) -> Any:
    """One setting as ``load_settings`` reads it (environment, then the ``[sluice]``
    table, then the default), without reading or checking the others.

    For code that runs inside an application rather than a Sluice process (enqueue),
    where a whole ``Settings`` is neither at hand nor wanted: one unrelated bad value
    must not stop an application from enqueuing.
    """
    env = os.environ if env is None else env
    return _setting(name, env, lambda: config_file(env, config_path))


def setting_in(name: str, path: Path | None, env: Mapping[str, str] | None = None) -> Any:
    """``load_setting`` for a caller that has already found the file in effect with
    ``config_file`` (None: there is none): enqueue reads several settings per call, and
    looking the file up once for all of them is a good part of a single enqueue's cost."""
    return _setting(name, os.environ if env is None else env, lambda: path)


def _setting(name: str, env: Mapping[str, str], find_file: Callable[[], Path | None]) -> Any:
    field = _setting_fields().get(name)
    if field is None:
        raise ConfigError(f"there is no setting named {name!r}")
    kind = type(field.default) if field.default is not None else None
    raw = env.get(_env_name(name))
    if raw is not None and raw != "":
        return _coerce(_env_name(name), kind, raw, "environment")
    path = find_file()
    if path is not None:
        table = config_document(path).get("sluice", {})
        if isinstance(table, Mapping) and name in table:
            return _coerce(name, kind, table[name], str(path))
    return field.default


@functools.cache
def _setting_fields() -> dict[str, Field[Any]]:
    return {f.name: f for f in fields(Settings)}


def notify_interval(env: Mapping[str, str] | None = None) -> float:
    """``SLUICE_NOTIFY_INTERVAL`` alone, for the enqueue side.

    Enqueue runs inside the application's own transaction, where no ``Settings`` is at
    hand; producer and worker must still agree on the interval, because the worker's
    hot-poll window after a wake-up is exactly this long.
    """
    env = os.environ if env is None else env
    raw = env.get("SLUICE_NOTIFY_INTERVAL")
    if raw is None or raw == "":
        return DEFAULT_NOTIFY_INTERVAL
    value = _coerce("SLUICE_NOTIFY_INTERVAL", float, raw, "environment")
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"SLUICE_NOTIFY_INTERVAL must be a finite number ≥ 0, not {raw!r}")
    return float(value)


def load_settings(
    env: dict[str, str] | None = None, config_path: str | Path | None = None, **overrides: Any
) -> Settings:
    """Read settings; raise ``ConfigError`` naming the bad variable or key.

    Only the ``[sluice]`` table is read; other top-level tables (``[actions]``) belong
    to other readers and are left alone.
    """
    env = dict(os.environ) if env is None else env
    path = config_file(env, config_path)
    values: dict[str, Any] = {}
    known = {f.name: f.type for f in fields(Settings)}
    types = {f.name: type(f.default) if f.default is not None else None for f in fields(Settings)}
    if path is not None:
        try:
            document = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        for key, raw in document.get("sluice", {}).items():
            if key not in known:
                raise ConfigError(f"{path}: unknown setting [sluice].{key}")
            values[key] = _coerce(key, types[key], raw, str(path))
        for key, raw in document.get("ops", {}).items():  # [ops]: the two-person rule
            if key not in ("two_person", "two_person_expiry"):
                raise ConfigError(f"{path}: unknown setting [ops].{key}")
            values[key] = _coerce(f"[ops].{key}", types[key], raw, str(path))
        for key, raw in document.get("console", {}).items():  # [console]: the tenant view
            if key not in ("tenant_retry_max", "tenant_retry_per_hour"):
                raise ConfigError(f"{path}: unknown setting [console].{key}")
            values[key] = _coerce(f"[console].{key}", types[key], raw, str(path))
    for name in known:
        raw = env.get(_env_name(name))
        if raw is not None and raw != "":
            values[name] = _coerce(_env_name(name), types[name], raw, "environment")
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(**values)
