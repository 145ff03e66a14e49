-- Sluice 0007: a message's deferrals are counted and bounded, and a send a worker put
-- back unstarted leaves an attempt row saying so (see the PostgreSQL migration).

ALTER TABLE sluice_messages ADD COLUMN deferrals INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sluice_messages ADD COLUMN deferred_since REAL;

-- SQLite cannot alter a CHECK constraint: rebuild sluice_attempts with 'deferred'.
ALTER TABLE sluice_attempts RENAME TO sluice_attempts_0006;
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
                        'sent', 'failed', 'throttled', 'lease_expired', 'shadowed', 'deferred')),
    error_code      TEXT,
    error_class     TEXT,
    provider_status TEXT,
    provider_code   TEXT,
    detail          TEXT,
    latency_ms      REAL,
    applied         INTEGER NOT NULL DEFAULT 1
);
INSERT INTO sluice_attempts SELECT * FROM sluice_attempts_0006;
DROP TABLE sluice_attempts_0006;
CREATE INDEX sluice_attempts_message ON sluice_attempts (message_id, attempt_no);
