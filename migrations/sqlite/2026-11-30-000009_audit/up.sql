-- The audit log: one row per security event, append-only (updates and deletes are refused by
-- triggers). Never a secret, token, password or code: ids, names, addresses and outcomes.
CREATE TABLE audit_events (
    id         TEXT   NOT NULL PRIMARY KEY,
    at         BIGINT NOT NULL,
    event      TEXT   NOT NULL,
    user_id    TEXT,
    client_id  TEXT,
    ip         TEXT,
    user_agent TEXT,
    request_id TEXT,
    detail     TEXT
);
CREATE INDEX audit_events_at ON audit_events (at);
CREATE INDEX audit_events_user_id ON audit_events (user_id);
CREATE INDEX audit_events_client_id ON audit_events (client_id);
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;
