-- Named queries for SQLite; same names and meaning as postgres/queries.sql.
-- Batches run as executemany or per row inside one transaction: SQLite has one
-- writer, so a transaction of many small statements costs one commit.

-- name: schema_version_table
CREATE TABLE IF NOT EXISTS sluice_schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
)

-- name: schema_versions
SELECT version FROM sluice_schema_migrations ORDER BY version

-- name: schema_version_record
INSERT INTO sluice_schema_migrations (version, name) VALUES (:version, :name)

-- name: message_insert
INSERT INTO sluice_messages (
    id, tenant, channel, provider, action, recipient, payload, priority, status, run_at,
    attempts, max_attempts, claim_seq, idempotency_key, content_hash, correlation_id, scopes,
    created_at, updated_at, expires_at, verify_within)
VALUES (:id, :tenant, :channel, :provider, :action, :recipient, :payload, :priority, 'queued',
        coalesce(:run_at, :now), 0, :max_attempts, 0, :idempotency_key, :content_hash,
        :correlation_id, :scopes, :now, :now, coalesce(:expires_at, :now + :ttl),
        :verify_within)
ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING

-- name: message_find_by_key
SELECT id, tenant, idempotency_key, content_hash
FROM sluice_messages WHERE tenant = :tenant AND idempotency_key = :key

-- name: message_claim
-- Shared between tenants, retries at most every other slot of a tenant, paused rows
-- parked outside the ready index: see the PostgreSQL query. SQLite has no LATERAL; a
-- correlated IN (... LIMIT) subquery takes each tenant's first few from the index.
WITH RECURSIVE tenants(tenant, n) AS (
    SELECT (SELECT min(m.tenant) FROM sluice_messages m
            WHERE m.status = 'queued' AND m.parked_by IS NULL AND m.tenant > :after), 1
    UNION ALL
    SELECT (SELECT min(m.tenant) FROM sluice_messages m
            WHERE m.status = 'queued' AND m.parked_by IS NULL AND m.tenant > t.tenant), t.n + 1
    FROM tenants t
    WHERE t.tenant IS NOT NULL AND t.n < :limit
),
share(per_tenant) AS (
    SELECT min(:limit, max(16, (2 * :limit + count(*) - 1) / max(count(*), 1)))
    FROM tenants WHERE tenant IS NOT NULL
),
offered AS (
    SELECT m.id, m.priority, m.run_at,
           2 * row_number() OVER (PARTITION BY m.tenant, m.attempts > 0
                                  ORDER BY m.priority DESC, m.run_at) - (m.attempts = 0) AS turn
    FROM tenants t, (SELECT 0 AS retry UNION ALL SELECT 1) k
    JOIN sluice_messages m ON m.id IN (
        SELECT x.id FROM sluice_messages x
        WHERE x.tenant = t.tenant AND (x.attempts > 0) = k.retry
          AND x.status = 'queued' AND x.parked_by IS NULL AND x.run_at <= :now
        ORDER BY x.priority DESC, x.run_at
        LIMIT (SELECT per_tenant FROM share))
    WHERE t.tenant IS NOT NULL
)
UPDATE sluice_messages
SET status = 'sending', attempts = attempts + 1, claim_seq = claim_seq + 1,
    worker_id = :worker_id, claimed_at = :now, lease_until = :lease_until, updated_at = :now
WHERE id IN (
    SELECT m.id FROM sluice_messages m JOIN offered o ON o.id = m.id
    WHERE NOT EXISTS (
          SELECT 1 FROM sluice_controls c
          WHERE c.mode IN ('paused', 'killed')
            AND (c.expires_at IS NULL OR c.expires_at > :now)
            AND (c.tenant = m.tenant OR (c.tenant = '' AND m.tenant <> '_sluice')) AND c.channel IN ('', m.channel)
            AND c.provider IN ('', m.provider) AND c.action IN ('', m.action))
    ORDER BY o.turn, o.priority DESC, o.run_at
    LIMIT :limit
)
RETURNING id, tenant, channel, provider, action, recipient, payload, priority, run_at, attempts,
          max_attempts, claim_seq, idempotency_key, correlation_id, scopes, created_at,
          approved_by, deferrals, deferred_since, expires_at

-- name: message_complete
UPDATE sluice_messages
SET status = :status,
    run_at = coalesce(:run_at, run_at),
    attempts = attempts - :refund,
    lease_until = NULL,
    last_error_code = :error_code,
    last_error = :detail,
    provider_message_id = coalesce(:provider_message_id, provider_message_id),
    hold_reason = :hold_reason,
    deferrals = deferrals + (:deferred_at IS NOT NULL),
    deferred_since = coalesce(deferred_since, :deferred_at),
    -- post-send verification (issue 15): sent, the confirmation is due within verify_within
    verify_by = CASE WHEN :status = 'sent' THEN :now + verify_within ELSE verify_by END,
    updated_at = :now
WHERE id = :id AND status = 'sending' AND claim_seq = :claim_seq AND worker_id = :worker_id

-- name: attempt_insert
INSERT INTO sluice_attempts (
    message_id, attempt_no, worker_id, provider, started_at, finished_at, outcome, error_code,
    error_class, provider_status, provider_code, detail, latency_ms, applied)
VALUES (:message_id, :attempt_no, :worker_id, :provider, :started_at, :finished_at, :outcome,
        :error_code, :error_class, :provider_status, :provider_code, :detail, :latency_ms,
        :applied)

-- name: message_release
UPDATE sluice_messages
SET status = 'queued', attempts = attempts - 1, lease_until = NULL, updated_at = :now
WHERE id = :id AND claim_seq = :claim_seq AND status = 'sending' AND worker_id = :worker_id

-- name: message_renew
UPDATE sluice_messages
SET lease_until = max(lease_until, :lease_until)
WHERE id = :id AND claim_seq = :claim_seq AND status = 'sending' AND worker_id = :worker_id

-- name: message_select_expired
SELECT id, claim_seq, worker_id, provider, claimed_at, attempts, max_attempts
FROM sluice_messages
WHERE status = 'sending' AND lease_until < :now
ORDER BY lease_until
LIMIT :limit

-- name: message_expire
UPDATE sluice_messages
SET status = :status, run_at = :now, lease_until = NULL, last_error_code = 'LEASE_EXPIRED',
    last_error = 'lease expired while claimed by worker ' || coalesce(worker_id, '?'),
    updated_at = :now
WHERE id = :id AND status = 'sending' AND claim_seq = :claim_seq

-- name: message_get
SELECT id, tenant, channel, provider, action, recipient, payload, priority, status, run_at,
       attempts, max_attempts, claim_seq, idempotency_key, correlation_id, scopes, created_at,
       updated_at, last_error_code, last_error, provider_message_id, worker_id, lease_until,
       hold_reason, approved_by, approved_at, deferrals, deferred_since, expires_at,
       verify_within, verify_by
FROM sluice_messages WHERE id = :id

-- name: attempt_list
SELECT message_id, attempt_no, worker_id, provider, started_at, finished_at, outcome,
       error_code, error_class, provider_status, provider_code, detail, latency_ms, applied
FROM sluice_attempts WHERE message_id = :id ORDER BY attempt_no, id

-- name: status_counts
SELECT status, count(*) FROM sluice_messages GROUP BY status

-- name: oldest_ready
SELECT min(run_at) FROM sluice_messages WHERE status = 'queued' AND run_at <= :now

-- name: dlq_groups
SELECT channel, coalesce(last_error_code, 'UNKNOWN') AS error_code, count(*) AS n,
       min(updated_at) AS first_at, max(updated_at) AS last_at
FROM sluice_messages
WHERE status = 'dead'
  AND (:tenant IS NULL OR tenant = :tenant)
  AND (:channel IS NULL OR channel = :channel)
  AND (:provider IS NULL OR provider = :provider)
  AND (:action IS NULL OR action = :action)
  AND (:error_code IS NULL OR coalesce(last_error_code, 'UNKNOWN') = :error_code)
  AND (:since IS NULL OR updated_at >= :since)
GROUP BY channel, coalesce(last_error_code, 'UNKNOWN')
ORDER BY n DESC, channel, error_code

-- name: message_select_by_status
SELECT id FROM sluice_messages
WHERE status = :status
  AND (:tenant IS NULL OR tenant = :tenant)
  AND (:channel IS NULL OR channel = :channel)
  AND (:provider IS NULL OR provider = :provider)
  AND (:action IS NULL OR action = :action)
  AND (:error_code IS NULL OR last_error_code = :error_code
       OR (:error_code = 'UNKNOWN' AND last_error_code IS NULL))
  AND (:reason IS NULL OR instr(hold_reason, :reason) > 0)
  AND (:since IS NULL OR updated_at >= :since)
ORDER BY updated_at, id
LIMIT :limit

-- name: message_requeue
UPDATE sluice_messages
SET status = 'queued', attempts = 0, run_at = :now, lease_until = NULL, hold_reason = NULL,
    deferrals = 0, deferred_since = NULL, updated_at = :now
WHERE id = :id AND status = :from_status

-- name: message_cancel
UPDATE sluice_messages
SET status = 'cancelled', parked_by = NULL, lease_until = NULL, updated_at = :now
WHERE id = :id AND status = :from_status

-- name: message_approve
UPDATE sluice_messages
SET status = 'queued', run_at = :now, hold_reason = NULL, approved_by = :actor,
    approved_at = :now, updated_at = :now
WHERE id = :id AND status = :from_status

-- name: flow_version
SELECT version FROM sluice_flow_epoch WHERE id = 1

-- name: flow_bump
UPDATE sluice_flow_epoch SET version = version + 1, changed_at = :now WHERE id = 1
RETURNING version

-- name: control_select
SELECT id, tenant, channel, provider, action, mode, actor, reason, created_at, expires_at,
       version
FROM sluice_controls ORDER BY tenant, channel, provider, action

-- name: control_upsert
INSERT INTO sluice_controls (
    id, tenant, channel, provider, action, mode, actor, reason, created_at, expires_at, version)
VALUES (:id, :tenant, :channel, :provider, :action, :mode, :actor, :reason, :now, :expires_at,
        :version)
ON CONFLICT (tenant, channel, provider, action) DO UPDATE
SET mode = excluded.mode, actor = excluded.actor, reason = excluded.reason,
    created_at = excluded.created_at, expires_at = excluded.expires_at,
    version = excluded.version
RETURNING id, tenant, channel, provider, action, mode, actor, reason, created_at, expires_at,
          version

-- name: control_delete
DELETE FROM sluice_controls
WHERE tenant = :tenant AND channel = :channel AND provider = :provider AND action = :action
RETURNING id, tenant, channel, provider, action, mode, actor, reason, created_at, expires_at,
          version

-- name: control_delete_expired
DELETE FROM sluice_controls WHERE expires_at IS NOT NULL AND expires_at <= :now
RETURNING id, tenant, channel, provider, action, mode, actor, reason, created_at, expires_at,
          version

-- name: message_release_controlled
UPDATE sluice_messages
SET status = 'queued', hold_reason = NULL, run_at = :now, updated_at = :now
WHERE status = 'held' AND hold_reason LIKE 'control:%'
  AND (:tenant = '' OR tenant = :tenant) AND (:channel = '' OR channel = :channel)
  AND (:provider = '' OR provider = :provider) AND (:action = '' OR action = :action)
RETURNING id

-- name: message_hold_controlled
UPDATE sluice_messages
SET status = 'held', parked_by = NULL, hold_reason = :reason, updated_at = :now
WHERE id IN (
    SELECT id FROM sluice_messages
    WHERE status = 'queued'
      AND (:tenant = '' AND tenant <> '_sluice' OR tenant = :tenant) AND (:channel = '' OR channel = :channel)
      AND (:provider = '' OR provider = :provider) AND (:action = '' OR action = :action)
    LIMIT :limit)
  AND EXISTS (
      SELECT 1 FROM sluice_controls c
      WHERE c.id = :control_id AND c.mode = 'killed'
        AND (c.expires_at IS NULL OR c.expires_at > :now))
RETURNING id

-- name: control_lock_pause
-- Parking runs under a share lock on its pause: the pause's end (a delete, or an update
-- to another mode) waits for the parking to commit, then unparks what it parked.
SELECT 1 FROM sluice_controls
WHERE id = :id AND mode = 'paused'
  AND (expires_at IS NULL OR expires_at > :now)

-- name: message_park
-- Queued messages in a pause's scope, taken out of the ready index in chunks.
UPDATE sluice_messages SET parked_by = :control_id
WHERE id IN (
    SELECT id FROM sluice_messages
    WHERE status = 'queued' AND parked_by IS NULL
      AND (:tenant = '' AND tenant <> '_sluice' OR tenant = :tenant) AND (:channel = '' OR channel = :channel)
      AND (:provider = '' OR provider = :provider) AND (:action = '' OR action = :action)
    LIMIT :limit)

-- name: message_unpark
-- The end of a pause: what it parked is ready again (the claim query still skips what
-- another control covers, and the next sweep parks it under that one).
UPDATE sluice_messages SET parked_by = NULL WHERE parked_by = :control_id

-- name: worker_ack
UPDATE sluice_workers SET flow_version = max(flow_version, :version), flow_acked_at = :now
WHERE id = :id

-- name: flow_state_prepare
INSERT INTO sluice_flow_state (key, value, stamp, expires_at)
VALUES (:key, 0, -1, (julianday('now') - 2440587.5) * 86400.0 + 3600)
ON CONFLICT (key) DO NOTHING

-- name: flow_state_select
SELECT key, value, stamp FROM sluice_flow_state WHERE key = :key

-- name: flow_state_write
UPDATE sluice_flow_state SET value = :value, stamp = :stamp, expires_at = :expires_at
WHERE key = :key

-- name: flow_state_purge
DELETE FROM sluice_flow_state WHERE expires_at < :now

-- name: throttle_set
INSERT INTO sluice_throttles (tenant, provider, until, reason, set_at)
VALUES (:tenant, :provider, :until, :reason, :now)
ON CONFLICT (tenant, provider) DO UPDATE
SET until = max(sluice_throttles.until, excluded.until), reason = excluded.reason,
    set_at = excluded.set_at

-- name: throttle_get
SELECT tenant, provider, until, reason, set_at FROM sluice_throttles
WHERE tenant = :tenant AND provider = :provider

-- name: throttle_list
SELECT tenant, provider, until, reason, set_at FROM sluice_throttles WHERE until > :now
ORDER BY tenant, provider

-- name: throttle_purge
DELETE FROM sluice_throttles WHERE until <= :now

-- name: limit_select
SELECT kind, tenant, provider, action, spec, actor, reason, updated_at
FROM sluice_limits ORDER BY kind, tenant, provider, action

-- name: limit_upsert
INSERT INTO sluice_limits (kind, tenant, provider, action, spec, actor, reason, updated_at)
VALUES (:kind, :tenant, :provider, :action, :spec, :actor, :reason, :now)
ON CONFLICT (kind, tenant, provider, action) DO UPDATE
SET spec = excluded.spec, actor = excluded.actor, reason = excluded.reason,
    updated_at = excluded.updated_at

-- name: limit_delete
DELETE FROM sluice_limits
WHERE kind = :kind AND tenant = :tenant AND provider = :provider AND action = :action
RETURNING kind

-- name: audit_last_hash
SELECT hash FROM sluice_audit ORDER BY id DESC LIMIT 1

-- name: audit_insert
INSERT INTO sluice_audit (at, actor, action, target, reason, detail, prev_hash, hash)
VALUES (:at, :actor, :action, :target, :reason, :detail, :prev_hash, :hash)

-- name: audit_last_of
-- Walks the primary key backwards: run once per worker start, not per message.
SELECT detail FROM sluice_audit
WHERE action = :action AND target IS :target
ORDER BY id DESC LIMIT 1

-- name: audit_list
SELECT id, at, actor, action, target, reason, detail, prev_hash, hash
FROM sluice_audit ORDER BY id DESC LIMIT :limit

-- name: worker_upsert
INSERT INTO sluice_workers (id, host, pid, started_at, last_seen_at, in_flight, sent_total)
VALUES (:id, :host, :pid, :now, :now, :in_flight, :sent_total)
ON CONFLICT (id) DO UPDATE
SET last_seen_at = excluded.last_seen_at, in_flight = excluded.in_flight,
    sent_total = excluded.sent_total, stopped_at = NULL

-- name: worker_stop
UPDATE sluice_workers SET stopped_at = :now, last_seen_at = :now, in_flight = 0
WHERE id = :id

-- name: worker_list
SELECT id, host, pid, started_at, last_seen_at, stopped_at, in_flight, sent_total,
       flow_version, flow_acked_at
FROM sluice_workers
WHERE stopped_at IS NULL OR stopped_at > :since
ORDER BY started_at

-- name: connection_insert
INSERT INTO sluice_connections (
    id, tenant, provider, state, state_reason, state_changed_at, scopes, missing_scopes,
    ciphertext, key_id, credential_version, expires_at, created_at, updated_at)
VALUES (:id, :tenant, :provider, 'active', NULL, :now, :scopes, '[]', :ciphertext, :key_id, 1,
        :expires_at, :now, :now)
ON CONFLICT (tenant, provider) DO NOTHING

-- name: connection_select
SELECT id, tenant, provider, state, state_reason, state_changed_at, scopes, missing_scopes,
       ciphertext, key_id, credential_version, expires_at, last_check_at, last_check_ok_at,
       last_check_error, created_at, updated_at
FROM sluice_connections
WHERE (:tenant IS NULL OR tenant = :tenant)
  AND (:provider IS NULL OR provider = :provider)
ORDER BY tenant, provider

-- name: connection_set_state
UPDATE sluice_connections
SET state = :state, state_reason = :reason, state_changed_at = :now,
    missing_scopes = :missing_scopes, updated_at = :now
WHERE tenant = :tenant AND provider = :provider AND state <> :state
  AND (:expected_version IS NULL
       OR (credential_version = :expected_version AND state = 'active'))

-- name: connection_rotate
UPDATE sluice_connections
SET state = 'active', state_reason = :reason, state_changed_at = :now, missing_scopes = '[]',
    scopes = coalesce(:scopes, scopes), ciphertext = coalesce(:ciphertext, ciphertext),
    key_id = coalesce(:key_id, key_id),
    expires_at = CASE WHEN :ciphertext IS NULL THEN coalesce(:expires_at, expires_at)
                      ELSE :expires_at END,
    credential_version = credential_version + 1, updated_at = :now
WHERE tenant = :tenant AND provider = :provider

-- name: connection_store_secret
UPDATE sluice_connections
SET ciphertext = :ciphertext, key_id = :key_id, expires_at = :expires_at, updated_at = :now
WHERE id = :id AND credential_version = :expected_version

-- name: connection_refresh_store
-- Compare-and-swap: another process may have refreshed since this one read the row
-- (SQLite's write lock is not held across the token endpoint call).
UPDATE sluice_connections
SET ciphertext = :ciphertext, key_id = :key_id, expires_at = :expires_at,
    scopes = coalesce(:scopes, scopes),
    credential_version = credential_version + 1, updated_at = :now
WHERE id = :id AND credential_version = :version AND state = 'active'

-- name: connection_refresh_fail
UPDATE sluice_connections
SET state = :state, state_reason = :reason, state_changed_at = :now, updated_at = :now
WHERE id = :id AND credential_version = :version AND state = 'active'

-- name: connection_record_check
UPDATE sluice_connections
SET last_check_at = :now,
    last_check_ok_at = CASE WHEN :ok THEN :now ELSE last_check_ok_at END,
    last_check_error = :error,
    expires_at = coalesce(:expires_at, expires_at),
    updated_at = :now
WHERE id = :id

-- name: message_hold_queued
UPDATE sluice_messages
SET status = 'held', parked_by = NULL, hold_reason = :reason, updated_at = :now
WHERE tenant = :tenant AND provider = :provider AND status = 'queued'
RETURNING id

-- name: message_release_held
UPDATE sluice_messages
SET status = 'queued', hold_reason = NULL, updated_at = :now
WHERE tenant = :tenant AND provider = :provider AND status = 'held'
  AND hold_reason LIKE :prefix || '%'
RETURNING id, run_at

-- name: connection_select_pairs
-- The connections of one claimed batch, every (tenant, provider) pair in one query.
SELECT c.id, c.tenant, c.provider, c.state, c.state_reason, c.state_changed_at, c.scopes,
       c.missing_scopes, c.ciphertext, c.key_id, c.credential_version, c.expires_at,
       c.last_check_at, c.last_check_ok_at, c.last_check_error, c.created_at, c.updated_at
FROM sluice_connections c
JOIN json_each(:pairs) AS p
  ON c.tenant = json_extract(p.value, '$[0]') AND c.provider = json_extract(p.value, '$[1]')

-- name: breaker_count
INSERT INTO sluice_breaker_window (key, bucket, ok, failed)
VALUES (:key, :bucket, :ok, :failed)
ON CONFLICT (key, bucket) DO UPDATE
SET ok = ok + excluded.ok, failed = failed + excluded.failed

-- name: breaker_probe_ok
UPDATE sluice_breakers
SET probes_ok = probes_ok + :n, updated_at = :now
WHERE key = :key AND state = 'half_open'

-- name: breaker_window
SELECT key, sum(ok), sum(failed)
FROM sluice_breaker_window
WHERE bucket >= :since_bucket
  AND (:keys IS NULL OR key IN (SELECT value FROM json_each(:keys)))
GROUP BY key

-- name: breaker_list
SELECT key, provider, tenant, state, since, retry_at, forced, reason, probes_ok, updated_at
FROM sluice_breakers ORDER BY key

-- name: breaker_move
-- Compare-and-swap on the state (see postgres/queries.sql, breaker_transition).
UPDATE sluice_breakers
SET state = :state, since = :now, retry_at = :retry_at, forced = :forced, reason = :reason,
    probes_ok = 0, updated_at = :now
WHERE key = :key AND (:expected IS NULL OR (state = :expected AND NOT forced))

-- name: breaker_create
INSERT INTO sluice_breakers (
    key, provider, tenant, state, since, retry_at, forced, reason, probes_ok, updated_at)
VALUES (:key, :provider, :tenant, :state, :now, :retry_at, :forced, :reason, 0, :now)
ON CONFLICT (key) DO NOTHING

-- name: breaker_clear_window
DELETE FROM sluice_breaker_window WHERE key = :key

-- name: breaker_purge
DELETE FROM sluice_breaker_window WHERE bucket < :before_bucket

-- name: message_list
-- A page of messages, newest first; ids are time-ordered UUID text (lowercase, fixed
-- width), so text order is id order and the id is also the cursor.
SELECT id, tenant, channel, provider, action, recipient, payload, priority, status, run_at,
       attempts, max_attempts, claim_seq, idempotency_key, correlation_id, scopes, created_at,
       updated_at, last_error_code, last_error, provider_message_id, worker_id, lease_until,
       hold_reason, approved_by, approved_at, deferrals, deferred_since, expires_at,
       verify_within, verify_by
FROM sluice_messages
WHERE (:tenant IS NULL OR tenant = :tenant)
  AND (:status IS NULL OR status = :status)
  AND (:channel IS NULL OR channel = :channel)
  AND (:provider IS NULL OR provider = :provider)
  AND (:action IS NULL OR action = :action)
  AND (:error_code IS NULL OR last_error_code = :error_code
       OR (:error_code = 'UNKNOWN' AND last_error_code IS NULL))
  AND (:since IS NULL OR created_at >= :since)
  AND (:correlation_id IS NULL OR correlation_id = :correlation_id)
  AND (:until IS NULL OR created_at < :until)
  AND (:updated_since IS NULL OR updated_at >= :updated_since)
  AND (:updated_until IS NULL OR updated_at < :updated_until)
  AND (:before_id IS NULL OR id < :before_id)
ORDER BY id DESC
LIMIT :limit

-- name: api_key_insert
INSERT INTO sluice_api_keys (id, name, role, tenant, secret_hash, created_by, created_at)
VALUES (:id, :name, :role, :tenant, :secret_hash, :created_by, :created_at)
ON CONFLICT DO NOTHING

-- name: api_key_get
SELECT id, name, role, tenant, secret_hash, created_by, created_at, revoked_at
FROM sluice_api_keys WHERE id = :id

-- name: api_key_list
SELECT id, name, role, tenant, secret_hash, created_by, created_at, revoked_at
FROM sluice_api_keys ORDER BY created_at, id

-- name: api_key_revoke
UPDATE sluice_api_keys SET revoked_at = :now
WHERE id = :id AND revoked_at IS NULL

-- name: idem_select
SELECT state, fingerprint, status_code, response, created_at, locked_until
FROM sluice_idempotency WHERE scope = :scope AND key = :key

-- name: idem_take
-- Run under the write lock after idem_select decided the key is free (new, forgotten,
-- or an abandoned running claim with the same fingerprint; see postgres idem_begin).
INSERT INTO sluice_idempotency (scope, key, fingerprint, state, created_at, locked_until)
VALUES (:scope, :key, :fingerprint, 'running', :now, :locked_until)
ON CONFLICT (scope, key) DO UPDATE
SET fingerprint = excluded.fingerprint, state = 'running', status_code = NULL,
    response = NULL, created_at = excluded.created_at, locked_until = excluded.locked_until

-- name: idem_finish
UPDATE sluice_idempotency
SET state = 'done', status_code = :status_code, response = :response
WHERE scope = :scope AND key = :key AND state = 'running'

-- name: idem_release
DELETE FROM sluice_idempotency WHERE scope = :scope AND key = :key AND state = 'running'

-- name: idem_purge
DELETE FROM sluice_idempotency WHERE created_at < :before

-- name: inbox_put
-- One row per event inside one transaction; the unique key is the dedupe ledger.
INSERT INTO sluice_inbox (
    provider, event_id, kind, status, message_id, provider_message_id, occurred_at,
    error_code, detail, address, data, received_at, run_at, source_tenant)
VALUES (:provider, :event_id, :kind, :status, :message_id, :provider_message_id, :occurred_at,
        :error_code, :detail, :address, :data, :now, :now, :source_tenant)
ON CONFLICT (provider, source_tenant, event_id) DO NOTHING

-- name: inbox_claim
UPDATE sluice_inbox
SET attempts = attempts + 1, lease_until = :lease_until
WHERE id IN (
    SELECT id FROM sluice_inbox
    WHERE state = 'pending' AND run_at <= :now
      AND (lease_until IS NULL OR lease_until < :now)
    ORDER BY run_at, id
    LIMIT :limit
)
RETURNING id, provider, event_id, kind, status, message_id, provider_message_id, occurred_at,
          error_code, detail, address, data, received_at, state, attempts, last_error, result,
          nullif(source_tenant, '')

-- name: inbox_hold
SELECT id FROM sluice_inbox WHERE id = :id AND attempts = :attempt AND state = 'pending'

-- name: inbox_done
UPDATE sluice_inbox
SET state = 'done', result = :result, done_at = :now, lease_until = NULL
WHERE id = :id AND attempts = :attempt AND state = 'pending'

-- name: inbox_retry
UPDATE sluice_inbox
SET run_at = :run_at, last_error = :error, lease_until = NULL
WHERE id = :id AND attempts = :attempt AND state = 'pending'

-- name: inbox_dead
UPDATE sluice_inbox
SET state = 'dead', last_error = :error, lease_until = NULL, done_at = :now
WHERE id = :id AND attempts = :attempt AND state = 'pending'

-- name: inbox_reject
UPDATE sluice_inbox
SET state = 'rejected', last_error = :error, result = 'rejected', lease_until = NULL,
    done_at = :now
WHERE id = :id AND attempts = :attempt AND state = 'pending'

-- name: inbox_list
SELECT id, provider, event_id, kind, status, message_id, provider_message_id, occurred_at,
       error_code, detail, address, data, received_at, state, attempts, last_error, result,
       nullif(source_tenant, '')
FROM sluice_inbox
WHERE (:state IS NULL OR state = :state)
  AND (:provider IS NULL OR provider = :provider)
  AND (:before_id IS NULL OR id < :before_id)
ORDER BY id DESC
LIMIT :limit

-- name: inbox_requeue
UPDATE sluice_inbox
SET state = 'pending', run_at = :now, attempts = 0, lease_until = NULL, done_at = NULL
WHERE state = 'dead' AND (:all OR id IN (SELECT value FROM json_each(:ids)))
RETURNING id

-- name: inbox_counts
SELECT state, count(*) FROM sluice_inbox GROUP BY state

-- name: inbox_purge
DELETE FROM sluice_inbox WHERE state = 'done' AND received_at < :before

-- name: receipt_target
SELECT status FROM sluice_messages WHERE id = :id

-- name: receipt_insert
INSERT INTO sluice_receipts (
    message_id, provider, status, occurred_at, received_at, error_code, detail, inbox_id)
VALUES (:message_id, :provider, :status, :occurred_at, :received_at, :error_code, :detail,
        :inbox_id)

-- name: receipt_advance
-- A failed or undelivered receipt of a message that asked for post-send verification
-- (issue 15) makes it 'needs_confirm' (a person decides) rather than 'bounced'.
UPDATE sluice_messages
SET status = CASE WHEN :status = 'bounced' AND :receipt_status IN ('failed', 'undelivered')
                       AND verify_within IS NOT NULL THEN 'needs_confirm'
                  ELSE :status END,
    updated_at = :now,
    last_error_code = coalesce(:error_code, last_error_code),
    last_error = coalesce(:error, last_error)
WHERE id = :id

-- name: receipt_list
SELECT message_id, provider, status, occurred_at, received_at, error_code, detail
FROM sluice_receipts WHERE message_id = :id ORDER BY id

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
-- The ready rows per channel and provider (see the PostgreSQL query).
SELECT channel, provider, count(*),
       min(CASE WHEN run_at <= :now THEN created_at END),
       min(CASE WHEN run_at <= :now THEN run_at END),
       count(CASE WHEN attempts >= 1 THEN 1 END),
       count(CASE WHEN attempts >= 3 THEN 1 END)
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
SELECT id, :now, 'peak', 'evaluator', :detail FROM sluice_incidents
WHERE rule = :rule AND scope_key = :scope_key AND state <> 'resolved' AND peak < :value

-- name: incident_touch
UPDATE sluice_incidents
SET value = :value, peak = max(peak, :value), clear_since = NULL, updated_at = :now
WHERE rule = :rule AND scope_key = :scope_key AND state <> 'resolved'
RETURNING id

-- name: incident_insert
INSERT INTO sluice_incidents (
    id, rule, scope_key, scope, severity, types, runbook, summary, state, opened_at,
    acknowledged_at, acknowledged_by, resolved_at, resolved_by, value, peak, clear_since,
    notified, updated_at, escalated_at)
SELECT :id, :rule, :scope_key, :scope, :severity, :types, :runbook, :summary, 'open', :now,
       NULL, NULL, NULL, NULL, :value, :value, NULL, '', :now, NULL
WHERE NOT EXISTS (
    SELECT 1 FROM sluice_incidents
    WHERE rule = :rule AND scope_key = :scope_key AND state <> 'resolved')
RETURNING id

-- name: incident_fired_event
INSERT INTO sluice_incident_events (incident_id, at, kind, actor, detail)
SELECT id, :now, 'fired', 'evaluator', :detail FROM sluice_incidents WHERE id = :id

-- name: incident_clearing
-- Open incidents of a rule whose scope no longer fires start counting clear time.
UPDATE sluice_incidents SET clear_since = :now, updated_at = :now
WHERE rule = :rule AND state <> 'resolved' AND clear_since IS NULL
  AND scope_key NOT IN (SELECT value FROM json_each(:firing))

-- name: incident_resolved_event
INSERT INTO sluice_incident_events (incident_id, at, kind, actor, detail)
SELECT id, :now, 'resolved', 'evaluator', :detail FROM sluice_incidents
WHERE rule = :rule AND state <> 'resolved' AND clear_since <= :cutoff

-- name: incident_resolve_clear
UPDATE sluice_incidents
SET state = 'resolved', resolved_at = :now, resolved_by = 'evaluator', updated_at = :now
WHERE rule = :rule AND state <> 'resolved' AND clear_since <= :cutoff
RETURNING id

-- name: incident_list
SELECT id, rule, scope_key, scope, severity, types, runbook, summary, state, opened_at,
       acknowledged_at, acknowledged_by, resolved_at, resolved_by, value, peak, clear_since,
       notified, updated_at, escalated_at
FROM sluice_incidents
WHERE (:state = '' OR state = :state OR (:state = 'active' AND state <> 'resolved'))
ORDER BY opened_at DESC, id
LIMIT :limit

-- name: incident_get
SELECT id, rule, scope_key, scope, severity, types, runbook, summary, state, opened_at,
       acknowledged_at, acknowledged_by, resolved_at, resolved_by, value, peak, clear_since,
       notified, updated_at, escalated_at
FROM sluice_incidents WHERE id = :id

-- name: incident_events
SELECT id, incident_id, at, kind, actor, detail FROM sluice_incident_events
WHERE incident_id = :id ORDER BY id

-- name: incident_ack
UPDATE sluice_incidents
SET state = 'acknowledged', acknowledged_at = :now, acknowledged_by = :actor, updated_at = :now
WHERE id = :id AND state = 'open'
RETURNING id

-- name: incident_resolve
UPDATE sluice_incidents
SET state = 'resolved', resolved_at = :now, resolved_by = :actor, updated_at = :now
WHERE id = :id AND state <> 'resolved'
RETURNING id

-- name: incident_event
INSERT INTO sluice_incident_events (incident_id, at, kind, actor, detail)
SELECT id, :now, :kind, :actor, :detail FROM sluice_incidents WHERE id = :id
RETURNING id

-- name: incident_unnotified
-- Transitions announced in order: '' -> opened -> escalated -> resolved.
SELECT id, rule, scope_key, scope, severity, types, runbook, summary, state, opened_at,
       acknowledged_at, acknowledged_by, resolved_at, resolved_by, value, peak, clear_since,
       notified, updated_at, escalated_at
FROM sluice_incidents
WHERE (state <> 'resolved' AND notified = '')
   OR (escalated_at IS NOT NULL AND notified IN ('', 'opened'))
   OR (state = 'resolved' AND notified <> 'resolved')
ORDER BY opened_at
LIMIT 100

-- name: incident_notified
UPDATE sluice_incidents SET notified = :transition WHERE id = :id

-- name: incident_escalate
-- Open (unacknowledged) incidents past the escalation time: escalated once.
UPDATE sluice_incidents SET escalated_at = :now, updated_at = :now
WHERE state = 'open' AND escalated_at IS NULL AND opened_at <= :cutoff
RETURNING id

-- name: incident_escalated_event
INSERT INTO sluice_incident_events (incident_id, at, kind, actor, detail)
SELECT id, :now, 'escalated', 'evaluator', :detail
FROM sluice_incidents
WHERE state = 'open' AND escalated_at IS NULL AND opened_at <= :cutoff

-- name: tally_attempts
-- The alert evaluator's windows (sluice/ops/alerts.py): attempts by every label a rule
-- may filter or group on, finished in (since, until].
SELECT m.tenant, m.channel, a.provider, m.action, a.outcome, coalesce(a.error_code, ''),
       count(*)
FROM sluice_attempts a JOIN sluice_messages m ON m.id = a.message_id
WHERE a.finished_at > :since AND a.finished_at <= :until
GROUP BY m.tenant, m.channel, a.provider, m.action, a.outcome, coalesce(a.error_code, '')

-- name: tally_inbox
SELECT provider, kind, state, count(*) FROM sluice_inbox
WHERE received_at > :since AND received_at <= :until
GROUP BY provider, kind, state

-- name: tally_audit
-- By action, target and the tenant its detail names (a rule may select on each).
SELECT action, coalesce(target, ''), coalesce(json_extract(detail, '$.tenant'), ''), count(*)
FROM sluice_audit
WHERE at > :since AND at <= :until
GROUP BY 1, 2, 3

-- name: sent_latencies
-- Creation to sent, in seconds, of the newest sent attempts of the window.
SELECT m.tenant, m.channel, a.provider, a.finished_at - m.created_at
FROM sluice_attempts a JOIN sluice_messages m ON m.id = a.message_id
WHERE a.outcome = 'sent' AND a.finished_at > :since AND a.finished_at <= :until
ORDER BY a.finished_at DESC

-- name: audit_select
-- A page of the audit log, newest first, as AuditFilter selects it (its docstring says
-- where each scope field is looked for). substr(x, 1, length(p)) = p is "x starts with
-- p" without LIKE's wildcards.
SELECT id, at, actor, action, target, reason, detail, prev_hash, hash
FROM sluice_audit
WHERE (:before_id IS NULL OR id < :before_id)
  AND (:since IS NULL OR at >= :since)
  AND (:until IS NULL OR at < :until)
  AND (:actor IS NULL OR actor = :actor)
  AND (:action IS NULL OR substr(action, 1, length(:action)) = :action)
  AND (:tenant IS NULL
       OR :tenant IN (json_extract(detail, '$.scope.tenant'), json_extract(detail, '$.tenant'),
                      json_extract(detail, '$.filter.tenant'),
                      json_extract(detail, '$.message_tenant'),
                      json_extract(detail, '$.connection_tenant'),
                      json_extract(detail, '$.source_tenant'))
       OR (substr(action, 1, 11) = 'connection.'
           AND substr(target, 1, length(:tenant) + 1) = :tenant || '/')
       OR (substr(action, 1, 8) = 'breaker.'
           AND (substr(target, 1, length(:tenant) + 3) = 'c:' || :tenant || ':'
                OR substr(target, 1, length(:tenant) + 3) = 'e:' || :tenant || ':'))
       OR (action = 'quota.threshold'
           AND substr(json_extract(detail, '$.key'), 1, length(:tenant) + 3)
               = 'q:' || :tenant || '|'))
  AND (:channel IS NULL
       OR :channel IN (json_extract(detail, '$.scope.channel'),
                       json_extract(detail, '$.filter.channel')))
  AND (:provider IS NULL
       OR :provider IN (json_extract(detail, '$.scope.provider'),
                        json_extract(detail, '$.provider'),
                        json_extract(detail, '$.filter.provider'))
       OR (substr(action, 1, 11) = 'connection.'
           AND substr(target, -(length(:provider) + 1)) = '/' || :provider)
       OR (substr(action, 1, 8) = 'breaker.'
           AND (target = 'p:' || :provider
                OR (substr(target, 1, 2) = 'c:'
                    AND substr(target, -(length(:provider) + 1)) = ':' || :provider))))
  AND (:scope_action IS NULL
       OR :scope_action IN (json_extract(detail, '$.scope.action'),
                            json_extract(detail, '$.action'),
                            json_extract(detail, '$.filter.action')))
ORDER BY id DESC
LIMIT :limit

-- name: audit_walk
-- The whole log a page at a time, oldest first (sluice audit verify).
SELECT id, at, actor, action, target, reason, detail, prev_hash, hash
FROM sluice_audit
WHERE id > :after_id
ORDER BY id
LIMIT :limit

-- == endpoint health and tenants' events (issue 14) ==================================

-- name: endpoint_report
INSERT INTO sluice_endpoints AS e (id, tenant, endpoint, provider, state, failing_since,
    last_success_at, last_failure_at, last_error, window_start, window_ok, window_failed,
    updated_at)
VALUES (:id, :tenant, :endpoint, :provider,
        CASE WHEN :streak_from IS NULL THEN 'healthy' ELSE 'failing' END,
        :streak_from, :last_ok, :last_failed, :error, :now, :ok, :failed, :now)
ON CONFLICT (tenant, endpoint) DO UPDATE SET
    state = CASE WHEN e.state = 'disabled' THEN 'disabled'
                 WHEN :streak_from IS NULL THEN 'healthy' ELSE 'failing' END,
    failing_since = CASE WHEN :streak_from IS NULL THEN NULL
                         WHEN :ok > 0 THEN :streak_from
                         ELSE coalesce(e.failing_since, :streak_from) END,
    last_success_at = coalesce(:last_ok, e.last_success_at),
    last_failure_at = coalesce(:last_failed, e.last_failure_at),
    last_error = coalesce(:error, e.last_error),
    window_start = CASE WHEN e.window_start <= :window_cut THEN :now ELSE e.window_start END,
    window_ok = CASE WHEN e.window_start <= :window_cut THEN 0 ELSE e.window_ok END + :ok,
    window_failed = CASE WHEN e.window_start <= :window_cut THEN 0
                         ELSE e.window_failed END + :failed,
    updated_at = :now

-- name: endpoint_list
SELECT id, tenant, endpoint, provider, state, failing_since, last_success_at,
       last_failure_at, last_error, disabled_at, disabled_reason, window_start, window_ok,
       window_failed, updated_at
FROM sluice_endpoints
WHERE (:tenant IS NULL OR tenant = :tenant)
  AND (:state IS NULL OR state = :state)
  AND (:failing_before IS NULL OR failing_since <= :failing_before)
ORDER BY tenant, endpoint

-- name: endpoint_get
SELECT id, tenant, endpoint, provider, state, failing_since, last_success_at,
       last_failure_at, last_error, disabled_at, disabled_reason, window_start, window_ok,
       window_failed, updated_at
FROM sluice_endpoints WHERE id = :id

-- name: endpoint_move
UPDATE sluice_endpoints
SET state = :state,
    failing_since = CASE WHEN :state = 'disabled' THEN failing_since ELSE NULL END,
    disabled_at = CASE WHEN :state = 'disabled' THEN :now ELSE NULL END,
    disabled_reason = CASE WHEN :state = 'disabled' THEN :reason ELSE NULL END,
    updated_at = :now
WHERE id = :id AND (:expected IS NULL OR state = :expected)
RETURNING id

-- name: tenant_events_get
SELECT tenant, events_url, dead_seen_until, updated_at
FROM sluice_tenant_settings WHERE tenant = :tenant

-- name: tenant_events_list
SELECT tenant, events_url, dead_seen_until, updated_at
FROM sluice_tenant_settings WHERE events_url IS NOT NULL ORDER BY tenant

-- name: tenant_events_set
INSERT INTO sluice_tenant_settings (tenant, events_url, dead_seen_until, updated_at)
VALUES (:tenant, :url, :now, :now)
ON CONFLICT (tenant) DO UPDATE SET
    events_url = excluded.events_url,
    dead_seen_until = coalesce(sluice_tenant_settings.dead_seen_until, excluded.dead_seen_until),
    updated_at = excluded.updated_at

-- name: tenant_events_dead_seen
UPDATE sluice_tenant_settings SET dead_seen_until = :until
WHERE tenant = :tenant
  AND dead_seen_until IS :expected
  AND (dead_seen_until IS NULL OR dead_seen_until < :until)
RETURNING tenant
-- == the two-person rule (issue 14): operator acts waiting for a second operator ==

-- name: request_insert
INSERT INTO sluice_requests (id, act, args, scope, tenant, affected, requester, reason,
                             created_at, expires_at, state)
VALUES (:id, :act, :args, :scope, :tenant, :affected, :requester, :reason, :now, :expires_at,
        'pending')
ON CONFLICT (id) DO NOTHING
RETURNING id

-- name: request_get
SELECT id, act, args, scope, tenant, affected, requester, reason, created_at, expires_at,
       state, decided_by, decided_at, decision, result
FROM sluice_requests WHERE id = :id

-- name: request_list
-- Newest first; a page starts after the request named by before.
SELECT id, act, args, scope, tenant, affected, requester, reason, created_at, expires_at,
       state, decided_by, decided_at, decision, result
FROM sluice_requests
WHERE (:state IS NULL OR state = :state)
  AND (:before IS NULL
       OR (created_at, id) < (SELECT created_at, id FROM sluice_requests WHERE id = :before))
ORDER BY created_at DESC, id DESC
LIMIT :limit

-- name: request_decide
UPDATE sluice_requests
SET state = :state, decided_by = :actor, decided_at = :now, decision = :decision
WHERE id = :id AND state = 'pending' AND expires_at > :now
RETURNING id

-- name: request_result
UPDATE sluice_requests SET result = :result WHERE id = :id

-- name: request_expire
UPDATE sluice_requests SET state = 'expired', decided_at = :now
WHERE state = 'pending' AND expires_at <= :now
RETURNING id
-- name: attempt_search
-- Listings (issue 14): attempt_search, message_breakdown.
-- Attempts newest first; the id is the cursor.
SELECT message_id, attempt_no, worker_id, provider, started_at, finished_at, outcome,
       error_code, error_class, provider_status, provider_code, detail, latency_ms, applied, id
FROM sluice_attempts
WHERE (:message_id IS NULL OR message_id = :message_id)
  AND (:worker_id IS NULL OR worker_id = :worker_id)
  AND (:provider IS NULL OR provider = :provider)
  AND (:outcome IS NULL OR outcome = :outcome)
  AND (:error_code IS NULL OR error_code = :error_code)
  AND (:since IS NULL OR finished_at >= :since)
  AND (:until IS NULL OR finished_at < :until)
  AND (:before_id IS NULL OR id < :before_id)
ORDER BY id DESC
LIMIT :limit

-- name: message_breakdown
-- Messages per group (the column :by names; '' for one group) and status.
SELECT CASE :by WHEN 'tenant' THEN tenant WHEN 'channel' THEN channel
            WHEN 'provider' THEN provider WHEN 'action' THEN action
            WHEN 'hold_reason' THEN coalesce(hold_reason, '') ELSE '' END AS grp,
       status, count(*), count(last_error_code), min(created_at), min(updated_at),
       min(CASE WHEN status = 'queued' AND run_at <= :now THEN run_at END)
FROM sluice_messages
WHERE (:status IS NULL OR status = :status)
  AND (:tenant IS NULL OR tenant = :tenant)
  AND (:channel IS NULL OR channel = :channel)
  AND (:provider IS NULL OR provider = :provider)
  AND (:action IS NULL OR action = :action)
  AND (:since IS NULL OR created_at >= :since)
  AND (:until IS NULL OR created_at < :until)
  AND (:since_id IS NULL OR id >= :since_id)  -- see the PostgreSQL query
  -- Canaries (issue 15) are not in tenants' figures: grouped or filtered by tenant.
  AND (action <> 'sluice.canary' OR (:by <> 'tenant' AND :tenant IS NULL))
GROUP BY 1, 2

-- == Acting on what waits (issue 14): retry-now, throttles clear ======================

-- name: message_select_waiting
-- Queued messages waiting out a retry backoff or a deferral (claimed before: tried,
-- deferred or put back; due later): never a first send the caller scheduled, nor parked.
SELECT id FROM sluice_messages
WHERE status = 'queued' AND parked_by IS NULL AND run_at > :now
  AND claim_seq > 0
  AND (:ids IS NULL OR id IN (SELECT value FROM json_each(:ids)))
  AND (:tenant IS NULL OR tenant = :tenant)
  AND (:channel IS NULL OR channel = :channel)
  AND (:provider IS NULL OR provider = :provider)
  AND (:action IS NULL OR action = :action)
  AND (:error_code IS NULL OR last_error_code = :error_code
       OR (:error_code = 'UNKNOWN' AND last_error_code IS NULL))
ORDER BY run_at, id
LIMIT :limit

-- name: message_retry_now
UPDATE sluice_messages SET run_at = :now, updated_at = :now
WHERE id = :id AND status = :from_status AND parked_by IS NULL
  AND run_at > :now AND claim_seq > 0

-- name: throttle_clear
DELETE FROM sluice_throttles WHERE tenant = :tenant AND provider = :provider
RETURNING tenant, provider, until, reason, set_at

-- == Message expiry (issue 14) =========================================================

-- name: message_expire_past
UPDATE sluice_messages
SET status = 'expired', parked_by = NULL, hold_reason = :reason, updated_at = :now
WHERE id IN (
    SELECT id FROM sluice_messages
    WHERE expires_at IS NOT NULL AND status IN ('queued', 'held') AND expires_at <= :now
    ORDER BY expires_at
    LIMIT :limit)
RETURNING id, tenant, channel, provider

-- -- recipient hygiene (issue 14): suppressions and the WhatsApp window ---------------

-- name: suppression_insert
INSERT INTO sluice_suppressions (tenant, channel, recipient, reason, source, actor, created_at)
VALUES (:tenant, :channel, :recipient, :reason, :source, :actor, :created_at)
ON CONFLICT DO NOTHING

-- name: suppression_delete
DELETE FROM sluice_suppressions
WHERE tenant = :tenant AND channel = :channel AND recipient = :recipient
RETURNING tenant, channel, recipient, reason, source, actor, created_at

-- name: suppression_list
SELECT tenant, channel, recipient, reason, source, actor, created_at
FROM sluice_suppressions
WHERE (:tenant IS NULL OR tenant = :tenant)
  AND (:channel IS NULL OR channel = :channel)
  AND (:recipient IS NULL OR recipient = :recipient)
  AND (:after_tenant IS NULL
       OR (tenant, channel, recipient) > (:after_tenant, :after_channel, :after_recipient))
ORDER BY tenant, channel, recipient
LIMIT :limit

-- name: suppression_counts
SELECT channel, count(*) FROM sluice_suppressions GROUP BY channel ORDER BY channel

-- name: suppression_find
-- Which of one claimed batch's (tenant, medium, recipient) keys are suppressed.
SELECT s.tenant, s.channel, s.recipient
FROM sluice_suppressions s
JOIN json_each(:keys) AS k
  ON s.tenant = json_extract(k.value, '$[0]') AND s.channel = json_extract(k.value, '$[1]')
 AND s.recipient = json_extract(k.value, '$[2]')

-- name: contact_seen
INSERT INTO sluice_contacts (tenant, channel, recipient, last_inbound_at)
VALUES (:tenant, :channel, :recipient, :at)
ON CONFLICT (tenant, channel, recipient) DO UPDATE
SET last_inbound_at = max(last_inbound_at, excluded.last_inbound_at)

-- name: contact_find
SELECT c.tenant, c.channel, c.recipient, c.last_inbound_at
FROM sluice_contacts c
JOIN json_each(:keys) AS k
  ON c.tenant = json_extract(k.value, '$[0]') AND c.channel = json_extract(k.value, '$[1]')
 AND c.recipient = json_extract(k.value, '$[2]')
-- == retention (issue 14): sluice.ops.retention removes final messages ===============
-- Each pick and count names one status and repeats the index's predicate word for word,
-- so SQLite may use the partial index (sluice_messages_final) and no non-final row matches.

-- name: purge_count
SELECT count(*) FROM sluice_messages
WHERE status NOT IN ('queued', 'sending', 'held')
  AND status = :status AND updated_at < :before
  AND (:tenant IS NULL OR tenant = :tenant)

-- name: purge_pick
SELECT id FROM sluice_messages
WHERE status NOT IN ('queued', 'sending', 'held')
  AND status = :status AND updated_at < :before
  AND (:tenant IS NULL OR tenant = :tenant)
ORDER BY updated_at
LIMIT :limit

-- name: purge_messages
SELECT id, tenant, channel, provider, action, recipient, payload, priority, status, run_at,
       attempts, max_attempts, claim_seq, idempotency_key, correlation_id, scopes, created_at,
       updated_at, last_error_code, last_error, provider_message_id, worker_id, lease_until,
       hold_reason, approved_by, approved_at, deferrals, deferred_since
FROM sluice_messages WHERE id IN (SELECT value FROM json_each(:ids)) ORDER BY updated_at, id

-- name: purge_attempts
SELECT message_id, attempt_no, worker_id, provider, started_at, finished_at, outcome,
       error_code, error_class, provider_status, provider_code, detail, latency_ms, applied
FROM sluice_attempts WHERE message_id IN (SELECT value FROM json_each(:ids))
ORDER BY attempt_no, id

-- name: purge_receipts
SELECT message_id, provider, status, occurred_at, received_at, error_code, detail
FROM sluice_receipts WHERE message_id IN (SELECT value FROM json_each(:ids)) ORDER BY id

-- name: purge_delete_receipts
DELETE FROM sluice_receipts WHERE message_id IN (SELECT value FROM json_each(:ids))

-- name: purge_delete_attempts
DELETE FROM sluice_attempts WHERE message_id IN (SELECT value FROM json_each(:ids))

-- name: purge_delete_messages
DELETE FROM sluice_messages
WHERE id IN (SELECT value FROM json_each(:ids))
  AND status NOT IN ('queued', 'sending', 'held', 'needs_confirm')
RETURNING status

-- == annotations (issue 15) ===========================================================

-- name: annotation_insert
INSERT INTO sluice_annotations (at, actor, kind, text, tenant, detail)
VALUES (:at, :actor, :kind, :text, :tenant, :detail)
RETURNING id

-- name: annotation_list
-- Newest first by when they mark; a page starts after the annotation named by before.
SELECT id, at, actor, kind, text, tenant, detail
FROM sluice_annotations
WHERE (:since IS NULL OR at >= :since)
  AND (:until IS NULL OR at < :until)
  AND (:tenant IS NULL OR tenant = :tenant)
  AND (:kind IS NULL OR kind = :kind)
  AND (:before IS NULL
       OR (at, id) < (SELECT at, id FROM sluice_annotations WHERE id = :before))
ORDER BY at DESC, id DESC
LIMIT :limit
-- == Canaries (issue 15): golden-path canaries and their outcomes ======================

-- name: canary_record
INSERT INTO sluice_canaries (id, target, provider, tenant, recipient, message_id, sent_at,
                             receipt_at, outcome, error, actor)
VALUES (:id, :target, :provider, :tenant, :recipient, :message_id, :sent_at, :receipt_at,
        :outcome, :error, :actor)
ON CONFLICT (id) DO UPDATE SET message_id = excluded.message_id,
    receipt_at = excluded.receipt_at, outcome = excluded.outcome, error = excluded.error

-- name: canary_list
SELECT id, target, provider, tenant, recipient, message_id, sent_at, receipt_at, outcome,
       error, actor
FROM sluice_canaries
WHERE (:provider IS NULL OR provider = :provider)
ORDER BY sent_at DESC, id DESC
LIMIT :limit

-- name: canary_latest
-- Each target's newest canary (with finished, its newest that is no longer pending).
SELECT c.id, c.target, c.provider, c.tenant, c.recipient, c.message_id, c.sent_at,
       c.receipt_at, c.outcome, c.error, c.actor
FROM sluice_canaries c
WHERE c.id = (SELECT d.id FROM sluice_canaries d
              WHERE d.target = c.target AND (NOT :finished OR d.outcome <> 'pending')
              ORDER BY d.sent_at DESC, d.id DESC LIMIT 1)
-- -- post-send verification (issue 15, seed 003 RB-03) ----------------------------------

-- name: message_verify_due
UPDATE sluice_messages
SET status = 'needs_confirm', last_error_code = 'NOT_CONFIRMED',
    last_error = 'no delivered or read receipt within ' || verify_within
                 || ' s of sending: confirm or fail it (sluice messages confirm|fail)',
    updated_at = :now
WHERE id IN (
    SELECT id FROM sluice_messages
    WHERE verify_by IS NOT NULL AND status = 'sent' AND verify_by <= :now
    ORDER BY verify_by
    LIMIT :limit)
RETURNING id, tenant, channel, provider

-- name: message_confirm
UPDATE sluice_messages
SET status = 'delivered', last_error_code = NULL, last_error = NULL, verify_by = NULL,
    updated_at = :now
WHERE id = :id AND status = :from_status

-- name: message_fail
UPDATE sluice_messages
SET status = 'dead', last_error_code = 'NOT_CONFIRMED',
    last_error = 'not confirmed: marked failed by ' || :actor, verify_by = NULL,
    updated_at = :now
WHERE id = :id AND status = :from_status
-- == Console sessions (issue 16) =======================================================

-- name: console_session_insert
INSERT INTO sluice_console_sessions (token_hash, kind, key_id, actor, csrf, created_at,
                                     seen_at, expires_at)
VALUES (:token_hash, :kind, :key_id, :actor, :csrf, :created_at, :seen_at, :expires_at)

-- name: console_session_get
SELECT token_hash, kind, key_id, actor, csrf, created_at, seen_at, expires_at
FROM sluice_console_sessions WHERE token_hash = :token_hash

-- name: console_session_touch
UPDATE sluice_console_sessions SET seen_at = :seen_at
WHERE token_hash = :token_hash AND kind = 'session'

-- name: console_session_take
-- Delete and return in one statement: a one-time link is used once even when two
-- browsers open it together.
DELETE FROM sluice_console_sessions WHERE token_hash = :token_hash
RETURNING token_hash, kind, key_id, actor, csrf, created_at, seen_at, expires_at

-- name: console_session_purge
DELETE FROM sluice_console_sessions WHERE expires_at <= :now RETURNING token_hash

-- == Console overview (issue 16) =======================================================

-- name: activity_enqueued
-- Messages created per minute of the window, counted back from now (0: the last
-- minute). The id bound makes it a range of the primary key (ids are time-ordered).
SELECT CAST((:now - created_at) / 60 AS INTEGER), count(*)
FROM sluice_messages
WHERE id >= :first_id AND created_at > :since AND created_at <= :now
GROUP BY 1

-- name: activity_attempts
-- Attempts finished per minute of the window and outcome (sluice_attempts_finished).
SELECT CAST((:now - finished_at) / 60 AS INTEGER), outcome, count(*)
FROM sluice_attempts
WHERE finished_at > :since AND finished_at <= :now
GROUP BY 1, 2
