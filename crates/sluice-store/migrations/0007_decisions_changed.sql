-- A decision whose outcome differs from the check's previous one (or the first of its check) is kept for
-- good; the others only for the retention time, so that a two-week bake at one-minute ticks does not keep
-- 200k rows a rollout. Existing rows count as changed: nothing written before is dropped by surprise.
ALTER TABLE decisions ADD COLUMN changed INTEGER NOT NULL DEFAULT 1;
CREATE INDEX decisions_by_age ON decisions (changed, at_ms);
