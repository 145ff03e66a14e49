-- Sluice 0013: endpoint health and tenants' event settings (issue 14).

-- One row per (tenant, endpoint) a webhook or http action has reached: its health, kept
-- by every worker's reports. An endpoint failing without a success for
-- SLUICE_ENDPOINT_DISABLE_AFTER is disabled: its messages are held until an operator
-- enables it.
CREATE TABLE sluice_endpoints (
    id              text PRIMARY KEY,
    tenant          text NOT NULL,
    endpoint        text NOT NULL,
    provider        text NOT NULL,
    state           text NOT NULL CHECK (state IN ('healthy', 'failing', 'disabled')),
    -- The first failure of the current streak (NULL: the last outcome was a success).
    failing_since   timestamptz,
    last_success_at timestamptz,
    last_failure_at timestamptz,
    last_error      text,
    disabled_at     timestamptz,
    disabled_reason text,
    -- Outcomes in the current window (SLUICE_ENDPOINT_WINDOW), for the failure rate.
    window_start    timestamptz NOT NULL,
    window_ok       integer NOT NULL DEFAULT 0,
    window_failed   integer NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL,
    CONSTRAINT sluice_endpoints_one_per_tenant UNIQUE (tenant, endpoint)
);
CREATE INDEX sluice_endpoints_state ON sluice_endpoints (state, failing_since);

-- A tenant's own settings: where its operational events go. The signing secret is a
-- connection (provider sluice_events), encrypted like every credential.
CREATE TABLE sluice_tenant_settings (
    tenant          text PRIMARY KEY,
    events_url      text,
    -- message.dead digests have covered dead messages up to here.
    dead_seen_until timestamptz,
    updated_at      timestamptz NOT NULL
);
