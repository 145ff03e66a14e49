-- Sluice 0004: throttle-until per (tenant, provider) (see the PostgreSQL migration).

CREATE TABLE sluice_throttles (
    tenant   TEXT NOT NULL,
    provider TEXT NOT NULL,
    until    REAL NOT NULL,
    reason   TEXT,
    set_at   REAL NOT NULL,
    PRIMARY KEY (tenant, provider)
);
