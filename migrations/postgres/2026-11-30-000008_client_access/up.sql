-- A client may be restricted to people holding one role (`client create --require-role`).
ALTER TABLE clients ADD COLUMN required_role TEXT;
-- Browser origins (JSON array) allowed to call the token, userinfo, revocation, introspection,
-- JWKS and discovery endpoints, besides those of the redirect URIs (`--allowed-origin`).
ALTER TABLE clients ADD COLUMN allowed_origins TEXT NOT NULL DEFAULT '[]';
