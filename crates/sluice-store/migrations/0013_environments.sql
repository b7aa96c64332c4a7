-- Environments: one server holds several (staging, production). A flag's definition is shared and its state
-- is per environment, so a flag has one row per environment. A store from before holds one environment,
-- `production`, with every flag, token, rollout and audit event it had.
--
-- `revision` is the catalog revision at the environment's last change: its ETag, so that a change in
-- staging does not change production's.
CREATE TABLE environments (
    name       TEXT PRIMARY KEY,
    revision   BIGINT NOT NULL,
    created_at TEXT NOT NULL
);
INSERT INTO environments (name, revision, created_at)
    SELECT 'production', revision, strftime('%Y-%m-%dT%H:%M:%fZ', 'now') FROM revision WHERE id = 1;

CREATE TABLE flags_by_env (
    env        TEXT NOT NULL,
    key        TEXT NOT NULL,
    body       TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (env, key)
);
INSERT INTO flags_by_env (env, key, body, updated_at) SELECT 'production', key, body, updated_at FROM flags;
DROP TABLE flags;
ALTER TABLE flags_by_env RENAME TO flags;

-- The environments a token may act in, as a JSON array; NULL: every one. An `sdk` token has exactly one.
ALTER TABLE tokens ADD COLUMN envs TEXT;
UPDATE tokens SET envs = '["production"]' WHERE role = 'sdk';

-- A rollout runs in one environment; a flag has at most one active rollout per environment.
ALTER TABLE rollouts ADD COLUMN env TEXT NOT NULL DEFAULT 'production';
DROP INDEX rollouts_one_active_per_flag;
CREATE UNIQUE INDEX rollouts_one_active_per_flag ON rollouts (env, flag) WHERE active = 1;

-- SDK-reported counts are per environment (the token's).
CREATE TABLE client_metrics_by_env (
    env     TEXT NOT NULL,
    flag    TEXT NOT NULL,
    variant TEXT NOT NULL,
    count   BIGINT NOT NULL,
    PRIMARY KEY (env, flag, variant)
);
INSERT INTO client_metrics_by_env (env, flag, variant, count) SELECT 'production', flag, variant, count FROM client_metrics;
DROP TABLE client_metrics;
ALTER TABLE client_metrics_by_env RENAME TO client_metrics;

-- Built-in metric aggregates are kept per flag and environment, under `flag@env` (no key holds `@`).
UPDATE metrics SET flag = flag || '@production';

-- The environment an audit event happened in, inside its hashed record; NULL for events written before
-- (their hash never covered one, so they verify as they did) and for events of no environment (tokens).
ALTER TABLE audit ADD COLUMN env TEXT;
