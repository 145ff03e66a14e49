-- Sluice 0016: annotations (issue 15). Deploy, config and free-form markers an operator
-- records, shown beside incidents in evidence archives and postmortems.
CREATE TABLE sluice_annotations (
    id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- When the thing it marks happened (a deploy at 09:12), not when it was written.
    at     timestamptz NOT NULL,
    actor  text NOT NULL,
    -- deploy, config, note, or another word of the operator's.
    kind   text NOT NULL,
    text   text NOT NULL,
    -- The tenant it concerns; '' for everything.
    tenant text NOT NULL DEFAULT '',
    detail jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX sluice_annotations_at ON sluice_annotations (at, id);
