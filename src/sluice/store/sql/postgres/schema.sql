-- Sluice: the current full schema for postgres.
-- It must equal the migration chain (migrations/postgres/0001 ... applied in order):
-- tests/integration/test_schema_matches_migrations.py builds one database from each
-- and compares their catalogs. A new migration changes this file in the same commit.
--
-- Tables carry the sluice_ prefix because they live in the application's own
-- database: enqueue happens inside the application's transaction.

CREATE TABLE sluice_messages (
    id                  uuid PRIMARY KEY,
    tenant              text NOT NULL,
    channel             text NOT NULL,
    provider            text NOT NULL,
    action              text NOT NULL,
    recipient           text NOT NULL,
    payload             jsonb NOT NULL,
    priority            smallint NOT NULL DEFAULT 0,
    status              text NOT NULL DEFAULT 'queued' CHECK (status IN (
                            'queued', 'sending', 'sent', 'delivered', 'bounced', 'read',
                            'held', 'dead', 'cancelled', 'shadowed', 'expired',
                            'suppressed', 'needs_confirm')),
    run_at              timestamptz NOT NULL,
    attempts            integer NOT NULL DEFAULT 0,
    max_attempts        integer NOT NULL CHECK (max_attempts BETWEEN 1 AND 100),
    -- Bumped by every claim: (id, claim_seq, worker_id) names one claim, and every
    -- write-back is guarded by it so a stale worker cannot overwrite a newer outcome.
    claim_seq           integer NOT NULL DEFAULT 0,
    idempotency_key     text,
    content_hash        text NOT NULL,
    correlation_id      text,
    scopes              jsonb NOT NULL DEFAULT '[]',
    worker_id           text,
    claimed_at          timestamptz,
    lease_until         timestamptz,
    last_error_code     text,
    last_error          text,
    provider_message_id text,
    hold_reason         text,
    created_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL,
    approved_by         text,
    approved_at         timestamptz,
    -- Throttle-class answers and put-backs of this message (no attempt spent), bounded
    -- by SLUICE_MAX_DEFERRALS and SLUICE_MAX_DEFER_AGE; and when the first happened.
    deferrals           integer NOT NULL DEFAULT 0,
    deferred_since      timestamptz,
    -- The pause a queued message is parked under (set by the workers' control sweep,
    -- cleared with the pause): parked rows stay out of the ready index.
    parked_by           uuid,
    -- Not sent by then, the message ends 'expired' (0011; never sent late).
    expires_at          timestamptz,
    -- Post-send verification (0018): seconds from sending to a positive receipt,
    -- and the deadline they give once sent; past it the message needs a person.
    verify_within       double precision,
    verify_by           timestamptz,
    -- A message holds a lease exactly while it is sending; write-backs rely on it.
    CONSTRAINT sluice_messages_lease_iff_sending
        CHECK ((status = 'sending') = (lease_until IS NOT NULL))
) WITH (fillfactor = 80);  -- room for the claim/complete updates to stay on-page

-- One message per (tenant, key): the outbox's idempotency guarantee.
CREATE UNIQUE INDEX sluice_messages_idempotency
    ON sluice_messages (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL;
-- The ready set: only queued, unparked rows, by tenant, first attempts apart from
-- retries, in claim order within each. A claim visits the tenants with something ready
-- (a loose index scan) and takes the first few of each: the scan stays small however
-- many sent or paused messages the table keeps, and no tenant fills every slot. It
-- carries the columns the state metrics read of the ready rows (0019): their read is an
-- index-only scan of the ready set, never of the table.
CREATE INDEX sluice_messages_ready
    ON sluice_messages (tenant, (attempts > 0), priority DESC, run_at)
    INCLUDE (channel, provider, attempts, created_at)
    WHERE status = 'queued' AND parked_by IS NULL;
CREATE INDEX sluice_messages_parked
    ON sluice_messages (parked_by) WHERE parked_by IS NOT NULL;
-- The reaper's scan: only rows under lease.
CREATE INDEX sluice_messages_leased
    ON sluice_messages (lease_until) WHERE status = 'sending';
-- Dead-letter triage and replay.
CREATE INDEX sluice_messages_dead
    ON sluice_messages (channel, last_error_code, updated_at) WHERE status = 'dead';

CREATE TABLE sluice_attempts (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- No foreign key: it would take a row lock on the message for every attempt
    -- written, on the hottest path; retention removes both together.
    message_id      uuid NOT NULL,
    attempt_no      integer NOT NULL,
    worker_id       text NOT NULL,
    provider        text NOT NULL,
    started_at      timestamptz NOT NULL,
    finished_at     timestamptz NOT NULL,
    outcome         text NOT NULL CHECK (outcome IN (
                        'sent', 'failed', 'throttled', 'lease_expired', 'shadowed', 'deferred')),
    error_code      text,
    error_class     text,
    provider_status text,
    provider_code   text,
    detail          text,
    latency_ms      real,
    -- false when the outcome arrived after the claim had been taken back (the
    -- reaper already recorded lease_expired): the send happened, the verdict did not apply.
    applied         boolean NOT NULL DEFAULT true
);
CREATE INDEX sluice_attempts_message ON sluice_attempts (message_id, attempt_no);

CREATE TABLE sluice_audit (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at        timestamptz NOT NULL,
    actor     text NOT NULL,
    action    text NOT NULL,
    target    text,
    reason    text,
    detail    jsonb NOT NULL DEFAULT '{}',
    prev_hash text NOT NULL,
    hash      text NOT NULL UNIQUE
);

CREATE FUNCTION sluice_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'sluice_audit is append-only';
END;
$$;
CREATE TRIGGER sluice_audit_no_update BEFORE UPDATE OR DELETE ON sluice_audit
    FOR EACH ROW EXECUTE FUNCTION sluice_audit_append_only();
CREATE TRIGGER sluice_audit_no_truncate BEFORE TRUNCATE ON sluice_audit
    FOR EACH STATEMENT EXECUTE FUNCTION sluice_audit_append_only();

CREATE TABLE sluice_workers (
    id           text PRIMARY KEY,
    host         text NOT NULL,
    pid          integer NOT NULL,
    started_at   timestamptz NOT NULL,
    last_seen_at timestamptz NOT NULL,
    stopped_at   timestamptz,
    in_flight    integer NOT NULL DEFAULT 0,
    sent_total   bigint NOT NULL DEFAULT 0,
    -- The flow epoch this worker has applied; `sluice kill` waits for it.
    flow_version bigint NOT NULL DEFAULT 0,
    flow_acked_at timestamptz
);


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

CREATE TABLE sluice_throttles (
    tenant   text NOT NULL,
    provider text NOT NULL,
    until    timestamptz NOT NULL,
    reason   text,
    set_at   timestamptz NOT NULL,
    PRIMARY KEY (tenant, provider)
);


CREATE TABLE sluice_api_keys (
    id          text PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    role        text NOT NULL CHECK (role IN ('tenant', 'operator')),
    tenant      text,
    -- SHA-256 of the secret part; the secret itself is shown once and never stored.
    secret_hash text NOT NULL,
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL,
    revoked_at  timestamptz,
    CONSTRAINT sluice_api_keys_tenant_iff_tenant_role CHECK ((role = 'tenant') = (tenant IS NOT NULL))
);

-- One row per (scope, Idempotency-Key): the first request's fingerprint and, once it
-- finished, its response, replayed to every retry inside the window.
CREATE TABLE sluice_idempotency (
    scope        text NOT NULL,
    key          text NOT NULL,
    fingerprint  text NOT NULL,
    state        text NOT NULL CHECK (state IN ('running', 'done')),
    status_code  integer,
    response     text,
    created_at   timestamptz NOT NULL,
    locked_until timestamptz NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX sluice_idempotency_created ON sluice_idempotency (created_at);

-- Tenant listing (GET /v1/messages): newest first within a tenant.
CREATE INDEX sluice_messages_tenant ON sluice_messages (tenant, id);

-- Every provider event ingress accepted, deduplicated on (provider, event_id): the
-- row is committed before the provider gets its 2xx; the projector works from here.
CREATE TABLE sluice_inbox (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    provider            text NOT NULL,
    event_id            text NOT NULL,
    kind                text NOT NULL CHECK (kind IN ('receipt', 'inbound')),
    status              text,
    message_id          text,
    provider_message_id text,
    occurred_at         timestamptz,
    error_code          text,
    detail              text,
    address             text,
    data                jsonb NOT NULL,
    received_at         timestamptz NOT NULL,
    state               text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'dead', 'rejected')),
    attempts            integer NOT NULL DEFAULT 0,
    run_at              timestamptz NOT NULL,
    lease_until         timestamptz,
    last_error          text,
    result              text,
    done_at             timestamptz,
    -- Whom the verifying credential speaks for ('' = every tenant); part of the dedupe key.
    source_tenant       text NOT NULL DEFAULT '',
    CONSTRAINT sluice_inbox_dedupe UNIQUE (provider, source_tenant, event_id)
);
CREATE INDEX sluice_inbox_ready ON sluice_inbox (run_at, id) WHERE state = 'pending';
CREATE INDEX sluice_inbox_done ON sluice_inbox (received_at) WHERE state = 'done';

CREATE TABLE sluice_receipts (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id  uuid NOT NULL,
    provider    text NOT NULL,
    status      text NOT NULL,
    occurred_at timestamptz,
    received_at timestamptz NOT NULL,
    error_code  text,
    detail      text,
    inbox_id    bigint
);
CREATE INDEX sluice_receipts_message ON sluice_receipts (message_id, id);

-- The audit log by action (state metrics, sluice audit list).
CREATE INDEX sluice_audit_action ON sluice_audit (action, id);


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
-- The two-person rule (0014): operator acts waiting for a second operator.
CREATE TABLE sluice_requests (
    -- Short and typable (sluice requests approve 3f9a1c07).
    id          text PRIMARY KEY,
    act         text NOT NULL,
    -- The act's full arguments, as approval replays them.
    args        jsonb NOT NULL,
    -- 'global' or 'tenant', and the tenant it is confined to ('' when global).
    scope       text NOT NULL CHECK (scope IN ('global', 'tenant')),
    tenant      text NOT NULL DEFAULT '',
    -- What its dry run counted when it was filed (NULL: the act counts nothing).
    affected    bigint,
    requester   text NOT NULL,
    reason      text,
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    state       text NOT NULL CHECK (state IN ('pending', 'approved', 'denied', 'expired')),
    decided_by  text,
    decided_at  timestamptz,
    decision    text,
    -- What the act returned on approval (or the error it raised).
    result      jsonb
);
CREATE INDEX sluice_requests_pending ON sluice_requests (expires_at) WHERE state = 'pending';
CREATE INDEX sluice_requests_created ON sluice_requests (created_at, id);
-- 0011: message expiry. The workers' sweep: what waits and can expire, by expiry.
CREATE INDEX sluice_messages_expiring ON sluice_messages (expires_at)
    WHERE expires_at IS NOT NULL AND status IN ('queued', 'held');
-- Who may not be sent to, per tenant and medium (sms, whatsapp, email): the recipient as
-- sluice.flow.hygiene.normalise spells it. reason: stop, unsubscribe, bounce, spamreport,
-- group_unsubscribe, provider_error, operator; source: what said so (an inbound message
-- id, a provider event id, an error code, an operator's note); actor: who recorded it.
CREATE TABLE sluice_suppressions (
    tenant     text NOT NULL,
    channel    text NOT NULL,
    recipient  text NOT NULL,
    reason     text NOT NULL,
    source     text NOT NULL DEFAULT '',
    actor      text NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (tenant, channel, recipient)
);

-- When each recipient last wrote to a tenant (an inbound message through ingress).
CREATE TABLE sluice_contacts (
    tenant          text NOT NULL,
    channel         text NOT NULL,
    recipient       text NOT NULL,
    last_inbound_at timestamptz NOT NULL,
    PRIMARY KEY (tenant, channel, recipient)
);
-- Final messages by status and last change, for retention's purge (0015).
CREATE INDEX sluice_messages_final
    ON sluice_messages (status, updated_at) WHERE status NOT IN ('queued', 'sending', 'held');
-- Annotations (0016, issue 15): deploy, config and note markers an operator records
-- (at: when the marked thing happened; tenant '' for everything).
CREATE TABLE sluice_annotations (
    id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at     timestamptz NOT NULL,
    actor  text NOT NULL,
    kind   text NOT NULL,
    text   text NOT NULL,
    tenant text NOT NULL DEFAULT '',
    detail jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX sluice_annotations_at ON sluice_annotations (at, id);
-- 0017: canaries (issue 15).
CREATE TABLE sluice_canaries (
    id          text PRIMARY KEY,
    -- The [canary] target it ran (its name), and what that target sends with.
    target      text NOT NULL,
    provider    text NOT NULL,
    tenant      text NOT NULL,
    recipient   text NOT NULL,
    message_id  text,
    sent_at     timestamptz NOT NULL,
    receipt_at  timestamptz,
    -- 'pending' while it waits for its receipt; then ok, failed or missing.
    outcome     text NOT NULL CHECK (outcome IN ('pending', 'ok', 'failed', 'missing')),
    error       text,
    -- Who ran it: sluice:canary (the schedule) or the operator of sluice canary run.
    actor       text NOT NULL
);
CREATE INDEX sluice_canaries_target ON sluice_canaries (target, sent_at);
CREATE INDEX sluice_canaries_sent ON sluice_canaries (sent_at, id);
-- 0018: post-send verification. The workers' sweep: sent messages awaiting their
-- confirmation, by deadline; and what waits for a person ('needs_confirm'), per tenant.
CREATE INDEX sluice_messages_verifying ON sluice_messages (verify_by)
    WHERE verify_by IS NOT NULL AND status = 'sent';
CREATE INDEX sluice_messages_needs_confirm ON sluice_messages (tenant, updated_at)
    WHERE status = 'needs_confirm';
-- 0020: the web console's sessions and one-time login links (issue 16).
CREATE TABLE sluice_console_sessions (
    token_hash text PRIMARY KEY,
    kind       text NOT NULL CHECK (kind IN ('session', 'ticket')),
    -- The API key it was opened with; revoking the key ends the session.
    key_id     text NOT NULL,
    -- How the audit log names the person (console:<name>).
    actor      text NOT NULL,
    -- The token every form and htmx request of this session must carry.
    csrf       text NOT NULL,
    created_at timestamptz NOT NULL,
    seen_at    timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX sluice_console_sessions_expiry ON sluice_console_sessions (expires_at);
