-- Sluice 0010: incidents, opened and resolved by the built-in alert evaluator (see the
-- PostgreSQL migration).

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
