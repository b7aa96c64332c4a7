-- One row per rollout. `state` is the engine's state (JSON); `outbox` the effects of the last transition
-- that are committed but not yet known to be done: written in the same transaction as the state, emptied
-- as they complete, so a restarted controller knows what may have run.
CREATE TABLE rollouts (
    id            TEXT PRIMARY KEY,
    flag          TEXT NOT NULL,
    plan_name     TEXT NOT NULL,
    plan_text     TEXT NOT NULL,
    original_flag TEXT NOT NULL,
    state         TEXT NOT NULL,
    status        TEXT NOT NULL,
    active        INTEGER NOT NULL,
    outbox        TEXT NOT NULL,
    created_by    TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);
-- A flag has at most one active rollout.
CREATE UNIQUE INDEX rollouts_one_active_per_flag ON rollouts (flag) WHERE active = 1;

-- Every tick's decisions (each gate and trigger: value, threshold, outcome), as JSON.
CREATE TABLE decisions (
    rollout_id TEXT NOT NULL,
    at_ms      BIGINT NOT NULL,
    body       TEXT NOT NULL
);
CREATE INDEX decisions_by_rollout ON decisions (rollout_id, at_ms);
