-- Sluice 0008: claims stay fast beside a paused backlog, and are shared fairly between
-- tenants.

-- The pause a queued message is parked under: the workers' control sweep sets it, the
-- end of that pause (resume, expiry, another mode) clears it in the same transaction.
-- Parked rows are outside the ready index, so a claim never walks past them.
ALTER TABLE sluice_messages ADD COLUMN parked_by uuid;

-- The ready set by tenant, first attempts apart from retries, in claim order within
-- each: a claim visits the tenants with something ready (a loose index scan) and takes
-- the first few of each, so one tenant's backlog cannot fill every slot.
DROP INDEX sluice_messages_ready;
CREATE INDEX sluice_messages_ready
    ON sluice_messages (tenant, (attempts > 0), priority DESC, run_at)
    WHERE status = 'queued' AND parked_by IS NULL;
CREATE INDEX sluice_messages_parked
    ON sluice_messages (parked_by) WHERE parked_by IS NOT NULL;
