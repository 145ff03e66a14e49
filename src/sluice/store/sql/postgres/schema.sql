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
                            'held', 'dead', 'cancelled', 'shadowed')),
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
    -- A message holds a lease exactly while it is sending; write-backs rely on it.
    CONSTRAINT sluice_messages_lease_iff_sending
        CHECK ((status = 'sending') = (lease_until IS NOT NULL))
) WITH (fillfactor = 80);  -- room for the claim/complete updates to stay on-page

-- One message per (tenant, key): the outbox's idempotency guarantee.
CREATE UNIQUE INDEX sluice_messages_idempotency
    ON sluice_messages (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL;
-- The ready set: only queued rows, in claim order, so the scan stays small
-- however many sent messages the table keeps.
CREATE INDEX sluice_messages_ready
    ON sluice_messages (priority DESC, run_at) WHERE status = 'queued';
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
    outcome         text NOT NULL CHECK (outcome IN ('sent', 'failed', 'throttled', 'lease_expired')),
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
    sent_total   bigint NOT NULL DEFAULT 0
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
