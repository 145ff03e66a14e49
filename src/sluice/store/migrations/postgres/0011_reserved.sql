-- Sluice 0011: reserved for another branch of issue 14 (this file only keeps the
-- numbering whole on the hygiene branch; drop it when that branch's 0011 is merged).
SELECT 1;
