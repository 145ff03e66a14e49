-- Sluice 0005: the HTTP API (keys, Idempotency-Key records, listing by tenant) and
-- ingress (the inbox of provider events, and the receipts applied to messages).

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
    state               text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'dead')),
    attempts            integer NOT NULL DEFAULT 0,
    run_at              timestamptz NOT NULL,
    lease_until         timestamptz,
    last_error          text,
    result              text,
    done_at             timestamptz,
    CONSTRAINT sluice_inbox_dedupe UNIQUE (provider, event_id)
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
