ALTER TABLE clients DROP COLUMN allowed_origins;
ALTER TABLE clients DROP COLUMN required_role;
