-- Sluice 0003: flow controls (see the PostgreSQL migration for what each table is for).

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

ALTER TABLE sluice_messages ADD COLUMN approved_by TEXT;
ALTER TABLE sluice_messages ADD COLUMN approved_at REAL;

-- SQLite cannot alter a CHECK constraint: rebuild sluice_attempts with 'shadowed'.
ALTER TABLE sluice_attempts RENAME TO sluice_attempts_0002;
DROP INDEX sluice_attempts_message;
CREATE TABLE sluice_attempts (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id      TEXT NOT NULL,
    attempt_no      INTEGER NOT NULL,
    worker_id       TEXT NOT NULL,
    provider        TEXT NOT NULL,
    started_at      REAL NOT NULL,
    finished_at     REAL NOT NULL,
    outcome         TEXT NOT NULL CHECK (outcome IN (
                        'sent', 'failed', 'throttled', 'lease_expired', 'shadowed')),
    error_code      TEXT,
    error_class     TEXT,
    provider_status TEXT,
    provider_code   TEXT,
    detail          TEXT,
    latency_ms      REAL,
    applied         INTEGER NOT NULL DEFAULT 1
);
INSERT INTO sluice_attempts SELECT * FROM sluice_attempts_0002;
DROP TABLE sluice_attempts_0002;
CREATE INDEX sluice_attempts_message ON sluice_attempts (message_id, attempt_no);

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
