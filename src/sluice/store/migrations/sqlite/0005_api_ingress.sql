-- Sluice 0005: API keys, Idempotency-Key records, the ingress inbox and receipts
-- (see the PostgreSQL migration).

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
    state               TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'dead')),
    attempts            INTEGER NOT NULL DEFAULT 0,
    run_at              REAL NOT NULL,
    lease_until         REAL,
    last_error          TEXT,
    result              TEXT,
    done_at             REAL,
    UNIQUE (provider, event_id)
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
