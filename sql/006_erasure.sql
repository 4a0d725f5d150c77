-- Erasure and explanation (DESIGN.md rules 17-18).

-- Every erasure request, without the erased value: its kind and keyed hash (HMAC-SHA256 under
-- IDENTITY_HASH_KEY, as blocked_value.value_hash), who asked, the rows it deleted and the identities
-- they belonged to. A request for a value nobody holds is recorded too, with empty lists.
CREATE TABLE erasure_request (
    id                 bigint PRIMARY KEY GENERATED ALWAYS AS IDENTITY,
    kind               text NOT NULL CHECK (kind IN ('email', 'phone')),
    value_hash         bytea NOT NULL,
    requested_by       text NOT NULL,
    erased_contact_ids bigint[] NOT NULL,
    former_primary_ids bigint[] NOT NULL,
    requested_at       timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX erasure_request_hash_idx ON erasure_request (value_hash);
CREATE INDEX erasure_request_primaries_idx ON erasure_request USING gin (former_primary_ids);

-- An erased row stays as a tombstone (deleted_at set, both values cleared) so that the history's
-- references to it (merge_log, split_log, linked_id of other tombstones) keep meaning something.
ALTER TABLE contact DROP CONSTRAINT contact_check;
ALTER TABLE contact ADD CONSTRAINT contact_values_check
    CHECK (deleted_at IS NOT NULL OR email IS NOT NULL OR phone_number IS NOT NULL);
CREATE INDEX contact_deleted_email_idx ON contact (email) WHERE deleted_at IS NOT NULL AND email IS NOT NULL;
CREATE INDEX contact_deleted_phone_idx ON contact (phone_number)
    WHERE deleted_at IS NOT NULL AND phone_number IS NOT NULL;

-- The history of an identity (explain) is looked up by the ids of its rows.
CREATE INDEX merge_log_merged_idx ON merge_log USING gin (merged_primary_ids);
CREATE INDEX merge_log_relinked_idx ON merge_log USING gin (relinked_contact_ids);
CREATE INDEX split_log_primaries_idx ON split_log USING gin (primary_ids);
CREATE INDEX split_log_cause_idx ON split_log (cause_type, cause_id);
CREATE INDEX blocked_value_hash_idx ON blocked_value (value_hash);

-- A JSON document without one string: array elements equal to it are dropped, object members equal
-- to it become null, at any depth. Erasure runs it over stored answers and outbox payloads.
CREATE FUNCTION without_value(doc jsonb, erased text) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
BEGIN
    CASE jsonb_typeof(doc)
    WHEN 'object' THEN
        RETURN (SELECT coalesce(jsonb_object_agg(k, without_value(v, erased)), '{}'::jsonb)
                FROM jsonb_each(doc) AS m(k, v));
    WHEN 'array' THEN
        RETURN (SELECT coalesce(jsonb_agg(without_value(v, erased) ORDER BY i), '[]'::jsonb)
                FROM jsonb_array_elements(doc) WITH ORDINALITY AS e(v, i)
                WHERE v IS DISTINCT FROM to_jsonb(erased));
    WHEN 'string' THEN
        RETURN CASE WHEN doc = to_jsonb(erased) THEN 'null'::jsonb ELSE doc END;
    ELSE
        RETURN doc;
    END CASE;
END
$$;
