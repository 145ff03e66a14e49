-- Sluice 0002: tenant connections (credentials encrypted at rest, scopes, state).

CREATE TABLE sluice_connections (
    id                 uuid PRIMARY KEY,
    tenant             text NOT NULL,
    provider           text NOT NULL,
    state              text NOT NULL DEFAULT 'active' CHECK (state IN (
                           'active', 'pending_reauth', 'needs_reconsent', 'revoked')),
    state_reason       text,
    state_changed_at   timestamptz NOT NULL,
    scopes             jsonb NOT NULL DEFAULT '[]',
    missing_scopes     jsonb NOT NULL DEFAULT '[]',
    -- AES-256-GCM, bound to (id, tenant, provider); key_id names the key that sealed it.
    ciphertext         bytea NOT NULL,
    key_id             text NOT NULL,
    credential_version integer NOT NULL DEFAULT 1,
    expires_at         timestamptz,
    last_check_at      timestamptz,
    last_check_ok_at   timestamptz,
    last_check_error   text,
    created_at         timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL,
    -- One connection per tenant and provider: a message names both, never a connection.
    CONSTRAINT sluice_connections_one_per_tenant_provider UNIQUE (tenant, provider)
);

-- Releasing a connection's held messages, oldest first.
CREATE INDEX sluice_messages_held
    ON sluice_messages (tenant, provider, run_at) WHERE status = 'held';
