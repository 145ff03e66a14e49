-- Sluice 0003: flow controls — controls and their epoch, worker acknowledgements,
-- approvals, shadow attempts, run-time limits, shared limiter state, circuit breakers.

-- One row per scope. '' in a scope column means "any". Most restrictive mode wins
-- where scopes overlap; an expired row no longer applies (a worker deletes it, audited).
CREATE TABLE sluice_controls (
    id         uuid PRIMARY KEY,
    tenant     text NOT NULL DEFAULT '',
    channel    text NOT NULL DEFAULT '',
    provider   text NOT NULL DEFAULT '',
    action     text NOT NULL DEFAULT '',
    mode       text NOT NULL CHECK (mode IN ('live', 'paused', 'shadow', 'approval', 'killed')),
    actor      text NOT NULL,
    reason     text NOT NULL,
    created_at timestamptz NOT NULL,
    expires_at timestamptz,
    version    bigint NOT NULL,
    CONSTRAINT sluice_controls_one_per_scope UNIQUE (tenant, channel, provider, action)
);

-- Bumped by every change of controls or limits; workers acknowledge the version they
-- have applied (sluice_workers.flow_version), which is what `sluice kill` waits for.
CREATE TABLE sluice_flow_epoch (
    id         smallint PRIMARY KEY CHECK (id = 1),
    version    bigint NOT NULL,
    changed_at timestamptz
);
INSERT INTO sluice_flow_epoch (id, version) VALUES (1, 0);

ALTER TABLE sluice_workers ADD COLUMN flow_version bigint NOT NULL DEFAULT 0;
ALTER TABLE sluice_workers ADD COLUMN flow_acked_at timestamptz;

ALTER TABLE sluice_messages ADD COLUMN approved_by text;
ALTER TABLE sluice_messages ADD COLUMN approved_at timestamptz;

ALTER TABLE sluice_attempts DROP CONSTRAINT sluice_attempts_outcome_check;
ALTER TABLE sluice_attempts ADD CONSTRAINT sluice_attempts_outcome_check
    CHECK (outcome IN ('sent', 'failed', 'throttled', 'lease_expired', 'shadowed'));

-- Limits changed at run time; they override sluice.toml's entry of the same key.
CREATE TABLE sluice_limits (
    kind       text NOT NULL CHECK (kind IN ('rate', 'quota', 'recipient', 'action', 'concurrency')),
    tenant     text NOT NULL DEFAULT '',
    provider   text NOT NULL DEFAULT '',
    action     text NOT NULL DEFAULT '',
    spec       jsonb NOT NULL,
    actor      text NOT NULL,
    reason     text NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (kind, tenant, provider, action)
);

-- The limiter's shared state when Redis is not configured: token buckets (value =
-- tokens, stamp = last refill), window counters (value = count) and throttle-until
-- marks (value = until). Times are Unix seconds; rows past expires_at are purged.
CREATE TABLE sluice_flow_state (
    key        text PRIMARY KEY,
    value      double precision NOT NULL,
    stamp      double precision NOT NULL,
    expires_at double precision
);

-- Circuit breakers, per provider ('p:<provider>') and per connection
-- ('c:<tenant>:<provider>'); shared by every worker.
CREATE TABLE sluice_breakers (
    key         text PRIMARY KEY,
    provider    text NOT NULL,
    tenant      text NOT NULL DEFAULT '',
    state       text NOT NULL CHECK (state IN ('closed', 'open', 'half_open')),
    since       timestamptz NOT NULL,
    retry_at    timestamptz,
    forced      boolean NOT NULL DEFAULT false,
    reason      text,
    probes_ok   integer NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL
);

-- Outcomes per breaker key in 10-second buckets: the sliding window is a sum of buckets.
CREATE TABLE sluice_breaker_window (
    key    text NOT NULL,
    bucket bigint NOT NULL,
    ok     bigint NOT NULL DEFAULT 0,
    failed bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (key, bucket)
);
