DROP INDEX IF EXISTS refresh_tokens_user_id;
DROP INDEX IF EXISTS authorization_codes_user_id;
DROP INDEX IF EXISTS authorization_codes_session_hash;
