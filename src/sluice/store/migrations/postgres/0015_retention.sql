-- Sluice 0015: retention (issue 14) finds final messages by status and age.

-- Final messages by status and last change, for retention's purge. Every status but the
-- three still at work is in it, so a new final status needs no new index; the queued,
-- sending and held rows of the claim path never enter it.
CREATE INDEX sluice_messages_final
    ON sluice_messages (status, updated_at) WHERE status NOT IN ('queued', 'sending', 'held');
