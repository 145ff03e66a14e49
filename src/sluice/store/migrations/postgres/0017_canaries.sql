-- Sluice 0017: canaries (issue 15). One row per golden-path canary: the marked message
-- sent to a configured test recipient, and what became of it.
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
