-- Keys the server signs with (the dashboard's session cookies), kept in the store so that every replica
-- on one database signs and checks with the same key.
CREATE TABLE server_keys (
    name TEXT PRIMARY KEY,
    key_hex TEXT NOT NULL,
    created_at TEXT NOT NULL
);
