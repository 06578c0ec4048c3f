ALTER TABLE authorization_codes DROP COLUMN refresh_family;
DROP TABLE refresh_tokens;
