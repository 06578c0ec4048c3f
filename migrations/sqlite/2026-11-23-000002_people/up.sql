-- People who sign in. `id` is the `sub` of their tokens; `roles` is a JSON array of strings;
-- `password_hash` is an Argon2id PHC string (NULL: no password, e.g. federated users).
CREATE TABLE users (
    id            TEXT    NOT NULL PRIMARY KEY,
    username      TEXT    NOT NULL,
    email         TEXT,
    name          TEXT,
    roles         TEXT    NOT NULL,
    password_hash TEXT,
    locked        BOOLEAN NOT NULL,
    failed_logins INTEGER NOT NULL,
    locked_until  BIGINT,
    created_at    BIGINT  NOT NULL
);
CREATE UNIQUE INDEX users_username ON users (username);

-- Browser sessions, by SHA-256 of the cookie value. `amr` is a JSON array.
CREATE TABLE sessions (
    id_hash    TEXT   NOT NULL PRIMARY KEY,
    user_id    TEXT   NOT NULL,
    auth_time  BIGINT NOT NULL,
    amr        TEXT   NOT NULL,
    last_seen  BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX sessions_user_id ON sessions (user_id);
CREATE INDEX sessions_expires_at ON sessions (expires_at);

-- Authorization codes, by SHA-256. `access_jti` is the access token the redemption issued,
-- revoked if the code is presented again.
CREATE TABLE authorization_codes (
    code_hash      TEXT   NOT NULL PRIMARY KEY,
    client_id      TEXT   NOT NULL,
    redirect_uri   TEXT   NOT NULL,
    user_id        TEXT   NOT NULL,
    session_hash   TEXT   NOT NULL,
    scope          TEXT   NOT NULL,
    nonce          TEXT,
    code_challenge TEXT,
    auth_time      BIGINT NOT NULL,
    amr            TEXT   NOT NULL,
    expires_at     BIGINT NOT NULL,
    consumed_at    BIGINT,
    access_jti     TEXT,
    access_exp     BIGINT
);
CREATE INDEX authorization_codes_expires_at ON authorization_codes (expires_at);

-- Scopes a person has approved for a client (space-separated).
CREATE TABLE consents (
    user_id    TEXT   NOT NULL,
    client_id  TEXT   NOT NULL,
    scope      TEXT   NOT NULL,
    granted_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, client_id)
);
