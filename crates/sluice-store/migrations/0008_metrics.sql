-- Built-in metrics (POST /api/v1/metrics): each flag's aggregates, saved every few seconds and loaded at
-- start, so that a restart keeps the evidence a comparison has gathered.
CREATE TABLE metrics (
    flag TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    saved_at_ms INTEGER NOT NULL
);
