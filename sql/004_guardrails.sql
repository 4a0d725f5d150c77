-- Guardrails (DESIGN.md rules 12-16): blocked values, and the history of splits.

-- A value on this list is treated as absent by matching and merging, and new rows do not store it.
-- Matched by a keyed hash (HMAC-SHA256 under IDENTITY_HASH_KEY of kind and value), so a block outlives
-- the erasure of its value (rule 17 then clears `value` and keeps the hash). A removed block stays as
-- history: `removed_at` set.
CREATE TABLE blocked_value (
    id          bigint PRIMARY KEY GENERATED ALWAYS AS IDENTITY,
    kind        text NOT NULL CHECK (kind IN ('email', 'phone')),
    value       text,
    value_hash  bytea NOT NULL,
    reason      text NOT NULL CHECK (reason IN ('operator', 'fan_out', 'identity_cap', 'builtin')),
    note        text,
    added_by    text NOT NULL,
    -- The primary contact id of the identity the value was found in, when it was blocked.
    identity_id bigint,
    created_at  timestamptz NOT NULL DEFAULT now(),
    removed_at  timestamptz,
    removed_by  text
);

CREATE UNIQUE INDEX blocked_value_active_idx ON blocked_value (value_hash) WHERE removed_at IS NULL;
CREATE INDEX blocked_value_identity_idx ON blocked_value (identity_id);

-- Every identity divided by a block or an erasure (rule 15): the former primary and the primaries of
-- the identities it became.
CREATE TABLE split_log (
    id                bigint PRIMARY KEY GENERATED ALWAYS AS IDENTITY,
    cause_type        text NOT NULL CHECK (cause_type IN ('value_blocked', 'erasure')),
    cause_id          bigint NOT NULL,
    former_primary_id bigint NOT NULL,
    primary_ids       bigint[] NOT NULL,
    split_at          timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX split_log_former_idx ON split_log (former_primary_id);

-- A rule-7 merge of two known values inserts no row: the merge log is then the only record of that
-- link, so splits look bridges up by value.
CREATE INDEX merge_log_email_idx ON merge_log (email) WHERE email IS NOT NULL;
CREATE INDEX merge_log_phone_idx ON merge_log (phone_number) WHERE phone_number IS NOT NULL;

-- One name for one concept: the primaries a merge demoted are `mergedPrimaryIds` in identity.merged and
-- `merged_primary_ids` in the code; the merge log says the same.
ALTER TABLE merge_log RENAME COLUMN demoted_primary_ids TO merged_primary_ids;
