-- Sluice 0010: incidents, opened and resolved by the built-in alert evaluator.

-- One row per incident: a rule that fired for a scope. At most one not yet resolved per
-- (rule, scope); it resolves by itself once the condition has been clear long enough.
CREATE TABLE sluice_incidents (
    id              uuid PRIMARY KEY,
    rule            text NOT NULL,
    -- The scope in one canonical string ("tenant=acme provider=twilio"; '' for all).
    scope_key       text NOT NULL,
    scope           jsonb NOT NULL,
    severity        text NOT NULL CHECK (severity IN ('P0', 'P1', 'P2', 'P3')),
    types           jsonb NOT NULL,
    runbook         text NOT NULL,
    summary         text NOT NULL,
    state           text NOT NULL CHECK (state IN ('open', 'acknowledged', 'resolved')),
    opened_at       timestamptz NOT NULL,
    acknowledged_at timestamptz,
    acknowledged_by text,
    resolved_at     timestamptz,
    resolved_by     text,
    value           double precision NOT NULL,
    peak            double precision NOT NULL,
    -- Since when the condition has been clear (NULL while it holds).
    clear_since     timestamptz,
    -- When it was escalated: open and unacknowledged past SLUICE_ALERTS_ESCALATE_AFTER.
    escalated_at    timestamptz,
    -- The last transition whose notifications are in the outbox ('', opened, escalated,
    -- resolved).
    notified        text NOT NULL DEFAULT '',
    updated_at      timestamptz NOT NULL
);
CREATE UNIQUE INDEX sluice_incidents_one_open
    ON sluice_incidents (rule, scope_key) WHERE state <> 'resolved';
CREATE INDEX sluice_incidents_opened ON sluice_incidents (opened_at);

-- Each incident's timeline: fired, peak, acknowledged, note, resolved, notified.
CREATE TABLE sluice_incident_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    incident_id uuid NOT NULL REFERENCES sluice_incidents (id),
    at          timestamptz NOT NULL,
    kind        text NOT NULL,
    actor       text NOT NULL,
    detail      jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX sluice_incident_events_incident ON sluice_incident_events (incident_id, id);

-- The evaluator's rate rules read attempts, inbox events and audit rows by time window.
CREATE INDEX sluice_attempts_finished ON sluice_attempts (finished_at);
CREATE INDEX sluice_inbox_received ON sluice_inbox (received_at);
CREATE INDEX sluice_audit_at ON sluice_audit (at);
