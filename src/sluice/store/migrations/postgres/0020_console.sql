-- Sluice 0020: the web console's sessions (issue 16). A row per signed-in browser
-- ('session') and per one-time login link not yet used ('ticket'); only the SHA-256
-- of the cookie or link token is kept, so a copy of this table signs nobody in.
CREATE TABLE sluice_console_sessions (
    token_hash text PRIMARY KEY,
    kind       text NOT NULL CHECK (kind IN ('session', 'ticket')),
    -- The API key it was opened with; revoking the key ends the session.
    key_id     text NOT NULL,
    -- How the audit log names the person (console:<name>).
    actor      text NOT NULL,
    -- The token every form and htmx request of this session must carry.
    csrf       text NOT NULL,
    created_at timestamptz NOT NULL,
    seen_at    timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX sluice_console_sessions_expiry ON sluice_console_sessions (expires_at);
