-- Sluice 0004: throttle-until per (tenant, provider), set from a provider's 429 and
-- Retry-After and respected by every worker (read on each control poll).

CREATE TABLE sluice_throttles (
    tenant   text NOT NULL,
    provider text NOT NULL,
    until    timestamptz NOT NULL,
    reason   text,
    set_at   timestamptz NOT NULL,
    PRIMARY KEY (tenant, provider)
);
