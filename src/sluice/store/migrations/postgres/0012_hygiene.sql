-- Sluice 0012: recipient hygiene. Suppression lists per tenant and channel, the last
-- inbound message of each recipient (WhatsApp's 24-hour window), and the final status
-- 'suppressed' (a message to a suppressed recipient, never sent).

ALTER TABLE sluice_messages DROP CONSTRAINT sluice_messages_status_check;
ALTER TABLE sluice_messages ADD CONSTRAINT sluice_messages_status_check CHECK (status IN (
    'queued', 'sending', 'sent', 'delivered', 'bounced', 'read',
    'held', 'dead', 'cancelled', 'shadowed', 'expired', 'suppressed'));

-- Who may not be sent to, per tenant and medium (sms, whatsapp, email): the recipient as
-- sluice.flow.hygiene.normalise spells it. reason: stop, unsubscribe, bounce, spamreport,
-- group_unsubscribe, provider_error, operator; source: what said so (an inbound message
-- id, a provider event id, an error code, an operator's note); actor: who recorded it.
CREATE TABLE sluice_suppressions (
    tenant     text NOT NULL,
    channel    text NOT NULL,
    recipient  text NOT NULL,
    reason     text NOT NULL,
    source     text NOT NULL DEFAULT '',
    actor      text NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (tenant, channel, recipient)
);

-- When each recipient last wrote to a tenant (an inbound message through ingress).
CREATE TABLE sluice_contacts (
    tenant          text NOT NULL,
    channel         text NOT NULL,
    recipient       text NOT NULL,
    last_inbound_at timestamptz NOT NULL,
    PRIMARY KEY (tenant, channel, recipient)
);
