-- Sluice 0002: tenant connections (credentials encrypted at rest, scopes, state).

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
