-- Contact details released by the `phone` and `address` scopes (OIDC Core 5.1): a phone number
-- as entered (E.164 recommended) and a postal address as one formatted block of text.
ALTER TABLE users ADD COLUMN phone_number TEXT;
ALTER TABLE users ADD COLUMN address TEXT;
