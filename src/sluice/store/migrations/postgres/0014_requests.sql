-- Sluice 0014: the two-person rule. An operator act a rule in [ops] two_person names is
-- recorded here as a request and done only when another operator approves it.
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
