"""The PostgreSQL store: psycopg 3, async, pooled; claims with ``FOR UPDATE SKIP LOCKED``."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import re
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import structlog
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from sluice.addressing import addressing_in_effect
from sluice.config import Settings
from sluice.connections import Connection, ConnectionState
from sluice.errors import (
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

__all__ = ["PostgresStore", "pg_enqueue_plan"]

log = structlog.get_logger("sluice.store")
Q = load_queries("postgres")
LISTEN_CHANNEL = "sluice_ready"
#: Throttles and breaker moves, for every worker to apply at once (``flow_listen``).
FLOW_CHANNEL = "sluice_flow"
#: Seconds a pooled connection may have been idle and still be handed out unchecked.
CHECK_IDLE_AFTER = 5.0

#: The statements whose plan depends on how big ``sluice_messages`` is. A prepared
#: statement keeps the generic plan PostgreSQL made for it until something invalidates
#: it (an ANALYZE, a VACUUM): made while the table was nearly empty, the claim's plan
#: found its rows by reading the whole table (cheaper than the primary key at a few
#: pages), and kept doing so as the table grew, until autovacuum came round. A worker
#: started on a new database then slowed by about 1 ms a claim per 5,000 messages it
#: sent (the latency part of the bench: p50 2 -> 6 ms in 40 s; force_custom_plan, or
#: a worker restarted, removed it). So these are planned again, under a new text,
#: whenever the table has doubled since they were last planned (see ``_note_pages``).
SIZED = ("message_claim", "message_complete_many", "message_renew")
#: Below this many pages (8 kB each) growth does not count.
SIZED_FLOOR_PAGES = 8
#: How often (seconds) a claim also asks how big the table is.
SIZE_EVERY = 1.0


def _as_is(value: Any) -> Any:
    return value


#: psycopg hands ``timestamptz`` back as aware datetimes and ``jsonb`` decoded.
C = Codec(read_time=_as_is, write_time=_as_is, read_json=_as_is, no_limit=None)


def pg_enqueue_plan(rows: Sequence[_enqueue.PreparedRow], now: datetime | None) -> dict[str, Any]:
    """Parameters of ``message_insert_many`` for a prepared batch (``now`` None: the
    server's time, as the transaction started)."""
    return {
        "now": now,
        "ids": [r.message.id for r in rows],
        "tenants": [r.message.tenant for r in rows],
        "channels": [r.message.channel for r in rows],
        "providers": [r.message.provider for r in rows],
        "actions": [r.message.action for r in rows],
        "recipients": [r.message.recipient for r in rows],
        "payloads": [r.payload_json for r in rows],
        "priorities": [r.message.priority for r in rows],
        "run_ats": [r.message.run_at for r in rows],
        "max_attempts": [r.message.max_attempts for r in rows],
        "idempotency_keys": [r.message.idempotency_key for r in rows],
        "content_hashes": [r.content_hash for r in rows],
        "correlation_ids": [r.message.correlation_id for r in rows],
        "scopes": [r.scopes_json for r in rows],
        "expires_ats": [r.message.expires_at for r in rows],
        "ttls": [r.ttl for r in rows],
        "verify_withins": [r.message.verify_within for r in rows],  # issue 15
    }


def pg_find_params(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Parameters of ``message_find_by_keys``."""
    return {"tenants": [t for t, _ in pairs], "keys": [k for _, k in pairs]}


class PostgresStore(SqlDriver):
    """Store on PostgreSQL. Safe for many processes on many hosts."""

    dialect = "postgres"
    codec = C

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 8,
        listen: bool = True,
        timeout: float = 5.0,
        settings: Settings | None = None,
    ) -> None:
        self.url = url.replace("postgres://", "postgresql://", 1)
        #: Seconds a caller waits for a connection (from the pool, or a new one).
        self.timeout = timeout
        # libpq counts whole seconds and treats less than 2 as 2.
        self._connect_timeout = max(2, math.ceil(timeout))
        #: What enqueue checks destinations against (loopback targets); None: the
        #: configuration in effect.
        self._settings = settings
        #: Where the next claim's scan of tenants starts (see ``store/_claims.py``).
        self._claim_after = ""
        #: The texts of the ``SIZED`` statements, the size (pages) they were planned for,
        #: and when a claim last asked for the size (monotonic).
        self._sized = {name: Q[name] for name in SIZED}
        self._planned_pages = 0
        self._sized_at = -SIZE_EVERY
        self._pool = AsyncConnectionPool(
            self.url,
            min_size=1,
            max_size=max(2, pool_size),
            kwargs={
                "autocommit": True,
                # No JIT: it compiles for tens of milliseconds to save microseconds on
                # the short statements of a queue (the claim's estimate crosses the
                # default jit_above_cost, and a claim then took 50 ms instead of 4).
                "options": "-c timezone=UTC -c jit=off",
                "connect_timeout": self._connect_timeout,
            },
            open=False,
            timeout=timeout,
            # A connection idle for a while is checked before it is handed out, so that
            # after a database restart a dead one is replaced, not given to a claim.
            check=self._check_idle,
        )
        #: When each pooled connection was last given back (see ``_check_idle``).
        self._last_used: weakref.WeakKeyDictionary[psycopg.AsyncConnection[TupleRow], float] = (
            weakref.WeakKeyDictionary()
        )
        self._listen = listen
        self._flow_listeners: list[FlowListener] = []
        self._wake = asyncio.Event()
        self._listener: asyncio.Task[None] | None = None
        self._opened = False
        #: Why the server could not be reached the last time we asked; None while it can.
        self._down: str | None = None

    # -- lifecycle ---------------------------------------------------------------

    async def open(self) -> PostgresStore:
        """Open the pool (and the LISTEN connection); fail fast if the server is down."""
        if self._opened:
            return self
        # One direct attempt first: its error says what is wrong (no such host, no such
        # database, nothing listening), where the pool would retry in the background,
        # log a warning per try, and end in a bare timeout.
        reason = await self._unreachable()
        if reason is not None:
            raise StoreUnavailable(reason)
        try:
            await self._pool.open(wait=True, timeout=self.timeout)
        except Exception as exc:  # the pool reports every failure as PoolTimeout
            raise await self._unavailable(exc) from exc
        self._opened = True
        if self._listen:
            self._listener = asyncio.create_task(self._listen_loop(), name="sluice-listen")
        return self

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
            self._listener = None
        await self._pool.close()
        self._opened = False

    async def __aenter__(self) -> PostgresStore:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @contextlib.asynccontextmanager
    async def _conn(self) -> AsyncIterator[psycopg.AsyncConnection[TupleRow]]:
        pinned = self._pinned()  # inside this task's snapshot: its connection, as it is
        if pinned is None:
            if not self._opened:
                await self.open()
            if self._down is not None:
                # The server was gone a moment ago. Asking it directly fails at once while
                # it still is (a refused connect takes no time), where queueing for the
                # pool would cost every caller the whole timeout.
                reason = await self._unreachable()
                if reason is not None:
                    raise StoreUnavailable(reason)
        try:
            if pinned is not None:
                yield pinned
                return
            # getconn/putconn rather than the pool's context manager: that one enters
            # the connection's own (a commit check under its lock), and the time given
            # back is noted here rather than by a reset callback, which the pool runs
            # as a task of its own for every return.
            conn = await self._pool.getconn()
            try:
                yield conn
            finally:
                self._last_used[conn] = time.monotonic()
                # Left in a transaction, the pool rolls it back here, in this task; if
                # that is cancelled too, the pool closes and replaces the connection
                # (tests/integration/test_pg_pool_reuse.py): no slot is lost either way.
                await self._pool.putconn(conn)
        except psycopg.Error as exc:
            raise await self._store_error(exc) from exc

    async def _store_error(self, exc: psycopg.Error) -> SluiceError:
        """What a caller is told of a psycopg error."""
        if isinstance(exc, psycopg.OperationalError):
            if isinstance(exc, PoolTimeout) or _connection_lost(exc):
                if not isinstance(exc, PoolTimeout):
                    # The server went away: the pool's other connections went with it.
                    with contextlib.suppress(Exception):
                        await self._pool.check()
                return await self._unavailable(exc)
            return StoreUnavailable(f"PostgreSQL connection failed: {exc}")
        if isinstance(exc, psycopg.errors.UndefinedTable):
            return MigrationError(
                f"the Sluice schema is missing ({exc.diag.message_primary}); run: sluice migrate"
            )
        if isinstance(exc, psycopg.errors.ReadOnlySqlTransaction):
            return StoreError(f"a store snapshot only reads: {exc.diag.message_primary}")
        return StoreError(f"PostgreSQL error: {exc}")

    async def _check_idle(self, conn: psycopg.AsyncConnection[TupleRow]) -> None:
        """The pool's check on checkout: a round trip, unless the connection was given
        back within ``CHECK_IDLE_AFTER`` (a round trip per statement was a tenth of a
        busy worker's time). One that died meanwhile fails its statement, the caller
        retries, and ``_conn`` then has the pool check all the others at once."""
        if time.monotonic() - self._last_used.get(conn, -CHECK_IDLE_AFTER) >= CHECK_IDLE_AFTER:
            await AsyncConnectionPool.check_connection(conn)

    async def _unreachable(self) -> str | None:
        """Why a new connection to the server fails, or None when it succeeds.

        Also what the store remembers: while it is not None, ``_conn`` asks again
        instead of waiting on the pool.
        """
        try:
            conn = await psycopg.AsyncConnection.connect(
                self.url, autocommit=True, connect_timeout=self._connect_timeout
            )
        except psycopg.OperationalError as exc:
            self._down = _explain_connect_error(self.url, exc, self._connect_timeout)
        else:
            await conn.close()
            self._down = None
        return self._down

    async def _unavailable(self, exc: Exception) -> StoreUnavailable:
        """The error for a caller that got no working connection: why the server cannot
        be reached, or, when it can, that the pool had none free in time."""
        reason = await self._unreachable()
        if reason is not None:
            return StoreUnavailable(reason)
        if isinstance(exc, PoolTimeout):
            return StoreUnavailable(
                f"no PostgreSQL connection came free within {self.timeout:g} s "
                f"(SLUICE_DB_TIMEOUT); the database is slow or SLUICE_POOL_SIZE too small"
            )
        return StoreUnavailable(f"PostgreSQL connection failed: {exc}")

    async def _fetch(self, name: str, params: dict[str, Any]) -> list[TupleRow]:
        async with self._conn() as conn:
            cur = await conn.execute(self._sized.get(name) or Q[name], params)
            # nfields, not description: that builds a Column per column on every call.
            result = cur.pgresult
            return await cur.fetchall() if result is not None and result.nfields else []

    # -- schema ------------------------------------------------------------------

    async def _applied(self, conn: psycopg.AsyncConnection[TupleRow]) -> set[int]:
        await conn.execute(Q["schema_version_table"])
        cur = await conn.execute(Q["schema_versions"])
        return {v for (v,) in await cur.fetchall()}

    async def migrate(self) -> list[int]:
        applied_now: list[int] = []
        async with self._conn() as conn, conn.transaction():
            # One migrator at a time, even with many hosts starting together.
            await conn.execute(Q["migrate_lock"])
            done = await self._applied(conn)
            for version, name, sql in pending_migrations("postgres", done):
                await conn.execute(sql.encode())
                await conn.execute(Q["schema_version_record"], {"version": version, "name": name})
                applied_now.append(version)
        return applied_now

    async def schema_pending(self) -> list[int]:
        async with self._conn() as conn:
            done = await self._applied(conn)
        return [v for v, _, _ in migrations("postgres") if v not in done]

    # -- outbox ------------------------------------------------------------------

    async def enqueue_many(
        self, messages: Sequence[NewMessage], now: datetime | None = None
    ) -> list[str]:
        rows = _enqueue.prepare(messages, addressing_in_effect(self._settings))
        # No ``now``: created_at and the default run_at are the server's time.
        async with self._conn() as conn, conn.transaction():
            ids = await pg_enqueue_async(conn, rows, now)
        return ids

    # -- dispatch ----------------------------------------------------------------

    async def message_claim(
        self, worker_id: str, limit: int, lease_seconds: float, now: datetime
    ) -> list[Message]:
        params = _params.message_claim(C, worker_id, limit, lease_seconds, now, self._claim_after)
        async with self._conn() as conn:
            rows, _ = await self._claim(conn, params, with_connections=False)
        claimed = [_rows.message(C, r) for r in rows]
        if self._claim_after and len(claimed) < limit:  # wrap round to the first tenants
            params.update(after="", limit=limit - len(claimed))
            claimed += [_rows.message(C, r) for r in await self._fetch("message_claim", params)]
        self._claim_after = next_claim_start(claimed, limit)
        return claimed

    async def _claim(
        self,
        conn: psycopg.AsyncConnection[TupleRow],
        params: dict[str, Any],
        *,
        with_connections: bool,
    ) -> tuple[list[TupleRow], list[TupleRow]]:
        """The claim's rows, and with ``with_connections`` the connections of the pairs
        it leased, in one round trip; now and then the table's size with them."""
        sizing = self._size_due()
        if not (sizing or with_connections):
            cur = await conn.execute(self._sized["message_claim"], params)
            return await cur.fetchall(), []
        async with conn.pipeline():
            claim = await conn.execute(self._sized["message_claim"], params)
            found = (
                await conn.execute(Q["connection_select_claimed"], params)
                if with_connections
                else None
            )
            size = await conn.execute(Q["message_pages"]) if sizing else None
        rows = await claim.fetchall()
        connections = await found.fetchall() if found is not None else []
        if size is not None:
            self._note_pages(await size.fetchone())
        return rows, connections

    def _size_due(self) -> bool:
        """Should this claim also ask for the table's size (at most every SIZE_EVERY)?"""
        now = time.monotonic()
        if now - self._sized_at < SIZE_EVERY:
            return False
        self._sized_at = now
        return True

    def _note_pages(self, row: TupleRow | None) -> None:
        """The table has ``row[0]`` pages: plan the ``SIZED`` statements again (under a
        new text, which psycopg prepares anew) once it has doubled since they were."""
        pages = int(row[0]) if row is not None else 0
        if pages <= 2 * max(self._planned_pages, SIZED_FLOOR_PAGES // 2):
            return
        self._planned_pages = pages
        for name in SIZED:
            self._sized[name] = f"{Q[name]}\n-- planned for {pages} pages"

    async def message_claim_with_connections(
        self, worker_id: str, limit: int, lease_seconds: float, now: datetime
    ) -> tuple[list[Message], list[Connection]]:
        params = _params.message_claim(C, worker_id, limit, lease_seconds, now, self._claim_after)
        async with self._conn() as conn:
            # One round trip: the lookup reads the rows the claim has just leased.
            rows, found = await self._claim(conn, params, with_connections=True)
        claimed = [_rows.message(C, r) for r in rows]
        connections = [_rows.connection(C, r) for r in found]
        if self._claim_after and len(claimed) < limit:  # wrap round to the first tenants
            params.update(after="", limit=limit - len(claimed))
            claimed += [_rows.message(C, r) for r in await self._fetch("message_claim", params)]
            pairs = sorted({(m.tenant, m.provider) for m in claimed})
            connections = await self.connection_find(pairs)
        self._claim_after = next_claim_start(claimed, limit)
        return claimed, connections

    async def message_complete_many(
        self, worker_id: str, completions: Sequence[Completion], now: datetime
    ) -> set[str]:
        if not completions:
            return set()
        params = {
            "worker_id": worker_id,
            "now": now,
            "batch": json.dumps([_completion_row(c) for c in completions], separators=(",", ":")),
        }
        rows = await self._fetch("message_complete_many", params)
        return {mid for mid, applied in rows if applied}

    async def message_release(
        self, worker_id: str, claims: Sequence[tuple[str, int]], now: datetime
    ) -> list[str]:
        if not claims:
            return []
        rows = await self._fetch(
            "message_release",
            {
                "worker_id": worker_id,
                "now": now,
                "ids": [i for i, _ in claims],
                "claim_seqs": [s for _, s in claims],
            },
        )
        return [r[0] for r in rows]

    async def message_renew(
        self, worker_id: str, claims: Sequence[tuple[str, int]], lease_seconds: float, now: datetime
    ) -> list[str]:
        if not claims:
            return []
        rows = await self._fetch(
            "message_renew",
            {
                "worker_id": worker_id,
                "lease_until": now + timedelta(seconds=lease_seconds),
                "ids": [i for i, _ in claims],
                "claim_seqs": [s for _, s in claims],
            },
        )
        return [r[0] for r in rows]

    async def message_rescue_expired(self, now: datetime, limit: int = 1000) -> RescueResult:
        rows = await self._fetch("message_rescue_expired", {"now": now, "limit": limit})
        return RescueResult(
            requeued=[i for i, s in rows if s == "queued"], dead=[i for i, s in rows if s == "dead"]
        )

    # -- reading -----------------------------------------------------------------

    async def message_get(self, message_id: str) -> Message:
        rows = await self._fetch("message_get", {"id": _params.uuid_text(message_id)})
        if not rows:
            raise NotFound(f"no message with id {message_id!r}")
        return _rows.full_message(C, rows[0])

    async def attempt_list(self, message_id: str) -> list[Attempt]:
        rows = await self._fetch("attempt_list", {"id": _params.uuid_text(message_id)})
        return [_rows.attempt(C, r) for r in rows]

    async def status_report(self, now: datetime) -> StatusReport:
        counts = {s: n for s, n in await self._fetch("status_counts", {})}
        (oldest,) = (await self._fetch("oldest_ready", {"now": now}))[0]
        dead = await self.dlq_groups(MessageFilter())
        workers = await self.worker_list(now - timedelta(minutes=10))
        return StatusReport(
            counts=counts,
            oldest_ready_age_seconds=(now - oldest).total_seconds() if oldest else None,
            dead=dead,
            workers=workers,
        )

    async def observe(self, now: datetime) -> Observation:
        # Every figure as of one moment: read one by one, a message claimed between two
        # reads would count as ready and as sending, a dead letter written back between
        # them in the dead count and not in the dead letters.
        async with self.snapshot():
            rows = {name: await self._fetch(name, {"now": now}) for name in _observe.QUERIES}
        return _observe.build(rows, lambda v: v)

    @contextlib.asynccontextmanager
    async def _read_transaction(self) -> AsyncIterator[psycopg.AsyncConnection[TupleRow]]:
        # Rolled back, not committed, at the end: a server gone after the last read does
        # not fail reads that all succeeded. The SELECT takes the moment now (a
        # transaction's snapshot is taken by its first query), as SQLite's does.
        async with self._conn() as conn, conn.transaction(force_rollback=True):
            await conn.execute(
                "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY; SELECT 1"
            )
            yield conn

    async def try_lead(self, name: str) -> _PgLead | None:
        # A session lock on a connection of its own: it lasts while the connection does,
        # and the server drops it when the process or the connection dies.
        try:
            conn = await psycopg.AsyncConnection.connect(
                self.url, autocommit=True, connect_timeout=self._connect_timeout
            )
        except psycopg.OperationalError as exc:
            raise await self._unavailable(exc) from None
        cur = await conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (f"sluice:{name}",))
        row = await cur.fetchone()
        if row is None or not row[0]:
            await conn.close()
            return None
        return _PgLead(conn)

    async def _script(
        self,
        steps: Sequence[tuple[str, dict[str, Any]]],
        audit: AuditEntry | None = None,
        audit_if: int | None = None,
    ) -> list[list[Any]]:
        out: list[list[Any]] = []
        async with self._conn() as conn, conn.transaction():
            for name, params in steps:
                cur = await conn.execute(Q[name], params)
                out.append(await cur.fetchall() if cur.description else [])
            if audit is not None and (audit_if is None or out[audit_if]):
                await _audit_insert(conn, audit)
        return out

    async def _move(
        self, query: str, ids: Sequence[str], from_status: str, now: datetime, audit: AuditEntry
    ) -> list[str]:
        async with self._conn() as conn, conn.transaction():
            params = {"ids": list(ids), "from_status": from_status, "now": now}
            cur = await conn.execute(Q[query], {**params, "actor": audit.actor})
            moved = [r[0] for r in await cur.fetchall()]
            await _audit_insert(conn, audit, _rules.moved_detail(audit, moved))
        return moved

    # -- limits ------------------------------------------------------------------

    async def flow_state_apply(self, keys: Sequence[str], fn: FlowStateFn) -> Any:
        from sluice.flow.limits import Cell

        wanted = sorted(set(keys))
        async with self._conn() as conn, conn.transaction():
            await conn.execute(Q["flow_state_prepare"], {"keys": wanted})
            cur = await conn.execute(Q["flow_state_lock"], {"keys": wanted})
            rows = await cur.fetchall()
            if rows:
                now = float(rows[0][3])
            else:
                cur = await conn.execute("SELECT extract(epoch FROM clock_timestamp())::float8")
                now = float((await cur.fetchone())[0])  # type: ignore[index]
            state = {k: Cell(v, st) for k, v, st, _ in rows}
            before = {k: (c.value, c.stamp) for k, c in state.items()}
            result = fn(state, now)
            changed = [k for k, c in state.items() if before.get(k) != (c.value, c.stamp)]
            if changed:
                await conn.execute(
                    Q["flow_state_write"],
                    {
                        "keys": changed,
                        "values": [state[k].value for k in changed],
                        "stamps": [state[k].stamp for k in changed],
                        "expires": [state[k].expires_at for k in changed],
                    },
                )
        return result

    async def flow_state_purge(self, now: datetime) -> int:
        async with self._conn() as conn:
            cur = await conn.execute(Q["flow_state_purge"], {"now": now.timestamp()})
            await conn.execute(Q["throttle_purge"], {"now": now})
            return cur.rowcount

    async def throttle_set(
        self, tenant: str, provider: str, until: datetime, reason: str, now: datetime
    ) -> None:
        await self._fetch(
            "throttle_set", _params.throttle_set(C, tenant, provider, until, reason, now)
        )

    # Acting on what waits (issue 14): an operator clears throttles.
    async def throttle_clear(
        self, keys: Sequence[tuple[str, str]], now: datetime, audit: AuditEntry
    ) -> list[Throttle]:
        async with self._conn() as conn, conn.transaction():
            rows = []
            for tenant, provider in keys:
                key = {"tenant": tenant, "provider": provider}
                cur = await conn.execute(Q["throttle_clear"], key)
                rows += [r[:5] for r in await cur.fetchall()]
            cleared = [_rows.throttle(C, r) for r in rows]
            await conn.execute(Q["flow_bump"], {"now": now})
            await _audit_insert(conn, audit, _rules.cleared_detail(audit, cleared))
        return cleared

    def flow_listen(self, listener: FlowListener) -> Callable[[], None]:
        self._flow_listeners.append(listener)

        def stop() -> None:
            with contextlib.suppress(ValueError):
                self._flow_listeners.remove(listener)

        return stop

    def _flow_signal(self, payload: str) -> None:
        try:
            signal = _flow_signal_of(json.loads(payload))
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            log.warning("unreadable flow signal", error=str(exc), payload=payload[:200])
            return
        for listener in list(self._flow_listeners):
            try:
                listener(signal)
            except Exception:  # one listener's bug must not silence the others
                log.exception("flow listener failed")

    async def limit_set(self, row: LimitRow) -> None:
        async with self._conn() as conn, conn.transaction():
            await conn.execute(Q["limit_upsert"], _params.limit_upsert(C, row))
            await conn.execute(Q["flow_bump"], {"now": row.updated_at})
            await _audit_insert(conn, limit_audit("limit.set", row))

    async def limit_clear(
        self, kind: str, tenant: str, provider: str, action: str, *, actor: str, reason: str,
        now: datetime,
    ) -> bool:  # fmt: skip
        async with self._conn() as conn, conn.transaction():
            scope = {"kind": kind, "tenant": tenant, "provider": provider, "action": action}
            cur = await conn.execute(Q["limit_delete"], scope)
            if await cur.fetchone() is None:
                return False
            await conn.execute(Q["flow_bump"], {"now": now})
            row = LimitRow(kind, tenant, provider, action, {}, actor, reason, now)
            await _audit_insert(conn, limit_audit("limit.clear", row))
        return True

    # -- controls ----------------------------------------------------------------

    async def clock_now(self) -> datetime:
        (at,) = (await self._fetch("clock_now", {}))[0]
        return at  # type: ignore[no-any-return]  # timestamptz: an aware datetime

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
        async with self._conn() as conn, conn.transaction():
            cur = await conn.execute(Q["flow_bump"], {"now": now})
            (version,) = await cur.fetchone()  # type: ignore[misc]
            params = _params.control_upsert(
                C, scope, mode, actor=actor, reason=reason, expires_at=expires_at, now=now,
                version=version,
            )  # fmt: skip
            cur = await conn.execute(Q["control_upsert"], params)
            control = _rows.control(C, await cur.fetchone())  # type: ignore[arg-type]
            if control.mode is not Mode.PAUSED:
                await conn.execute(Q["message_unpark"], {"control_id": control.id})
            await _audit_insert(conn, control_audit("control.set", control, now, actor, reason))
        self.wake()
        return control

    async def control_clear(
        self, scope: Scope, *, actor: str, reason: str, release: bool, now: datetime
    ) -> tuple[Control | None, list[str]]:
        async with self._conn() as conn, conn.transaction():
            cur = await conn.execute(Q["control_delete"], scope.params())
            row = await cur.fetchone()
            unparked = 0
            if row is not None:
                cur = await conn.execute(
                    Q["message_unpark"], {"control_id": _rows.control(C, row).id}
                )
                unparked = cur.rowcount
            released: list[str] = []
            if release:
                cur = await conn.execute(
                    Q["message_release_controlled"], {**scope.params(), "now": now}
                )
                released = [r[0] for r in await cur.fetchall()]
            if row is None and not released:
                return None, []
            await conn.execute(Q["flow_bump"], {"now": now})
            control = _rows.control(C, row) if row is not None else None
            entry = _rules.control_clear_audit(scope, control, len(released), now, actor, reason)
            await _audit_insert(conn, entry)
        if released or unparked:
            self.wake()
        return control, released

    async def control_expire(self, now: datetime, actor: str) -> list[Control]:
        async with self._conn() as conn, conn.transaction():
            cur = await conn.execute(Q["control_delete_expired"], {"now": now})
            expired = [_rows.control(C, r) for r in await cur.fetchall()]
            if not expired:
                return []
            await conn.execute(Q["flow_bump"], {"now": now})
            for control in expired:
                await conn.execute(Q["message_unpark"], {"control_id": control.id})
                cur = await conn.execute(
                    Q["message_release_controlled"], {**control.scope.params(), "now": now}
                )
                released = len(await cur.fetchall())
                entry = control_audit(
                    "control.expired",
                    control,
                    now,
                    actor,
                    "expiry reached; mode reverted",
                    released=released,
                )
                await _audit_insert(conn, entry)
        self.wake()
        return expired

    async def control_hold_queued(self, now: datetime, limit: int = 1000) -> list[str]:
        held: list[str] = []
        for control in await self.control_list():
            if control.mode is not Mode.KILLED or not control.active(now):
                continue
            params = _params.control_hold(C, control, now, limit)
            rows = await self._fetch("message_hold_controlled", params)
            held.extend(r[0] for r in rows)
        return held

    async def control_park_queued(self, now: datetime, limit: int = 10_000) -> int:
        parked = 0
        for control in await self.control_list():
            if control.mode is not Mode.PAUSED or not control.active(now):
                continue
            async with self._conn() as conn, conn.transaction():
                cur = await conn.execute(Q["control_lock_pause"], {"id": control.id, "now": now})
                if await cur.fetchone() is None:
                    continue
                params = {**control.scope.params(), "control_id": control.id, "limit": limit}
                cur = await conn.execute(Q["message_park"], params)
                parked += cur.rowcount
        return parked

    # -- audit -------------------------------------------------------------------

    async def audit_append(self, entry: AuditEntry) -> AuditEntry:
        async with self._conn() as conn, conn.transaction():
            return await _audit_insert(conn, entry)

    async def audit_append_changed(
        self, entry: AuditEntry, initial: Mapping[str, Any] | None = None
    ) -> AuditEntry | None:
        async with self._conn() as conn, conn.transaction():
            await conn.execute(Q["audit_lock"])
            cur = await conn.execute(
                Q["audit_last_of"], {"action": entry.action, "target": entry.target}
            )
            row = await cur.fetchone()
            last = json.loads(row[0]) if row is not None else initial
            if last is not None and last == stored_detail(entry.detail):
                return None
            return await _audit_insert(conn, entry)

    # -- connections -------------------------------------------------------------

    async def connection_insert(self, conn: Connection, audit: AuditEntry) -> Connection:
        async with self._conn() as db, db.transaction():
            cur = await db.execute(Q["connection_insert"], _params.connection_insert(C, conn))
            if await cur.fetchone() is None:
                raise ValidationError(
                    "connection",
                    f"tenant {conn.tenant!r} already has a {conn.provider} connection; "
                    "use: sluice connections rotate",
                )
            # Messages held for want of this connection can go now.
            cur = await db.execute(
                Q["message_release_held"],
                _params.release_held(C, conn.tenant, conn.provider, conn.created_at),
            )
            released = len(await cur.fetchall())
            await _audit_insert(db, audit, {**audit.detail, "released": released})
        self._wake.set()
        return await self.connection_get(conn.tenant, conn.provider)

    async def connection_find(self, pairs: Sequence[tuple[str, str]]) -> list[Connection]:
        if not pairs:
            return []
        rows = await self._fetch(
            "connection_select_pairs",
            {"tenants": [t for t, _ in pairs], "providers": [p for _, p in pairs]},
        )
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
        async with self._conn() as db, db.transaction():
            params = _params.connection_set_state(
                C, tenant, provider, state, reason, missing_scopes, now, expected_version
            )
            changed = await (await db.execute(Q["connection_set_state"], params)).fetchone()
            held: list[str] = []
            if _rules.holds_queued(state, changed is not None, expected_version):
                why = f"{state.value}: {reason}"
                params = _params.hold_queued(C, tenant, provider, now, why)
                cur = await db.execute(Q["message_hold_queued"], params)
                held = [r[0] for r in await cur.fetchall()]
            if changed is not None:
                entry = _rules.connection_state_audit(
                    tenant, provider, state, reason, missing_scopes, len(held), now, actor
                )
                await _audit_insert(db, entry)
        return changed is not None, held

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
        async with self._conn() as db, db.transaction():
            params = _params.connection_rotate(
                C, tenant, provider, ciphertext=ciphertext, key_id=key_id, scopes=scopes,
                expires_at=expires_at, now=now, reason=audit.reason,
            )  # fmt: skip
            cur = await db.execute(Q["connection_rotate"], params)
            if await cur.fetchone() is None:
                raise NotFound(f"tenant {tenant!r} has no {provider} connection")
            cur = await db.execute(
                Q["message_release_held"], _params.release_held(C, tenant, provider, now)
            )
            released = [r[0] for r in await cur.fetchall()]
            detail = {**audit.detail, "released": len(released)}
            await _audit_insert(db, audit, detail)
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
        rows = await self._fetch("connection_store_secret", params)
        return bool(rows)

    async def connection_refresh(
        self,
        tenant: str,
        provider: str,
        refresh: RefreshCallback,
        now: datetime,
        *,
        actor: str,
        lock_timeout: float = 15.0,
    ) -> Connection:
        """Refresh under the row lock (``FOR UPDATE``), held across ``refresh``.

        Every worker on every host that wants to refresh this connection queues on the
        lock; the first calls the token endpoint, the others re-read the row it wrote and
        (through ``refresh``) see a fresh token. The transaction stays open for the token
        call, which the caller bounds by its HTTP timeout; ``lock_timeout`` bounds how long
        a waiter queues behind a holder that froze (``StoreUnavailable`` then; the
        refresher sends with the token it has). The default leaves a waiting message
        time to be sent within its lease (30 s) after the HTTP timeout (10 s).
        """
        async with self._conn() as db, db.transaction():
            await db.execute(
                Q["connection_refresh_lock_timeout"],
                {"lock_timeout": f"{max(1, round(lock_timeout * 1000))}ms"},
            )
            cur = await db.execute(
                Q["connection_select_for_update"], {"tenant": tenant, "provider": provider}
            )
            row = await cur.fetchone()
            if row is None:
                raise NotFound(f"tenant {tenant!r} has no {provider} connection")
            current = _rows.connection(C, row)
            outcome = await refresh(current)
            if outcome is not None:
                await _refresh_write(db, current, outcome, now, actor)
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
        await self._fetch("connection_record_check", params)

    # -- breakers ----------------------------------------------------------------

    async def breaker_report(
        self,
        counts: Mapping[tuple[str, int], tuple[int, int]],
        probes_ok: Mapping[str, int],
        now: datetime,
    ) -> None:
        probes = sorted((k, n) for k, n in probes_ok.items() if n > 0)
        if not counts and not probes:
            return
        batch = sorted(counts.items())  # one lock order for every worker
        await self._fetch(
            "breaker_report",
            {
                "now": now,
                "keys": [k for (k, _), _ in batch],
                "buckets": [b for (_, b), _ in batch],
                "oks": [ok for _, (ok, _) in batch],
                "faileds": [failed for _, (_, failed) in batch],
                "probe_keys": [k for k, _ in probes],
                "probe_counts": [n for _, n in probes],
            },
        )

    async def breaker_window(
        self, keys: Sequence[str] | None, since_bucket: int
    ) -> dict[str, tuple[int, int]]:
        if keys is not None and not keys:
            return {}
        rows = await self._fetch(
            "breaker_window",
            {"keys": None if keys is None else list(keys), "since_bucket": since_bucket},
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
        # An operator's act loses only to a worker creating the row at the same moment
        # (its insert conflicts); the second try then finds the row and moves it.
        for _ in range(1 if expected_state is not None else 2):
            async with self._conn() as db, db.transaction():
                cur = await db.execute(Q["breaker_transition"], params)
                if await cur.fetchone() is None:
                    continue
                if new_state == "closed":
                    await db.execute(Q["breaker_clear_window"], {"key": key})
                await _audit_insert(db, audit)
                moved = BreakerInfo(
                    key, provider, tenant, new_state, now, retry_at, forced, reason, 0, now
                )
                await db.execute(Q["flow_notify"], {"payload": _breaker_payload(moved)})
                return True
        return False

    async def breaker_purge(self, before_bucket: int) -> int:
        [(n,)] = await self._fetch("breaker_purge", {"before_bucket": before_bucket})
        return int(n)

    # -- workers -----------------------------------------------------------------

    async def worker_heartbeat(
        self, worker_id: str, host: str, pid: int, in_flight: int, sent_total: int, now: datetime
    ) -> None:
        params = _params.worker_upsert(C, worker_id, host, pid, in_flight, sent_total, now)
        await self._fetch("worker_upsert", params)

    async def worker_stop(self, worker_id: str, now: datetime) -> None:
        await self._fetch("worker_stop", {"id": worker_id, "now": now})

    async def worker_ack(self, worker_id: str, version: int, now: datetime) -> None:
        await self._fetch("worker_ack", {"id": worker_id, "version": version, "now": now})

    # -- wake-ups ----------------------------------------------------------------

    async def wait_for_work(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._wake.wait(), timeout)
        except TimeoutError:
            return False
        finally:
            self._wake.clear()
        return True

    def wake(self) -> None:
        """Wake a waiting worker in this process (used after a local enqueue)."""
        self._wake.set()

    async def _listen_loop(self) -> None:
        """Hold a LISTEN connection; reconnect with backoff if the server goes away."""
        delay = 0.5
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
                async with conn:
                    await conn.execute(f"LISTEN {LISTEN_CHANNEL}")
                    await conn.execute(f"LISTEN {FLOW_CHANNEL}")
                    delay = 0.5
                    self._wake.set()  # we may have missed notifications while away
                    async for note in conn.notifies():
                        if note.channel == FLOW_CHANNEL:
                            self._flow_signal(note.payload)
                        else:
                            self._wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the poll fallback keeps work moving meanwhile
                log.warning("LISTEN connection lost; reconnecting", error=str(exc), delay=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    # -- the HTTP API ------------------------------------------------------------

    async def api_key_insert(self, key: ApiKey, audit: AuditEntry) -> None:
        async with self._conn() as conn, conn.transaction():
            params = dataclasses.asdict(key)
            params.pop("revoked_at")
            cur = await conn.execute(Q["api_key_insert"], params)
            if await cur.fetchone() is None:
                raise ValidationError("name", f"an API key named {key.name!r} already exists")
            await _audit_insert(conn, audit)

    async def api_key_revoke(self, key_id: str, now: datetime, audit: AuditEntry) -> ApiKey:
        async with self._conn() as conn, conn.transaction():
            cur = await conn.execute(Q["api_key_revoke"], {"id": key_id, "now": now})
            if await cur.fetchone() is not None:
                await _audit_insert(conn, audit)
            cur = await conn.execute(Q["api_key_get"], {"id": key_id})
            row = await cur.fetchone()
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
        rows = await self._fetch(
            "idem_begin",
            {
                "scope": scope,
                "key": key,
                "fingerprint": fingerprint,
                "now": now,
                "locked_until": now + timedelta(seconds=lock_seconds),
                "forget_before": now - timedelta(seconds=window_seconds),
            },
        )
        return IdemClaim.of_row(rows[0] if rows else None, fingerprint)

    async def idem_finish(
        self, scope: str, key: str, status_code: int, response: str, now: datetime
    ) -> None:
        await self._fetch(
            "idem_finish",
            {"scope": scope, "key": key, "status_code": status_code, "response": response},
        )

    async def idem_enqueue(
        self,
        scope: str,
        key: str,
        messages: Sequence[NewMessage],
        respond: IdemResponder,
    ) -> tuple[int, str] | None:
        from sluice.clock import SystemClock

        rows = _enqueue.prepare(messages, addressing_in_effect(self._settings))
        now = SystemClock().now()
        try:
            async with self._conn() as conn, conn.transaction():
                ids = await pg_enqueue_async(conn, rows, now)
                cur = await conn.execute(Q["message_get_many"], {"ids": ids})
                found = {r[0]: _rows.full_message(C, r) for r in await cur.fetchall()}
                status, response = respond([found[i] for i in ids])
                cur = await conn.execute(
                    Q["idem_finish"],
                    {"scope": scope, "key": key, "status_code": status, "response": response},
                )
                if cur.rowcount != 1:
                    raise _ClaimLost
        except _ClaimLost:
            return None
        return status, response

    async def idem_release(self, scope: str, key: str) -> None:
        await self._fetch("idem_release", {"scope": scope, "key": key})

    async def idem_purge(self, now: datetime, window_seconds: float) -> int:
        rows = await self._fetch("idem_purge", {"before": now - timedelta(seconds=window_seconds)})
        return int(rows[0][0])

    # -- ingress -----------------------------------------------------------------

    async def inbox_put(self, items: Sequence[InboxItem], now: datetime) -> list[bool]:
        if not items:
            return []
        batch = [
            {
                "provider": i.provider,
                "event_id": i.event_id,
                "kind": i.kind,
                "status": i.status,
                "message_id": i.message_id,
                "provider_message_id": i.provider_message_id,
                "occurred_at": i.occurred_at.isoformat() if i.occurred_at else None,
                "error_code": i.error_code,
                "detail": i.detail,
                "address": i.address,
                "data": i.data,
                "source_tenant": i.source_tenant or "",
            }
            for i in items
        ]
        try:
            text = json.dumps(batch, separators=(",", ":"), allow_nan=False)
        except ValueError as exc:  # NaN or infinity: not JSON, and jsonb would refuse it
            raise ValidationError("data", f"is not valid JSON: {exc}") from None
        rows = await self._fetch("inbox_put", {"now": now, "batch": text})
        fresh = {(r[0], r[1], r[2]) for r in rows}
        seen: set[tuple[str, str, str]] = set()
        out = []
        for i in items:  # a batch repeating an event stores it once: the first one is new
            key = (i.provider, i.source_tenant or "", i.event_id)
            out.append(key in fresh and key not in seen)
            seen.add(key)
        return out

    async def inbox_claim(
        self, worker_id: str, limit: int, lease_seconds: float, now: datetime
    ) -> list[InboxItem]:
        rows = await self._fetch(
            "inbox_claim",
            {"now": now, "limit": limit, "lease_until": now + timedelta(seconds=lease_seconds)},
        )
        return sorted((_rows.inbox_item(C, r) for r in rows), key=lambda i: i.id)

    async def inbox_finish(
        self,
        item_id: int,
        attempt: int,
        result: str,
        now: datetime,
        receipt: Receipt | None = None,
    ) -> str:
        claim = {"id": item_id, "attempt": attempt}
        async with self._conn() as conn, conn.transaction():
            cur = await conn.execute(Q["inbox_hold"], claim)
            if await cur.fetchone() is None:
                return "lost"
            if receipt is not None:
                result = await _apply_receipt(conn, receipt, item_id, now)
                if result == "not_ready":
                    return result
            await conn.execute(Q["inbox_done"], {**claim, "result": result, "now": now})
        return result

    async def inbox_retry(
        self, item_id: int, attempt: int, run_at: datetime, error: str, now: datetime
    ) -> bool:
        params = {"id": item_id, "attempt": attempt, "run_at": run_at, "error": error[:2000]}
        return bool(await self._fetch("inbox_retry", params))

    async def inbox_dead(self, item_id: int, attempt: int, error: str, now: datetime) -> bool:
        params = {"id": item_id, "attempt": attempt, "error": error[:2000], "now": now}
        return bool(await self._fetch("inbox_dead", params))

    async def inbox_reject(
        self, item_id: int, attempt: int, reason: str, now: datetime, audit: AuditEntry
    ) -> bool:
        params = {"id": item_id, "attempt": attempt, "error": reason[:2000], "now": now}
        async with self._conn() as conn, conn.transaction():
            cur = await conn.execute(Q["inbox_reject"], params)
            if await cur.fetchone() is None:
                return False
            await _audit_insert(conn, audit, audit.detail)
        return True

    async def inbox_requeue(
        self, ids: Sequence[int] | None, now: datetime, audit: AuditEntry
    ) -> list[int]:
        async with self._conn() as conn, conn.transaction():
            cur = await conn.execute(
                Q["inbox_requeue"], {"now": now, "all": ids is None, "ids": list(ids or [])}
            )
            moved = sorted(r[0] for r in await cur.fetchall())
            await _audit_insert(conn, audit, _rules.moved_detail(audit, moved))
        return moved

    async def inbox_purge(self, before: datetime) -> int:
        return int((await self._fetch("inbox_purge", {"before": before}))[0][0])

    # -- recipient hygiene (issue 14) --------------------------------------------

    async def suppression_put(self, s: Suppression, audit: AuditEntry) -> bool:
        async with self._conn() as conn, conn.transaction():
            cur = await conn.execute(Q["suppression_insert"], _hygiene.suppression_params(C, s))
            if await cur.fetchone() is None:
                return False
            await _audit_insert(conn, audit)
            return True

    async def suppression_delete(
        self, tenant: str, channel: str, recipient: str, audit: AuditEntry
    ) -> Suppression | None:
        key = {"tenant": tenant, "channel": channel, "recipient": recipient}
        async with self._conn() as conn, conn.transaction():
            cur = await conn.execute(Q["suppression_delete"], key)
            row = await cur.fetchone()
            if row is not None:
                await _audit_insert(conn, audit)
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
        rows = await self._fetch("suppression_find", _key_arrays(keys))
        return {(t, c, r) for t, c, r in rows}

    async def suppression_counts(self) -> dict[str, int]:
        return {c: n for c, n in await self._fetch("suppression_counts", {})}

    async def contact_seen(self, tenant: str, channel: str, recipient: str, at: datetime) -> None:
        params = {"tenant": tenant, "channel": channel, "recipient": recipient, "at": at}
        async with self._conn() as conn:
            await conn.execute(Q["contact_seen"], params)

    async def contact_find(
        self, keys: Sequence[tuple[str, str, str]]
    ) -> dict[tuple[str, str, str], datetime]:
        if not keys:
            return {}
        return _hygiene.contacts(C, await self._fetch("contact_find", _key_arrays(keys)))

    # -- retention (issue 14) ----------------------------------------------------

    async def message_purge(
        self, rule: PurgeRule, limit: int, export: PurgeExport | None = None
    ) -> dict[str, int]:
        _retention.check_limit(limit)
        steps = _retention.rule_params(C, rule)
        async with self._conn() as conn, conn.transaction():
            ids: list[str] = []
            for params in steps:
                if len(ids) >= limit:
                    break
                cur = await conn.execute(Q["purge_pick"], {**params, "limit": limit - len(ids)})
                ids += [r[0] for r in await cur.fetchall()]
            if not ids:
                return {}
            p = {"ids": ids}
            if export is not None:
                rows = [await (await conn.execute(Q[q], p)).fetchall() for q in _PURGE_READS]
                # The rows are locked until the commit: the export sees what is deleted.
                await asyncio.to_thread(export, _retention.purged(C, *rows))
            await conn.execute(Q["purge_delete_receipts"], p)
            await conn.execute(Q["purge_delete_attempts"], p)
            cur = await conn.execute(Q["purge_delete_messages"], p)
            return _retention.counts(await cur.fetchall())


#: What a retention export reads of each batch, in ``_retention.purged``'s order.
_PURGE_READS = ("purge_messages", "purge_attempts", "purge_receipts")


def _breaker_payload(row: BreakerInfo) -> str:
    """A breaker's new row as a NOTIFY payload (``_flow_signal_of`` reads it back)."""
    values = [
        row.key, row.provider, row.tenant, row.state, row.since.isoformat(),
        row.retry_at.isoformat() if row.retry_at else None, row.forced, row.reason,
        row.probes_ok, row.updated_at.isoformat(),
    ]  # fmt: skip
    return json.dumps({"breaker": values})


def _flow_signal_of(document: dict[str, Any]) -> FlowSignal:
    """A ``sluice_flow`` NOTIFY payload as a ``FlowSignal``."""
    when = datetime.fromisoformat
    if "throttle" in document:
        tenant, provider, until, reason, set_at = document["throttle"]
        return FlowSignal(throttle=Throttle(tenant, provider, when(until), reason, when(set_at)))
    if "throttle_cleared" in document:
        tenant, provider, until, reason, set_at = document["throttle_cleared"]
        gone = Throttle(tenant, provider, when(until), reason, when(set_at))
        return FlowSignal(throttle_cleared=gone)
    key, provider, tenant, state, since, retry_at, forced, reason, probes, at = document["breaker"]
    row = BreakerInfo(
        key, provider, tenant, state, when(since), when(retry_at) if retry_at else None,
        bool(forced), reason, int(probes), when(at),
    )  # fmt: skip
    return FlowSignal(breaker=row)


async def _apply_receipt(
    conn: psycopg.AsyncConnection[TupleRow], receipt: Receipt, item_id: int, now: datetime
) -> str:
    """Record ``receipt`` and move its message forward if it ranks higher; the result."""
    mid = _params.uuid_or_none(receipt.message_id)
    row = None
    if mid is not None:
        row = await (await conn.execute(Q["receipt_target"], {"id": mid})).fetchone()
    outcome, target = _rules.receipt_step(None if row is None else Status(row[0]), receipt.status)
    if mid is None or outcome in ("unmatched", "not_ready"):
        return outcome
    await conn.execute(Q["receipt_insert"], _params.receipt_insert(C, receipt, mid, item_id))
    if target is not None:
        await conn.execute(
            Q["receipt_advance"], _params.receipt_advance(C, mid, receipt, target, now)
        )
    return outcome


def _key_arrays(keys: Sequence[tuple[str, str, str]]) -> dict[str, list[str]]:
    """(tenant, channel, recipient) keys as the three arrays ``unnest`` pairs up."""
    return {
        "tenants": [k[0] for k in keys],
        "channels": [k[1] for k in keys],
        "recipients": [k[2] for k in keys],
    }


def _completion_row(c: Completion) -> dict[str, Any]:
    """One element of the JSON batch of ``message_complete_many`` (nulls left out)."""
    row: dict[str, Any] = {"id": c.message_id, "claim_seq": c.claim_seq, "status": c.status.value}
    if c.run_at is not None:
        row["run_at"] = c.run_at.timestamp()
    if c.refund_attempt:
        row["refund"] = 1
    if c.provider_message_id is not None:
        row["provider_message_id"] = c.provider_message_id
    if c.hold_reason is not None:
        row["hold_reason"] = c.hold_reason
    if c.error_code is not None:  # recipient hygiene: ended without an attempt
        row["error_code"], row["detail"] = c.error_code, c.error
    a = c.attempt
    if c.deferred:
        row["deferred_at"] = (a.finished_at if a else datetime.now(UTC)).timestamp()
    if a is not None:
        row["provider"] = a.provider
        row["started_at"] = a.started_at.timestamp()
        row["finished_at"] = a.finished_at.timestamp()
        row["outcome"] = a.outcome.value
        row["latency_ms"] = a.latency_ms
        for name in ("error_code", "error_class", "provider_status", "provider_code", "detail"):
            value = getattr(a, name)
            if value is not None:
                row[name] = value
    return row


async def _refresh_write(
    db: psycopg.AsyncConnection[TupleRow],
    current: Connection,
    outcome: RefreshOutcome,
    now: datetime,
    actor: str,
) -> None:
    """Write what a refresh produced, with its audit row, in the caller's transaction."""
    if outcome.state is None:
        params = _params.refresh_store(C, current, outcome, now)
        cur = await db.execute(Q["connection_refresh_store"], params)
        if await cur.fetchone() is None:
            return
        await _audit_insert(db, outcome.audit_entry(current, now, actor))
        return
    cur = await db.execute(
        Q["connection_refresh_fail"], _params.refresh_fail(C, current, outcome, now)
    )
    if await cur.fetchone() is None:
        return
    why = f"{outcome.state.value}: {outcome.reason}"
    cur = await db.execute(
        Q["message_hold_queued"],
        _params.hold_queued(C, current.tenant, current.provider, now, why),
    )
    held = [r[0] for r in await cur.fetchall()]
    await _audit_insert(db, outcome.audit_entry(current, now, actor, held=len(held)))


async def _audit_insert(
    conn: psycopg.AsyncConnection[TupleRow], entry: AuditEntry, detail: dict[str, Any] | None = None
) -> AuditEntry:
    # The chain needs one writer at a time; audit writes are operator-paced.
    await conn.execute(Q["audit_lock"])
    cur = await conn.execute(Q["audit_last_hash"])
    row = await cur.fetchone()
    sealed = seal(entry, row[0] if row else None, detail)
    cur = await conn.execute(Q["audit_insert"], insert_params(sealed, sealed.at))
    (new_id,) = await cur.fetchone()  # type: ignore[misc]  # INSERT … RETURNING id
    return dataclasses.replace(sealed, id=new_id)


#: Batches at least this large without idempotency keys go in by COPY (``message_copy``):
#: below it the extra round trips (transaction time, COPY start and end) cost more than
#: the unnest saves.
COPY_FROM = 64


def _copies(rows: Sequence[_enqueue.PreparedRow]) -> bool:
    """Do ``rows`` go in by COPY? Only when none carries an idempotency key: COPY has no
    ON CONFLICT, and without keys nothing can conflict (a repeated id fails either way)."""
    return len(rows) >= COPY_FROM and all(r.message.idempotency_key is None for r in rows)


def pg_copy_rows(rows: Sequence[_enqueue.PreparedRow], now: datetime) -> Iterator[tuple[Any, ...]]:
    """The columns of ``message_copy``, as ``message_insert_many`` computes them with
    ``now`` (the transaction's time, or the caller's clock)."""
    for r in rows:
        m = r.message
        expires_at = m.expires_at
        if expires_at is None and r.ttl is not None:
            expires_at = now + timedelta(seconds=r.ttl)
        yield (
            m.id, m.tenant, m.channel, m.provider, m.action, m.recipient, r.payload_json,
            m.priority, "queued", m.run_at or now, 0, m.max_attempts, 0, r.content_hash,
            m.correlation_id, r.scopes_json, now, now, expires_at, m.verify_within,
        )  # fmt: skip


def pg_insert_one_params(row: _enqueue.PreparedRow, now: datetime | None) -> dict[str, Any]:
    """Parameters of ``message_insert_one``."""
    m = row.message
    return {
        "now": now, "id": m.id, "tenant": m.tenant, "channel": m.channel,
        "provider": m.provider, "action": m.action, "recipient": m.recipient,
        "payload": row.payload_json, "priority": m.priority, "run_at": m.run_at,
        "max_attempts": m.max_attempts, "idempotency_key": m.idempotency_key,
        "content_hash": row.content_hash, "correlation_id": m.correlation_id,
        "scopes": row.scopes_json, "expires_at": m.expires_at, "ttl": row.ttl,
        "verify_within": m.verify_within,
    }  # fmt: skip


async def _insert_async(
    conn: psycopg.AsyncConnection[Any], rows: Sequence[_enqueue.PreparedRow], now: datetime | None
) -> set[str]:
    """Insert ``rows`` with ``message_insert_one`` or ``_many``; the ids that went in."""
    if len(rows) == 1:
        cur = await conn.execute(Q["message_insert_one"], pg_insert_one_params(rows[0], now))
        return {rows[0].message.id} if cur.rowcount == 1 else set()
    cur = await conn.execute(Q["message_insert_many"], pg_enqueue_plan(rows, now))
    return {r[0] for r in await cur.fetchall()}


def _insert_sync(
    conn: psycopg.Connection[Any], rows: Sequence[_enqueue.PreparedRow], now: datetime | None
) -> set[str]:
    """``_insert_async`` on a sync connection."""
    if len(rows) == 1:
        cur = conn.execute(Q["message_insert_one"], pg_insert_one_params(rows[0], now))
        return {rows[0].message.id} if cur.rowcount == 1 else set()
    cur = conn.execute(Q["message_insert_many"], pg_enqueue_plan(rows, now))
    return {r[0] for r in cur.fetchall()}


async def pg_enqueue_async(
    conn: psycopg.AsyncConnection[Any],
    rows: Sequence[_enqueue.PreparedRow],
    now: datetime | None = None,
) -> list[str]:
    """Insert prepared rows on an async connection inside the caller's transaction."""
    existing: dict[tuple[str, str], tuple[str, str]] = {}
    if _copies(rows):
        if now is None:
            now = (await (await conn.execute(Q["transaction_now"])).fetchone())[0]  # type: ignore[index]
        async with conn.cursor() as cur, cur.copy(Q["message_copy"]) as copy:
            for values in pg_copy_rows(rows, now):
                await copy.write_row(values)
    else:
        pairs = _enqueue.keyed(rows, await _insert_async(conn, rows, now))
        if pairs:
            cur = await conn.execute(Q["message_find_by_keys"], pg_find_params(pairs))
            existing = {(t, k): (i, h) for i, t, k, h in await cur.fetchall()}
    ids = _enqueue.resolve(rows, existing)
    channels = _notifier.due({r.message.channel for r in rows})
    if channels:
        await conn.execute(Q["notify_ready"], {"channels": channels})
    return ids


def pg_enqueue_sync(
    conn: psycopg.Connection[Any], rows: Sequence[_enqueue.PreparedRow], now: datetime | None = None
) -> list[str]:
    """Insert prepared rows on a sync connection inside the caller's transaction."""
    existing: dict[tuple[str, str], tuple[str, str]] = {}
    if _copies(rows):
        if now is None:
            now = conn.execute(Q["transaction_now"]).fetchone()[0]  # type: ignore[index]
        with conn.cursor() as cur, cur.copy(Q["message_copy"]) as copy:
            for values in pg_copy_rows(rows, now):
                copy.write_row(values)
    else:
        pairs = _enqueue.keyed(rows, _insert_sync(conn, rows, now))
        if pairs:
            cur = conn.execute(Q["message_find_by_keys"], pg_find_params(pairs))
            existing = {(t, k): (i, h) for i, t, k, h in cur.fetchall()}
    ids = _enqueue.resolve(rows, existing)
    channels = _notifier.due({r.message.channel for r in rows})
    if channels:
        conn.execute(Q["notify_ready"], {"channels": channels})
    return ids


class _Notifier:
    """Decides which channels to NOTIFY for: at most once per interval per channel.

    Every NOTIFY takes a database-wide lock at commit, so a busy producer must not
    send one per message. A woken worker polls every 10 ms for one interval after any
    activity, so a coalesced notification costs at most that, and only under load.
    The interval is ``SLUICE_NOTIFY_INTERVAL``, read once, as the worker reads it.
    """

    def __init__(self, interval: float | None = None) -> None:
        self._interval = interval
        self._last: dict[str, float] = {}

    @property
    def interval(self) -> float:
        if self._interval is None:
            from sluice.config import notify_interval

            self._interval = notify_interval()
        return self._interval

    def due(self, channels: set[str]) -> list[str]:
        import time

        interval = self.interval
        now = time.monotonic()
        out = []
        for ch in channels:
            if now - self._last.get(ch, -1e9) >= interval:
                self._last[ch] = now
                out.append(ch)
        return out


_notifier = _Notifier()


class _ClaimLost(Exception):
    """Rolls ``idem_enqueue``'s transaction back: the key's claim is not running any more."""


def _connection_lost(exc: psycopg.OperationalError) -> bool:
    """The connection itself failed (as opposed to the statement): no SQLSTATE (the
    client noticed), class 08, or the server shutting down or starting up."""
    code = exc.sqlstate
    return code is None or code.startswith("08") or code in ("57P01", "57P02", "57P03")


_LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1", "")


def _explain_connect_error(url: str, exc: psycopg.OperationalError, timeout: float) -> str:
    """What a failed connect means, in words that say what to do about it.

    A connection refused before the session exists carries no SQLSTATE, only libpq's
    text, so this one place reads the text; anything it does not recognise is passed
    on as libpq worded it.
    """
    try:
        info = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        info = {}
    host = str(info.get("host") or "localhost")
    port = str(info.get("port") or "5432")
    user = str(info.get("user") or "postgres")
    text = str(exc)
    if "failed to resolve host" in text or "could not translate host name" in text:
        return f"cannot resolve host {host}; check the host in SLUICE_DATABASE_URL"
    missing = re.search(r'database "([^"]+)" does not exist', text)
    if missing:
        name = missing.group(1)
        return (
            f'database "{name}" does not exist on {host}:{port}; create it '
            f"(createdb -h {host} -p {port} -U {user} {name}) or fix SLUICE_DATABASE_URL"
        )
    role = re.search(r'role "([^"]+)" does not exist', text)
    if role:
        return (
            f'PostgreSQL at {host}:{port} has no role "{role.group(1)}"; create it '
            f"(createuser -h {host} -p {port} {role.group(1)}) or fix SLUICE_DATABASE_URL"
        )
    if "password authentication failed" in text or "no password supplied" in text:
        return (
            f"PostgreSQL at {host}:{port} refused the password of {user}; fix SLUICE_DATABASE_URL"
        )
    if "Connection refused" in text or "No such file or directory" in text:
        start = (
            "start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) "
            "main start"
            if host in _LOCAL_HOSTS or host.startswith("/")
            else "check that it runs and that this host may reach it"
        )
        return f"no PostgreSQL server is answering at {host}:{port}; is it running? {start}"
    if "timeout expired" in text:
        return (
            f"no answer from PostgreSQL at {host}:{port} within {timeout:g} s "
            "(SLUICE_DB_TIMEOUT); is the host reachable from here?"
        )
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return f"cannot connect to PostgreSQL at {_redact(url)}: {first}"


def _redact(url: str) -> str:
    """The URL without its password, for error messages."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


class _PgLead:
    """An advisory lock held on its own connection (``PostgresStore.try_lead``)."""

    def __init__(self, conn: psycopg.AsyncConnection[TupleRow]) -> None:
        self._conn = conn

    async def release(self) -> None:
        with contextlib.suppress(psycopg.Error):
            await self._conn.close()
