-- The whole schema for PostgreSQL, as SQLite's migrations 0001–0010 leave it (see ../ for why each part is
-- there). Integer columns are BIGINT throughout, so that both backends read them as i64.
CREATE TABLE flags (
    key        TEXT PRIMARY KEY,
    body       TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE segments (
    id   BIGINT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL
);
CREATE TABLE audit (
    seq       BIGINT PRIMARY KEY,
    at        TEXT NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    entity    TEXT NOT NULL,
    before    TEXT,
    after     TEXT,
    reason    TEXT,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL UNIQUE
);
CREATE TABLE revision (
    id       BIGINT PRIMARY KEY CHECK (id = 1),
    revision BIGINT NOT NULL
);
INSERT INTO revision (id, revision) VALUES (1, 0);
CREATE TABLE tokens (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    role          TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    created_by    TEXT NOT NULL,
    revoked_at    TEXT
);
CREATE TABLE client_metrics (
    flag    TEXT NOT NULL,
    variant TEXT NOT NULL,
    count   BIGINT NOT NULL,
    PRIMARY KEY (flag, variant)
);
CREATE TABLE rollouts (
    id            TEXT PRIMARY KEY,
    flag          TEXT NOT NULL,
    plan_name     TEXT NOT NULL,
    plan_text     TEXT NOT NULL,
    original_flag TEXT NOT NULL,
    state         TEXT NOT NULL,
    status        TEXT NOT NULL,
    active        BIGINT NOT NULL,
    outbox        TEXT NOT NULL,
    created_by    TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);
CREATE UNIQUE INDEX rollouts_one_active_per_flag ON rollouts (flag) WHERE active = 1;
CREATE TABLE decisions (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rollout_id TEXT NOT NULL,
    at_ms      BIGINT NOT NULL,
    body       TEXT NOT NULL,
    changed    BIGINT NOT NULL DEFAULT 1
);
CREATE INDEX decisions_by_rollout ON decisions (rollout_id, at_ms);
CREATE INDEX decisions_by_age ON decisions (changed, at_ms);
CREATE TABLE notifications (
    id           TEXT NOT NULL,
    destination  TEXT NOT NULL,
    rollout_id   TEXT NOT NULL,
    body         TEXT NOT NULL,
    created_ms   BIGINT NOT NULL,
    attempts     BIGINT NOT NULL DEFAULT 0,
    next_ms      BIGINT NOT NULL,
    delivered_ms BIGINT,
    last_error   TEXT,
    PRIMARY KEY (id, destination)
);
CREATE INDEX notifications_due ON notifications (delivered_ms, next_ms);
CREATE TABLE metrics (
    replica     TEXT NOT NULL,
    flag        TEXT NOT NULL,
    body        TEXT NOT NULL,
    saved_at_ms BIGINT NOT NULL,
    PRIMARY KEY (replica, flag)
);
CREATE TABLE server_keys (
    name       TEXT PRIMARY KEY,
    key_hex    TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    address    TEXT NOT NULL,
    token      BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    since_ms   BIGINT NOT NULL
);
