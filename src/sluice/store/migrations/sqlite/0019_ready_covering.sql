-- Sluice 0019 (issue 17): the ready index covers the state metrics' read of the ready
-- rows (see the PostgreSQL migration). SQLite has no INCLUDE: the columns follow the
-- keys, which leaves the claim's order as it was.

DROP INDEX sluice_messages_ready;
CREATE INDEX sluice_messages_ready
    ON sluice_messages (tenant, (attempts > 0), priority DESC, run_at,
                        channel, provider, attempts, created_at)
    WHERE status = 'queued' AND parked_by IS NULL;
