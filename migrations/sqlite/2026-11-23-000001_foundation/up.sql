-- Registered clients. List columns hold JSON arrays of strings.
CREATE TABLE clients (
    client_id                 TEXT    NOT NULL PRIMARY KEY,
    name                      TEXT    NOT NULL,
    secret_hash               TEXT,
    auth_method               TEXT    NOT NULL,
    redirect_uris             TEXT    NOT NULL,
    post_logout_redirect_uris TEXT    NOT NULL,
    grant_types               TEXT    NOT NULL,
    scopes                    TEXT    NOT NULL,
    resources                 TEXT    NOT NULL,
    skip_consent              BOOLEAN NOT NULL,
    created_at                BIGINT  NOT NULL
);

-- Revoked access-token ids, kept until the token would have expired.
CREATE TABLE revoked_tokens (
    jti        TEXT   NOT NULL PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX revoked_tokens_expires_at ON revoked_tokens (expires_at);
