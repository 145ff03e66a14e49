-- Sluice 0018: post-send verification (see the PostgreSQL migration).

-- SQLite cannot alter a CHECK constraint: rebuild sluice_messages with 'needs_confirm',
-- verify_within and verify_by, keeping every column and index it had (0011, 0012, 0015).
ALTER TABLE sluice_messages RENAME TO sluice_messages_0017;
DROP INDEX sluice_messages_idempotency;
DROP INDEX sluice_messages_leased;
DROP INDEX sluice_messages_dead;
DROP INDEX sluice_messages_held;
DROP INDEX sluice_messages_tenant;
DROP INDEX sluice_messages_ready;
DROP INDEX sluice_messages_parked;
DROP INDEX sluice_messages_expiring;
DROP INDEX sluice_messages_final;
CREATE TABLE sluice_messages (
    id                  TEXT PRIMARY KEY,
    tenant              TEXT NOT NULL,
    channel             TEXT NOT NULL,
    provider            TEXT NOT NULL,
    action              TEXT NOT NULL,
    recipient           TEXT NOT NULL,
    payload             TEXT NOT NULL,
    priority            INTEGER NOT NULL DEFAULT 0,
    status              TEXT NOT NULL DEFAULT 'queued' CHECK (status IN (
                            'queued', 'sending', 'sent', 'delivered', 'bounced', 'read',
                            'held', 'dead', 'cancelled', 'shadowed', 'expired',
                            'suppressed', 'needs_confirm')),
    run_at              REAL NOT NULL,
    attempts            INTEGER NOT NULL DEFAULT 0,
    max_attempts        INTEGER NOT NULL CHECK (max_attempts BETWEEN 1 AND 100),
    claim_seq           INTEGER NOT NULL DEFAULT 0,
    idempotency_key     TEXT,
    content_hash        TEXT NOT NULL,
    correlation_id      TEXT,
    scopes              TEXT NOT NULL DEFAULT '[]',
    worker_id           TEXT,
    claimed_at          REAL,
    lease_until         REAL,
    last_error_code     TEXT,
    last_error          TEXT,
    provider_message_id TEXT,
    hold_reason         TEXT,
    created_at          REAL NOT NULL,
    updated_at          REAL NOT NULL,
    approved_by         TEXT,
    approved_at         REAL,
    deferrals           INTEGER NOT NULL DEFAULT 0,
    deferred_since      REAL,
    parked_by           TEXT,
    expires_at          REAL,
    verify_within       REAL,
    verify_by           REAL,
    -- A message holds a lease exactly while it is sending; write-backs rely on it.
    CONSTRAINT sluice_messages_lease_iff_sending
        CHECK ((status = 'sending') = (lease_until IS NOT NULL))
);
INSERT INTO sluice_messages (
    id, tenant, channel, provider, action, recipient, payload, priority, status, run_at,
    attempts, max_attempts, claim_seq, idempotency_key, content_hash, correlation_id, scopes,
    worker_id, claimed_at, lease_until, last_error_code, last_error, provider_message_id,
    hold_reason, created_at, updated_at, approved_by, approved_at, deferrals, deferred_since,
    parked_by, expires_at, verify_within, verify_by)
SELECT
    id, tenant, channel, provider, action, recipient, payload, priority, status, run_at,
    attempts, max_attempts, claim_seq, idempotency_key, content_hash, correlation_id, scopes,
    worker_id, claimed_at, lease_until, last_error_code, last_error, provider_message_id,
    hold_reason, created_at, updated_at, approved_by, approved_at, deferrals, deferred_since,
    parked_by, expires_at, NULL, NULL
FROM sluice_messages_0017;
DROP TABLE sluice_messages_0017;
CREATE UNIQUE INDEX sluice_messages_idempotency
    ON sluice_messages (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX sluice_messages_leased
    ON sluice_messages (lease_until) WHERE status = 'sending';
CREATE INDEX sluice_messages_dead
    ON sluice_messages (channel, last_error_code, updated_at) WHERE status = 'dead';
CREATE INDEX sluice_messages_held
    ON sluice_messages (tenant, provider, run_at) WHERE status = 'held';
CREATE INDEX sluice_messages_tenant ON sluice_messages (tenant, id);
CREATE INDEX sluice_messages_ready
    ON sluice_messages (tenant, (attempts > 0), priority DESC, run_at)
    WHERE status = 'queued' AND parked_by IS NULL;
CREATE INDEX sluice_messages_parked
    ON sluice_messages (parked_by) WHERE parked_by IS NOT NULL;
CREATE INDEX sluice_messages_expiring ON sluice_messages (expires_at)
    WHERE expires_at IS NOT NULL AND status IN ('queued', 'held');
CREATE INDEX sluice_messages_final
    ON sluice_messages (status, updated_at) WHERE status NOT IN ('queued', 'sending', 'held');
CREATE INDEX sluice_messages_verifying ON sluice_messages (verify_by)
    WHERE verify_by IS NOT NULL AND status = 'sent';
CREATE INDEX sluice_messages_needs_confirm ON sluice_messages (tenant, updated_at)
    WHERE status = 'needs_confirm';
