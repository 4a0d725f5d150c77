-- Access control for the HTTP API (DESIGN.md rule 19): named clients with scopes, their API keys
-- (stored only as a hash), shared rate-limit buckets and the audit log.
CREATE TABLE api_client (
    id              bigint PRIMARY KEY GENERATED ALWAYS AS IDENTITY,
    name            text NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9][a-z0-9._-]{0,62}$'),
    scopes          text[] NOT NULL CHECK (scopes <@ ARRAY['identify', 'read', 'admin']),
    -- Token bucket of this client; null: the API's settings (API_RATE_LIMIT_PER_S, API_RATE_LIMIT_BURST).
    rate_per_s      double precision CHECK (rate_per_s > 0),
    burst           integer CHECK (burst >= 1),
    created_at      timestamptz NOT NULL DEFAULT now(),
    revoked_at      timestamptz
);

-- A client has one key, or two during a rotation. `key_id` is the public part of the key
-- (`idk_<key_id>_<secret>`); only a SHA-256 of the whole key is stored.
CREATE TABLE api_key (
    key_id          text PRIMARY KEY,
    client_id       bigint NOT NULL REFERENCES api_client (id),
    key_hash        bytea NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- Set when a rotation retires this key: it keeps working until then.
    expires_at      timestamptz
);

CREATE INDEX api_key_client_idx ON api_key (client_id);

-- Token buckets shared by every API process: 'client:<name>' or 'peer:<address>' (failed sign-ins).
-- Processes lease tokens in chunks (consumer/api/limits.py), so a hot client costs no round trip per call.
CREATE TABLE rate_bucket (
    bucket          text PRIMARY KEY,
    tokens          double precision NOT NULL,
    refilled_at     timestamptz NOT NULL
);

-- Refill the bucket for the time elapsed, then take up to `want` whole tokens: what was granted, and
-- the (fractional) tokens left. The row lock makes concurrent takers from every process queue up.
CREATE FUNCTION take_tokens(
    bucket_name text, rate double precision, burst integer, want integer,
    OUT granted integer, OUT remaining double precision
) LANGUAGE plpgsql AS $$
DECLARE
    refilled timestamptz;
    taken_at timestamptz;
    available double precision;
BEGIN
    INSERT INTO rate_bucket (bucket, tokens, refilled_at) VALUES (bucket_name, burst, clock_timestamp())
    ON CONFLICT (bucket) DO NOTHING;
    SELECT b.tokens, b.refilled_at INTO available, refilled FROM rate_bucket AS b
    WHERE b.bucket = bucket_name FOR UPDATE;
    taken_at := greatest(refilled, clock_timestamp());
    available := least(burst, available + rate * extract(epoch FROM taken_at - refilled));
    granted := least(want, floor(available))::integer;
    remaining := available - granted;
    UPDATE rate_bucket SET tokens = remaining, refilled_at = taken_at WHERE bucket = bucket_name;
END
$$;

-- Who read or changed what, and when. Ids only, never an email or phone number.
CREATE TABLE audit_log (
    id              bigint PRIMARY KEY GENERATED ALWAYS AS IDENTITY,
    at              timestamptz NOT NULL DEFAULT now(),
    client          text NOT NULL,
    action          text NOT NULL,
    ids             bigint[] NOT NULL
);

CREATE INDEX audit_log_at_idx ON audit_log (at);
CREATE INDEX audit_log_client_idx ON audit_log (client, at);
