-- TOTP (RFC 6238) per user: the seed sealed with AES-256-GCM (never in plain text), whether
-- enrolment was confirmed with a first code, and the last time step accepted (a code is
-- accepted once).
CREATE TABLE user_totp (
    user_id       TEXT    NOT NULL PRIMARY KEY,
    secret_sealed TEXT    NOT NULL,
    confirmed     BOOLEAN NOT NULL,
    last_step     BIGINT,
    created_at    BIGINT  NOT NULL
);

-- Single-use recovery codes, by SHA-256 (80-bit random codes).
CREATE TABLE recovery_codes (
    user_id   TEXT   NOT NULL,
    code_hash TEXT   NOT NULL,
    used_at   BIGINT,
    PRIMARY KEY (user_id, code_hash)
);

-- A first factor accepted (`pwd`, or `fed` for Google / GitHub), the second not yet: by
-- SHA-256 of the token in the form, bound to the browser, short-lived.
CREATE TABLE pending_mfa (
    id_hash      TEXT   NOT NULL PRIMARY KEY,
    user_id      TEXT   NOT NULL,
    first_factor TEXT   NOT NULL,
    browser_hash TEXT   NOT NULL,
    expires_at   BIGINT NOT NULL
);
CREATE INDEX pending_mfa_expires_at ON pending_mfa (expires_at);
