-- Decisions get an explicit order, `seq`, so that "the last N decisions" does not depend on SQLite's implicit
-- rowid (PostgreSQL has none). Existing rows keep their order: their rowid becomes their seq, and
-- AUTOINCREMENT keeps new rows after every row ever written.
CREATE TABLE decisions_with_seq (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    rollout_id TEXT NOT NULL,
    at_ms      BIGINT NOT NULL,
    body       TEXT NOT NULL
);
INSERT INTO decisions_with_seq (seq, rollout_id, at_ms, body)
    SELECT rowid, rollout_id, at_ms, body FROM decisions;
DROP TABLE decisions;
ALTER TABLE decisions_with_seq RENAME TO decisions;
CREATE INDEX decisions_by_rollout ON decisions (rollout_id, at_ms);
