-- Sluice: the current full schema for sqlite.
-- It must equal the migration chain (migrations/sqlite/0001 ... applied in order):
-- tests/integration/test_schema_matches_migrations.py builds one database from each
-- and compares their catalogs. A new migration changes this file in the same commit.
--
-- Times are REAL seconds since the Unix epoch (UTC): compact, and ordered as numbers.

-- Rebuilt by 0011 (SQLite cannot alter a CHECK): every column in one definition.
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

CREATE UNIQUE INDEX sluice_messages_idempotency
    ON sluice_messages (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX sluice_messages_leased
    ON sluice_messages (lease_until) WHERE status = 'sending';
CREATE INDEX sluice_messages_dead
    ON sluice_messages (channel, last_error_code, updated_at) WHERE status = 'dead';

CREATE TABLE sluice_attempts (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id      TEXT NOT NULL,
    attempt_no      INTEGER NOT NULL,
    worker_id       TEXT NOT NULL,
    provider        TEXT NOT NULL,
    started_at      REAL NOT NULL,
    finished_at     REAL NOT NULL,
    outcome         TEXT NOT NULL CHECK (outcome IN (
                        'sent', 'failed', 'throttled', 'lease_expired', 'shadowed', 'deferred')),
    error_code      TEXT,
    error_class     TEXT,
    provider_status TEXT,
    provider_code   TEXT,
    detail          TEXT,
    latency_ms      REAL,
    applied         INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX sluice_attempts_message ON sluice_attempts (message_id, attempt_no);

CREATE TABLE sluice_audit (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    at        REAL NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    target    TEXT,
    reason    TEXT,
    detail    TEXT NOT NULL DEFAULT '{}',
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL UNIQUE
);
CREATE TRIGGER sluice_audit_no_update BEFORE UPDATE ON sluice_audit
BEGIN
    SELECT RAISE(ABORT, 'sluice_audit is append-only');
END;
CREATE TRIGGER sluice_audit_no_delete BEFORE DELETE ON sluice_audit
BEGIN
    SELECT RAISE(ABORT, 'sluice_audit is append-only');
END;

CREATE TABLE sluice_workers (
    id           TEXT PRIMARY KEY,
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    started_at   REAL NOT NULL,
    last_seen_at REAL NOT NULL,
    stopped_at   REAL,
    in_flight    INTEGER NOT NULL DEFAULT 0,
    sent_total   INTEGER NOT NULL DEFAULT 0
);


CREATE TABLE sluice_connections (
    id                 TEXT PRIMARY KEY,
    tenant             TEXT NOT NULL,
    provider           TEXT NOT NULL,
    state              TEXT NOT NULL DEFAULT 'active' CHECK (state IN (
                           'active', 'pending_reauth', 'needs_reconsent', 'revoked')),
    state_reason       TEXT,
    state_changed_at   REAL NOT NULL,
    scopes             TEXT NOT NULL DEFAULT '[]',
    missing_scopes     TEXT NOT NULL DEFAULT '[]',
    ciphertext         BLOB NOT NULL,
    key_id             TEXT NOT NULL,
    credential_version INTEGER NOT NULL DEFAULT 1,
    expires_at         REAL,
    last_check_at      REAL,
    last_check_ok_at   REAL,
    last_check_error   TEXT,
    created_at         REAL NOT NULL,
    updated_at         REAL NOT NULL,
    CONSTRAINT sluice_connections_one_per_tenant_provider UNIQUE (tenant, provider)
);

CREATE INDEX sluice_messages_held
    ON sluice_messages (tenant, provider, run_at) WHERE status = 'held';

-- 0003: flow controls. Columns added by ALTER TABLE, as the migration does, so the
-- stored table definitions match.
CREATE TABLE sluice_controls (
    id         TEXT PRIMARY KEY,
    tenant     TEXT NOT NULL DEFAULT '',
    channel    TEXT NOT NULL DEFAULT '',
    provider   TEXT NOT NULL DEFAULT '',
    action     TEXT NOT NULL DEFAULT '',
    mode       TEXT NOT NULL CHECK (mode IN ('live', 'paused', 'shadow', 'approval', 'killed')),
    actor      TEXT NOT NULL,
    reason     TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL,
    version    INTEGER NOT NULL,
    CONSTRAINT sluice_controls_one_per_scope UNIQUE (tenant, channel, provider, action)
);

CREATE TABLE sluice_flow_epoch (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    version    INTEGER NOT NULL,
    changed_at REAL
);
INSERT INTO sluice_flow_epoch (id, version) VALUES (1, 0);

ALTER TABLE sluice_workers ADD COLUMN flow_version INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sluice_workers ADD COLUMN flow_acked_at REAL;


CREATE TABLE sluice_limits (
    kind       TEXT NOT NULL CHECK (kind IN ('rate', 'quota', 'recipient', 'action', 'concurrency')),
    tenant     TEXT NOT NULL DEFAULT '',
    provider   TEXT NOT NULL DEFAULT '',
    action     TEXT NOT NULL DEFAULT '',
    spec       TEXT NOT NULL,
    actor      TEXT NOT NULL,
    reason     TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (kind, tenant, provider, action)
);

CREATE TABLE sluice_flow_state (
    key        TEXT PRIMARY KEY,
    value      REAL NOT NULL,
    stamp      REAL NOT NULL,
    expires_at REAL
);

CREATE TABLE sluice_breakers (
    key         TEXT PRIMARY KEY,
    provider    TEXT NOT NULL,
    tenant      TEXT NOT NULL DEFAULT '',
    state       TEXT NOT NULL CHECK (state IN ('closed', 'open', 'half_open')),
    since       REAL NOT NULL,
    retry_at    REAL,
    forced      INTEGER NOT NULL DEFAULT 0,
    reason      TEXT,
    probes_ok   INTEGER NOT NULL DEFAULT 0,
    updated_at  REAL NOT NULL
);

CREATE TABLE sluice_breaker_window (
    key    TEXT NOT NULL,
    bucket INTEGER NOT NULL,
    ok     INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (key, bucket)
);

CREATE TABLE sluice_throttles (
    tenant   TEXT NOT NULL,
    provider TEXT NOT NULL,
    until    REAL NOT NULL,
    reason   TEXT,
    set_at   REAL NOT NULL,
    PRIMARY KEY (tenant, provider)
);


CREATE TABLE sluice_api_keys (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    role        TEXT NOT NULL CHECK (role IN ('tenant', 'operator')),
    tenant      TEXT,
    secret_hash TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  REAL NOT NULL,
    revoked_at  REAL,
    CHECK ((role = 'tenant') = (tenant IS NOT NULL))
);

CREATE TABLE sluice_idempotency (
    scope        TEXT NOT NULL,
    key          TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('running', 'done')),
    status_code  INTEGER,
    response     TEXT,
    created_at   REAL NOT NULL,
    locked_until REAL NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX sluice_idempotency_created ON sluice_idempotency (created_at);

CREATE INDEX sluice_messages_tenant ON sluice_messages (tenant, id);

CREATE TABLE sluice_inbox (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    provider            TEXT NOT NULL,
    event_id            TEXT NOT NULL,
    kind                TEXT NOT NULL CHECK (kind IN ('receipt', 'inbound')),
    status              TEXT,
    message_id          TEXT,
    provider_message_id TEXT,
    occurred_at         REAL,
    error_code          TEXT,
    detail              TEXT,
    address             TEXT,
    data                TEXT NOT NULL,
    received_at         REAL NOT NULL,
    state               TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'dead', 'rejected')),
    attempts            INTEGER NOT NULL DEFAULT 0,
    run_at              REAL NOT NULL,
    lease_until         REAL,
    last_error          TEXT,
    result              TEXT,
    done_at             REAL,
    source_tenant       TEXT NOT NULL DEFAULT '',
    UNIQUE (provider, source_tenant, event_id)
);
CREATE INDEX sluice_inbox_ready ON sluice_inbox (run_at, id) WHERE state = 'pending';
CREATE INDEX sluice_inbox_done ON sluice_inbox (received_at) WHERE state = 'done';

CREATE TABLE sluice_receipts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id  TEXT NOT NULL,
    provider    TEXT NOT NULL,
    status      TEXT NOT NULL,
    occurred_at REAL,
    received_at REAL NOT NULL,
    error_code  TEXT,
    detail      TEXT,
    inbox_id    INTEGER
);
CREATE INDEX sluice_receipts_message ON sluice_receipts (message_id, id);

-- The ready set (sluice_messages_ready) is indexed at the end of this file (0019).
CREATE INDEX sluice_messages_parked
    ON sluice_messages (parked_by) WHERE parked_by IS NOT NULL;

-- The audit log by action (state metrics, sluice audit list).
CREATE INDEX sluice_audit_action ON sluice_audit (action, id);


CREATE TABLE sluice_incidents (
    id              TEXT PRIMARY KEY,
    rule            TEXT NOT NULL,
    scope_key       TEXT NOT NULL,
    scope           TEXT NOT NULL,
    severity        TEXT NOT NULL CHECK (severity IN ('P0', 'P1', 'P2', 'P3')),
    types           TEXT NOT NULL,
    runbook         TEXT NOT NULL,
    summary         TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('open', 'acknowledged', 'resolved')),
    opened_at       REAL NOT NULL,
    acknowledged_at REAL,
    acknowledged_by TEXT,
    resolved_at     REAL,
    resolved_by     TEXT,
    value           REAL NOT NULL,
    peak            REAL NOT NULL,
    clear_since     REAL,
    escalated_at    REAL,
    notified        TEXT NOT NULL DEFAULT '',
    updated_at      REAL NOT NULL
);
CREATE UNIQUE INDEX sluice_incidents_one_open
    ON sluice_incidents (rule, scope_key) WHERE state <> 'resolved';
CREATE INDEX sluice_incidents_opened ON sluice_incidents (opened_at);

CREATE TABLE sluice_incident_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id TEXT NOT NULL REFERENCES sluice_incidents (id),
    at          REAL NOT NULL,
    kind        TEXT NOT NULL,
    actor       TEXT NOT NULL,
    detail      TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX sluice_incident_events_incident ON sluice_incident_events (incident_id, id);

-- The evaluator's rate rules read attempts, inbox events and audit rows by time window.
CREATE INDEX sluice_attempts_finished ON sluice_attempts (finished_at);
CREATE INDEX sluice_inbox_received ON sluice_inbox (received_at);
CREATE INDEX sluice_audit_at ON sluice_audit (at);

CREATE TABLE sluice_endpoints (
    id              TEXT PRIMARY KEY,
    tenant          TEXT NOT NULL,
    endpoint        TEXT NOT NULL,
    provider        TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('healthy', 'failing', 'disabled')),
    failing_since   REAL,
    last_success_at REAL,
    last_failure_at REAL,
    last_error      TEXT,
    disabled_at     REAL,
    disabled_reason TEXT,
    window_start    REAL NOT NULL,
    window_ok       INTEGER NOT NULL DEFAULT 0,
    window_failed   INTEGER NOT NULL DEFAULT 0,
    updated_at      REAL NOT NULL,
    CONSTRAINT sluice_endpoints_one_per_tenant UNIQUE (tenant, endpoint)
);
CREATE INDEX sluice_endpoints_state ON sluice_endpoints (state, failing_since);

CREATE TABLE sluice_tenant_settings (
    tenant          TEXT PRIMARY KEY,
    events_url      TEXT,
    dead_seen_until REAL,
    updated_at      REAL NOT NULL
);
-- The two-person rule (0014): operator acts waiting for a second operator.
CREATE TABLE sluice_requests (
    id          TEXT PRIMARY KEY,
    act         TEXT NOT NULL,
    args        TEXT NOT NULL,
    scope       TEXT NOT NULL CHECK (scope IN ('global', 'tenant')),
    tenant      TEXT NOT NULL DEFAULT '',
    affected    INTEGER,
    requester   TEXT NOT NULL,
    reason      TEXT,
    created_at  REAL NOT NULL,
    expires_at  REAL NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('pending', 'approved', 'denied', 'expired')),
    decided_by  TEXT,
    decided_at  REAL,
    decision    TEXT,
    result      TEXT
);
CREATE INDEX sluice_requests_pending ON sluice_requests (expires_at) WHERE state = 'pending';
CREATE INDEX sluice_requests_created ON sluice_requests (created_at, id);
-- 0011: message expiry (the table above has expires_at and the 'expired' status).
CREATE INDEX sluice_messages_expiring ON sluice_messages (expires_at)
    WHERE expires_at IS NOT NULL AND status IN ('queued', 'held');
CREATE TABLE sluice_suppressions (
    tenant     TEXT NOT NULL,
    channel    TEXT NOT NULL,
    recipient  TEXT NOT NULL,
    reason     TEXT NOT NULL,
    source     TEXT NOT NULL DEFAULT '',
    actor      TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (tenant, channel, recipient)
);

CREATE TABLE sluice_contacts (
    tenant          TEXT NOT NULL,
    channel         TEXT NOT NULL,
    recipient       TEXT NOT NULL,
    last_inbound_at REAL NOT NULL,
    PRIMARY KEY (tenant, channel, recipient)
);
-- Final messages by status and last change, for retention's purge (0015).
CREATE INDEX sluice_messages_final
    ON sluice_messages (status, updated_at) WHERE status NOT IN ('queued', 'sending', 'held');
-- Annotations (0016, issue 15): deploy, config and note markers an operator records.
CREATE TABLE sluice_annotations (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    at     REAL NOT NULL,
    actor  TEXT NOT NULL,
    kind   TEXT NOT NULL,
    text   TEXT NOT NULL,
    tenant TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX sluice_annotations_at ON sluice_annotations (at, id);
-- 0017: canaries (issue 15).
CREATE TABLE sluice_canaries (
    id          TEXT PRIMARY KEY,
    -- The [canary] target it ran (its name), and what that target sends with.
    target      TEXT NOT NULL,
    provider    TEXT NOT NULL,
    tenant      TEXT NOT NULL,
    recipient   TEXT NOT NULL,
    message_id  TEXT,
    sent_at     REAL NOT NULL,
    receipt_at  REAL,
    -- 'pending' while it waits for its receipt; then ok, failed or missing.
    outcome     TEXT NOT NULL CHECK (outcome IN ('pending', 'ok', 'failed', 'missing')),
    error       TEXT,
    -- Who ran it: sluice:canary (the schedule) or the operator of sluice canary run.
    actor       TEXT NOT NULL
);
CREATE INDEX sluice_canaries_target ON sluice_canaries (target, sent_at);
CREATE INDEX sluice_canaries_sent ON sluice_canaries (sent_at, id);
-- 0018: post-send verification. The workers' sweep: sent messages awaiting their
-- confirmation, by deadline; and what waits for a person ('needs_confirm'), per tenant.
CREATE INDEX sluice_messages_verifying ON sluice_messages (verify_by)
    WHERE verify_by IS NOT NULL AND status = 'sent';
CREATE INDEX sluice_messages_needs_confirm ON sluice_messages (tenant, updated_at)
    WHERE status = 'needs_confirm';
-- The ready set: queued, unparked rows by tenant, first attempts apart from retries,
-- in claim order within each (see the PostgreSQL file); then the columns the state
-- metrics read of the ready rows, so that their read is covered by the index (0019,
-- which created it anew: last, as the migration chain does).
CREATE INDEX sluice_messages_ready
    ON sluice_messages (tenant, (attempts > 0), priority DESC, run_at,
                        channel, provider, attempts, created_at)
    WHERE status = 'queued' AND parked_by IS NULL;
-- 0020: the web console's sessions and one-time login links (issue 16).
CREATE TABLE sluice_console_sessions (
    token_hash TEXT PRIMARY KEY,
    kind       TEXT NOT NULL CHECK (kind IN ('session', 'ticket')),
    key_id     TEXT NOT NULL,
    actor      TEXT NOT NULL,
    csrf       TEXT NOT NULL,
    created_at REAL NOT NULL,
    seen_at    REAL NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX sluice_console_sessions_expiry ON sluice_console_sessions (expires_at);
