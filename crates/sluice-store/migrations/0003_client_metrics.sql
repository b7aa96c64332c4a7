-- Evaluation counts reported by Unleash SDKs (POST /api/client/metrics), per flag and variant; the
-- variants `(enabled)` and `(disabled)` hold the yes/no counts.
CREATE TABLE client_metrics (
    flag    TEXT NOT NULL,
    variant TEXT NOT NULL,
    count   BIGINT NOT NULL,
    PRIMARY KEY (flag, variant)
);
