-- Sluice 0013: endpoint health and tenants' event settings (see the PostgreSQL migration).

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
