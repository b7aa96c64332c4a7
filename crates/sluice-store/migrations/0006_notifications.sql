-- The notification queue: one row per (event, destination), written in the same transaction as the
-- transition that raised the event, removed from the due list once delivered. Times are wall-clock ms.
CREATE TABLE notifications (
    id           TEXT NOT NULL,
    destination  TEXT NOT NULL,
    rollout_id   TEXT NOT NULL,
    body         TEXT NOT NULL,
    created_ms   BIGINT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_ms      BIGINT NOT NULL,
    delivered_ms BIGINT,
    last_error   TEXT,
    PRIMARY KEY (id, destination)
);
CREATE INDEX notifications_due ON notifications (delivered_ms, next_ms);
