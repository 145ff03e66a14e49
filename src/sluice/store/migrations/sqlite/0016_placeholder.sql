-- Sluice 0016: a placeholder on the canary branch for another branch's 0016 (issue 15);
-- the lead drops it at merge. It changes nothing.
SELECT 1;
