-- A notification that failed permanently, or kept failing past the attempts or the time allowed, is dead:
-- no longer tried, shown on its rollout until a person sends it again.
ALTER TABLE notifications ADD COLUMN dead_ms BIGINT;
