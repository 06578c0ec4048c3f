-- Refresh tokens, by SHA-256. Each rotation marks the presented row used and adds the next token
-- of the same family; presenting a used row revokes the family. `access_jti`/`access_exp` name
-- the access token issued beside each refresh token, so a revoked family takes them along.
-- `offline`: issued with offline_access, so it outlives the sign-in session.
CREATE TABLE refresh_tokens (
    token_hash   TEXT    NOT NULL PRIMARY KEY,
    family_id    TEXT    NOT NULL,
    client_id    TEXT    NOT NULL,
    user_id      TEXT    NOT NULL,
    session_hash TEXT    NOT NULL,
    scope        TEXT    NOT NULL,
    offline      BOOLEAN NOT NULL,
    auth_time    BIGINT  NOT NULL,
    amr          TEXT    NOT NULL,
    issued_at    BIGINT  NOT NULL,
    expires_at   BIGINT  NOT NULL,
    used_at      BIGINT,
    revoked      BOOLEAN NOT NULL,
    access_jti   TEXT,
    access_exp   BIGINT
);
-- Indexes serve the frequent paths only: reuse detection (family), logout (session) and the
-- purge (expiry). Every rotation inserts a row into each index, so deleting a user's or a
-- client's tokens (rare operator commands) scans the table instead.
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_hash);
CREATE INDEX refresh_tokens_expires_at ON refresh_tokens (expires_at);

-- The refresh-token family a code's redemption started, revoked if the code is replayed.
ALTER TABLE authorization_codes ADD COLUMN refresh_family TEXT;
