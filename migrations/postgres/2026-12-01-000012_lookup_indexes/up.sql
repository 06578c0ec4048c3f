-- Lookups by session and by user that run on people's requests, not only in operator commands:
-- ending a session (logout, signing in again in the same browser) finds its codes, and a password
-- change or reset finds the person's codes and refresh tokens. Without these each was a scan of
-- the whole table inside a write transaction.
CREATE INDEX IF NOT EXISTS authorization_codes_session_hash ON authorization_codes (session_hash);
CREATE INDEX IF NOT EXISTS authorization_codes_user_id ON authorization_codes (user_id);
CREATE INDEX IF NOT EXISTS refresh_tokens_user_id ON refresh_tokens (user_id);
