-- Sluice 0006: ingress events remember whom their source speaks for, and events that
-- name another tenant's message are kept as 'rejected'.

-- The tenant the verifying credential speaks for; '' for a credential that speaks for
-- every tenant (the operator's own provider account). Part of the dedupe key, so that one
-- tenant's account cannot take an event id first and have the real event dropped as a
-- duplicate.
ALTER TABLE sluice_inbox ADD COLUMN source_tenant text NOT NULL DEFAULT '';
ALTER TABLE sluice_inbox DROP CONSTRAINT sluice_inbox_state_check;
ALTER TABLE sluice_inbox ADD CONSTRAINT sluice_inbox_state_check
    CHECK (state IN ('pending', 'done', 'dead', 'rejected'));
ALTER TABLE sluice_inbox DROP CONSTRAINT sluice_inbox_dedupe;
ALTER TABLE sluice_inbox ADD CONSTRAINT sluice_inbox_dedupe
    UNIQUE (provider, source_tenant, event_id);
