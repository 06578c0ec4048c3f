-- Failed sign-ins per client IP in a fixed window, shared by every replica.
CREATE TABLE login_ip_failures (
    ip           TEXT    NOT NULL PRIMARY KEY,
    window_start BIGINT  NOT NULL,
    failures     INTEGER NOT NULL
);
