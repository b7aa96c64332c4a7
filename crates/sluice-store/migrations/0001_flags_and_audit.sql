-- Portable SQL (SQLite and PostgreSQL): TEXT for JSON bodies and RFC 3339 times, BIGINT counters.

-- One row per flag; the body is the sluice_flags::Flag JSON, validated before it is written.
CREATE TABLE flags (
    key        TEXT PRIMARY KEY,
    body       TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

-- One row per segment; the body is the sluice_flags::SegmentDef JSON.
CREATE TABLE segments (
    id   BIGINT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL
);

-- Append-only and hash-chained: hash = SHA-256 over the record's fields and prev_hash.
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

-- The flag state's revision: bumped by every committed change, it is the snapshot's ETag.
CREATE TABLE revision (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    revision BIGINT NOT NULL
);
INSERT INTO revision (id, revision) VALUES (1, 0);
