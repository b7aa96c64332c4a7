-- A token's secret replaced by a rotation: it still authenticates as its token until `until` (the
-- overlap, RFC 3339), and afterwards is known as revoked, so that a replica started with it is refused.
CREATE TABLE retired_secrets (
    secret_sha256 TEXT PRIMARY KEY,
    token_id      TEXT NOT NULL,
    until         TEXT NOT NULL
);
