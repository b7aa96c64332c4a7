-- Environments (see ../0013_environments.sql for why each part is there).
CREATE TABLE environments (
    name       TEXT PRIMARY KEY,
    revision   BIGINT NOT NULL,
    created_at TEXT NOT NULL
);
INSERT INTO environments (name, revision, created_at)
    SELECT 'production', revision, to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
    FROM revision WHERE id = 1;

ALTER TABLE flags ADD COLUMN env TEXT NOT NULL DEFAULT 'production';
ALTER TABLE flags ALTER COLUMN env DROP DEFAULT;
ALTER TABLE flags DROP CONSTRAINT flags_pkey;
ALTER TABLE flags ADD PRIMARY KEY (env, key);

ALTER TABLE tokens ADD COLUMN envs TEXT;
UPDATE tokens SET envs = '["production"]' WHERE role = 'sdk';

ALTER TABLE rollouts ADD COLUMN env TEXT NOT NULL DEFAULT 'production';
DROP INDEX rollouts_one_active_per_flag;
CREATE UNIQUE INDEX rollouts_one_active_per_flag ON rollouts (env, flag) WHERE active = 1;

ALTER TABLE client_metrics ADD COLUMN env TEXT NOT NULL DEFAULT 'production';
ALTER TABLE client_metrics ALTER COLUMN env DROP DEFAULT;
ALTER TABLE client_metrics DROP CONSTRAINT client_metrics_pkey;
ALTER TABLE client_metrics ADD PRIMARY KEY (env, flag, variant);

UPDATE metrics SET flag = flag || '@production';

ALTER TABLE audit ADD COLUMN env TEXT;
