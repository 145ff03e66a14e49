-- Sluice 0016: annotations (issue 15). Deploy, config and free-form markers an operator
-- records, shown beside incidents in evidence archives and postmortems.
CREATE TABLE sluice_annotations (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    at     REAL NOT NULL,
    actor  TEXT NOT NULL,
    kind   TEXT NOT NULL,
    text   TEXT NOT NULL,
    tenant TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX sluice_annotations_at ON sluice_annotations (at, id);
