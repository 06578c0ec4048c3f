DROP INDEX users_email;
DROP TABLE pending_links;
DROP TABLE upstream_logins;
DROP TABLE user_identities;
