-- The token a rotation issued in place of this one: lets a retry whose response was lost
-- (within tokens.refresh_retry_grace_secs) retire that successor and get a new one.
ALTER TABLE refresh_tokens ADD COLUMN replaced_by TEXT;
