-- Named queries for PostgreSQL. Each block starts with "-- name: <query>" and the
-- SQLite file has a block of the same name doing the same thing.

-- name: schema_version_table
CREATE TABLE IF NOT EXISTS sluice_schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)

-- name: schema_versions
SELECT version FROM sluice_schema_migrations ORDER BY version

-- name: schema_version_record
INSERT INTO sluice_schema_migrations (version, name) VALUES (%(version)s, %(name)s)

-- name: migrate_lock
SELECT pg_advisory_xact_lock(7243312501)

-- name: message_insert_many
-- Without a "now" from the caller, the server's: a producer whose clock runs ahead must
-- not make its messages wait, nor one behind make them look older than they are.
INSERT INTO sluice_messages (
    id, tenant, channel, provider, action, recipient, payload, priority, status, run_at,
    attempts, max_attempts, claim_seq, idempotency_key, content_hash, correlation_id, scopes,
    created_at, updated_at, expires_at, verify_within)
SELECT i.id, i.tenant, i.channel, i.provider, i.action, i.recipient, i.payload::jsonb,
       i.priority, 'queued', coalesce(i.run_at, t.now), 0, i.max_attempts, 0,
       i.idempotency_key, i.content_hash, i.correlation_id, i.scopes::jsonb, t.now, t.now,
       coalesce(i.expires_at, t.now + make_interval(secs => i.ttl)), i.verify_within
FROM (SELECT coalesce(%(now)s::timestamptz, now()) AS now) AS t, unnest(
    %(ids)s::uuid[], %(tenants)s::text[], %(channels)s::text[], %(providers)s::text[],
    %(actions)s::text[], %(recipients)s::text[], %(payloads)s::text[], %(priorities)s::int[],
    %(run_ats)s::timestamptz[], %(max_attempts)s::int[], %(idempotency_keys)s::text[],
    %(content_hashes)s::text[], %(correlation_ids)s::text[], %(scopes)s::text[],
    %(expires_ats)s::timestamptz[], %(ttls)s::float8[], %(verify_withins)s::float8[]
) AS i(id, tenant, channel, provider, action, recipient, payload, priority, run_at,
       max_attempts, idempotency_key, content_hash, correlation_id, scopes, expires_at, ttl,
       verify_within)
ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING id::text

-- name: message_find_by_keys
SELECT m.id::text, m.tenant, m.idempotency_key, m.content_hash
FROM sluice_messages m
JOIN unnest(%(tenants)s::text[], %(keys)s::text[]) AS k(tenant, key)
  ON m.tenant = k.tenant AND m.idempotency_key = k.key

-- name: notify_ready
SELECT pg_notify('sluice_ready', c) FROM unnest(%(channels)s::text[]) AS c

-- name: message_insert_one
-- message_insert_many for one message (a single enqueue in the application's
-- transaction, the common case): plain parameters instead of seventeen one-element arrays
-- to dump, parse and unnest, which took about a third of a single enqueue's time. No
-- RETURNING (a row to send and fetch): the row count says whether the message went in.
INSERT INTO sluice_messages (
    id, tenant, channel, provider, action, recipient, payload, priority, status, run_at,
    attempts, max_attempts, claim_seq, idempotency_key, content_hash, correlation_id, scopes,
    created_at, updated_at, expires_at, verify_within)
SELECT %(id)s::uuid, %(tenant)s::text, %(channel)s::text, %(provider)s::text,
       %(action)s::text, %(recipient)s::text, %(payload)s::jsonb, %(priority)s::int,
       'queued', coalesce(%(run_at)s::timestamptz, t.now), 0, %(max_attempts)s::int, 0,
       %(idempotency_key)s::text, %(content_hash)s::text, %(correlation_id)s::text,
       %(scopes)s::jsonb, t.now, t.now,
       coalesce(%(expires_at)s::timestamptz, t.now + make_interval(secs => %(ttl)s::float8)),
       %(verify_within)s::float8
FROM (SELECT coalesce(%(now)s::timestamptz, now()) AS now) AS t
ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING

-- name: transaction_now
-- The transaction's time, as now() gives it to every statement of the transaction.
SELECT now()

-- name: message_copy
-- A batch without idempotency keys (nothing can conflict): the rows as message_insert_many
-- would write them, computed by the client from transaction_now, in one COPY, which the
-- server takes several times faster than the same rows through unnest.
COPY sluice_messages (
    id, tenant, channel, provider, action, recipient, payload, priority, status, run_at,
    attempts, max_attempts, claim_seq, content_hash, correlation_id, scopes, created_at,
    updated_at, expires_at, verify_within) FROM STDIN

-- name: message_claim
-- Shared between tenants: the tenants with something ready are found by a loose index
-- scan of the ready index (one probe per tenant, starting after %(after)s, at most
-- %(limit)s of them); each offers its first few first attempts and its first few retries
-- in priority, then age, order (all %(limit)s with two tenants, fewer with more, never
-- fewer than 16); the n-th first attempt of every
-- tenant ranks before anyone's n-th retry, and both before anyone's (n+1)-th. So one
-- tenant's backlog cannot fill every slot, nor can retries crowd out first attempts
-- (they get at most every other slot of a tenant while it has both); priority orders a
-- tenant's own messages. Paused rows are parked outside the index; killed and paused
-- scopes are excluded here as well, in the same statement that leases: a control
-- committed before this statement began can never be claimed past.
WITH RECURSIVE tenants AS (
    (SELECT m.tenant, 1 AS n FROM sluice_messages m
     WHERE m.status = 'queued' AND m.parked_by IS NULL AND m.tenant > %(after)s
     ORDER BY m.tenant LIMIT 1)
    UNION ALL
    SELECT (SELECT m.tenant FROM sluice_messages m
            WHERE m.status = 'queued' AND m.parked_by IS NULL AND m.tenant > t.tenant
            ORDER BY m.tenant LIMIT 1), t.n + 1
    FROM tenants t
    WHERE t.tenant IS NOT NULL AND t.n < %(limit)s
),
offers AS (
    SELECT c.id, c.priority, c.run_at,
           2 * row_number() OVER (PARTITION BY t.tenant, k.retry
                                  ORDER BY c.priority DESC, c.run_at) - (NOT k.retry)::int AS turn
    FROM tenants t
    CROSS JOIN (VALUES (false), (true)) AS k(retry)
    CROSS JOIN LATERAL (
        SELECT m.id, m.priority, m.run_at FROM sluice_messages m
        WHERE m.tenant = t.tenant AND (m.attempts > 0) = k.retry
          AND m.status = 'queued' AND m.parked_by IS NULL AND m.run_at <= %(now)s
        ORDER BY m.priority DESC, m.run_at
        LIMIT (SELECT least(%(limit)s, greatest(16, ceil(2.0 * %(limit)s / count(*))))::int
               FROM tenants WHERE tenant IS NOT NULL)
    ) c
    WHERE t.tenant IS NOT NULL
),
-- The best offers, with room for what other workers' claims have locked meanwhile
-- (and a bound that keeps the planner on the primary key below).
offered AS (
    SELECT * FROM offers ORDER BY turn, priority DESC, run_at LIMIT 3 * %(limit)s
),
-- Each offer is looked up and locked by its id, in the offers' order, until %(limit)s
-- are taken: as a join, a table that grew since its statistics (a backlog enqueued
-- faster than autovacuum analyses) made the planner scan the whole ready index once
-- per offer (minutes per claim at a backlog of a million). The conditions rechecked on
-- the locked row are wrapped in IS TRUE (the same test: none of them can be null) so
-- that they cannot stand for the ready index's predicate: on a table never analysed
-- (the first minute of a new database) the planner otherwise took that index for the
-- lookup, with run_at as its condition, and read the whole backlog once per offer
-- (147 ms for a claim of 100 at 5,000 ready; 3 ms by primary key).
ready AS (
    SELECT l.id FROM offered o
    CROSS JOIN LATERAL (
        SELECT m.id FROM sluice_messages m
        WHERE m.id = o.id
          AND (m.status = 'queued' AND m.parked_by IS NULL AND m.run_at <= %(now)s) IS TRUE
          AND NOT EXISTS (
              SELECT 1 FROM sluice_controls c
              WHERE c.mode IN ('paused', 'killed')
                AND (c.expires_at IS NULL OR c.expires_at > %(now)s)
                AND (c.tenant = m.tenant OR (c.tenant = '' AND m.tenant <> '_sluice')) AND c.channel IN ('', m.channel)
                AND c.provider IN ('', m.provider) AND c.action IN ('', m.action))
        FOR UPDATE OF m SKIP LOCKED
    ) l
    ORDER BY o.turn, o.priority DESC, o.run_at
    LIMIT %(limit)s
)
UPDATE sluice_messages m
SET status = 'sending', attempts = m.attempts + 1, claim_seq = m.claim_seq + 1,
    worker_id = %(worker_id)s, claimed_at = %(now)s, lease_until = %(lease_until)s,
    updated_at = %(now)s
-- By primary key, one probe per locked row: joined with the CTE instead, the planner
-- hashes it and scans the whole table (6 ms of 13 at 20,000 rows, growing with them).
WHERE m.id = ANY (ARRAY(SELECT id FROM ready))
RETURNING m.id::text, m.tenant, m.channel, m.provider, m.action, m.recipient, m.payload,
          m.priority, m.run_at, m.attempts, m.max_attempts, m.claim_seq, m.idempotency_key,
          m.correlation_id, m.scopes, m.created_at, m.approved_by, m.deferrals,
          m.deferred_since, m.expires_at

-- name: message_pages
-- How big sluice_messages is, in pages: asked beside a claim now and then, to plan the
-- statements whose plan depends on it again once it has grown (PostgresStore.SIZED).
SELECT pg_relation_size('sluice_messages') / current_setting('block_size')::bigint

-- name: message_complete_many
-- The batch arrives as one JSON array (one C-level json.dumps in Python instead of
-- sixteen typed arrays dumped element by element); times are Unix epoch seconds.
-- Rows without an outcome were held before any provider call: no attempt row.
WITH input AS (
    SELECT *, %(worker_id)s::text AS worker, true AS leased
    FROM json_to_recordset(%(batch)s::json) AS t(
        id uuid, claim_seq int, status text, run_at double precision, refund int,
        provider_message_id text, provider text, started_at double precision,
        finished_at double precision, outcome text, error_code text, error_class text,
        provider_status text, provider_code text, detail text, latency_ms real,
        hold_reason text, deferred_at double precision)
), locked AS (
    -- Locked first, in id order, as the heartbeat's renewal locks them (see
    -- message_renew): two statements locking one set of rows in one order never
    -- deadlock, whatever plans they get. By primary key, one probe per outcome: the
    -- planner takes the JSON batch for 100 rows, and joined with it (IN, or FROM
    -- below) a table of a few thousand rows was read whole, twice per write-back
    -- (2-3 ms for 10 outcomes; tests/integration/test_pg_replan.py).
    SELECT m.id FROM sluice_messages m
    WHERE m.id = ANY (ARRAY(SELECT id FROM input))
    ORDER BY m.id
    FOR UPDATE OF m
), done AS (
    UPDATE sluice_messages m
    SET status = i.status,
        deferrals = m.deferrals + (i.deferred_at IS NOT NULL)::int,
        deferred_since = coalesce(m.deferred_since, to_timestamp(i.deferred_at)),
        run_at = coalesce(to_timestamp(i.run_at), m.run_at),
        attempts = m.attempts - coalesce(i.refund, 0),
        lease_until = NULL,
        last_error_code = i.error_code,
        last_error = i.detail,
        provider_message_id = coalesce(i.provider_message_id, m.provider_message_id),
        hold_reason = i.hold_reason,
        -- post-send verification (issue 15): sent, confirmation is due within verify_within
        verify_by = CASE WHEN i.status = 'sent'
                         THEN %(now)s::timestamptz + make_interval(secs => m.verify_within)
                         ELSE m.verify_by END,
        updated_at = %(now)s
    FROM input i
    -- The claim guard ("lease_until IS NOT NULL" means "sending": a CHECK holds them
    -- equal) is compared with the input's columns, so it is checked as part of the
    -- join (and rechecked on a row another transaction changed), never as a filter of
    -- the scan of sluice_messages: statistics taken while no row was leased make such
    -- a filter look like it leaves one row, and the planner then scans every leased
    -- row once per input row (quadratic: 1.8 s for a flush of 2,500 at 4,000 rows).
    WHERE m.id = ANY (ARRAY(SELECT id FROM locked))  -- evaluated once, first: every lock taken
      AND m.id = i.id AND m.claim_seq = i.claim_seq AND m.worker_id = i.worker
      AND (m.lease_until IS NOT NULL) = i.leased
    -- Carry "no attempt" out of the UPDATE: re-joining done with input would be a join
    -- of two CTEs, which have no statistics, and the planner picks a nested loop
    -- (quadratic in the batch: 2.5 s for 4,000 rows).
    RETURNING m.id, i.outcome IS NULL AS no_attempt
), recorded AS (
    INSERT INTO sluice_attempts (
        message_id, attempt_no, worker_id, provider, started_at, finished_at, outcome,
        error_code, error_class, provider_status, provider_code, detail, latency_ms, applied)
    SELECT i.id, i.claim_seq, %(worker_id)s, i.provider, to_timestamp(i.started_at),
           to_timestamp(i.finished_at), i.outcome, i.error_code, i.error_class,
           i.provider_status, i.provider_code, i.detail, i.latency_ms,
           -- A hashed subplan: joined instead (two CTEs, no statistics), the planner
           -- nests loops, quadratic in the batch (1.9 s for a flush of 2,500).
           i.id IN (SELECT id FROM done)
    FROM input i
    WHERE i.outcome IS NOT NULL  -- held before any provider call: no attempt was made
    RETURNING message_id::text, applied
), held AS (
    SELECT id FROM done WHERE no_attempt
)
SELECT message_id, applied FROM recorded
UNION ALL
SELECT id::text, true FROM held

-- name: message_release
UPDATE sluice_messages m
SET status = 'queued', attempts = m.attempts - 1, lease_until = NULL, updated_at = %(now)s
FROM unnest(%(ids)s::uuid[], %(claim_seqs)s::int[]) AS r(id, claim_seq)
WHERE m.id = r.id AND m.claim_seq = r.claim_seq AND m.lease_until IS NOT NULL
  AND m.worker_id = %(worker_id)s
RETURNING m.id::text

-- name: message_renew
-- A live worker's claims keep their leases: only a dead or cut-off worker's run out.
-- The rows are locked first, in id order, as the write-back locks them: the heartbeat
-- and a write-back of the same worker touch the same rows at once, and locked in the
-- orders their plans happened to give they deadlocked (a failed heartbeat; three in a
-- row fence the worker).
WITH locked AS (
    SELECT m.id FROM sluice_messages m
    WHERE m.id = ANY (%(ids)s::uuid[])
    ORDER BY m.id
    FOR UPDATE OF m
)
UPDATE sluice_messages m
SET lease_until = greatest(m.lease_until, %(lease_until)s)
FROM unnest(%(ids)s::uuid[], %(claim_seqs)s::int[]) AS r(id, claim_seq)
WHERE m.id = r.id AND m.claim_seq = r.claim_seq AND m.lease_until IS NOT NULL
  AND m.worker_id = %(worker_id)s
  AND (SELECT count(*) FROM locked) >= 0  -- evaluated once, first: every lock taken
RETURNING m.id::text

-- name: message_rescue_expired
WITH expired AS (
    SELECT id FROM sluice_messages
    WHERE status = 'sending' AND lease_until < %(now)s
    ORDER BY lease_until
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), moved AS (
    UPDATE sluice_messages m
    SET status = CASE WHEN m.attempts >= m.max_attempts THEN 'dead' ELSE 'queued' END,
        run_at = %(now)s,
        lease_until = NULL,
        last_error_code = 'LEASE_EXPIRED',
        last_error = 'lease expired while claimed by worker ' || coalesce(m.worker_id, '?'),
        updated_at = %(now)s
    FROM expired e
    WHERE m.id = e.id
    RETURNING m.id, m.claim_seq, m.worker_id, m.provider, m.claimed_at, m.status
), recorded AS (
    INSERT INTO sluice_attempts (
        message_id, attempt_no, worker_id, provider, started_at, finished_at, outcome,
        error_code, error_class, detail, applied)
    SELECT id, claim_seq, coalesce(worker_id, '?'), provider, coalesce(claimed_at, %(now)s),
           %(now)s, 'lease_expired', 'LEASE_EXPIRED', 'transient',
           'lease expired before the outcome was written; the provider may or may not have acted',
           true
    FROM moved
)
SELECT id::text, status FROM moved

-- name: message_get
SELECT id::text, tenant, channel, provider, action, recipient, payload, priority, status,
       run_at, attempts, max_attempts, claim_seq, idempotency_key, correlation_id, scopes,
       created_at, updated_at, last_error_code, last_error, provider_message_id, worker_id,
       lease_until, hold_reason, approved_by, approved_at, deferrals, deferred_since, expires_at,
       verify_within, verify_by
FROM sluice_messages WHERE id = %(id)s::uuid

-- name: message_get_many
SELECT id::text, tenant, channel, provider, action, recipient, payload, priority, status,
       run_at, attempts, max_attempts, claim_seq, idempotency_key, correlation_id, scopes,
       created_at, updated_at, last_error_code, last_error, provider_message_id, worker_id,
       lease_until, hold_reason, approved_by, approved_at, deferrals, deferred_since, expires_at,
       verify_within, verify_by
FROM sluice_messages WHERE id = ANY(%(ids)s::uuid[])

-- name: attempt_list
SELECT message_id::text, attempt_no, worker_id, provider, started_at, finished_at, outcome,
       error_code, error_class, provider_status, provider_code, detail, latency_ms, applied
FROM sluice_attempts WHERE message_id = %(id)s::uuid ORDER BY attempt_no, id

-- name: status_counts
-- One branch per partial index, each an index-only scan (the final statuses from the
-- index retention purges by): no branch reads the table, which at a million rows of
-- history took 0.45 s where this takes a third of it.
SELECT status, count(*) FROM (
    SELECT 'queued' AS status FROM sluice_messages
    WHERE status = 'queued' AND parked_by IS NULL
    UNION ALL
    SELECT 'queued' FROM sluice_messages WHERE status = 'queued' AND parked_by IS NOT NULL
    UNION ALL
    SELECT 'sending' FROM sluice_messages WHERE status = 'sending'
    UNION ALL
    SELECT 'held' FROM sluice_messages WHERE status = 'held'
    UNION ALL
    SELECT status FROM sluice_messages WHERE status NOT IN ('queued', 'sending', 'held')
) m
GROUP BY status

-- name: oldest_ready
-- Ready and parked apart, each from its partial index (together they scanned the table).
SELECT min(run_at) FROM (
    SELECT min(run_at) AS run_at FROM sluice_messages
    WHERE status = 'queued' AND parked_by IS NULL AND run_at <= %(now)s
    UNION ALL
    SELECT min(run_at) FROM sluice_messages
    WHERE status = 'queued' AND parked_by IS NOT NULL AND run_at <= %(now)s
) m

-- name: dlq_groups
SELECT channel, coalesce(last_error_code, 'UNKNOWN') AS error_code, count(*) AS n,
       min(updated_at) AS first_at, max(updated_at) AS last_at
FROM sluice_messages
WHERE status = 'dead'
  AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s)
  AND (%(channel)s::text IS NULL OR channel = %(channel)s)
  AND (%(provider)s::text IS NULL OR provider = %(provider)s)
  AND (%(action)s::text IS NULL OR action = %(action)s)
  AND (%(error_code)s::text IS NULL OR coalesce(last_error_code, 'UNKNOWN') = %(error_code)s)
  AND (%(since)s::timestamptz IS NULL OR updated_at >= %(since)s)
GROUP BY channel, coalesce(last_error_code, 'UNKNOWN')
ORDER BY n DESC, channel, error_code

-- name: message_select_by_status
SELECT id::text FROM sluice_messages
WHERE status = %(status)s
  AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s)
  AND (%(channel)s::text IS NULL OR channel = %(channel)s)
  AND (%(provider)s::text IS NULL OR provider = %(provider)s)
  AND (%(action)s::text IS NULL OR action = %(action)s)
  AND (%(error_code)s::text IS NULL OR last_error_code = %(error_code)s
       OR (%(error_code)s::text = 'UNKNOWN' AND last_error_code IS NULL))
  AND (%(reason)s::text IS NULL OR strpos(hold_reason, %(reason)s) > 0)
  AND (%(since)s::timestamptz IS NULL OR updated_at >= %(since)s)
ORDER BY updated_at, id
LIMIT %(limit)s

-- name: message_requeue
UPDATE sluice_messages
SET status = 'queued', attempts = 0, run_at = %(now)s, lease_until = NULL, hold_reason = NULL,
    deferrals = 0, deferred_since = NULL, updated_at = %(now)s
WHERE id = ANY(%(ids)s::uuid[]) AND status = %(from_status)s
RETURNING id::text

-- name: message_cancel
UPDATE sluice_messages
SET status = 'cancelled', parked_by = NULL, lease_until = NULL, updated_at = %(now)s
WHERE id = ANY(%(ids)s::uuid[]) AND status = %(from_status)s
RETURNING id::text

-- name: message_approve
-- Approved messages pass an approval control once; every other control still applies.
UPDATE sluice_messages
SET status = 'queued', run_at = %(now)s, hold_reason = NULL, approved_by = %(actor)s,
    approved_at = %(now)s, updated_at = %(now)s
WHERE id = ANY(%(ids)s::uuid[]) AND status = %(from_status)s
RETURNING id::text

-- name: flow_version
SELECT version FROM sluice_flow_epoch WHERE id = 1

-- name: flow_bump
UPDATE sluice_flow_epoch SET version = version + 1, changed_at = %(now)s WHERE id = 1
RETURNING version

-- name: control_select
SELECT id::text, tenant, channel, provider, action, mode, actor, reason, created_at,
       expires_at, version
FROM sluice_controls ORDER BY tenant, channel, provider, action

-- name: control_upsert
INSERT INTO sluice_controls (
    id, tenant, channel, provider, action, mode, actor, reason, created_at, expires_at, version)
VALUES (%(id)s, %(tenant)s, %(channel)s, %(provider)s, %(action)s, %(mode)s, %(actor)s,
        %(reason)s, %(now)s, %(expires_at)s, %(version)s)
ON CONFLICT (tenant, channel, provider, action) DO UPDATE
SET mode = excluded.mode, actor = excluded.actor, reason = excluded.reason,
    created_at = excluded.created_at, expires_at = excluded.expires_at,
    version = excluded.version
RETURNING id::text, tenant, channel, provider, action, mode, actor, reason, created_at,
          expires_at, version

-- name: control_delete
DELETE FROM sluice_controls
WHERE tenant = %(tenant)s AND channel = %(channel)s AND provider = %(provider)s
  AND action = %(action)s
RETURNING id::text, tenant, channel, provider, action, mode, actor, reason, created_at,
          expires_at, version

-- name: control_delete_expired
DELETE FROM sluice_controls WHERE expires_at IS NOT NULL AND expires_at <= %(now)s
RETURNING id::text, tenant, channel, provider, action, mode, actor, reason, created_at,
          expires_at, version

-- name: message_release_controlled
-- Messages a control held, in (or under) a scope, back to the queue: the claim query and
-- the workers' checks hold them again if another control still covers them.
UPDATE sluice_messages
SET status = 'queued', hold_reason = NULL, run_at = %(now)s, updated_at = %(now)s
WHERE status = 'held' AND hold_reason LIKE 'control:%%'
  AND (%(tenant)s = '' OR tenant = %(tenant)s) AND (%(channel)s = '' OR channel = %(channel)s)
  AND (%(provider)s = '' OR provider = %(provider)s) AND (%(action)s = '' OR action = %(action)s)
RETURNING id::text

-- name: message_hold_controlled
-- Queued messages under a kill, moved to held in chunks (the claim query already skips
-- them; holding makes them visible to `sluice held list`).
UPDATE sluice_messages m
SET status = 'held', parked_by = NULL, hold_reason = %(reason)s, updated_at = %(now)s
WHERE m.id IN (
    SELECT id FROM sluice_messages
    WHERE status = 'queued'
      AND (%(tenant)s = '' AND tenant <> '_sluice' OR tenant = %(tenant)s) AND (%(channel)s = '' OR channel = %(channel)s)
      AND (%(provider)s = '' OR provider = %(provider)s)
      AND (%(action)s = '' OR action = %(action)s)
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED)
  -- Only while that kill is still in force: one resumed or expired since the caller read
  -- the controls must not strand messages in held with nothing left to release them.
  AND EXISTS (
      SELECT 1 FROM sluice_controls c
      WHERE c.id = %(control_id)s::uuid AND c.mode = 'killed'
        AND (c.expires_at IS NULL OR c.expires_at > %(now)s))
RETURNING m.id::text

-- name: control_lock_pause
-- Parking runs under a share lock on its pause: the pause's end (a delete, or an update
-- to another mode) waits for the parking to commit, then unparks what it parked.
SELECT 1 FROM sluice_controls
WHERE id = %(id)s::uuid AND mode = 'paused'
  AND (expires_at IS NULL OR expires_at > %(now)s)
FOR SHARE

-- name: message_park
-- Queued messages in a pause's scope, taken out of the ready index in chunks.
UPDATE sluice_messages SET parked_by = %(control_id)s::uuid
WHERE id IN (
    SELECT id FROM sluice_messages
    WHERE status = 'queued' AND parked_by IS NULL
      AND (%(tenant)s = '' AND tenant <> '_sluice' OR tenant = %(tenant)s) AND (%(channel)s = '' OR channel = %(channel)s)
      AND (%(provider)s = '' OR provider = %(provider)s)
      AND (%(action)s = '' OR action = %(action)s)
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED)

-- name: message_unpark
-- The end of a pause: what it parked is ready again (the claim query still skips what
-- another control covers, and the next sweep parks it under that one).
UPDATE sluice_messages SET parked_by = NULL WHERE parked_by = %(control_id)s::uuid

-- name: worker_ack
UPDATE sluice_workers SET flow_version = greatest(flow_version, %(version)s),
    flow_acked_at = %(now)s
WHERE id = %(id)s

-- name: flow_state_prepare
-- Create the cells a limiter round needs (stamp -1: "did not exist") so that every
-- worker then locks the same rows.
INSERT INTO sluice_flow_state (key, value, stamp, expires_at)
SELECT k, 0, -1, extract(epoch FROM clock_timestamp()) + 3600
FROM unnest(%(keys)s::text[]) AS k
ON CONFLICT (key) DO NOTHING

-- name: flow_state_lock
-- In key order, so two workers never deadlock; the database's clock is the one clock
-- every host shares.
SELECT key, value, stamp, extract(epoch FROM clock_timestamp())::double precision
FROM sluice_flow_state WHERE key = ANY(%(keys)s::text[])
ORDER BY key
FOR UPDATE

-- name: flow_state_write
UPDATE sluice_flow_state s
SET value = w.value, stamp = w.stamp, expires_at = w.expires_at
FROM unnest(%(keys)s::text[], %(values)s::double precision[], %(stamps)s::double precision[],
            %(expires)s::double precision[]) AS w(key, value, stamp, expires_at)
WHERE s.key = w.key

-- name: flow_state_purge
-- In key order and skipping rows a limiter holds, like the limiter's own locks: a purge
-- never deadlocks with a worker, nor deletes a cell under one.
DELETE FROM sluice_flow_state WHERE key IN (
    SELECT key FROM sluice_flow_state WHERE expires_at < %(now)s
    ORDER BY key FOR UPDATE SKIP LOCKED)

-- name: throttle_set
-- The mark in force (a later one never shortens) goes to every worker at commit.
WITH mark AS (
    INSERT INTO sluice_throttles (tenant, provider, until, reason, set_at)
    VALUES (%(tenant)s, %(provider)s, %(until)s, %(reason)s, %(now)s)
    ON CONFLICT (tenant, provider) DO UPDATE
    SET until = greatest(sluice_throttles.until, excluded.until), reason = excluded.reason,
        set_at = excluded.set_at
    RETURNING tenant, provider, until, reason, set_at
)
SELECT pg_notify('sluice_flow', json_build_object(
    'throttle', json_build_array(tenant, provider, until, reason, set_at))::text)
FROM mark

-- name: clock_now
SELECT clock_timestamp()

-- name: flow_notify
SELECT pg_notify('sluice_flow', %(payload)s)

-- name: throttle_list
SELECT tenant, provider, until, reason, set_at FROM sluice_throttles WHERE until > %(now)s
ORDER BY tenant, provider

-- name: throttle_purge
DELETE FROM sluice_throttles WHERE until <= %(now)s

-- name: limit_select
SELECT kind, tenant, provider, action, spec::text, actor, reason, updated_at
FROM sluice_limits ORDER BY kind, tenant, provider, action

-- name: limit_upsert
INSERT INTO sluice_limits (kind, tenant, provider, action, spec, actor, reason, updated_at)
VALUES (%(kind)s, %(tenant)s, %(provider)s, %(action)s, %(spec)s::jsonb, %(actor)s, %(reason)s,
        %(now)s)
ON CONFLICT (kind, tenant, provider, action) DO UPDATE
SET spec = excluded.spec, actor = excluded.actor, reason = excluded.reason,
    updated_at = excluded.updated_at

-- name: limit_delete
DELETE FROM sluice_limits
WHERE kind = %(kind)s AND tenant = %(tenant)s AND provider = %(provider)s AND action = %(action)s
RETURNING kind

-- name: audit_lock
SELECT pg_advisory_xact_lock(7243312502)

-- name: audit_last_hash
SELECT hash FROM sluice_audit ORDER BY id DESC LIMIT 1

-- name: audit_insert
INSERT INTO sluice_audit (at, actor, action, target, reason, detail, prev_hash, hash)
VALUES (%(at)s, %(actor)s, %(action)s, %(target)s, %(reason)s, %(detail)s::jsonb,
        %(prev_hash)s, %(hash)s)
RETURNING id

-- name: audit_last_of
-- Walks the primary key backwards: run once per worker start, not per message.
SELECT detail::text FROM sluice_audit
WHERE action = %(action)s AND target IS NOT DISTINCT FROM %(target)s
ORDER BY id DESC LIMIT 1

-- name: audit_list
SELECT id, at, actor, action, target, reason, detail::text, prev_hash, hash
FROM sluice_audit ORDER BY id DESC LIMIT %(limit)s

-- name: worker_upsert
INSERT INTO sluice_workers (id, host, pid, started_at, last_seen_at, in_flight, sent_total)
VALUES (%(id)s, %(host)s, %(pid)s, %(now)s, %(now)s, %(in_flight)s, %(sent_total)s)
ON CONFLICT (id) DO UPDATE
SET last_seen_at = excluded.last_seen_at, in_flight = excluded.in_flight,
    sent_total = excluded.sent_total, stopped_at = NULL

-- name: worker_stop
UPDATE sluice_workers SET stopped_at = %(now)s, last_seen_at = %(now)s, in_flight = 0
WHERE id = %(id)s

-- name: worker_list
SELECT id, host, pid, started_at, last_seen_at, stopped_at, in_flight, sent_total,
       flow_version, flow_acked_at
FROM sluice_workers
WHERE stopped_at IS NULL OR stopped_at > %(since)s
ORDER BY started_at

-- name: connection_insert
INSERT INTO sluice_connections (
    id, tenant, provider, state, state_reason, state_changed_at, scopes, missing_scopes,
    ciphertext, key_id, credential_version, expires_at, created_at, updated_at)
VALUES (%(id)s, %(tenant)s, %(provider)s, 'active', NULL, %(now)s, %(scopes)s::jsonb, '[]',
        %(ciphertext)s, %(key_id)s, 1, %(expires_at)s, %(now)s, %(now)s)
ON CONFLICT (tenant, provider) DO NOTHING
RETURNING id::text

-- name: connection_select
SELECT id::text, tenant, provider, state, state_reason, state_changed_at, scopes,
       missing_scopes, ciphertext, key_id, credential_version, expires_at, last_check_at,
       last_check_ok_at, last_check_error, created_at, updated_at
FROM sluice_connections
WHERE (%(tenant)s::text IS NULL OR tenant = %(tenant)s)
  AND (%(provider)s::text IS NULL OR provider = %(provider)s)
ORDER BY tenant, provider

-- name: connection_select_for_update
SELECT id::text, tenant, provider, state, state_reason, state_changed_at, scopes,
       missing_scopes, ciphertext, key_id, credential_version, expires_at, last_check_at,
       last_check_ok_at, last_check_error, created_at, updated_at
FROM sluice_connections
WHERE tenant = %(tenant)s AND provider = %(provider)s
FOR UPDATE

-- name: connection_set_state
UPDATE sluice_connections
SET state = %(state)s, state_reason = %(reason)s, state_changed_at = %(now)s,
    missing_scopes = %(missing_scopes)s::jsonb, updated_at = %(now)s
WHERE tenant = %(tenant)s AND provider = %(provider)s AND state <> %(state)s
  -- A worker's verdict applies only to the credentials it used, on an active connection:
  -- a late 401 must not undo a re-consent nor overwrite an operator's revoke.
  AND (%(expected_version)s::int IS NULL
       OR (credential_version = %(expected_version)s AND state = 'active'))
RETURNING id::text

-- name: connection_rotate
UPDATE sluice_connections
SET state = 'active', state_reason = %(reason)s, state_changed_at = %(now)s,
    missing_scopes = '[]', scopes = coalesce(%(scopes)s::jsonb, scopes),
    ciphertext = coalesce(%(ciphertext)s, ciphertext), key_id = coalesce(%(key_id)s, key_id),
    expires_at = CASE WHEN %(ciphertext)s::bytea IS NULL
                      THEN coalesce(%(expires_at)s, expires_at) ELSE %(expires_at)s END,
    credential_version = credential_version + 1, updated_at = %(now)s
WHERE tenant = %(tenant)s AND provider = %(provider)s
RETURNING id::text

-- name: connection_store_secret
UPDATE sluice_connections
SET ciphertext = %(ciphertext)s, key_id = %(key_id)s, expires_at = %(expires_at)s,
    updated_at = %(now)s
-- Compare-and-swap: a refresh or rotation in between wins; the caller re-reads.
WHERE id = %(id)s::uuid AND credential_version = %(expected_version)s
RETURNING id::text

-- name: connection_refresh_lock_timeout
-- A worker that froze while holding a connection's row lock must not stall every other
-- worker's sends for that connection: they give up waiting after this long.
SELECT set_config('lock_timeout', %(lock_timeout)s, true)

-- name: connection_refresh_store
-- Compare-and-swap: only over the credentials the refresher read, and only while active
-- (an operator's revoke or rotate in between wins).
UPDATE sluice_connections
SET ciphertext = %(ciphertext)s, key_id = %(key_id)s, expires_at = %(expires_at)s,
    scopes = coalesce(%(scopes)s::jsonb, scopes),
    credential_version = credential_version + 1, updated_at = %(now)s
WHERE id = %(id)s::uuid AND credential_version = %(version)s AND state = 'active'
RETURNING credential_version

-- name: connection_refresh_fail
UPDATE sluice_connections
SET state = %(state)s, state_reason = %(reason)s, state_changed_at = %(now)s,
    updated_at = %(now)s
WHERE id = %(id)s::uuid AND credential_version = %(version)s AND state = 'active'
RETURNING id::text

-- name: connection_record_check
UPDATE sluice_connections
SET last_check_at = %(now)s,
    last_check_ok_at = CASE WHEN %(ok)s THEN %(now)s ELSE last_check_ok_at END,
    last_check_error = %(error)s,
    expires_at = coalesce(%(expires_at)s, expires_at),
    updated_at = %(now)s
WHERE id = %(id)s::uuid

-- name: message_hold_queued
UPDATE sluice_messages
SET status = 'held', parked_by = NULL, hold_reason = %(reason)s, updated_at = %(now)s
WHERE tenant = %(tenant)s AND provider = %(provider)s AND status = 'queued'
RETURNING id::text

-- name: message_release_held
WITH moved AS (
    UPDATE sluice_messages
    SET status = 'queued', hold_reason = NULL, updated_at = %(now)s
    WHERE tenant = %(tenant)s AND provider = %(provider)s AND status = 'held'
      AND hold_reason LIKE %(prefix)s || '%%'
    RETURNING id, run_at
)
SELECT id::text FROM moved ORDER BY run_at, id

-- name: connection_select_pairs
-- The connections of one claimed batch, every (tenant, provider) pair in one query.
SELECT id::text, tenant, provider, state, state_reason, state_changed_at, scopes,
       missing_scopes, ciphertext, key_id, credential_version, expires_at, last_check_at,
       last_check_ok_at, last_check_error, created_at, updated_at
FROM sluice_connections
WHERE (tenant, provider) IN (
    SELECT * FROM unnest(%(tenants)s::text[], %(providers)s::text[]))

-- name: connection_select_claimed
-- connection_select_pairs for the batch message_claim just leased with the same
-- parameters, sent with it in one pipeline (one round trip from claim to send): the
-- pairs come from the rows under this worker's lease of exactly that claim (an equality
-- probe of sluice_messages_leased).
SELECT c.id::text, c.tenant, c.provider, c.state, c.state_reason, c.state_changed_at,
       c.scopes, c.missing_scopes, c.ciphertext, c.key_id, c.credential_version,
       c.expires_at, c.last_check_at, c.last_check_ok_at, c.last_check_error,
       c.created_at, c.updated_at
FROM sluice_connections c
WHERE (c.tenant, c.provider) IN (
    SELECT m.tenant, m.provider FROM sluice_messages m
    WHERE m.status = 'sending' AND m.lease_until = %(lease_until)s
      AND m.worker_id = %(worker_id)s)

-- name: breaker_report
-- One worker's outcomes since its last sync, added to their buckets, and its successful
-- probes, added to breakers that are still half-open; one statement. The batch comes
-- sorted by (key, bucket), so two workers flushing at once lock rows in the same order.
WITH counted AS (
    INSERT INTO sluice_breaker_window AS w (key, bucket, ok, failed)
    SELECT * FROM unnest(%(keys)s::text[], %(buckets)s::bigint[], %(oks)s::bigint[],
                         %(faileds)s::bigint[])
    ON CONFLICT (key, bucket) DO UPDATE
    SET ok = w.ok + excluded.ok, failed = w.failed + excluded.failed
    RETURNING 1
), probed AS (
    UPDATE sluice_breakers b
    SET probes_ok = b.probes_ok + p.n, updated_at = %(now)s
    FROM unnest(%(probe_keys)s::text[], %(probe_counts)s::int[]) AS p(key, n)
    WHERE b.key = p.key AND b.state = 'half_open'
    RETURNING 1
)
SELECT (SELECT count(*) FROM counted), (SELECT count(*) FROM probed)

-- name: breaker_window
SELECT key, sum(ok)::bigint, sum(failed)::bigint
FROM sluice_breaker_window
WHERE bucket >= %(since_bucket)s
  AND (%(keys)s::text[] IS NULL OR key = ANY(%(keys)s::text[]))
GROUP BY key

-- name: breaker_list
SELECT key, provider, tenant, state, since, retry_at, forced, reason, probes_ok, updated_at
FROM sluice_breakers ORDER BY key

-- name: breaker_transition
-- Compare-and-swap on the state: with an expected state only a row in it and not forced
-- moves (no row at all counts as closed, and is created); of two workers racing, the
-- second finds the row moved, or its insert conflicts, and returns nothing.
WITH moved AS (
    UPDATE sluice_breakers
    SET state = %(state)s, since = %(now)s, retry_at = %(retry_at)s::timestamptz,
        forced = %(forced)s, reason = %(reason)s, probes_ok = 0, updated_at = %(now)s
    WHERE key = %(key)s
      AND (%(expected)s::text IS NULL OR (state = %(expected)s::text AND NOT forced))
    RETURNING key
), created AS (
    INSERT INTO sluice_breakers (
        key, provider, tenant, state, since, retry_at, forced, reason, probes_ok, updated_at)
    SELECT %(key)s, %(provider)s, %(tenant)s, %(state)s, %(now)s::timestamptz,
           %(retry_at)s::timestamptz, %(forced)s::boolean, %(reason)s, 0, %(now)s::timestamptz
    WHERE NOT EXISTS (SELECT 1 FROM moved)
      AND coalesce(%(expected)s::text, 'closed') = 'closed'
    ON CONFLICT (key) DO NOTHING
    RETURNING key
)
SELECT key FROM moved UNION ALL SELECT key FROM created

-- name: breaker_clear_window
DELETE FROM sluice_breaker_window WHERE key = %(key)s

-- name: breaker_purge
WITH gone AS (
    DELETE FROM sluice_breaker_window WHERE bucket < %(before_bucket)s RETURNING 1
)
SELECT count(*) FROM gone

-- name: message_list
-- A page of messages, newest first; the id is time-ordered, so it is also the cursor.
SELECT id::text, tenant, channel, provider, action, recipient, payload, priority, status,
       run_at, attempts, max_attempts, claim_seq, idempotency_key, correlation_id, scopes,
       created_at, updated_at, last_error_code, last_error, provider_message_id, worker_id,
       lease_until, hold_reason, approved_by, approved_at, deferrals, deferred_since, expires_at,
       verify_within, verify_by
FROM sluice_messages
WHERE (%(tenant)s::text IS NULL OR tenant = %(tenant)s::text)
  AND (%(status)s::text IS NULL OR status = %(status)s::text)
  AND (%(channel)s::text IS NULL OR channel = %(channel)s::text)
  AND (%(provider)s::text IS NULL OR provider = %(provider)s::text)
  AND (%(action)s::text IS NULL OR action = %(action)s::text)
  AND (%(error_code)s::text IS NULL OR last_error_code = %(error_code)s::text
       OR (%(error_code)s::text = 'UNKNOWN' AND last_error_code IS NULL))
  AND (%(since)s::timestamptz IS NULL OR created_at >= %(since)s::timestamptz)
  AND (%(correlation_id)s::text IS NULL OR correlation_id = %(correlation_id)s::text)
  AND (%(until)s::timestamptz IS NULL OR created_at < %(until)s::timestamptz)
  AND (%(updated_since)s::timestamptz IS NULL OR updated_at >= %(updated_since)s::timestamptz)
  AND (%(updated_until)s::timestamptz IS NULL OR updated_at < %(updated_until)s::timestamptz)
  AND (%(before_id)s::uuid IS NULL OR id < %(before_id)s::uuid)
ORDER BY id DESC
LIMIT %(limit)s

-- name: api_key_insert
INSERT INTO sluice_api_keys (id, name, role, tenant, secret_hash, created_by, created_at)
VALUES (%(id)s, %(name)s, %(role)s, %(tenant)s, %(secret_hash)s, %(created_by)s, %(created_at)s)
ON CONFLICT DO NOTHING
RETURNING id

-- name: api_key_get
SELECT id, name, role, tenant, secret_hash, created_by, created_at, revoked_at
FROM sluice_api_keys WHERE id = %(id)s

-- name: api_key_list
SELECT id, name, role, tenant, secret_hash, created_by, created_at, revoked_at
FROM sluice_api_keys ORDER BY created_at, id

-- name: api_key_revoke
UPDATE sluice_api_keys SET revoked_at = %(now)s
WHERE id = %(id)s AND revoked_at IS NULL
RETURNING id

-- name: idem_begin
-- Take the key when it is new, forgotten (past the window) or abandoned (a running
-- claim past its lock); otherwise leave the row and report what is there.
WITH taken AS (
    INSERT INTO sluice_idempotency AS i (
        scope, key, fingerprint, state, created_at, locked_until)
    VALUES (%(scope)s, %(key)s, %(fingerprint)s, 'running', %(now)s, %(locked_until)s)
    ON CONFLICT (scope, key) DO UPDATE
    SET fingerprint = excluded.fingerprint, state = 'running', status_code = NULL,
        response = NULL, created_at = excluded.created_at, locked_until = excluded.locked_until
    WHERE i.created_at < %(forget_before)s
       OR (i.state = 'running' AND i.locked_until < %(now)s
           AND i.fingerprint = excluded.fingerprint)
    RETURNING 1
)
SELECT 'new', NULL::text, NULL::integer, NULL::text FROM taken
UNION ALL
SELECT state, fingerprint, status_code, response FROM sluice_idempotency
WHERE scope = %(scope)s AND key = %(key)s AND NOT EXISTS (SELECT 1 FROM taken)

-- name: idem_finish
UPDATE sluice_idempotency
SET state = 'done', status_code = %(status_code)s, response = %(response)s
WHERE scope = %(scope)s AND key = %(key)s AND state = 'running'

-- name: idem_release
DELETE FROM sluice_idempotency WHERE scope = %(scope)s AND key = %(key)s AND state = 'running'

-- name: idem_purge
WITH gone AS (
    DELETE FROM sluice_idempotency WHERE created_at < %(before)s RETURNING 1
)
SELECT count(*) FROM gone

-- name: inbox_put
-- One statement for the whole request; ON CONFLICT is the dedupe ledger.
INSERT INTO sluice_inbox (
    provider, event_id, kind, status, message_id, provider_message_id, occurred_at,
    error_code, detail, address, data, received_at, run_at, source_tenant)
SELECT x.provider, x.event_id, x.kind, x.status, x.message_id, x.provider_message_id,
       x.occurred_at, x.error_code, x.detail, x.address, x.data, %(now)s, %(now)s,
       x.source_tenant
FROM jsonb_to_recordset(%(batch)s::jsonb) AS x(
    provider text, event_id text, kind text, status text, message_id text,
    provider_message_id text, occurred_at timestamptz, error_code text, detail text,
    address text, data jsonb, source_tenant text)
ON CONFLICT (provider, source_tenant, event_id) DO NOTHING
RETURNING provider, source_tenant, event_id

-- name: inbox_claim
WITH due AS (
    SELECT id FROM sluice_inbox
    WHERE state = 'pending' AND run_at <= %(now)s
      AND (lease_until IS NULL OR lease_until < %(now)s)
    ORDER BY run_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE sluice_inbox AS b
SET attempts = b.attempts + 1, lease_until = %(lease_until)s
FROM due WHERE b.id = due.id
RETURNING b.id, b.provider, b.event_id, b.kind, b.status, b.message_id, b.provider_message_id,
          b.occurred_at, b.error_code, b.detail, b.address, b.data, b.received_at, b.state,
          b.attempts, b.last_error, b.result, nullif(b.source_tenant, '')

-- name: inbox_hold
-- The claim still stands (its attempt number is the latest) and holds the row until commit.
SELECT id FROM sluice_inbox
WHERE id = %(id)s AND attempts = %(attempt)s AND state = 'pending'
FOR UPDATE

-- name: inbox_done
UPDATE sluice_inbox
SET state = 'done', result = %(result)s, done_at = %(now)s, lease_until = NULL
WHERE id = %(id)s AND attempts = %(attempt)s AND state = 'pending'

-- name: inbox_retry
UPDATE sluice_inbox
SET run_at = %(run_at)s, last_error = %(error)s, lease_until = NULL
WHERE id = %(id)s AND attempts = %(attempt)s AND state = 'pending'
RETURNING id

-- name: inbox_dead
UPDATE sluice_inbox
SET state = 'dead', last_error = %(error)s, lease_until = NULL, done_at = %(now)s
WHERE id = %(id)s AND attempts = %(attempt)s AND state = 'pending'
RETURNING id

-- name: inbox_reject
UPDATE sluice_inbox
SET state = 'rejected', last_error = %(error)s, result = 'rejected', lease_until = NULL,
    done_at = %(now)s
WHERE id = %(id)s AND attempts = %(attempt)s AND state = 'pending'
RETURNING id

-- name: inbox_list
SELECT id, provider, event_id, kind, status, message_id, provider_message_id, occurred_at,
       error_code, detail, address, data, received_at, state, attempts, last_error, result,
       nullif(source_tenant, '')
FROM sluice_inbox
WHERE (%(state)s::text IS NULL OR state = %(state)s::text)
  AND (%(provider)s::text IS NULL OR provider = %(provider)s::text)
  AND (%(before_id)s::bigint IS NULL OR id < %(before_id)s::bigint)
ORDER BY id DESC
LIMIT %(limit)s

-- name: inbox_requeue
UPDATE sluice_inbox
SET state = 'pending', run_at = %(now)s, attempts = 0, lease_until = NULL, done_at = NULL
WHERE state = 'dead' AND (%(all)s OR id = ANY(%(ids)s::bigint[]))
RETURNING id

-- name: inbox_counts
SELECT state, count(*) FROM sluice_inbox GROUP BY state

-- name: inbox_purge
WITH gone AS (
    DELETE FROM sluice_inbox WHERE state = 'done' AND received_at < %(before)s RETURNING 1
)
SELECT count(*) FROM gone

-- name: receipt_target
SELECT status FROM sluice_messages WHERE id = %(id)s::uuid FOR UPDATE

-- name: receipt_insert
INSERT INTO sluice_receipts (
    message_id, provider, status, occurred_at, received_at, error_code, detail, inbox_id)
VALUES (%(message_id)s::uuid, %(provider)s, %(status)s, %(occurred_at)s, %(received_at)s,
        %(error_code)s, %(detail)s, %(inbox_id)s)

-- name: receipt_advance
-- A failed or undelivered receipt of a message that asked for post-send verification
-- (issue 15) makes it 'needs_confirm' (a person decides) rather than 'bounced'.
UPDATE sluice_messages
SET status = CASE WHEN %(status)s::text = 'bounced'
                       AND %(receipt_status)s::text IN ('failed', 'undelivered')
                       AND verify_within IS NOT NULL THEN 'needs_confirm'
                  ELSE %(status)s::text END,
    updated_at = %(now)s,
    last_error_code = coalesce(%(error_code)s, last_error_code),
    last_error = coalesce(%(error)s, last_error)
WHERE id = %(id)s::uuid

-- name: receipt_list
SELECT message_id::text, provider, status, occurred_at, received_at, error_code, detail
FROM sluice_receipts WHERE message_id = %(id)s::uuid ORDER BY id

-- name: observe_messages
-- The state metrics (sluice.ops.state_metrics): the statuses that describe work still
-- to do or to look at, each from its partial index; sent and delivered history is
-- counted by the event metrics instead (a count over the whole table would grow with it).
-- One branch per partial index (a single IN (...) would scan the whole table). The
-- ready rows (queued, unparked) are counted by observe_ready, in its single scan.
SELECT status, channel, provider, count(*) FROM (
    SELECT status, channel, provider FROM sluice_messages
    WHERE status = 'queued' AND parked_by IS NOT NULL
    UNION ALL
    SELECT status, channel, provider FROM sluice_messages WHERE status = 'sending'
    UNION ALL
    SELECT status, channel, provider FROM sluice_messages WHERE status = 'held'
    UNION ALL
    SELECT status, channel, provider FROM sluice_messages WHERE status = 'dead'
    UNION ALL  -- post-send verification (issue 15)
    SELECT status, channel, provider FROM sluice_messages WHERE status = 'needs_confirm'
) m
GROUP BY status, channel, provider

-- name: observe_dead
SELECT channel, coalesce(last_error_code, ''), count(*) FROM sluice_messages
WHERE status = 'dead'
GROUP BY channel, coalesce(last_error_code, '')

-- name: observe_held
-- By the start of the reason (control:killed, control:approval, connection:, limit:
-- recipient_cap ...): sluice.metrics.hold_kind names it.
SELECT substr(hold_reason, 1, 24), count(*), min(updated_at) FROM sluice_messages
WHERE status = 'held'
GROUP BY substr(hold_reason, 1, 24)

-- name: observe_connections
SELECT provider, state, count(*) FROM sluice_connections GROUP BY provider, state

-- name: observe_expiring
SELECT tenant, provider, expires_at FROM sluice_connections
WHERE expires_at IS NOT NULL AND state = 'active'
ORDER BY expires_at
LIMIT 1000

-- name: observe_tenancy
SELECT count(*) FROM sluice_audit WHERE action = 'tenancy.violation'

-- name: observe_ready
-- The ready rows (queued, unparked) per channel and provider: how many; the oldest due
-- by creation and by due time; how many failed before. The ready index carries every
-- column named here (0019), so a backlog of a million is one index-only scan.
SELECT channel, provider, count(*),
       min(created_at) FILTER (WHERE run_at <= %(now)s),
       min(run_at) FILTER (WHERE run_at <= %(now)s),
       count(*) FILTER (WHERE attempts >= 1),
       count(*) FILTER (WHERE attempts >= 3)
FROM sluice_messages
WHERE status = 'queued' AND parked_by IS NULL
GROUP BY channel, provider

-- name: observe_inbox
SELECT state, count(*), min(received_at) FROM sluice_inbox
WHERE state IN ('pending', 'dead', 'rejected')
GROUP BY state

-- name: incident_peak_event
-- The incidents section: see sluice/alerts/evaluator.py. A new peak of an open incident
-- goes on its timeline (before incident_touch records it).
INSERT INTO sluice_incident_events (incident_id, at, kind, actor, detail)
SELECT id, %(now)s, 'peak', 'evaluator', %(detail)s::jsonb FROM sluice_incidents
WHERE rule = %(rule)s AND scope_key = %(scope_key)s AND state <> 'resolved' AND peak < %(value)s

-- name: incident_touch
UPDATE sluice_incidents
SET value = %(value)s, peak = greatest(peak, %(value)s), clear_since = NULL, updated_at = %(now)s
WHERE rule = %(rule)s AND scope_key = %(scope_key)s AND state <> 'resolved'
RETURNING id::text

-- name: incident_insert
INSERT INTO sluice_incidents (
    id, rule, scope_key, scope, severity, types, runbook, summary, state, opened_at,
    acknowledged_at, acknowledged_by, resolved_at, resolved_by, value, peak, clear_since,
    notified, updated_at, escalated_at)
SELECT %(id)s::uuid, %(rule)s, %(scope_key)s, %(scope)s::jsonb, %(severity)s, %(types)s::jsonb,
       %(runbook)s, %(summary)s, 'open', %(now)s,
       NULL, NULL, NULL, NULL, %(value)s, %(value)s, NULL, '', %(now)s, NULL
WHERE NOT EXISTS (
    SELECT 1 FROM sluice_incidents
    WHERE rule = %(rule)s AND scope_key = %(scope_key)s AND state <> 'resolved')
RETURNING id::text

-- name: incident_fired_event
INSERT INTO sluice_incident_events (incident_id, at, kind, actor, detail)
SELECT id, %(now)s, 'fired', 'evaluator', %(detail)s::jsonb
FROM sluice_incidents WHERE id = %(id)s::uuid

-- name: incident_clearing
-- Open incidents of a rule whose scope no longer fires start counting clear time.
UPDATE sluice_incidents SET clear_since = %(now)s, updated_at = %(now)s
WHERE rule = %(rule)s AND state <> 'resolved' AND clear_since IS NULL
  AND scope_key <> ALL(%(firing)s::text[])

-- name: incident_resolved_event
INSERT INTO sluice_incident_events (incident_id, at, kind, actor, detail)
SELECT id, %(now)s, 'resolved', 'evaluator', %(detail)s::jsonb FROM sluice_incidents
WHERE rule = %(rule)s AND state <> 'resolved' AND clear_since <= %(cutoff)s

-- name: incident_resolve_clear
UPDATE sluice_incidents
SET state = 'resolved', resolved_at = %(now)s, resolved_by = 'evaluator', updated_at = %(now)s
WHERE rule = %(rule)s AND state <> 'resolved' AND clear_since <= %(cutoff)s
RETURNING id::text

-- name: incident_list
SELECT id::text, rule, scope_key, scope, severity, types, runbook, summary, state, opened_at,
       acknowledged_at, acknowledged_by, resolved_at, resolved_by, value, peak, clear_since,
       notified, updated_at, escalated_at
FROM sluice_incidents
WHERE (%(state)s::text = '' OR state = %(state)s OR (%(state)s = 'active' AND state <> 'resolved'))
ORDER BY opened_at DESC, id
LIMIT %(limit)s

-- name: incident_get
SELECT id::text, rule, scope_key, scope, severity, types, runbook, summary, state, opened_at,
       acknowledged_at, acknowledged_by, resolved_at, resolved_by, value, peak, clear_since,
       notified, updated_at, escalated_at FROM sluice_incidents WHERE id = %(id)s::uuid

-- name: incident_events
SELECT id, incident_id::text, at, kind, actor, detail FROM sluice_incident_events
WHERE incident_id = %(id)s::uuid ORDER BY id

-- name: incident_ack
UPDATE sluice_incidents
SET state = 'acknowledged', acknowledged_at = %(now)s, acknowledged_by = %(actor)s,
    updated_at = %(now)s
WHERE id = %(id)s::uuid AND state = 'open'
RETURNING id::text

-- name: incident_resolve
UPDATE sluice_incidents
SET state = 'resolved', resolved_at = %(now)s, resolved_by = %(actor)s, updated_at = %(now)s
WHERE id = %(id)s::uuid AND state <> 'resolved'
RETURNING id::text

-- name: incident_event
INSERT INTO sluice_incident_events (incident_id, at, kind, actor, detail)
SELECT id, %(now)s, %(kind)s, %(actor)s, %(detail)s::jsonb
FROM sluice_incidents WHERE id = %(id)s::uuid
RETURNING id::text

-- name: incident_unnotified
-- Transitions announced in order: '' -> opened -> escalated -> resolved.
SELECT id::text, rule, scope_key, scope, severity, types, runbook, summary, state, opened_at,
       acknowledged_at, acknowledged_by, resolved_at, resolved_by, value, peak, clear_since,
       notified, updated_at, escalated_at
FROM sluice_incidents
WHERE (state <> 'resolved' AND notified = '')
   OR (escalated_at IS NOT NULL AND notified IN ('', 'opened'))
   OR (state = 'resolved' AND notified <> 'resolved')
ORDER BY opened_at
LIMIT 100

-- name: incident_notified
UPDATE sluice_incidents SET notified = %(transition)s WHERE id = %(id)s::uuid

-- name: incident_escalate
-- Open (unacknowledged) incidents past the escalation time: escalated once.
UPDATE sluice_incidents SET escalated_at = %(now)s, updated_at = %(now)s
WHERE state = 'open' AND escalated_at IS NULL AND opened_at <= %(cutoff)s
RETURNING id::text

-- name: incident_escalated_event
INSERT INTO sluice_incident_events (incident_id, at, kind, actor, detail)
SELECT id, %(now)s, 'escalated', 'evaluator', %(detail)s::jsonb
FROM sluice_incidents
WHERE state = 'open' AND escalated_at IS NULL AND opened_at <= %(cutoff)s

-- name: tally_attempts
-- The alert evaluator's windows (sluice/ops/alerts.py): attempts by every label a rule
-- may filter or group on, finished in (since, until].
SELECT m.tenant, m.channel, a.provider, m.action, a.outcome, coalesce(a.error_code, ''),
       count(*)
FROM sluice_attempts a JOIN sluice_messages m ON m.id = a.message_id
WHERE a.finished_at > %(since)s AND a.finished_at <= %(until)s
GROUP BY m.tenant, m.channel, a.provider, m.action, a.outcome, coalesce(a.error_code, '')

-- name: tally_inbox
SELECT provider, kind, state, count(*) FROM sluice_inbox
WHERE received_at > %(since)s AND received_at <= %(until)s
GROUP BY provider, kind, state

-- name: tally_audit
-- By action, target and the tenant its detail names (a rule may select on each).
SELECT action, coalesce(target, ''), coalesce(detail->>'tenant', ''), count(*)
FROM sluice_audit
WHERE at > %(since)s AND at <= %(until)s
GROUP BY 1, 2, 3

-- name: sent_latencies
-- Creation to sent, in seconds, of the newest sent attempts of the window.
SELECT m.tenant, m.channel, a.provider, extract(epoch FROM a.finished_at - m.created_at)::float8
FROM sluice_attempts a JOIN sluice_messages m ON m.id = a.message_id
WHERE a.outcome = 'sent' AND a.finished_at > %(since)s AND a.finished_at <= %(until)s
ORDER BY a.finished_at DESC

-- name: audit_select
-- A page of the audit log, newest first, as AuditFilter selects it (its docstring says
-- where each scope field is looked for). Walks the primary key backwards.
SELECT id, at, actor, action, target, reason, detail::text, prev_hash, hash
FROM sluice_audit
WHERE (%(before_id)s::bigint IS NULL OR id < %(before_id)s::bigint)
  AND (%(since)s::timestamptz IS NULL OR at >= %(since)s::timestamptz)
  AND (%(until)s::timestamptz IS NULL OR at < %(until)s::timestamptz)
  AND (%(actor)s::text IS NULL OR actor = %(actor)s::text)
  AND (%(action)s::text IS NULL OR starts_with(action, %(action)s::text))
  AND (%(tenant)s::text IS NULL
       OR %(tenant)s::text IN (detail->'scope'->>'tenant', detail->>'tenant',
                               detail->'filter'->>'tenant', detail->>'message_tenant',
                               detail->>'connection_tenant', detail->>'source_tenant')
       OR (starts_with(action, 'connection.')
           AND starts_with(target, %(tenant)s::text || '/'))
       OR (starts_with(action, 'breaker.')
           AND (starts_with(target, 'c:' || %(tenant)s::text || ':')
                OR starts_with(target, 'e:' || %(tenant)s::text || ':')))
       OR (action = 'quota.threshold'
           AND starts_with(detail->>'key', 'q:' || %(tenant)s::text || '|')))
  AND (%(channel)s::text IS NULL
       OR %(channel)s::text IN (detail->'scope'->>'channel', detail->'filter'->>'channel'))
  AND (%(provider)s::text IS NULL
       OR %(provider)s::text IN (detail->'scope'->>'provider', detail->>'provider',
                                 detail->'filter'->>'provider')
       OR (starts_with(action, 'connection.')
           AND right(target, length(%(provider)s::text) + 1) = '/' || %(provider)s::text)
       OR (starts_with(action, 'breaker.')
           AND (target = 'p:' || %(provider)s::text
                OR (starts_with(target, 'c:')
                    AND right(target, length(%(provider)s::text) + 1)
                        = ':' || %(provider)s::text))))
  AND (%(scope_action)s::text IS NULL
       OR %(scope_action)s::text IN (detail->'scope'->>'action', detail->>'action',
                                     detail->'filter'->>'action'))
ORDER BY id DESC
LIMIT %(limit)s

-- name: audit_walk
-- The whole log a page at a time, oldest first (sluice audit verify).
SELECT id, at, actor, action, target, reason, detail::text, prev_hash, hash
FROM sluice_audit
WHERE id > %(after_id)s
ORDER BY id
LIMIT %(limit)s

-- == endpoint health and tenants' events (issue 14) ==================================

-- name: endpoint_report
INSERT INTO sluice_endpoints AS e (id, tenant, endpoint, provider, state, failing_since,
    last_success_at, last_failure_at, last_error, window_start, window_ok, window_failed,
    updated_at)
VALUES (%(id)s, %(tenant)s, %(endpoint)s, %(provider)s,
        CASE WHEN %(streak_from)s::timestamptz IS NULL THEN 'healthy' ELSE 'failing' END,
        %(streak_from)s, %(last_ok)s, %(last_failed)s, %(error)s, %(now)s, %(ok)s,
        %(failed)s, %(now)s)
ON CONFLICT (tenant, endpoint) DO UPDATE SET
    state = CASE WHEN e.state = 'disabled' THEN 'disabled'
                 WHEN %(streak_from)s::timestamptz IS NULL THEN 'healthy' ELSE 'failing' END,
    failing_since = CASE WHEN %(streak_from)s::timestamptz IS NULL THEN NULL
                         WHEN %(ok)s > 0 THEN %(streak_from)s
                         ELSE coalesce(e.failing_since, %(streak_from)s) END,
    last_success_at = coalesce(%(last_ok)s, e.last_success_at),
    last_failure_at = coalesce(%(last_failed)s, e.last_failure_at),
    last_error = coalesce(%(error)s, e.last_error),
    window_start = CASE WHEN e.window_start <= %(window_cut)s THEN %(now)s
                        ELSE e.window_start END,
    window_ok = CASE WHEN e.window_start <= %(window_cut)s THEN 0 ELSE e.window_ok END
                + %(ok)s,
    window_failed = CASE WHEN e.window_start <= %(window_cut)s THEN 0
                         ELSE e.window_failed END + %(failed)s,
    updated_at = %(now)s

-- name: endpoint_list
SELECT id, tenant, endpoint, provider, state, failing_since, last_success_at,
       last_failure_at, last_error, disabled_at, disabled_reason, window_start, window_ok,
       window_failed, updated_at
FROM sluice_endpoints
WHERE (%(tenant)s::text IS NULL OR tenant = %(tenant)s)
  AND (%(state)s::text IS NULL OR state = %(state)s)
  AND (%(failing_before)s::timestamptz IS NULL OR failing_since <= %(failing_before)s)
ORDER BY tenant, endpoint

-- name: endpoint_get
SELECT id, tenant, endpoint, provider, state, failing_since, last_success_at,
       last_failure_at, last_error, disabled_at, disabled_reason, window_start, window_ok,
       window_failed, updated_at
FROM sluice_endpoints WHERE id = %(id)s

-- name: endpoint_move
UPDATE sluice_endpoints
SET state = %(state)s::text,
    failing_since = CASE WHEN %(state)s::text = 'disabled' THEN failing_since ELSE NULL END,
    disabled_at = CASE WHEN %(state)s::text = 'disabled' THEN %(now)s::timestamptz END,
    disabled_reason = CASE WHEN %(state)s::text = 'disabled' THEN %(reason)s::text END,
    updated_at = %(now)s
WHERE id = %(id)s AND (%(expected)s::text IS NULL OR state = %(expected)s)
RETURNING id

-- name: tenant_events_get
SELECT tenant, events_url, dead_seen_until, updated_at
FROM sluice_tenant_settings WHERE tenant = %(tenant)s

-- name: tenant_events_list
SELECT tenant, events_url, dead_seen_until, updated_at
FROM sluice_tenant_settings WHERE events_url IS NOT NULL ORDER BY tenant

-- name: tenant_events_set
INSERT INTO sluice_tenant_settings (tenant, events_url, dead_seen_until, updated_at)
VALUES (%(tenant)s, %(url)s, %(now)s, %(now)s)
ON CONFLICT (tenant) DO UPDATE SET
    events_url = excluded.events_url,
    dead_seen_until = coalesce(sluice_tenant_settings.dead_seen_until, excluded.dead_seen_until),
    updated_at = excluded.updated_at

-- name: tenant_events_dead_seen
UPDATE sluice_tenant_settings SET dead_seen_until = %(until)s
WHERE tenant = %(tenant)s
  AND dead_seen_until IS NOT DISTINCT FROM %(expected)s::timestamptz
  AND (dead_seen_until IS NULL OR dead_seen_until < %(until)s)
RETURNING tenant
-- == the two-person rule (issue 14): operator acts waiting for a second operator ==

-- name: request_insert
INSERT INTO sluice_requests (id, act, args, scope, tenant, affected, requester, reason,
                             created_at, expires_at, state)
VALUES (%(id)s, %(act)s, %(args)s::jsonb, %(scope)s, %(tenant)s, %(affected)s, %(requester)s,
        %(reason)s, %(now)s, %(expires_at)s, 'pending')
ON CONFLICT (id) DO NOTHING
RETURNING id

-- name: request_get
SELECT id, act, args, scope, tenant, affected, requester, reason, created_at, expires_at,
       state, decided_by, decided_at, decision, result
FROM sluice_requests WHERE id = %(id)s

-- name: request_list
-- Newest first; a page starts after the request named by before.
SELECT id, act, args, scope, tenant, affected, requester, reason, created_at, expires_at,
       state, decided_by, decided_at, decision, result
FROM sluice_requests
WHERE (%(state)s::text IS NULL OR state = %(state)s::text)
  AND (%(before)s::text IS NULL
       OR (created_at, id) < (SELECT created_at, id FROM sluice_requests
                              WHERE id = %(before)s::text))
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s

-- name: request_decide
UPDATE sluice_requests
SET state = %(state)s, decided_by = %(actor)s, decided_at = %(now)s, decision = %(decision)s
WHERE id = %(id)s AND state = 'pending' AND expires_at > %(now)s
RETURNING id

-- name: request_result
UPDATE sluice_requests SET result = %(result)s::jsonb WHERE id = %(id)s

-- name: request_expire
UPDATE sluice_requests SET state = 'expired', decided_at = %(now)s
WHERE state = 'pending' AND expires_at <= %(now)s
RETURNING id
-- name: attempt_search
-- Listings (issue 14): attempt_search, message_breakdown.
-- Attempts newest first; the id is the cursor. A message's attempts use
-- sluice_attempts_message, a time window sluice_attempts_finished.
SELECT message_id::text, attempt_no, worker_id, provider, started_at, finished_at, outcome,
       error_code, error_class, provider_status, provider_code, detail, latency_ms, applied, id
FROM sluice_attempts
WHERE (%(message_id)s::uuid IS NULL OR message_id = %(message_id)s::uuid)
  AND (%(worker_id)s::text IS NULL OR worker_id = %(worker_id)s::text)
  AND (%(provider)s::text IS NULL OR provider = %(provider)s::text)
  AND (%(outcome)s::text IS NULL OR outcome = %(outcome)s::text)
  AND (%(error_code)s::text IS NULL OR error_code = %(error_code)s::text)
  AND (%(since)s::timestamptz IS NULL OR finished_at >= %(since)s::timestamptz)
  AND (%(until)s::timestamptz IS NULL OR finished_at < %(until)s::timestamptz)
  AND (%(before_id)s::bigint IS NULL OR id < %(before_id)s::bigint)
ORDER BY id DESC
LIMIT %(limit)s

-- name: message_breakdown
-- Messages per group (the column %(by)s names; '' for one group) and status.
SELECT CASE %(by)s::text WHEN 'tenant' THEN tenant WHEN 'channel' THEN channel
            WHEN 'provider' THEN provider WHEN 'action' THEN action
            WHEN 'hold_reason' THEN coalesce(hold_reason, '') ELSE '' END AS grp,
       status, count(*), count(last_error_code), min(created_at), min(updated_at),
       min(CASE WHEN status = 'queued' AND run_at <= %(now)s::timestamptz THEN run_at END)
FROM sluice_messages
WHERE (%(status)s::text IS NULL OR status = %(status)s::text)
  AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s::text)
  AND (%(channel)s::text IS NULL OR channel = %(channel)s::text)
  AND (%(provider)s::text IS NULL OR provider = %(provider)s::text)
  AND (%(action)s::text IS NULL OR action = %(action)s::text)
  AND (%(since)s::timestamptz IS NULL OR created_at >= %(since)s::timestamptz)
  AND (%(until)s::timestamptz IS NULL OR created_at < %(until)s::timestamptz)
  -- created_at has no index; the time-ordered id bounds the scan of the primary key
  -- (sluice top over an hour: 6,000 rows read of a million, not the table).
  AND (%(since_id)s::uuid IS NULL OR id >= %(since_id)s::uuid)
  -- Canaries (issue 15) are not in tenants' figures: grouped or filtered by tenant.
  AND (action <> 'sluice.canary' OR (%(by)s::text <> 'tenant' AND %(tenant)s::text IS NULL))
GROUP BY 1, 2

-- == Acting on what waits (issue 14): retry-now, throttles clear ======================

-- name: message_select_waiting
-- Queued messages waiting out a retry backoff or a deferral (claimed before: tried,
-- deferred or put back; due later): never a first send the caller scheduled, nor parked.
SELECT id::text FROM sluice_messages
WHERE status = 'queued' AND parked_by IS NULL AND run_at > %(now)s
  AND claim_seq > 0
  AND (%(ids)s::uuid[] IS NULL OR id = ANY(%(ids)s::uuid[]))
  AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s)
  AND (%(channel)s::text IS NULL OR channel = %(channel)s)
  AND (%(provider)s::text IS NULL OR provider = %(provider)s)
  AND (%(action)s::text IS NULL OR action = %(action)s)
  AND (%(error_code)s::text IS NULL OR last_error_code = %(error_code)s
       OR (%(error_code)s::text = 'UNKNOWN' AND last_error_code IS NULL))
ORDER BY run_at, id
LIMIT %(limit)s

-- name: message_retry_now
-- The same guard as the selection: a message claimed, held, parked or finished since
-- is left alone.
UPDATE sluice_messages SET run_at = %(now)s, updated_at = %(now)s
WHERE id = ANY(%(ids)s::uuid[]) AND status = %(from_status)s AND parked_by IS NULL
  AND run_at > %(now)s AND claim_seq > 0
RETURNING id::text

-- name: throttle_clear
-- One mark removed; every worker hears of it at commit and drops it from memory.
WITH gone AS (
    DELETE FROM sluice_throttles WHERE tenant = %(tenant)s AND provider = %(provider)s
    RETURNING tenant, provider, until, reason, set_at
)
SELECT tenant, provider, until, reason, set_at, pg_notify('sluice_flow', json_build_object(
    'throttle_cleared', json_build_array(tenant, provider, until, reason, set_at))::text)
FROM gone

-- == Message expiry (issue 14) =========================================================

-- name: message_expire_past
-- What waits (queued, parked or held) past its expiry ends 'expired', a chunk at a time,
-- soonest expired first; a row another transaction holds is left for the next sweep.
UPDATE sluice_messages m
SET status = 'expired', parked_by = NULL, hold_reason = %(reason)s, updated_at = %(now)s
WHERE m.id IN (
    SELECT id FROM sluice_messages
    WHERE expires_at IS NOT NULL AND status IN ('queued', 'held') AND expires_at <= %(now)s
    ORDER BY expires_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED)
  AND m.status IN ('queued', 'held')
RETURNING m.id::text, m.tenant, m.channel, m.provider

-- -- recipient hygiene (issue 14): suppressions and the WhatsApp window ---------------

-- name: suppression_insert
INSERT INTO sluice_suppressions (tenant, channel, recipient, reason, source, actor, created_at)
VALUES (%(tenant)s, %(channel)s, %(recipient)s, %(reason)s, %(source)s, %(actor)s,
        %(created_at)s)
ON CONFLICT DO NOTHING
RETURNING tenant

-- name: suppression_delete
DELETE FROM sluice_suppressions
WHERE tenant = %(tenant)s AND channel = %(channel)s AND recipient = %(recipient)s
RETURNING tenant, channel, recipient, reason, source, actor, created_at

-- name: suppression_list
SELECT tenant, channel, recipient, reason, source, actor, created_at
FROM sluice_suppressions
WHERE (%(tenant)s::text IS NULL OR tenant = %(tenant)s)
  AND (%(channel)s::text IS NULL OR channel = %(channel)s)
  AND (%(recipient)s::text IS NULL OR recipient = %(recipient)s)
  AND (%(after_tenant)s::text IS NULL
       OR (tenant, channel, recipient) > (%(after_tenant)s, %(after_channel)s, %(after_recipient)s))
ORDER BY tenant, channel, recipient
LIMIT %(limit)s

-- name: suppression_counts
SELECT channel, count(*) FROM sluice_suppressions GROUP BY channel ORDER BY channel

-- name: suppression_find
-- Which of one claimed batch's (tenant, medium, recipient) keys are suppressed.
SELECT s.tenant, s.channel, s.recipient
FROM sluice_suppressions s
JOIN unnest(%(tenants)s::text[], %(channels)s::text[], %(recipients)s::text[])
    AS k(tenant, channel, recipient)
  ON s.tenant = k.tenant AND s.channel = k.channel AND s.recipient = k.recipient

-- name: contact_seen
INSERT INTO sluice_contacts (tenant, channel, recipient, last_inbound_at)
VALUES (%(tenant)s, %(channel)s, %(recipient)s, %(at)s)
ON CONFLICT (tenant, channel, recipient) DO UPDATE
SET last_inbound_at = greatest(sluice_contacts.last_inbound_at, excluded.last_inbound_at)

-- name: contact_find
SELECT c.tenant, c.channel, c.recipient, c.last_inbound_at
FROM sluice_contacts c
JOIN unnest(%(tenants)s::text[], %(channels)s::text[], %(recipients)s::text[])
    AS k(tenant, channel, recipient)
  ON c.tenant = k.tenant AND c.channel = k.channel AND c.recipient = k.recipient
-- == retention (issue 14): sluice.ops.retention removes final messages ===============
-- Each pick and count names one status and repeats the index's predicate word for word,
-- so the planner proves it (sluice_messages_final) and no non-final row can match.

-- name: purge_count
SELECT count(*) FROM sluice_messages
WHERE status NOT IN ('queued', 'sending', 'held')
  AND status = %(status)s AND updated_at < %(before)s
  AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s)

-- name: purge_pick
-- SKIP LOCKED: a row a receipt or a replay holds is left for the next pass.
SELECT id::text FROM sluice_messages
WHERE status NOT IN ('queued', 'sending', 'held')
  AND status = %(status)s AND updated_at < %(before)s
  AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s)
ORDER BY updated_at
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED

-- name: purge_messages
SELECT id::text, tenant, channel, provider, action, recipient, payload, priority, status,
       run_at, attempts, max_attempts, claim_seq, idempotency_key, correlation_id, scopes,
       created_at, updated_at, last_error_code, last_error, provider_message_id, worker_id,
       lease_until, hold_reason, approved_by, approved_at, deferrals, deferred_since
FROM sluice_messages WHERE id = ANY(%(ids)s::uuid[]) ORDER BY updated_at, id

-- name: purge_attempts
SELECT message_id::text, attempt_no, worker_id, provider, started_at, finished_at, outcome,
       error_code, error_class, provider_status, provider_code, detail, latency_ms, applied
FROM sluice_attempts WHERE message_id = ANY(%(ids)s::uuid[]) ORDER BY attempt_no, id

-- name: purge_receipts
SELECT message_id::text, provider, status, occurred_at, received_at, error_code, detail
FROM sluice_receipts WHERE message_id = ANY(%(ids)s::uuid[]) ORDER BY id

-- name: purge_delete_receipts
DELETE FROM sluice_receipts WHERE message_id = ANY(%(ids)s::uuid[])

-- name: purge_delete_attempts
DELETE FROM sluice_attempts WHERE message_id = ANY(%(ids)s::uuid[])

-- name: purge_delete_messages
DELETE FROM sluice_messages
WHERE id = ANY(%(ids)s::uuid[]) AND status NOT IN ('queued', 'sending', 'held', 'needs_confirm')
RETURNING status

-- == annotations (issue 15) ===========================================================

-- name: annotation_insert
INSERT INTO sluice_annotations (at, actor, kind, text, tenant, detail)
VALUES (%(at)s, %(actor)s, %(kind)s, %(text)s, %(tenant)s, %(detail)s::jsonb)
RETURNING id

-- name: annotation_list
-- Newest first by when they mark; a page starts after the annotation named by before.
SELECT id, at, actor, kind, text, tenant, detail::text
FROM sluice_annotations
WHERE (%(since)s::timestamptz IS NULL OR at >= %(since)s::timestamptz)
  AND (%(until)s::timestamptz IS NULL OR at < %(until)s::timestamptz)
  AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s::text)
  AND (%(kind)s::text IS NULL OR kind = %(kind)s::text)
  AND (%(before)s::bigint IS NULL
       OR (at, id) < (SELECT at, id FROM sluice_annotations WHERE id = %(before)s::bigint))
ORDER BY at DESC, id DESC
LIMIT %(limit)s
-- == Canaries (issue 15): golden-path canaries and their outcomes ======================

-- name: canary_record
INSERT INTO sluice_canaries (id, target, provider, tenant, recipient, message_id, sent_at,
                             receipt_at, outcome, error, actor)
VALUES (%(id)s, %(target)s, %(provider)s, %(tenant)s, %(recipient)s, %(message_id)s,
        %(sent_at)s, %(receipt_at)s, %(outcome)s, %(error)s, %(actor)s)
ON CONFLICT (id) DO UPDATE SET message_id = excluded.message_id,
    receipt_at = excluded.receipt_at, outcome = excluded.outcome, error = excluded.error

-- name: canary_list
SELECT id, target, provider, tenant, recipient, message_id, sent_at, receipt_at, outcome,
       error, actor
FROM sluice_canaries
WHERE (%(provider)s::text IS NULL OR provider = %(provider)s::text)
ORDER BY sent_at DESC, id DESC
LIMIT %(limit)s

-- name: canary_latest
-- Each target's newest canary (with finished, its newest that is no longer pending).
SELECT DISTINCT ON (target) id, target, provider, tenant, recipient, message_id, sent_at,
       receipt_at, outcome, error, actor
FROM sluice_canaries
WHERE (NOT %(finished)s OR outcome <> 'pending')
ORDER BY target, sent_at DESC, id DESC
-- -- post-send verification (issue 15, seed 003 RB-03) ----------------------------------

-- name: message_verify_due
-- Sent messages past their confirmation deadline (no delivered or read receipt moved
-- them on) wait for a person: 'needs_confirm', a chunk at a time, earliest first; a row
-- another transaction holds (a receipt being applied) is left for the next sweep.
UPDATE sluice_messages m
SET status = 'needs_confirm', last_error_code = 'NOT_CONFIRMED',
    last_error = 'no delivered or read receipt within ' || m.verify_within::text
                 || ' s of sending: confirm or fail it (sluice messages confirm|fail)',
    updated_at = %(now)s
WHERE m.id IN (
    SELECT id FROM sluice_messages
    WHERE verify_by IS NOT NULL AND status = 'sent' AND verify_by <= %(now)s
    ORDER BY verify_by
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED)
RETURNING m.id::text, m.tenant, m.channel, m.provider

-- name: message_confirm
-- A person says it arrived.
UPDATE sluice_messages
SET status = 'delivered', last_error_code = NULL, last_error = NULL, verify_by = NULL,
    updated_at = %(now)s
WHERE id = ANY(%(ids)s::uuid[]) AND status = %(from_status)s
RETURNING id::text

-- name: message_fail
-- A person says it did not arrive: a dead letter that dlq retry can send again.
UPDATE sluice_messages
SET status = 'dead', last_error_code = 'NOT_CONFIRMED',
    last_error = 'not confirmed: marked failed by ' || %(actor)s::text, verify_by = NULL,
    updated_at = %(now)s
WHERE id = ANY(%(ids)s::uuid[]) AND status = %(from_status)s
RETURNING id::text
-- == Console sessions (issue 16) =======================================================

-- name: console_session_insert
INSERT INTO sluice_console_sessions (token_hash, kind, key_id, actor, csrf, created_at,
                                     seen_at, expires_at)
VALUES (%(token_hash)s, %(kind)s, %(key_id)s, %(actor)s, %(csrf)s, %(created_at)s,
        %(seen_at)s, %(expires_at)s)

-- name: console_session_get
SELECT token_hash, kind, key_id, actor, csrf, created_at, seen_at, expires_at
FROM sluice_console_sessions WHERE token_hash = %(token_hash)s

-- name: console_session_touch
UPDATE sluice_console_sessions SET seen_at = %(seen_at)s
WHERE token_hash = %(token_hash)s AND kind = 'session'

-- name: console_session_take
-- Delete and return in one statement: a one-time link is used once even when two
-- browsers open it together.
DELETE FROM sluice_console_sessions WHERE token_hash = %(token_hash)s
RETURNING token_hash, kind, key_id, actor, csrf, created_at, seen_at, expires_at

-- name: console_session_purge
DELETE FROM sluice_console_sessions WHERE expires_at <= %(now)s RETURNING token_hash

-- == Console overview (issue 16) =======================================================

-- name: activity_enqueued
-- Messages created per minute of the window, counted back from now (0: the last
-- minute). The id bound makes it a range of the primary key (ids are time-ordered):
-- the window's rows, not the table's history.
SELECT floor(date_part('epoch', %(now)s::timestamptz - created_at) / 60)::int, count(*)
FROM sluice_messages
WHERE id >= %(first_id)s::uuid AND created_at > %(since)s AND created_at <= %(now)s
GROUP BY 1

-- name: activity_attempts
-- Attempts finished per minute of the window and outcome (sluice_attempts_finished).
SELECT floor(date_part('epoch', %(now)s::timestamptz - finished_at) / 60)::int, outcome,
       count(*)
FROM sluice_attempts
WHERE finished_at > %(since)s AND finished_at <= %(now)s
GROUP BY 1, 2
