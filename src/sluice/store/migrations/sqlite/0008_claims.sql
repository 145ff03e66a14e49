-- Sluice 0008: claims stay fast beside a paused backlog, and are shared fairly between
-- tenants (see the PostgreSQL migration).

ALTER TABLE sluice_messages ADD COLUMN parked_by TEXT;

DROP INDEX sluice_messages_ready;
CREATE INDEX sluice_messages_ready
    ON sluice_messages (tenant, (attempts > 0), priority DESC, run_at)
    WHERE status = 'queued' AND parked_by IS NULL;
CREATE INDEX sluice_messages_parked
    ON sluice_messages (parked_by) WHERE parked_by IS NOT NULL;
