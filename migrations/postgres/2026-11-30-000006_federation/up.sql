-- Upstream identities (Google `sub`, GitHub user id) and the local user each maps to: one user
-- per (provider, subject), never found by email. `issuer` records which issuer (or GitHub API)
-- vouched for the subject: a subject from a reconfigured provider is not the same person.
CREATE TABLE user_identities (
    provider   TEXT   NOT NULL,
    subject    TEXT   NOT NULL,
    issuer     TEXT   NOT NULL,
    user_id    TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (provider, subject)
);
CREATE INDEX user_identities_user_id ON user_identities (user_id);

-- Sign-ins waiting at an upstream provider, by SHA-256 of the `state` sent there. Bound to the
-- browser that started (`browser_hash`) and to the authorization request it continues
-- (`request`, a query string); single use (`consumed_at`), short-lived.
CREATE TABLE upstream_logins (
    state_hash    TEXT   NOT NULL PRIMARY KEY,
    provider      TEXT   NOT NULL,
    browser_hash  TEXT   NOT NULL,
    pkce_verifier TEXT   NOT NULL,
    nonce         TEXT   NOT NULL,
    request       TEXT   NOT NULL,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    consumed_at   BIGINT
);
CREATE INDEX upstream_logins_browser_hash ON upstream_logins (browser_hash);
CREATE INDEX upstream_logins_expires_at ON upstream_logins (expires_at);

-- An upstream identity whose verified email matches a local account, waiting for that account's
-- password before the two are linked; by SHA-256 of the token in the linking form.
CREATE TABLE pending_links (
    link_hash    TEXT   NOT NULL PRIMARY KEY,
    browser_hash TEXT   NOT NULL,
    provider     TEXT   NOT NULL,
    subject      TEXT   NOT NULL,
    issuer       TEXT   NOT NULL,
    name         TEXT,
    email        TEXT   NOT NULL,
    user_id      TEXT   NOT NULL,
    request      TEXT   NOT NULL,
    expires_at   BIGINT NOT NULL
);
CREATE INDEX pending_links_expires_at ON pending_links (expires_at);

-- Local accounts are found by verified upstream email to offer linking.
CREATE INDEX users_email ON users (lower(email));
