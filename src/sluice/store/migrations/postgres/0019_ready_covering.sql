-- Sluice 0019 (issue 17): the ready index also carries what the state metrics read of
-- the ready rows (channel, provider, attempts, created_at). Their read (observe_ready)
-- is then one index-only scan of the ready set, where it was a scan of the whole table
-- once the ready set is large: 0.4 s at a backlog of a million. The keys, and so the
-- claim's use of the index, are unchanged; no update becomes non-HOT that was HOT
-- (channel, provider and created_at never change; attempts changes with the status).

DROP INDEX sluice_messages_ready;
CREATE INDEX sluice_messages_ready
    ON sluice_messages (tenant, (attempts > 0), priority DESC, run_at)
    INCLUDE (channel, provider, attempts, created_at)
    WHERE status = 'queued' AND parked_by IS NULL;
