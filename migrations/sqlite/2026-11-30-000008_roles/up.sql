-- A client may be restricted to people holding one role (`client create --require-role`).
ALTER TABLE clients ADD COLUMN required_role TEXT;
