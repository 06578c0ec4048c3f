-- Password-reset links, by SHA-256 of their token: single use (`used_at`), 30 minutes.
CREATE TABLE password_resets (
    token_hash TEXT   NOT NULL PRIMARY KEY,
    user_id    TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT
);
CREATE INDEX password_resets_expires_at ON password_resets (expires_at);
