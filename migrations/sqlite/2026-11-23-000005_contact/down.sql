ALTER TABLE users DROP COLUMN address;
ALTER TABLE users DROP COLUMN phone_number;
