"""The SQLite store: WAL mode, one writer; the embedded default.

Every statement runs on one connection in one dedicated thread, so the event loop
never blocks on disk and writes never interleave. Several processes may share the
file (WAL, ``BEGIN IMMEDIATE``, a busy timeout); for many hosts use PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import fcntl
import json
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import structlog

from sluice.addressing import addressing_in_effect
from sluice.config import Settings
from sluice.connections import Connection, ConnectionState
from sluice.errors import (
    ConfigError,
    MigrationError,
    NotFound,
    SluiceError,
    StoreError,
    StoreUnavailable,
    ValidationError,
)
from sluice.flow.controls import Control, Mode, Scope, control_audit
from sluice.model import Attempt, Completion, Message, NewMessage, Status
from sluice.store import _enqueue, _hygiene, _observe, _params, _retention, _rows, _rules
from sluice.store._audit import insert_params, seal, stored_detail
from sluice.store._claims import next_claim_start
from sluice.store._codec import Codec
from sluice.store._driver import SqlDriver
from sluice.store._queries import load_queries, migrations, pending_migrations
from sluice.store.base import (
    ApiKey,
    AuditEntry,
    BreakerInfo,
    FlowListener,
    FlowSignal,
    FlowStateFn,
    IdemClaim,
    IdemResponder,
    InboxItem,
    LimitRow,
    MessageFilter,
    Observation,
    PurgeExport,
    PurgeRule,
    Receipt,
    RefreshCallback,
    RefreshOutcome,
    RescueResult,
    StatusReport,
    Suppression,
    Throttle,
    limit_audit,
)

__all__ = ["SqliteStore", "sqlite_enqueue", "sqlite_path"]

Q = load_queries("sqlite")
log = structlog.get_logger("sluice.store")
#: Seconds between looks for throttles and breaker moves of other processes on the file.
FLOW_POLL = 0.05
T = TypeVar("T")


def sqlite_path(url: str) -> str:
    """The file path of a ``sqlite:///path`` URL (``sqlite:///:memory:`` is refused)."""
    if not url.startswith("sqlite:///"):
        raise ConfigError(f"SQLite URL {url!r} must look like sqlite:///path/to/file.db")
    path = url[len("sqlite:///") :]
    if not path or path == ":memory:":
        raise ConfigError("SQLite needs a file (several processes share it): sqlite:///sluice.db")
    return path


def _ts(dt: datetime | None) -> float | None:
    return None if dt is None else dt.timestamp()


def _dt(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def _at(value: float) -> datetime:
    """A NOT NULL time column."""
    return datetime.fromtimestamp(value, UTC)


def _epoch(dt: datetime) -> float:
    return dt.timestamp()


#: Times are REAL epoch seconds, JSON is text.
C = Codec(
    read_time=_at, write_time=_epoch, read_json=json.loads, no_limit=-1, write_list=json.dumps
)


def _close_opened(opening: asyncio.Future[sqlite3.Connection]) -> None:
    """Close the connection a snapshot opened for a task that was cancelled meanwhile."""
    if not opening.cancelled() and opening.exception() is None:
        opening.result().close()


def connect(path: str, *, timeout: float = 30.0) -> sqlite3.Connection:
    """A connection set up the way Sluice needs: WAL, durable commits, explicit transactions."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit survives power loss, not only a crash; commits are per batch.
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
    return conn


@contextlib.contextmanager
def _write(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    # IMMEDIATE takes the write lock up front, so two processes never deadlock
    # upgrading read locks; the busy timeout queues them instead.
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    else:
        conn.execute("COMMIT")


def sqlite_enqueue(
    conn: sqlite3.Connection, rows: Sequence[_enqueue.PreparedRow], now: datetime
) -> list[str]:
    """Insert prepared rows on ``conn`` inside whatever transaction it has open."""
    t = now.timestamp()
    conn.executemany(
        Q["message_insert"],
        [
            {
                "id": r.message.id,
                "tenant": r.message.tenant,
                "channel": r.message.channel,
                "provider": r.message.provider,
                "action": r.message.action,
                "recipient": r.message.recipient,
                "payload": r.payload_json,
                "priority": r.message.priority,
                "run_at": _ts(r.message.run_at),
                "max_attempts": r.message.max_attempts,
                "idempotency_key": r.message.idempotency_key,
                "content_hash": r.content_hash,
                "correlation_id": r.message.correlation_id,
                "scopes": r.scopes_json,
                "now": t,
                "expires_at": _ts(r.message.expires_at) if r.message.expires_at else None,
                "ttl": r.ttl,
                "verify_within": r.message.verify_within,  # issue 15
            }
            for r in rows
        ],
    )
    existing: dict[tuple[str, str], tuple[str, str]] = {}
    for tenant, key in _enqueue.keyed(rows, None):
        found = conn.execute(Q["message_find_by_key"], {"tenant": tenant, "key": key}).fetchone()
        if found:
            existing[(tenant, key)] = (found[0], found[3])
    return _enqueue.resolve(rows, existing)


class SqliteStore(SqlDriver):
    """Store on one SQLite file."""

    dialect = "sqlite"
    codec = C

    def __init__(
        self,
        url: str,
        *,
        poll_interval: float = 0.01,
        create: bool = True,
        settings: Settings | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.path = sqlite_path(url)
        #: Seconds a write waits for another connection's write lock (SQLite's busy
        #: timeout) before the store reports itself unavailable.
        self.timeout = timeout
        #: What enqueue checks destinations against (loopback targets); None: the
        #: configuration in effect.
        self._settings = settings
        self._create = create
        #: Where the next claim's scan of tenants starts (see ``store/_claims.py``).
        self._claim_after = ""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sluice-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._watch: sqlite3.Connection | None = None
        self._poll_interval = poll_interval
        self._wake = asyncio.Event()
        self._last_version: int | None = None
        #: One token refresh at a time per connection in this process (connection_refresh).
        self._refresh_locks: dict[tuple[str, str], asyncio.Lock] = {}
        #: ``flow_listen``: the listeners, the watcher of other processes' changes, and
        #: the throttles and breaker states already signalled.
        self._flow_listeners: list[FlowListener] = []
        self._flow_watcher: asyncio.Task[None] | None = None
        self._flow_seen: dict[tuple[str, ...], tuple[Any, ...]] | None = None

    async def open(self) -> SqliteStore:
        """Open the file (created if missing)."""
        if self._conn is None:
            if not self._create and not Path(self.path).exists():
                raise StoreUnavailable(
                    f"no SQLite database at {self.path}: check the path, or create it with "
                    f"sluice migrate --database-url sqlite:///{self.path}"
                )
            try:
                self._conn = await self._call(lambda: connect(self.path, timeout=self.timeout))
                self._watch = sqlite3.connect(self.path, isolation_level=None)
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"cannot open SQLite file {self.path}: {exc}") from exc
        return self

    async def close(self) -> None:
        if self._flow_watcher is not None:
            self._flow_watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._flow_watcher
            self._flow_watcher = None
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await self._call(conn.close)
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        self._executor.shutdown(wait=True)

    async def __aenter__(self) -> SqliteStore:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        # In the caller's context, as asyncio.to_thread runs it: what the caller bound
        # (its request's log fields, its trace origin) holds on the store's thread too.
        context = contextvars.copy_context()
        return await loop.run_in_executor(self._executor, context.run, fn, *args)

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` on the store's thread, translating sqlite errors; inside this
        task's snapshot, on the snapshot's connection."""
        conn = self._pinned()
        if conn is None:
            if self._conn is None:
                await self.open()
            conn = self._conn
        assert conn is not None

        def call() -> T:
            try:
                return fn(conn)
            except sqlite3.Error as exc:
                raise self._store_error(exc, snapshot=conn is not self._conn) from exc

        return await self._call(call)

    def _store_error(self, exc: sqlite3.Error, *, snapshot: bool = False) -> SluiceError:
        """What a caller is told of a sqlite3 error (``snapshot``: on a snapshot's
        connection)."""
        if isinstance(exc, sqlite3.OperationalError):
            code = exc.sqlite_errorcode & 0xFF
            if code == sqlite3.SQLITE_READONLY and snapshot:
                return StoreError(f"a store snapshot only reads: {exc}")
            if code == sqlite3.SQLITE_BUSY:
                # Another connection (another process on the file) held the write lock
                # for the whole busy timeout: the database is there but cannot take this
                # write now, which a caller treats like an outage (the API answers 503
                # with Retry-After), not as a bug.
                return StoreUnavailable(
                    f"SQLite database {self.path} is locked: another connection held "
                    f"its write lock for more than {self.timeout:g} s"
                )
            if "no such table" in str(exc):
                return MigrationError(f"the Sluice schema is missing ({exc}); run: sluice migrate")
        return StoreError(f"SQLite error: {exc}")

    # -- schema ------------------------------------------------------------------

    @staticmethod
    def _applied(conn: sqlite3.Connection) -> set[int]:
        conn.execute(Q["schema_version_table"])
        return {v for (v,) in conn.execute(Q["schema_versions"])}

    async def migrate(self) -> list[int]:
        def apply(conn: sqlite3.Connection) -> list[int]:
            out: list[int] = []
            with _write(conn):
                done = self._applied(conn)
                for version, name, sql in pending_migrations("sqlite", done):
                    for statement in _split_sql(sql):
                        conn.execute(statement)
                    conn.execute(Q["schema_version_record"], {"version": version, "name": name})
                    out.append(version)
            return out

        return await self._run(apply)

    async def schema_pending(self) -> list[int]:
        def pending(conn: sqlite3.Connection) -> list[int]:
            done = self._applied(conn)
            return [v for v, _, _ in migrations("sqlite") if v not in done]

        return await self._run(pending)

    # -- outbox ------------------------------------------------------------------

    async def enqueue_many(
        self, messages: Sequence[NewMessage], now: datetime | None = None
    ) -> list[str]:
        rows = _enqueue.prepare(messages, addressing_in_effect(self._settings))
        stamp = now or datetime.now(UTC)

        def insert(conn: sqlite3.Connection) -> list[str]:
            with _write(conn):
                return sqlite_enqueue(conn, rows, stamp)

        ids = await self._run(insert)
        self._wake.set()
        return ids

    # -- dispatch ----------------------------------------------------------------

    async def message_claim(
        self, worker_id: str, limit: int, lease_seconds: float, now: datetime
    ) -> list[Message]:
        params = _params.message_claim(C, worker_id, limit, lease_seconds, now, self._claim_after)

        def claim(conn: sqlite3.Connection) -> list[Any]:
            with _write(conn):
                rows = conn.execute(Q["message_claim"], params).fetchall()
                if params["after"] and len(rows) < limit:  # wrap round to the first tenants
                    more = {**params, "after": "", "limit": limit - len(rows)}
                    rows += conn.execute(Q["message_claim"], more).fetchall()
                return rows

        claimed = [_rows.message(C, r) for r in await self._run(claim)]
        self._claim_after = next_claim_start(claimed, limit)
        return claimed

    async def message_claim_with_connections(
        self, worker_id: str, limit: int, lease_seconds: float, now: datetime
    ) -> tuple[list[Message], list[Connection]]:
        claimed = await self.message_claim(worker_id, limit, lease_seconds, now)
        found = await self.connection_find(sorted({(m.tenant, m.provider) for m in claimed}))
        return claimed, found

    async def message_complete_many(
        self, worker_id: str, completions: Sequence[Completion], now: datetime
    ) -> set[str]:
        if not completions:
            return set()
        t = now.timestamp()

        def complete(conn: sqlite3.Connection) -> set[str]:
            applied: set[str] = set()
            attempts = []
            with _write(conn):
                for c in completions:
                    a = c.attempt
                    cur = conn.execute(
                        Q["message_complete"],
                        {
                            "id": c.message_id,
                            "claim_seq": c.claim_seq,
                            "worker_id": worker_id,
                            "status": str(c.status),
                            "run_at": _ts(c.run_at),
                            "refund": 1 if c.refund_attempt else 0,
                            "error_code": a.error_code if a else c.error_code,
                            "detail": a.detail if a else c.error,
                            "provider_message_id": c.provider_message_id,
                            "hold_reason": c.hold_reason,
                            "deferred_at": (
                                (a.finished_at.timestamp() if a else t) if c.deferred else None
                            ),
                            "now": t,
                        },
                    )
                    ok = cur.rowcount == 1
                    if ok:
                        applied.add(c.message_id)
                    if a is None:  # held before any provider call: no attempt was made
                        continue
                    attempts.append(
                        {
                            "message_id": c.message_id,
                            "attempt_no": c.claim_seq,
                            "worker_id": worker_id,
                            "provider": a.provider,
                            "started_at": a.started_at.timestamp(),
                            "finished_at": a.finished_at.timestamp(),
                            "outcome": str(a.outcome),
                            "error_code": a.error_code,
                            "error_class": a.error_class,
                            "provider_status": a.provider_status,
                            "provider_code": a.provider_code,
                            "detail": a.detail,
                            "latency_ms": a.latency_ms,
                            "applied": 1 if ok else 0,
                        }
                    )
                conn.executemany(Q["attempt_insert"], attempts)
            return applied

        return await self._run(complete)

    async def message_release(
        self, worker_id: str, claims: Sequence[tuple[str, int]], now: datetime
    ) -> list[str]:
        t = now.timestamp()

        def release(conn: sqlite3.Connection) -> list[str]:
            out = []
            with _write(conn):
                for mid, seq in claims:
                    cur = conn.execute(
                        Q["message_release"],
                        {"id": mid, "claim_seq": seq, "worker_id": worker_id, "now": t},
                    )
                    if cur.rowcount == 1:
                        out.append(mid)
            return out

        return await self._run(release) if claims else []

    async def message_renew(
        self, worker_id: str, claims: Sequence[tuple[str, int]], lease_seconds: float, now: datetime
    ) -> list[str]:
        until = (now + timedelta(seconds=lease_seconds)).timestamp()

        def renew(conn: sqlite3.Connection) -> list[str]:
            out = []
            with _write(conn):
                for mid, seq in claims:
                    cur = conn.execute(
                        Q["message_renew"],
                        {"id": mid, "claim_seq": seq, "worker_id": worker_id, "lease_until": until},
                    )
                    if cur.rowcount == 1:
                        out.append(mid)
            return out

        return await self._run(renew) if claims else []

    async def message_rescue_expired(self, now: datetime, limit: int = 1000) -> RescueResult:
        t = now.timestamp()

        def rescue(conn: sqlite3.Connection) -> RescueResult:
            requeued: list[str] = []
            dead: list[str] = []
            with _write(conn):
                rows = conn.execute(
                    Q["message_select_expired"], {"now": t, "limit": limit}
                ).fetchall()
                for mid, seq, worker, provider, claimed_at, attempts, max_attempts in rows:
                    status = "dead" if attempts >= max_attempts else "queued"
                    conn.execute(
                        Q["message_expire"],
                        {"id": mid, "claim_seq": seq, "status": status, "now": t},
                    )
                    conn.execute(
                        Q["attempt_insert"],
                        {
                            "message_id": mid,
                            "attempt_no": seq,
                            "worker_id": worker or "?",
                            "provider": provider,
                            "started_at": claimed_at if claimed_at is not None else t,
                            "finished_at": t,
                            "outcome": "lease_expired",
                            "error_code": "LEASE_EXPIRED",
                            "error_class": "transient",
                            "provider_status": None,
                            "provider_code": None,
                            "detail": "lease expired before the outcome was written; "
                            "the provider may or may not have acted",
                            "latency_ms": None,
                            "applied": 1,
                        },
                    )
                    (dead if status == "dead" else requeued).append(mid)
            return RescueResult(requeued=requeued, dead=dead)

        return await self._run(rescue)

    # -- reading -----------------------------------------------------------------

    async def _fetch(self, name: str, params: dict[str, Any]) -> list[Any]:
        return await self._run(lambda conn: conn.execute(Q[name], params).fetchall())

    async def message_get(self, message_id: str) -> Message:
        rows = await self._fetch("message_get", {"id": message_id})
        if not rows:
            raise NotFound(f"no message with id {message_id!r}")
        return _rows.full_message(C, rows[0])

    async def attempt_list(self, message_id: str) -> list[Attempt]:
        rows = await self._fetch("attempt_list", {"id": message_id})
        return [_rows.attempt(C, r) for r in rows]

    async def status_report(self, now: datetime) -> StatusReport:
        counts = {s: n for s, n in await self._fetch("status_counts", {})}
        (oldest,) = (await self._fetch("oldest_ready", {"now": now.timestamp()}))[0]
        return StatusReport(
            counts=counts,
            oldest_ready_age_seconds=None if oldest is None else now.timestamp() - oldest,
            dead=await self.dlq_groups(MessageFilter()),
            workers=await self.worker_list(now - timedelta(minutes=10)),
        )

    async def observe(self, now: datetime) -> Observation:
        def read(conn: sqlite3.Connection) -> dict[str, list[Any]]:
            # One read transaction: every query sees the same snapshot of the file (WAL),
            # as PostgreSQL's observe does (inside a snapshot: the snapshot's).
            own = not conn.in_transaction
            if own:
                conn.execute("BEGIN")
            try:
                return {
                    name: conn.execute(Q[name], {"now": now.timestamp()}).fetchall()
                    for name in _observe.QUERIES
                }
            finally:
                if own:
                    conn.execute("COMMIT")

        return _observe.build(await self._run(read), lambda v: datetime.fromtimestamp(v, UTC))

    @contextlib.asynccontextmanager
    async def _read_transaction(self) -> AsyncIterator[sqlite3.Connection]:
        # A connection of its own (WAL: a reader sees the file as of its first read while
        # writers go on), never the store's: other tasks keep writing on that one.
        if self._conn is None:
            await self.open()

        def begin() -> sqlite3.Connection:
            conn = sqlite3.connect(
                self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
            )
            try:
                conn.execute("PRAGMA query_only = ON")
                conn.execute("BEGIN")
                # The moment is taken by the first read: here, on entering the block.
                conn.execute("SELECT count(*) FROM sqlite_master").fetchall()
            except sqlite3.Error as exc:
                conn.close()
                raise self._store_error(exc) from exc
            return conn

        def end(conn: sqlite3.Connection) -> None:
            try:
                conn.execute("ROLLBACK")  # nothing was written: query_only
            finally:
                conn.close()

        # Shielded both ways: the connection is closed, and its read transaction (which
        # holds back the WAL's checkpoints) ended, even when the task is cancelled while
        # the store's thread opens or closes it.
        opening = asyncio.ensure_future(self._call(begin))
        try:
            conn = await asyncio.shield(opening)
        except asyncio.CancelledError:
            opening.add_done_callback(_close_opened)
            raise
        try:
            yield conn
        finally:
            try:
                await asyncio.shield(self._call(end, conn))
            except RuntimeError:  # the store was closed meanwhile, its thread with it
                conn.close()

    async def try_lead(self, name: str) -> _FileLead | None:
        # A lock file beside the database: flock is released by the kernel when the
        # holder closes it or dies, like PostgreSQL's session lock.
        def take() -> _FileLead | None:
            lock = open(f"{self.path}.{name}.lock", "a+b")  # noqa: SIM115  # held by the lead
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                lock.close()
                return None
            return _FileLead(lock)

        return await asyncio.to_thread(take)

    async def _script(
        self,
        steps: Sequence[tuple[str, dict[str, Any]]],
        audit: AuditEntry | None = None,
        audit_if: int | None = None,
    ) -> list[list[Any]]:
        def run(conn: sqlite3.Connection) -> list[list[Any]]:
            with _write(conn):
                out = [conn.execute(Q[name], params).fetchall() for name, params in steps]
                if audit is not None and (audit_if is None or out[audit_if]):
                    _audit_insert(conn, audit, audit.detail)
                return out

        return await self._run(run)

    async def _move(
        self, query: str, ids: Sequence[str], from_status: str, now: datetime, audit: AuditEntry
    ) -> list[str]:
        t = now.timestamp()

        def move(conn: sqlite3.Connection) -> list[str]:
            moved = []
            with _write(conn):
                for mid in ids:
                    params = {"id": mid, "from_status": from_status, "now": t}
                    cur = conn.execute(Q[query], {**params, "actor": audit.actor})
                    if cur.rowcount == 1:
                        moved.append(mid)
                _audit_insert(conn, audit, _rules.moved_detail(audit, moved))
            return moved

        moved = await self._run(move)
        self._wake.set()
        return moved

    # -- limits ------------------------------------------------------------------

    async def flow_state_apply(self, keys: Sequence[str], fn: FlowStateFn) -> Any:
        import time

        from sluice.flow.limits import Cell

        wanted = sorted(set(keys))

        def apply(conn: sqlite3.Connection) -> Any:
            with _write(conn):
                state: dict[str, Cell] = {}
                for key in wanted:
                    row = conn.execute(Q["flow_state_select"], {"key": key}).fetchone()
                    state[key] = Cell(row[1], row[2]) if row else Cell(0.0, -1.0)
                before = {k: (c.value, c.stamp) for k, c in state.items()}
                result = fn(state, time.time())
                for key, cell in state.items():
                    if before.get(key) == (cell.value, cell.stamp):
                        continue
                    conn.execute(Q["flow_state_prepare"], {"key": key})
                    conn.execute(
                        Q["flow_state_write"],
                        {
                            "key": key,
                            "value": cell.value,
                            "stamp": cell.stamp,
                            "expires_at": cell.expires_at,
                        },
                    )
                return result

        return await self._run(apply)

    async def flow_state_purge(self, now: datetime) -> int:
        def purge(conn: sqlite3.Connection) -> int:
            with _write(conn):
                n = conn.execute(Q["flow_state_purge"], {"now": now.timestamp()}).rowcount
                conn.execute(Q["throttle_purge"], {"now": now.timestamp()})
                return int(n)

        return await self._run(purge)

    async def throttle_set(
        self, tenant: str, provider: str, until: datetime, reason: str, now: datetime
    ) -> None:
        params = _params.throttle_set(C, tenant, provider, until, reason, now)

        def put(conn: sqlite3.Connection) -> Any:
            with _write(conn):
                conn.execute(Q["throttle_set"], params)
                return conn.execute(Q["throttle_get"], params).fetchone()

        self._flow_signal(FlowSignal(throttle=_rows.throttle(C, await self._run(put))))

    # Acting on what waits (issue 14): an operator clears throttles.
    async def throttle_clear(
        self, keys: Sequence[tuple[str, str]], now: datetime, audit: AuditEntry
    ) -> list[Throttle]:
        def clear(conn: sqlite3.Connection) -> list[Throttle]:
            with _write(conn):
                cleared = [
                    _rows.throttle(C, r)
                    for tenant, provider in keys
                    for r in conn.execute(
                        Q["throttle_clear"], {"tenant": tenant, "provider": provider}
                    ).fetchall()
                ]
                conn.execute(Q["flow_bump"], {"now": now.timestamp()})
                _audit_insert(conn, audit, _rules.cleared_detail(audit, cleared))
                return cleared

        cleared = await self._run(clear)
        for gone in cleared:
            self._flow_signal(FlowSignal(throttle_cleared=gone))
        return cleared

    # -- flow signals ------------------------------------------------------------

    def flow_listen(self, listener: FlowListener) -> Callable[[], None]:
        self._flow_listeners.append(listener)
        if self._flow_watcher is None or self._flow_watcher.done():
            self._flow_watcher = asyncio.create_task(self._flow_watch(), name="sluice-flow-watch")

        def stop() -> None:
            with contextlib.suppress(ValueError):
                self._flow_listeners.remove(listener)

        return stop

    def _flow_signal(self, signal: FlowSignal) -> None:
        for listener in list(self._flow_listeners):
            try:
                listener(signal)
            except Exception:  # one listener's bug must not silence the others
                log.exception("flow listener failed")

    async def _flow_watch(self) -> None:
        """Other processes on this file: when it changed (``data_version``, read on a
        connection of its own), diff the throttles and breakers against what was already
        signalled, and signal what is new."""
        watch = sqlite3.connect(self.path, isolation_level=None)
        last: int | None = None
        try:
            while True:
                try:
                    (version,) = watch.execute("PRAGMA data_version").fetchone()
                    if version != last:
                        last = version
                        await self._flow_diff()
                except (sqlite3.Error, SluiceError) as exc:
                    log.debug("flow watch failed; trying again", error=str(exc))
                await asyncio.sleep(FLOW_POLL)
        finally:
            watch.close()

    async def _flow_diff(self) -> None:
        now = datetime.now(UTC)
        current: dict[tuple[str, ...], tuple[Any, ...]] = {}
        signals: dict[tuple[str, ...], FlowSignal] = {}
        for t in await self.throttle_list(now):
            current[("t", t.tenant, t.provider)] = (t.until,)
            signals[("t", t.tenant, t.provider)] = FlowSignal(throttle=t)
        for b in await self.breaker_list():
            current[("b", b.key)] = (b.state, b.updated_at, b.forced)
            signals[("b", b.key)] = FlowSignal(breaker=b)
        seen, self._flow_seen = self._flow_seen, current
        if seen is None:
            return  # the first look: the worker loaded this state as it started
        for key, values in current.items():
            if seen.get(key) != values:
                self._flow_signal(signals[key])
        for key, values in seen.items():  # gone while in force: cleared by an operator
            if key[0] == "t" and key not in current and values[0] > now:
                gone = Throttle(key[1], key[2], now, "cleared", now)
                self._flow_signal(FlowSignal(throttle_cleared=gone))

    async def limit_set(self, row: LimitRow) -> None:
        def put(conn: sqlite3.Connection) -> None:
            with _write(conn):
                conn.execute(Q["limit_upsert"], _params.limit_upsert(C, row))
                conn.execute(Q["flow_bump"], {"now": row.updated_at.timestamp()})
                entry = limit_audit("limit.set", row)
                _audit_insert(conn, entry, entry.detail)

        await self._run(put)

    async def limit_clear(
        self, kind: str, tenant: str, provider: str, action: str, *, actor: str, reason: str,
        now: datetime,
    ) -> bool:  # fmt: skip
        scope = {"kind": kind, "tenant": tenant, "provider": provider, "action": action}

        def clear(conn: sqlite3.Connection) -> bool:
            with _write(conn):
                if conn.execute(Q["limit_delete"], scope).fetchone() is None:
                    return False
                conn.execute(Q["flow_bump"], {"now": now.timestamp()})
                row = LimitRow(kind, tenant, provider, action, {}, actor, reason, now)
                entry = limit_audit("limit.clear", row)
                _audit_insert(conn, entry, entry.detail)
                return True

        return await self._run(clear)

    # -- controls ----------------------------------------------------------------

    async def clock_now(self) -> datetime:
        # Every process on the file runs on this host: its clock is the one clock.
        return datetime.now(UTC)

    async def control_set(
        self,
        scope: Scope,
        mode: Mode,
        *,
        actor: str,
        reason: str,
        expires_at: datetime | None,
        now: datetime,
    ) -> Control:
        def put(conn: sqlite3.Connection) -> Control:
            with _write(conn):
                (version,) = conn.execute(Q["flow_bump"], {"now": now.timestamp()}).fetchone()
                params = _params.control_upsert(
                    C, scope, mode, actor=actor, reason=reason, expires_at=expires_at, now=now,
                    version=version,
                )  # fmt: skip
                row = conn.execute(Q["control_upsert"], params).fetchone()
                control = _rows.control(C, row)
                if control.mode is not Mode.PAUSED:
                    conn.execute(Q["message_unpark"], {"control_id": control.id})
                entry = control_audit("control.set", control, now, actor, reason)
                _audit_insert(conn, entry, entry.detail)
                return control

        control = await self._run(put)
        self._wake.set()
        return control

    async def control_clear(
        self, scope: Scope, *, actor: str, reason: str, release: bool, now: datetime
    ) -> tuple[Control | None, list[str]]:
        t = now.timestamp()

        def clear(conn: sqlite3.Connection) -> tuple[Control | None, list[str]]:
            with _write(conn):
                row = conn.execute(Q["control_delete"], scope.params()).fetchone()
                if row is not None:
                    conn.execute(Q["message_unpark"], {"control_id": _rows.control(C, row).id})
                released: list[str] = []
                if release:
                    released = [
                        r[0]
                        for r in conn.execute(
                            Q["message_release_controlled"], {**scope.params(), "now": t}
                        ).fetchall()
                    ]
                if row is None and not released:
                    return None, []
                conn.execute(Q["flow_bump"], {"now": t})
                control = _rows.control(C, row) if row is not None else None
                entry = _rules.control_clear_audit(
                    scope, control, len(released), now, actor, reason
                )
                _audit_insert(conn, entry, entry.detail)
                return control, released

        result = await self._run(clear)
        self._wake.set()
        return result

    async def control_expire(self, now: datetime, actor: str) -> list[Control]:
        t = now.timestamp()

        def expire(conn: sqlite3.Connection) -> list[Control]:
            with _write(conn):
                rows = conn.execute(Q["control_delete_expired"], {"now": t}).fetchall()
                expired = [_rows.control(C, r) for r in rows]
                if not expired:
                    return []
                conn.execute(Q["flow_bump"], {"now": t})
                for control in expired:
                    conn.execute(Q["message_unpark"], {"control_id": control.id})
                    released = conn.execute(
                        Q["message_release_controlled"], {**control.scope.params(), "now": t}
                    ).fetchall()
                    entry = control_audit(
                        "control.expired",
                        control,
                        now,
                        actor,
                        "expiry reached; mode reverted",
                        released=len(released),
                    )
                    _audit_insert(conn, entry, entry.detail)
                return expired

        expired = await self._run(expire)
        if expired:
            self._wake.set()
        return expired

    async def control_hold_queued(self, now: datetime, limit: int = 1000) -> list[str]:
        kills = [c for c in await self.control_list() if c.mode is Mode.KILLED and c.active(now)]
        if not kills:
            return []

        def hold(conn: sqlite3.Connection) -> list[str]:
            held: list[str] = []
            with _write(conn):
                for control in kills:
                    params = _params.control_hold(C, control, now, limit)
                    rows = conn.execute(Q["message_hold_controlled"], params).fetchall()
                    held.extend(r[0] for r in rows)
            return held

        return await self._run(hold)

    async def control_park_queued(self, now: datetime, limit: int = 10_000) -> int:
        pauses = [c for c in await self.control_list() if c.mode is Mode.PAUSED and c.active(now)]
        if not pauses:
            return 0

        def park(conn: sqlite3.Connection) -> int:
            parked = 0
            with _write(conn):
                for control in pauses:
                    lock = {"id": control.id, "now": now.timestamp()}
                    if conn.execute(Q["control_lock_pause"], lock).fetchone() is None:
                        continue
                    params = {**control.scope.params(), "control_id": control.id, "limit": limit}
                    parked += conn.execute(Q["message_park"], params).rowcount
            return parked

        return await self._run(park)

    # -- audit -------------------------------------------------------------------

    async def audit_append(self, entry: AuditEntry) -> AuditEntry:
        def append(conn: sqlite3.Connection) -> AuditEntry:
            with _write(conn):
                return _audit_insert(conn, entry, entry.detail)

        return await self._run(append)

    async def audit_append_changed(
        self, entry: AuditEntry, initial: Mapping[str, Any] | None = None
    ) -> AuditEntry | None:
        params = {"action": entry.action, "target": entry.target}

        def append(conn: sqlite3.Connection) -> AuditEntry | None:
            with _write(conn):
                row = conn.execute(Q["audit_last_of"], params).fetchone()
                last = json.loads(row[0]) if row is not None else initial
                if last is not None and last == stored_detail(entry.detail):
                    return None
                return _audit_insert(conn, entry, entry.detail)

        return await self._run(append)

    # -- connections -------------------------------------------------------------

    async def connection_insert(self, conn: Connection, audit: AuditEntry) -> Connection:
        params = _params.connection_insert(C, conn)

        def insert(db: sqlite3.Connection) -> None:
            with _write(db):
                if db.execute(Q["connection_insert"], params).rowcount != 1:
                    raise ValidationError(
                        "connection",
                        f"tenant {conn.tenant!r} already has a {conn.provider} connection; "
                        "use: sluice connections rotate",
                    )
                # Messages held for want of this connection can go now.
                released = db.execute(
                    Q["message_release_held"],
                    _params.release_held(C, conn.tenant, conn.provider, conn.created_at),
                ).fetchall()
                _audit_insert(db, audit, {**audit.detail, "released": len(released)})

        await self._run(insert)
        self._wake.set()
        return await self.connection_get(conn.tenant, conn.provider)

    async def connection_find(self, pairs: Sequence[tuple[str, str]]) -> list[Connection]:
        if not pairs:
            return []
        rows = await self._fetch("connection_select_pairs", {"pairs": json.dumps(list(pairs))})
        return [_rows.connection(C, r) for r in rows]

    async def connection_set_state(
        self,
        tenant: str,
        provider: str,
        state: ConnectionState,
        reason: str,
        missing_scopes: Sequence[str],
        now: datetime,
        actor: str,
        expected_version: int | None = None,
    ) -> tuple[bool, list[str]]:
        params = _params.connection_set_state(
            C, tenant, provider, state, reason, missing_scopes, now, expected_version
        )
        hold = _params.hold_queued(C, tenant, provider, now, f"{state.value}: {reason}")

        def change(db: sqlite3.Connection) -> tuple[bool, list[str]]:
            with _write(db):
                changed = db.execute(Q["connection_set_state"], params).rowcount == 1
                held: list[str] = []
                if _rules.holds_queued(state, changed, expected_version):
                    held = [r[0] for r in db.execute(Q["message_hold_queued"], hold).fetchall()]
                if changed:
                    entry = _rules.connection_state_audit(
                        tenant, provider, state, reason, missing_scopes, len(held), now, actor
                    )
                    _audit_insert(db, entry, entry.detail)
                return changed, held

        return await self._run(change)

    async def connection_rotate(
        self,
        tenant: str,
        provider: str,
        *,
        ciphertext: bytes | None,
        key_id: str | None,
        scopes: Sequence[str] | None,
        expires_at: datetime | None,
        now: datetime,
        audit: AuditEntry,
    ) -> tuple[Connection, list[str]]:
        params = _params.connection_rotate(
            C, tenant, provider, ciphertext=ciphertext, key_id=key_id, scopes=scopes,
            expires_at=expires_at, now=now, reason=audit.reason,
        )  # fmt: skip
        release = _params.release_held(C, tenant, provider, now)

        def rotate(db: sqlite3.Connection) -> list[str]:
            with _write(db):
                if db.execute(Q["connection_rotate"], params).rowcount != 1:
                    raise NotFound(f"tenant {tenant!r} has no {provider} connection")
                # Oldest first, as the claim order will take them.
                rows = db.execute(Q["message_release_held"], release).fetchall()
                released = [mid for mid, _ in sorted(rows, key=lambda r: r[1])]
                _audit_insert(db, audit, {**audit.detail, "released": len(released)})
                return released

        released = await self._run(rotate)
        self._wake.set()
        return await self.connection_get(tenant, provider), released

    async def connection_store_secret(
        self,
        connection_id: str,
        ciphertext: bytes,
        key_id: str,
        expires_at: datetime | None,
        now: datetime,
        expected_version: int,
    ) -> bool:
        params = _params.connection_store_secret(
            C, connection_id, ciphertext, key_id, expires_at, now, expected_version
        )

        def store(db: sqlite3.Connection) -> bool:
            with _write(db):
                return bool(db.execute(Q["connection_store_secret"], params).rowcount == 1)

        return await self._run(store)

    async def connection_refresh(
        self,
        tenant: str,
        provider: str,
        refresh: RefreshCallback,
        now: datetime,
        *,
        actor: str,
    ) -> Connection:
        """Refresh one connection at a time in this process; write with compare-and-swap.

        The trade-off: SQLite's only cross-process lock is the file's write lock, and
        holding it across the token endpoint call would stop every claim and every
        outcome write of every process for that long. So the lock here is an
        ``asyncio.Lock`` per connection (single-flight inside the process), and the
        write is guarded by ``credential_version``: when two processes on one file
        refresh at the same moment, both call the token endpoint, the first write wins
        and the second is dropped (its caller gets the winner's credentials). With a
        token endpoint that rotates refresh tokens and revokes a reused one, the loser's
        call can invalidate the winner's refresh token; run one worker process per
        SQLite file, or PostgreSQL, where the row lock makes this single-flight.
        """
        lock = self._refresh_locks.setdefault((tenant, provider), asyncio.Lock())
        async with lock:
            current = await self.connection_get(tenant, provider)
            outcome = await refresh(current)
            if outcome is not None:
                await self._run(lambda db: _refresh_write(db, current, outcome, now, actor))
            return await self.connection_get(tenant, provider)

    async def connection_record_check(
        self,
        connection_id: str,
        ok: bool,
        error: str | None,
        expires_at: datetime | None,
        now: datetime,
    ) -> None:
        params = _params.connection_record_check(C, connection_id, ok, error, expires_at, now)

        def record(db: sqlite3.Connection) -> None:
            with _write(db):
                db.execute(Q["connection_record_check"], params)

        await self._run(record)

    # -- breakers ----------------------------------------------------------------

    async def breaker_report(
        self,
        counts: Mapping[tuple[str, int], tuple[int, int]],
        probes_ok: Mapping[str, int],
        now: datetime,
    ) -> None:
        rows = [
            {"key": k, "bucket": b, "ok": ok, "failed": failed}
            for (k, b), (ok, failed) in sorted(counts.items())
        ]
        probes = [
            {"key": k, "n": n, "now": now.timestamp()}
            for k, n in sorted(probes_ok.items())
            if n > 0
        ]
        if not rows and not probes:
            return

        def report(conn: sqlite3.Connection) -> None:
            with _write(conn):
                conn.executemany(Q["breaker_count"], rows)
                conn.executemany(Q["breaker_probe_ok"], probes)

        await self._run(report)

    async def breaker_window(
        self, keys: Sequence[str] | None, since_bucket: int
    ) -> dict[str, tuple[int, int]]:
        if keys is not None and not keys:
            return {}
        rows = await self._fetch(
            "breaker_window",
            {
                "keys": None if keys is None else json.dumps(list(keys)),
                "since_bucket": since_bucket,
            },
        )
        return {key: (int(ok), int(failed)) for key, ok, failed in rows}

    async def breaker_transition(
        self,
        key: str,
        provider: str,
        tenant: str,
        expected_state: str | None,
        new_state: str,
        *,
        retry_at: datetime | None,
        reason: str,
        forced: bool,
        now: datetime,
        audit: AuditEntry,
    ) -> bool:
        params = _params.breaker_transition(
            C, key, provider, tenant, expected_state, new_state, retry_at=retry_at,
            reason=reason, forced=forced, now=now,
        )  # fmt: skip

        def move(db: sqlite3.Connection) -> bool:
            with _write(db):  # the write lock makes the check and the change one step
                moved = db.execute(Q["breaker_move"], params).rowcount == 1
                if not moved and expected_state in (None, "closed"):
                    moved = db.execute(Q["breaker_create"], params).rowcount == 1
                if not moved:
                    return False
                if new_state == "closed":
                    db.execute(Q["breaker_clear_window"], {"key": key})
                _audit_insert(db, audit, audit.detail)
                return True

        if not await self._run(move):
            return False
        self._flow_signal(
            FlowSignal(
                breaker=BreakerInfo(
                    key, provider, tenant, new_state, now, retry_at, forced, reason, 0, now
                )
            )
        )
        return True

    async def breaker_purge(self, before_bucket: int) -> int:
        def purge(db: sqlite3.Connection) -> int:
            with _write(db):
                return int(
                    db.execute(Q["breaker_purge"], {"before_bucket": before_bucket}).rowcount
                )

        return await self._run(purge)

    # -- workers -----------------------------------------------------------------

    async def worker_heartbeat(
        self, worker_id: str, host: str, pid: int, in_flight: int, sent_total: int, now: datetime
    ) -> None:
        params = _params.worker_upsert(C, worker_id, host, pid, in_flight, sent_total, now)

        def beat(conn: sqlite3.Connection) -> None:
            with _write(conn):
                conn.execute(Q["worker_upsert"], params)

        await self._run(beat)

    async def worker_stop(self, worker_id: str, now: datetime) -> None:
        def stop(conn: sqlite3.Connection) -> None:
            with _write(conn):
                conn.execute(Q["worker_stop"], {"id": worker_id, "now": now.timestamp()})

        await self._run(stop)

    async def worker_ack(self, worker_id: str, version: int, now: datetime) -> None:
        def ack(conn: sqlite3.Connection) -> None:
            with _write(conn):
                conn.execute(
                    Q["worker_ack"], {"id": worker_id, "version": version, "now": now.timestamp()}
                )

        await self._run(ack)

    # -- the HTTP API ------------------------------------------------------------

    async def api_key_insert(self, key: ApiKey, audit: AuditEntry) -> None:
        params = dataclasses.asdict(key)
        params.pop("revoked_at")
        params["created_at"] = key.created_at.timestamp()

        def insert(db: sqlite3.Connection) -> None:
            with _write(db):
                if db.execute(Q["api_key_insert"], params).rowcount != 1:
                    raise ValidationError("name", f"an API key named {key.name!r} already exists")
                _audit_insert(db, audit, audit.detail)

        await self._run(insert)

    async def api_key_revoke(self, key_id: str, now: datetime, audit: AuditEntry) -> ApiKey:
        def revoke(db: sqlite3.Connection) -> Any:
            with _write(db):
                cur = db.execute(Q["api_key_revoke"], {"id": key_id, "now": now.timestamp()})
                if cur.rowcount == 1:
                    _audit_insert(db, audit, audit.detail)
                return db.execute(Q["api_key_get"], {"id": key_id}).fetchone()

        row = await self._run(revoke)
        if row is None:
            raise NotFound(f"no API key {key_id!r}")
        return _rows.api_key(C, row)

    async def idem_begin(
        self,
        scope: str,
        key: str,
        fingerprint: str,
        now: datetime,
        lock_seconds: float,
        window_seconds: float,
    ) -> IdemClaim:
        t = now.timestamp()
        forget_before = (now - timedelta(seconds=window_seconds)).timestamp()
        params = {
            "scope": scope,
            "key": key,
            "fingerprint": fingerprint,
            "now": t,
            "locked_until": (now + timedelta(seconds=lock_seconds)).timestamp(),
        }

        def begin(db: sqlite3.Connection) -> IdemClaim:
            with _write(db):  # the write lock makes the read and the take one step
                row = db.execute(Q["idem_select"], {"scope": scope, "key": key}).fetchone()
                if row is not None:
                    state, stored, status_code, response, created_at, locked_until = row
                    forgotten = created_at < forget_before
                    abandoned = state == "running" and locked_until < t and stored == fingerprint
                    if not (forgotten or abandoned):
                        return IdemClaim.of_row((state, stored, status_code, response), fingerprint)
                db.execute(Q["idem_take"], params)
                return IdemClaim("new")

        return await self._run(begin)

    async def idem_finish(
        self, scope: str, key: str, status_code: int, response: str, now: datetime
    ) -> None:
        params = {"scope": scope, "key": key, "status_code": status_code, "response": response}

        def finish(db: sqlite3.Connection) -> None:
            with _write(db):
                db.execute(Q["idem_finish"], params)

        await self._run(finish)

    async def idem_enqueue(
        self,
        scope: str,
        key: str,
        messages: Sequence[NewMessage],
        respond: IdemResponder,
    ) -> tuple[int, str] | None:
        rows = _enqueue.prepare(messages, addressing_in_effect(self._settings))
        stamp = datetime.now(UTC)

        def enqueue(db: sqlite3.Connection) -> tuple[int, str]:
            with _write(db):
                ids = sqlite_enqueue(db, rows, stamp)
                stored = [
                    _rows.full_message(C, db.execute(Q["message_get"], {"id": i}).fetchone())
                    for i in ids
                ]
                status, response = respond(stored)
                params = {"scope": scope, "key": key, "status_code": status, "response": response}
                if db.execute(Q["idem_finish"], params).rowcount != 1:
                    raise _ClaimLost
                return status, response

        try:
            result = await self._run(enqueue)
        except _ClaimLost:
            return None
        self._wake.set()
        return result

    async def idem_release(self, scope: str, key: str) -> None:
        def release(db: sqlite3.Connection) -> None:
            with _write(db):
                db.execute(Q["idem_release"], {"scope": scope, "key": key})

        await self._run(release)

    async def idem_purge(self, now: datetime, window_seconds: float) -> int:
        before = (now - timedelta(seconds=window_seconds)).timestamp()

        def purge(db: sqlite3.Connection) -> int:
            with _write(db):
                return int(db.execute(Q["idem_purge"], {"before": before}).rowcount)

        return await self._run(purge)

    # -- ingress -----------------------------------------------------------------

    async def inbox_put(self, items: Sequence[InboxItem], now: datetime) -> list[bool]:
        if not items:
            return []
        t = now.timestamp()
        rows = [
            {
                "provider": i.provider,
                "event_id": i.event_id,
                "kind": i.kind,
                "status": i.status,
                "message_id": i.message_id,
                "provider_message_id": i.provider_message_id,
                "occurred_at": _ts(i.occurred_at),
                "error_code": i.error_code,
                "detail": i.detail,
                "address": i.address,
                "data": _json_text(i.data, "data"),
                "now": t,
                "source_tenant": i.source_tenant or "",
            }
            for i in items
        ]

        def put(db: sqlite3.Connection) -> list[bool]:
            with _write(db):  # a repeat inside the batch finds the row its first one wrote
                return [db.execute(Q["inbox_put"], r).rowcount == 1 for r in rows]

        return await self._run(put)

    async def inbox_claim(
        self, worker_id: str, limit: int, lease_seconds: float, now: datetime
    ) -> list[InboxItem]:
        params = {
            "now": now.timestamp(),
            "limit": limit,
            "lease_until": (now + timedelta(seconds=lease_seconds)).timestamp(),
        }

        def claim(db: sqlite3.Connection) -> list[Any]:
            with _write(db):
                return db.execute(Q["inbox_claim"], params).fetchall()

        return sorted((_rows.inbox_item(C, r) for r in await self._run(claim)), key=lambda i: i.id)

    async def inbox_finish(
        self,
        item_id: int,
        attempt: int,
        result: str,
        now: datetime,
        receipt: Receipt | None = None,
    ) -> str:
        t = now.timestamp()
        claim = {"id": item_id, "attempt": attempt}

        def finish(db: sqlite3.Connection) -> str:
            outcome = result
            with _write(db):
                if db.execute(Q["inbox_hold"], claim).fetchone() is None:
                    return "lost"
                if receipt is not None:
                    mid = _params.uuid_or_none(receipt.message_id)
                    row = db.execute(Q["receipt_target"], {"id": mid}).fetchone() if mid else None
                    current = None if row is None else Status(row[0])
                    outcome, target = _rules.receipt_step(current, receipt.status)
                    if outcome == "not_ready":
                        return outcome
                    if mid is not None and outcome != "unmatched":
                        params = _params.receipt_insert(C, receipt, mid, item_id)
                        db.execute(Q["receipt_insert"], params)
                    if mid is not None and target is not None:
                        params = _params.receipt_advance(C, mid, receipt, target, now)
                        db.execute(Q["receipt_advance"], params)
                db.execute(Q["inbox_done"], {**claim, "result": outcome, "now": t})
            return outcome

        return await self._run(finish)

    async def inbox_retry(
        self, item_id: int, attempt: int, run_at: datetime, error: str, now: datetime
    ) -> bool:
        params = {"id": item_id, "attempt": attempt, "run_at": run_at.timestamp(),
                  "error": error[:2000]}  # fmt: skip

        def retry(db: sqlite3.Connection) -> bool:
            with _write(db):
                return db.execute(Q["inbox_retry"], params).rowcount > 0

        return await self._run(retry)

    async def inbox_dead(self, item_id: int, attempt: int, error: str, now: datetime) -> bool:
        params = {"id": item_id, "attempt": attempt, "error": error[:2000], "now": now.timestamp()}

        def dead(db: sqlite3.Connection) -> bool:
            with _write(db):
                return db.execute(Q["inbox_dead"], params).rowcount > 0

        return await self._run(dead)

    async def inbox_reject(
        self, item_id: int, attempt: int, reason: str, now: datetime, audit: AuditEntry
    ) -> bool:
        params = {"id": item_id, "attempt": attempt, "error": reason[:2000], "now": now.timestamp()}

        def reject(db: sqlite3.Connection) -> bool:
            with _write(db):
                if db.execute(Q["inbox_reject"], params).rowcount == 0:
                    return False
                _audit_insert(db, audit, audit.detail)
                return True

        return await self._run(reject)

    async def inbox_requeue(
        self, ids: Sequence[int] | None, now: datetime, audit: AuditEntry
    ) -> list[int]:
        params = {
            "now": now.timestamp(),
            "all": 1 if ids is None else 0,
            "ids": json.dumps(list(ids or [])),
        }

        def requeue(db: sqlite3.Connection) -> list[int]:
            with _write(db):
                moved = sorted(r[0] for r in db.execute(Q["inbox_requeue"], params).fetchall())
                _audit_insert(db, audit, _rules.moved_detail(audit, moved))
                return moved

        return await self._run(requeue)

    async def inbox_purge(self, before: datetime) -> int:
        def purge(db: sqlite3.Connection) -> int:
            with _write(db):
                return int(db.execute(Q["inbox_purge"], {"before": before.timestamp()}).rowcount)

        return await self._run(purge)

    # -- retention (issue 14) ----------------------------------------------------

    async def message_purge(
        self, rule: PurgeRule, limit: int, export: PurgeExport | None = None
    ) -> dict[str, int]:
        _retention.check_limit(limit)
        steps = _retention.rule_params(C, rule)

        def purge(db: sqlite3.Connection) -> dict[str, int]:
            with _write(db):  # the write lock: nothing changes these rows until the commit
                ids: list[str] = []
                for params in steps:
                    if len(ids) >= limit:
                        break
                    pick = {**params, "limit": limit - len(ids)}
                    ids += [r[0] for r in db.execute(Q["purge_pick"], pick).fetchall()]
                if not ids:
                    return {}
                p = {"ids": json.dumps(ids)}
                if export is not None:
                    reads = ("purge_messages", "purge_attempts", "purge_receipts")
                    export(_retention.purged(C, *[db.execute(Q[q], p).fetchall() for q in reads]))
                db.execute(Q["purge_delete_receipts"], p)
                db.execute(Q["purge_delete_attempts"], p)
                return _retention.counts(db.execute(Q["purge_delete_messages"], p).fetchall())

        return await self._run(purge)

    # -- wake-ups ----------------------------------------------------------------

    async def wait_for_work(self, timeout: float) -> bool:
        """Wake when any process commits to the file (``PRAGMA data_version``) or on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self._wake.is_set():
                self._wake.clear()
                return True
            if self._changed():
                return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), min(self._poll_interval, remaining))

    def wake(self) -> None:
        """Wake a waiting worker in this process."""
        self._wake.set()

    def _changed(self) -> bool:
        # data_version moves when another connection commits; reading it touches
        # only the shared-memory index, so polling it often is cheap.
        if self._watch is None:
            return False
        try:
            (version,) = self._watch.execute("PRAGMA data_version").fetchone()
        except sqlite3.Error:
            return False
        changed = self._last_version is not None and version != self._last_version
        self._last_version = version
        return changed

    # -- recipient hygiene (issue 14) --------------------------------------------

    async def suppression_put(self, s: Suppression, audit: AuditEntry) -> bool:
        params = _hygiene.suppression_params(C, s)

        def put(db: sqlite3.Connection) -> bool:
            with _write(db):
                if db.execute(Q["suppression_insert"], params).rowcount != 1:
                    return False
                _audit_insert(db, audit, audit.detail)
                return True

        return await self._run(put)

    async def suppression_delete(
        self, tenant: str, channel: str, recipient: str, audit: AuditEntry
    ) -> Suppression | None:
        key = {"tenant": tenant, "channel": channel, "recipient": recipient}

        def delete(db: sqlite3.Connection) -> Any:
            with _write(db):
                row = db.execute(Q["suppression_delete"], key).fetchone()
                if row is not None:
                    _audit_insert(db, audit, audit.detail)
                return row

        row = await self._run(delete)
        return None if row is None else _hygiene.suppression(C, row)

    async def suppression_list(
        self,
        tenant: str | None,
        channel: str | None,
        recipient: str | None,
        after: tuple[str, str, str] | None,
        limit: int,
    ) -> list[Suppression]:
        params = _hygiene.list_params(tenant, channel, recipient, after, limit)
        return [_hygiene.suppression(C, r) for r in await self._fetch("suppression_list", params)]

    async def suppression_find(
        self, keys: Sequence[tuple[str, str, str]]
    ) -> set[tuple[str, str, str]]:
        if not keys:
            return set()
        rows = await self._fetch("suppression_find", {"keys": json.dumps(list(keys))})
        return {(t, c, r) for t, c, r in rows}

    async def suppression_counts(self) -> dict[str, int]:
        return {c: n for c, n in await self._fetch("suppression_counts", {})}

    async def contact_seen(self, tenant: str, channel: str, recipient: str, at: datetime) -> None:
        params = {"tenant": tenant, "channel": channel, "recipient": recipient, "at": _ts(at)}

        def seen(db: sqlite3.Connection) -> None:
            with _write(db):
                db.execute(Q["contact_seen"], params)

        await self._run(seen)

    async def contact_find(
        self, keys: Sequence[tuple[str, str, str]]
    ) -> dict[tuple[str, str, str], datetime]:
        if not keys:
            return {}
        rows = await self._fetch("contact_find", {"keys": json.dumps(list(keys))})
        return _hygiene.contacts(C, rows)


class _ClaimLost(Exception):
    """Rolls ``idem_enqueue``'s transaction back: the key's claim is not running any more."""


def _json_text(value: Any, field: str) -> str:
    """``value`` as JSON text; NaN and infinity are refused (SQLite would store them as
    text that no JSON reader accepts)."""
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False)
    except ValueError as exc:
        raise ValidationError(field, f"is not valid JSON: {exc}") from None


def _refresh_write(
    db: sqlite3.Connection,
    current: Connection,
    outcome: RefreshOutcome,
    now: datetime,
    actor: str,
) -> None:
    """Write what a refresh produced, with its audit row, in one write transaction."""
    with _write(db):
        if outcome.state is None:
            cur = db.execute(
                Q["connection_refresh_store"], _params.refresh_store(C, current, outcome, now)
            )
            if cur.rowcount == 1:
                entry = outcome.audit_entry(current, now, actor)
                _audit_insert(db, entry, entry.detail)
            return
        cur = db.execute(
            Q["connection_refresh_fail"], _params.refresh_fail(C, current, outcome, now)
        )
        if cur.rowcount != 1:
            return
        why = f"{outcome.state.value}: {outcome.reason}"
        hold = _params.hold_queued(C, current.tenant, current.provider, now, why)
        held = [r[0] for r in db.execute(Q["message_hold_queued"], hold).fetchall()]
        entry = outcome.audit_entry(current, now, actor, held=len(held))
        _audit_insert(db, entry, entry.detail)


def _split_sql(script: str) -> list[str]:
    """Statements of a migration; ``sqlite3.complete_statement`` keeps triggers whole."""
    out, buf = [], ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                out.append(buf.strip())
            buf = ""
    if buf.strip() and not all(
        ln.strip().startswith("--") or not ln.strip() for ln in buf.splitlines()
    ):
        raise MigrationError(f"incomplete SQL statement at end of migration: {buf[:80]!r}")
    return out


def _audit_insert(
    conn: sqlite3.Connection, entry: AuditEntry, detail: dict[str, Any]
) -> AuditEntry:
    row = conn.execute(Q["audit_last_hash"]).fetchone()
    sealed = seal(entry, row[0] if row else None, detail)
    cur = conn.execute(Q["audit_insert"], insert_params(sealed, sealed.at.timestamp()))
    return dataclasses.replace(sealed, id=cur.lastrowid)


class _FileLead:
    """A file lock held open (``SqliteStore.try_lead``)."""

    def __init__(self, file: Any) -> None:
        self._file = file

    async def release(self) -> None:
        self._file.close()
