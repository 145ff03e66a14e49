-- Sluice 0020: the web console's sessions (issue 16). A row per signed-in browser
-- ('session') and per one-time login link not yet used ('ticket'); only the SHA-256
-- of the cookie or link token is kept, so a copy of this table signs nobody in.
CREATE TABLE sluice_console_sessions (
    token_hash TEXT PRIMARY KEY,
    kind       TEXT NOT NULL CHECK (kind IN ('session', 'ticket')),
    key_id     TEXT NOT NULL,
    actor      TEXT NOT NULL,
    csrf       TEXT NOT NULL,
    created_at REAL NOT NULL,
    seen_at    REAL NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX sluice_console_sessions_expiry ON sluice_console_sessions (expires_at);
