ALTER TABLE clients DROP COLUMN required_role;
