-- Sluice 0017: canaries (issue 15). One row per golden-path canary: the marked message
-- sent to a configured test recipient, and what became of it.
CREATE TABLE sluice_canaries (
    id          TEXT PRIMARY KEY,
    -- The [canary] target it ran (its name), and what that target sends with.
    target      TEXT NOT NULL,
    provider    TEXT NOT NULL,
    tenant      TEXT NOT NULL,
    recipient   TEXT NOT NULL,
    message_id  TEXT,
    sent_at     REAL NOT NULL,
    receipt_at  REAL,
    -- 'pending' while it waits for its receipt; then ok, failed or missing.
    outcome     TEXT NOT NULL CHECK (outcome IN ('pending', 'ok', 'failed', 'missing')),
    error       TEXT,
    -- Who ran it: sluice:canary (the schedule) or the operator of sluice canary run.
    actor       TEXT NOT NULL
);
CREATE INDEX sluice_canaries_target ON sluice_canaries (target, sent_at);
CREATE INDEX sluice_canaries_sent ON sluice_canaries (sent_at, id);
