-- Sluice 0007: a message's deferrals are counted and bounded, and a send a worker put
-- back unstarted leaves an attempt row saying so.

-- Throttle-class answers (429, 502/503/504, quota) and put-backs of this message: they
-- spend no attempt, so without a count a receiver answering 503 forever kept it forever.
ALTER TABLE sluice_messages ADD COLUMN deferrals integer NOT NULL DEFAULT 0;
-- When the first of them happened (the age limit counts from here).
ALTER TABLE sluice_messages ADD COLUMN deferred_since timestamptz;

ALTER TABLE sluice_attempts DROP CONSTRAINT sluice_attempts_outcome_check;
ALTER TABLE sluice_attempts ADD CONSTRAINT sluice_attempts_outcome_check
    CHECK (outcome IN ('sent', 'failed', 'throttled', 'lease_expired', 'shadowed', 'deferred'));
