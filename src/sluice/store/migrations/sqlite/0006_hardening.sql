-- Sluice 0006: ingress events remember whom their source speaks for, and events that
-- name another tenant's message are kept as 'rejected' (see the PostgreSQL migration).
-- SQLite cannot change a CHECK or UNIQUE constraint in place: the table is rebuilt.

ALTER TABLE sluice_inbox RENAME TO sluice_inbox_0005;
DROP INDEX sluice_inbox_ready;
DROP INDEX sluice_inbox_done;

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
INSERT INTO sluice_inbox (
    id, provider, event_id, kind, status, message_id, provider_message_id, occurred_at,
    error_code, detail, address, data, received_at, state, attempts, run_at, lease_until,
    last_error, result, done_at)
SELECT id, provider, event_id, kind, status, message_id, provider_message_id, occurred_at,
       error_code, detail, address, data, received_at, state, attempts, run_at, lease_until,
       last_error, result, done_at
FROM sluice_inbox_0005;
DROP TABLE sluice_inbox_0005;
CREATE INDEX sluice_inbox_ready ON sluice_inbox (run_at, id) WHERE state = 'pending';
CREATE INDEX sluice_inbox_done ON sluice_inbox (received_at) WHERE state = 'done';
