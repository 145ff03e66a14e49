-- Sluice 0009: the audit log read by action (state metrics count tenancy violations;
-- sluice audit list filters by action).
CREATE INDEX sluice_audit_action ON sluice_audit (action, id);
