DROP TABLE pending_mfa;
DROP TABLE recovery_codes;
DROP TABLE user_totp;
