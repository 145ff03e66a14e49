-- Sluice 0011: message expiry (issue 14). A message not sent by its expires_at ends
-- 'expired': final, never sent late, never dead-lettered.

ALTER TABLE sluice_messages ADD COLUMN expires_at timestamptz;

ALTER TABLE sluice_messages DROP CONSTRAINT sluice_messages_status_check;
ALTER TABLE sluice_messages ADD CONSTRAINT sluice_messages_status_check CHECK (status IN (
    'queued', 'sending', 'sent', 'delivered', 'bounced', 'read', 'held', 'dead', 'cancelled',
    'shadowed', 'expired'));

-- The workers' sweep: what waits (queued, parked or held) and can expire, by expiry.
CREATE INDEX sluice_messages_expiring ON sluice_messages (expires_at)
    WHERE expires_at IS NOT NULL AND status IN ('queued', 'held');
