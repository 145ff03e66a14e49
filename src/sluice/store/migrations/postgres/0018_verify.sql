-- Sluice 0018: post-send verification (issue 15, seed 003 RB-03). A message may ask to be
-- confirmed within verify_within seconds of being sent; verify_by is that deadline, set
-- when it is sent. No positive receipt by then (or a failed one) moves it to
-- 'needs_confirm': not final, waiting for a person (sluice messages confirm|fail).

ALTER TABLE sluice_messages ADD COLUMN verify_within double precision;
ALTER TABLE sluice_messages ADD COLUMN verify_by timestamptz;

ALTER TABLE sluice_messages DROP CONSTRAINT sluice_messages_status_check;
ALTER TABLE sluice_messages ADD CONSTRAINT sluice_messages_status_check CHECK (status IN (
    'queued', 'sending', 'sent', 'delivered', 'bounced', 'read', 'held', 'dead', 'cancelled',
    'shadowed', 'expired', 'suppressed', 'needs_confirm'));

-- The workers' sweep: sent messages still waiting for their confirmation, by deadline.
CREATE INDEX sluice_messages_verifying ON sluice_messages (verify_by)
    WHERE verify_by IS NOT NULL AND status = 'sent';
-- What waits for a person, per tenant (counts, listings, the state metrics).
CREATE INDEX sluice_messages_needs_confirm ON sluice_messages (tenant, updated_at)
    WHERE status = 'needs_confirm';
