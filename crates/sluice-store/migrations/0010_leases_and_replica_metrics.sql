-- Leases (the controller's: one replica runs rollouts). Times are the database's clock in ms; `token` grows
-- with each new holder and fences the controller's writes.
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    address    TEXT NOT NULL,
    token      BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    since_ms   BIGINT NOT NULL
);
-- Built-in metric aggregates are kept per replica, so that the leader merges what every replica observed.
-- Rows saved before belong to the replica named '' (a single server).
CREATE TABLE metrics_by_replica (
    replica     TEXT NOT NULL,
    flag        TEXT NOT NULL,
    body        TEXT NOT NULL,
    saved_at_ms BIGINT NOT NULL,
    PRIMARY KEY (replica, flag)
);
INSERT INTO metrics_by_replica (replica, flag, body, saved_at_ms) SELECT '', flag, body, saved_at_ms FROM metrics;
DROP TABLE metrics;
ALTER TABLE metrics_by_replica RENAME TO metrics;
