-- Sluice 0014: the two-person rule (see the PostgreSQL migration).
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
