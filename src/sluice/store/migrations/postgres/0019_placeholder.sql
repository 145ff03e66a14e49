-- Placeholder for 0019 (another branch's migration); dropped at merge.
SELECT 1;
