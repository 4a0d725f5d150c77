"""Every SQL statement the service runs, in one place. All take bound parameters only."""

from __future__ import annotations

from typing import LiteralString

# --- migrations -------------------------------------------------------------------------------------

MIGRATION_LOCK = "SELECT pg_advisory_lock(hashtextextended('identity.migrate', 0))"
MIGRATION_UNLOCK = "SELECT pg_advisory_unlock(hashtextextended('identity.migrate', 0))"
CREATE_MIGRATION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migration (
    version    text PRIMARY KEY,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""
APPLIED_MIGRATIONS = "SELECT version, checksum FROM schema_migration ORDER BY version"
RECORD_MIGRATION = "INSERT INTO schema_migration (version, checksum) VALUES (%s, %s)"
MIGRATION_TABLE_EXISTS = "SELECT to_regclass('schema_migration') IS NOT NULL"

# --- reconciliation ---------------------------------------------------------------------------------

# A core transaction's own, sent in its pipeline with the statements around them.
BEGIN = "BEGIN"
# A seq scan only where no index serves, for the transaction (true) or the session (false). Plans made
# on tables analyzed while nearly empty (autovacuum's first ANALYZE in a new deployment) would scan them
# whole, and prepared statements keep their plans until the next ANALYZE, up to a minute of growth later.
PREFER_INDEXES = "SELECT set_config('enable_seqscan', 'off', %s)"
COMMIT = "COMMIT"
# Taken in the order of the array: callers pass keys sorted, so every transaction locks in one order.
# Array parameters are passed as JSON: psycopg adapts long Python lists element by element.
LOCK_KEYS = "SELECT count(pg_advisory_xact_lock(k::bigint)) FROM jsonb_array_elements_text(%s::jsonb) AS k"
# Never waits, so any order will do: returns the keys another transaction holds.
TRY_LOCK_KEYS = """
SELECT k::bigint FROM jsonb_array_elements_text(%s::jsonb) AS k
WHERE NOT pg_try_advisory_xact_lock(k::bigint)"""
# Every statement of a transaction plans as index lookups even on a new deployment's empty, never
# analyzed tables: a prepared statement's generic plan, made then, is kept until autovacuum first
# analyzes the table, and a scan planned for an empty table gets slower with every row (docs/benchmarks.md,
# "Cold start"; tests/test_queries.py).
# The records of (source, event_id) keys, as one scan of the primary key with both arrays as its
# condition (a lookup per key cost a fifth more). With several sources it may also find a source's
# record of another source's id: callers match records by their whole key.
PROCESSED_EVENTS = """
SELECT source, event_id, payload_hash, result FROM processed_event
WHERE source = ANY(ARRAY(SELECT json_array_elements_text(%(sources)s::json)))
    AND event_id = ANY(ARRAY(SELECT json_array_elements_text(%(ids)s::json)))"""
# The primary of every live row holding one of the identifiers: 'e' for emails, 'p' for phones.
# Plans as index lookups however large the table.
LOOKUP_PRIMARIES = """
SELECT 'e', email, coalesce(linked_id, id) FROM contact
WHERE deleted_at IS NULL AND email = ANY(ARRAY(SELECT jsonb_array_elements_text(%(emails)s::jsonb)))
UNION ALL
SELECT 'p', phone_number, coalesce(linked_id, id) FROM contact
WHERE deleted_at IS NULL AND phone_number = ANY(ARRAY(SELECT jsonb_array_elements_text(%(phones)s::jsonb)))"""
# Row locks on primaries serialize every change to a cluster; ORDER BY makes them one global order.
LOCK_PRIMARIES = """
SELECT id FROM contact WHERE id = ANY(ARRAY(SELECT jsonb_array_elements_text(%s::jsonb)::bigint))
ORDER BY id FOR NO KEY UPDATE"""
# Returns only the rows it could lock at once; the others are another transaction's.
LOCK_PRIMARIES_SKIP_LOCKED = """
SELECT id FROM contact WHERE id = ANY(ARRAY(SELECT jsonb_array_elements_text(%s::jsonb)::bigint))
ORDER BY id FOR NO KEY UPDATE SKIP LOCKED"""
LOCK_PRIMARIES_NOWAIT = """
SELECT id FROM contact WHERE id = ANY(ARRAY(SELECT jsonb_array_elements_text(%s::jsonb)::bigint))
ORDER BY id FOR NO KEY UPDATE NOWAIT"""
# Every live row of the clusters of these primaries, looked up one primary at a time (index scans).
# A primary demoted since it was locked shows as a row linked elsewhere: the caller then locks that
# primary too and loads again (that row then comes twice, once per lookup).
CLUSTERS_OF_PRIMARIES = """
SELECT c.id, c.email, c.phone_number, c.linked_id, c.created_at, c.updated_at
FROM jsonb_array_elements_text(%s::jsonb) AS p(id) CROSS JOIN LATERAL (
    SELECT * FROM contact WHERE id = p.id::bigint AND deleted_at IS NULL
    UNION ALL
    SELECT * FROM contact WHERE linked_id = p.id::bigint AND deleted_at IS NULL
) AS c"""
# The transaction's clock, read once its row locks are held, with a block of contact ids: one statement
# for both. The sequence is looked up once, in a subquery, not once per id (0.3 µs per id instead of
# 2.3). The count is a subquery too: generate_series estimates its rows from constant arguments, so a
# plan made for the count at hand would look cheaper than the generic plan, and the server would plan
# the statement anew on every run (`custom_plans` in pg_prepared_statements).
CLOCK_AND_CONTACT_IDS = """
SELECT clock_timestamp(), ARRAY(
    SELECT nextval((SELECT pg_get_serial_sequence('contact', 'id')::regclass))
    FROM generate_series(1, (SELECT %s::int)))"""
# Bulk writes take one JSON document per table, `rows`: encoding it is far cheaper than adapting arrays.
INSERT_CONTACTS = """
INSERT INTO contact (id, email, phone_number, linked_id, link_precedence, created_at, updated_at, source,
                     source_event_id)
SELECT id, email, phone_number, linked_id, link_precedence, created_at, updated_at, source, source_event_id
FROM jsonb_to_recordset(%(rows)s::jsonb) AS r(
    id bigint, email text, phone_number text, linked_id bigint, link_precedence text,
    created_at timestamptz, updated_at timestamptz, source text, source_event_id text)"""
# The ids again as an array: the rows to update are found through the primary key (see above).
UPDATE_LINKS = """
UPDATE contact AS c
SET linked_id = r.linked_id, link_precedence = r.link_precedence, updated_at = r.updated_at
FROM jsonb_to_recordset(%(rows)s::jsonb)
     AS r(id bigint, linked_id bigint, link_precedence text, updated_at timestamptz)
WHERE c.id = r.id AND c.id = ANY(ARRAY(SELECT (jsonb_array_elements(%(rows)s::jsonb)->>'id')::bigint))"""
INSERT_MERGES = """
INSERT INTO merge_log (source, source_event_id, email, phone_number, surviving_primary_id,
                       merged_primary_ids, relinked_contact_ids, merged_at)
SELECT source, source_event_id, email, phone_number, surviving_primary_id, merged_primary_ids,
       relinked_contact_ids, merged_at
FROM jsonb_to_recordset(%(rows)s::jsonb) AS r(source text, source_event_id text, email text,
     phone_number text, surviving_primary_id bigint, merged_primary_ids bigint[],
     relinked_contact_ids bigint[], merged_at timestamptz)"""
INSERT_PROCESSED = """
INSERT INTO processed_event (source, event_id, payload_hash, result)
SELECT source, event_id, decode(payload_hash, 'hex'), result
FROM jsonb_to_recordset(%(rows)s::jsonb) AS r(source text, event_id text, payload_hash text, result jsonb)"""
# One row for the transaction's events (sql/008): types and keys as JSON arrays, the CloudEvents as
# they are stored, one JSON document per line.
INSERT_OUTBOX = """
INSERT INTO outbox (event_types, message_keys, payloads)
VALUES (
    ARRAY(SELECT json_array_elements_text(%(types)s::json)),
    ARRAY(SELECT json_array_elements_text(%(keys)s::json)),
    %(payloads)s
)"""

# --- guardrails (rules 12-16) -----------------------------------------------------------------------

# Which of these keyed hashes (consumer.core.blocklist.value_hash, as a JSON array of hex strings: far
# cheaper to send than a list of bytes) an active block holds.
BLOCKED_HASHES = """
SELECT value_hash FROM blocked_value
WHERE removed_at IS NULL
  AND value_hash = ANY(ARRAY(SELECT decode(jsonb_array_elements_text(%s::jsonb), 'hex')))"""
# The new block's id and true, or the active block's id and false when the value is blocked already.
INSERT_BLOCK = """
WITH new AS (
    INSERT INTO blocked_value (kind, value, value_hash, reason, note, added_by, identity_id)
    VALUES (%s, %s, %s, %s, %s, %s, %s)
    ON CONFLICT (value_hash) WHERE removed_at IS NULL DO NOTHING
    RETURNING id
)
SELECT id, true FROM new
UNION ALL
SELECT id, false FROM blocked_value WHERE value_hash = %s AND removed_at IS NULL
LIMIT 1"""
REMOVE_BLOCK = """
UPDATE blocked_value SET removed_at = now(), removed_by = %s
WHERE id = %s AND removed_at IS NULL
RETURNING value_hash"""
LIST_BLOCKS = """
SELECT id, kind, value, reason, note, added_by, identity_id, created_at, removed_at, removed_by
FROM blocked_value
WHERE id > %s AND (%s::text IS NULL OR reason = %s) AND (%s OR removed_at IS NULL)
ORDER BY id
LIMIT %s"""
# The values a value was merged with (rule 7 without a row): an unblock joins their identities again.
MERGE_COUNTERPARTS: dict[str, LiteralString] = {
    "email": "SELECT DISTINCT phone_number FROM merge_log WHERE email = %s AND phone_number IS NOT NULL",
    "phone": "SELECT DISTINCT email FROM merge_log WHERE phone_number = %s AND email IS NOT NULL",
}
# `identity guard scan`: values of old data over MAX_LINKS_PER_VALUE, and identities over the cap
# (counting blocked values too: the core then decides on the unblocked ones).
FAN_OUT_VALUES = """
SELECT 'phone', phone_number FROM contact
WHERE deleted_at IS NULL AND phone_number IS NOT NULL AND email IS NOT NULL
GROUP BY phone_number HAVING count(DISTINCT email) > %s
UNION ALL
SELECT 'email', email FROM contact
WHERE deleted_at IS NULL AND phone_number IS NOT NULL AND email IS NOT NULL
GROUP BY email HAVING count(DISTINCT phone_number) > %s
ORDER BY 1 DESC, 2"""
IDENTITIES_OVER_CAP = """
SELECT coalesce(linked_id, id) AS primary_id FROM contact WHERE deleted_at IS NULL
GROUP BY primary_id HAVING count(DISTINCT email) + count(DISTINCT phone_number) > %s
ORDER BY primary_id"""
CONTACT_VALUES = "SELECT email, phone_number FROM contact WHERE id = %s AND deleted_at IS NULL"
# Recorded rule-7 merges between these emails and these phones: links that no row holds.
MERGE_BRIDGES = """
SELECT DISTINCT email, phone_number FROM merge_log
WHERE email = ANY(ARRAY(SELECT jsonb_array_elements_text(%(emails)s::jsonb)))
  AND phone_number = ANY(ARRAY(SELECT jsonb_array_elements_text(%(phones)s::jsonb)))"""
INSERT_SPLITS = """
INSERT INTO split_log (cause_type, cause_id, former_primary_id, primary_ids, split_at)
SELECT cause_type, cause_id, former_primary_id, primary_ids, split_at
FROM jsonb_to_recordset(%(rows)s::jsonb)
     AS r(cause_type text, cause_id bigint, former_primary_id bigint, primary_ids bigint[],
          split_at timestamptz)"""

# --- erasure (rule 17) -----------------------------------------------------------------------------

INSERT_ERASURE = """
INSERT INTO erasure_request (kind, value_hash, requested_by, erased_contact_ids, former_primary_ids)
VALUES (%s, %s, %s, %s, %s) RETURNING id"""
# Each statement below takes %(email)s or %(phone)s set to the erased value and the other one null.
# Erased live rows stay as tombstones, holding neither value (sql/006_erasure.sql).
ERASE_ROWS = """
UPDATE contact SET email = NULL, phone_number = NULL, deleted_at = %(now)s, updated_at = %(now)s
WHERE id = ANY(%(ids)s::bigint[])"""
ERASE_FROM_DELETED_ROWS = """
UPDATE contact SET email = nullif(email, %(email)s), phone_number = nullif(phone_number, %(phone)s)
WHERE deleted_at IS NOT NULL AND (email = %(email)s OR phone_number = %(phone)s)"""
# The value is no longer a merge's bridge either: the link graph stops using it.
ERASE_FROM_MERGES = """
UPDATE merge_log SET email = nullif(email, %(email)s), phone_number = nullif(phone_number, %(phone)s)
WHERE email = %(email)s OR phone_number = %(phone)s"""
# The block keeps its keyed hash, so an erased blocked value stays blocked. Notes are free text.
ERASE_FROM_BLOCKS = """
UPDATE blocked_value
SET value = CASE WHEN value_hash = %(hash)s THEN NULL ELSE value END,
    note = CASE WHEN strpos(lower(note), lower(%(value)s)) > 0 THEN NULL ELSE note END
WHERE value_hash = %(hash)s OR strpos(lower(note), lower(%(value)s)) > 0"""
# Stored answers and outbox payloads, published or not: scanned (erasure is rare; the outbox is pruned).
# Outbox payloads are JSON text, one event per line: only the lines whose text holds the value's JSON
# spelling are parsed.
ERASE_FROM_ANSWERS = """
UPDATE processed_event SET result = without_value(result, %(value)s)
WHERE jsonb_path_exists(result, '$.** ? (@ == $v)', jsonb_build_object('v', %(value)s::text))"""
ERASE_FROM_OUTBOX = """
UPDATE outbox SET payloads = (
    SELECT string_agg(
        CASE WHEN strpos(line, %(spelled)s) > 0
              AND jsonb_path_exists(line::jsonb, '$.** ? (@ == $v)', jsonb_build_object('v', %(value)s::text))
            THEN without_value(line::jsonb, %(value)s)::text
            ELSE line
        END,
        E'\\n' ORDER BY n)
    FROM unnest(string_to_array(payloads, E'\\n')) WITH ORDINALITY AS e(line, n)
)
WHERE strpos(payloads, %(spelled)s) > 0"""

# --- explanation (rule 18) --------------------------------------------------------------------------

# One consistent read of the rows, the blocklist and the history.
SNAPSHOT = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"
IDENTITY_ROWS = """
SELECT r.id, r.email, r.phone_number, r.linked_id, r.created_at, r.updated_at, r.source, r.source_event_id
FROM contact AS c, identity_rows(coalesce(c.linked_id, c.id)) AS r
WHERE c.id = %s AND c.deleted_at IS NULL"""
# The oldest live row holding a value, for `identity explain --email/--phone`.
ROW_HOLDING = """
SELECT id FROM contact WHERE deleted_at IS NULL AND (email = %(email)s OR phone_number = %(phone)s)
ORDER BY created_at, id LIMIT 1"""
ACTIVE_BLOCKS = """
SELECT value_hash, id, reason FROM blocked_value WHERE removed_at IS NULL AND value_hash = ANY(%s)"""
# The history of the identity whose rows have the ids %(ids)s and the values hashed %(hashes)s: one
# page after the cursor (at, rank, id), in causal order within one instant: block, unblock, erasure,
# split, merge. The lineage adds the former primaries the identity was split from, each until that
# split, so a row that was a plain secondary still sees its former identity's merges, and not what
# happened to that identity afterwards. A block shows its value only if the identity holds it.
IDENTITY_HISTORY = """
WITH RECURSIVE lineage(id, until) AS (
    SELECT i::bigint, 'infinity'::timestamptz FROM jsonb_array_elements_text(%(ids)s::jsonb) AS i
    UNION
    SELECT s.former_primary_id, least(l.until, s.split_at)
    FROM lineage AS l JOIN split_log AS s ON s.primary_ids @> ARRAY[l.id] AND s.split_at <= l.until
), history AS (
    SELECT b.created_at AS at, 0 AS rank, b.id, jsonb_build_object(
        'type', 'block', 'at', b.created_at, 'id', b.id, 'kind', b.kind,
        'value', CASE WHEN b.value_hash = ANY(%(hashes)s) THEN b.value END, 'reason', b.reason,
        'addedBy', b.added_by, 'identityId', b.identity_id) AS entry
    FROM blocked_value AS b
    WHERE b.value_hash = ANY(%(hashes)s) OR b.id IN (
        SELECT x.id FROM lineage AS l
        JOIN blocked_value AS x ON x.identity_id = l.id AND x.created_at <= l.until)
    UNION ALL
    SELECT b.removed_at, 1, b.id, jsonb_build_object(
        'type', 'unblock', 'at', b.removed_at, 'id', b.id, 'kind', b.kind,
        'value', CASE WHEN b.value_hash = ANY(%(hashes)s) THEN b.value END, 'removedBy', b.removed_by)
    FROM blocked_value AS b
    WHERE b.removed_at IS NOT NULL AND (b.value_hash = ANY(%(hashes)s) OR b.id IN (
        SELECT x.id FROM lineage AS l
        JOIN blocked_value AS x ON x.identity_id = l.id AND x.removed_at <= l.until))
    UNION ALL
    SELECT e.requested_at, 2, e.id, jsonb_build_object(
        'type', 'erasure', 'at', e.requested_at, 'id', e.id, 'kind', e.kind, 'requestedBy', e.requested_by,
        'erasedContactIds', e.erased_contact_ids, 'formerPrimaryIds', e.former_primary_ids)
    FROM erasure_request AS e
    WHERE e.id IN (
        SELECT x.id FROM lineage AS l
        JOIN erasure_request AS x ON x.former_primary_ids @> ARRAY[l.id] AND x.requested_at <= l.until)
    UNION ALL
    SELECT s.split_at, 3, s.id, jsonb_build_object(
        'type', 'split', 'at', s.split_at, 'id', s.id,
        'cause', jsonb_build_object('type', s.cause_type, 'id', s.cause_id),
        'formerPrimaryId', s.former_primary_id, 'primaryIds', s.primary_ids)
    FROM split_log AS s
    WHERE s.id IN (
        SELECT x.id FROM lineage AS l JOIN split_log AS x
        ON (x.former_primary_id = l.id OR x.primary_ids @> ARRAY[l.id]) AND x.split_at <= l.until)
    UNION ALL
    SELECT m.merged_at, 4, m.id, jsonb_build_object(
        'type', 'merge', 'at', m.merged_at, 'id', m.id, 'source', m.source,
        'sourceEventId', m.source_event_id, 'email', m.email, 'phoneNumber', m.phone_number,
        'survivingPrimaryId', m.surviving_primary_id, 'mergedPrimaryIds', m.merged_primary_ids,
        'relinkedContactIds', m.relinked_contact_ids)
    FROM merge_log AS m
    WHERE m.id IN (
        SELECT x.id FROM lineage AS l JOIN merge_log AS x
        ON (x.surviving_primary_id = l.id OR x.merged_primary_ids @> ARRAY[l.id]
            OR x.relinked_contact_ids @> ARRAY[l.id]) AND x.merged_at <= l.until)
)
SELECT at, rank, id, entry FROM history
WHERE %(after_at)s::timestamptz IS NULL
   OR (at, rank, id) > (%(after_at)s::timestamptz, %(after_rank)s::int, %(after_id)s::bigint)
ORDER BY at, rank, id
LIMIT %(limit)s"""

# --- reads ------------------------------------------------------------------------------------------

CLUSTER_OF_CONTACT = """
SELECT r.id, r.email, r.phone_number, r.linked_id, r.created_at, r.updated_at
FROM contact AS c, identity_rows(coalesce(c.linked_id, c.id)) AS r
WHERE c.id = %s AND c.deleted_at IS NULL"""

# --- operator console (reads only) ------------------------------------------------------------------

PRIMARY_OF_EMAIL = """
SELECT coalesce(linked_id, id) FROM contact WHERE deleted_at IS NULL AND email = %s LIMIT 1"""
PRIMARY_OF_PHONE = """
SELECT coalesce(linked_id, id) FROM contact WHERE deleted_at IS NULL AND phone_number = %s LIMIT 1"""
PRIMARY_OF_CONTACT = "SELECT coalesce(linked_id, id) FROM contact WHERE deleted_at IS NULL AND id = %s"
CONSOLE_IDENTITY_ROWS = """
SELECT id, email, phone_number, linked_id, created_at, source, source_event_id
FROM identity_rows(%s) ORDER BY created_at, id"""
CONSOLE_IDENTITY_MERGES = """
SELECT merged_at, source, source_event_id, surviving_primary_id, merged_primary_ids
FROM merge_log WHERE surviving_primary_id = ANY(%s::bigint[]) OR merged_primary_ids && %s::bigint[]
ORDER BY merged_at, id"""
CONSOLE_IDENTITY_SPLITS = """
SELECT split_at, cause_type, cause_id, former_primary_id, primary_ids
FROM split_log WHERE former_primary_id = ANY(%s::bigint[]) OR primary_ids && %s::bigint[]
ORDER BY split_at, id"""
CONSOLE_IDENTITY_BLOCKS = """
SELECT created_at, id, kind, reason, added_by FROM blocked_value WHERE identity_id = ANY(%s::bigint[])
ORDER BY created_at, id"""
CONSOLE_RECENT_AUTO_BLOCKS = """
SELECT kind, value, reason, identity_id, created_at FROM blocked_value
WHERE reason IN ('fan_out', 'identity_cap') ORDER BY created_at DESC, id DESC LIMIT 10"""
# Blocks, newest first, with the live size of the identity each was found in.
CONSOLE_BLOCKS = """
SELECT b.id, b.kind, b.value, b.reason, b.added_by, b.identity_id,
       (SELECT nullif(count(*), 0) FROM contact AS c, identity_rows(coalesce(c.linked_id, c.id))
        WHERE c.id = b.identity_id AND c.deleted_at IS NULL),
       b.created_at, b.removed_at
FROM blocked_value AS b
WHERE b.removed_at IS NULL AND (%(reason)s::text IS NULL OR b.reason = %(reason)s)
ORDER BY b.created_at DESC, b.id DESC
LIMIT 500"""
CONSOLE_PRIMARIES_HOLDING = {
    "email": """
SELECT DISTINCT coalesce(linked_id, id) FROM contact WHERE deleted_at IS NULL AND email = %s ORDER BY 1""",
    "phone": """
SELECT DISTINCT coalesce(linked_id, id) FROM contact WHERE deleted_at IS NULL AND phone_number = %s
ORDER BY 1""",
}
CONSOLE_BLOCK_VALUE = "SELECT kind, value FROM blocked_value WHERE id = %s AND removed_at IS NULL"
CONSOLE_ERASURE_EVENTS = """
SELECT event_type, payload::jsonb FROM outbox_event
WHERE (event_type = 'identity.erased' AND (payload->'data'->>'erasureRequestId')::bigint = %(id)s)
   OR (event_type = 'identity.split' AND payload->'data'->'cause'->>'type' = 'erasure'
       AND (payload->'data'->'cause'->>'id')::bigint = %(id)s)
ORDER BY outbox_id, position"""
OUTBOX_HEALTH = """
SELECT coalesce(sum(cardinality(event_types)), 0), extract(epoch FROM now() - min(created_at))::float8
FROM outbox WHERE published_at IS NULL"""

# --- outbox relay -----------------------------------------------------------------------------------

# One relay publishes at a time: a session lock, released when the leader's connection ends.
RELAY_TRY_LOCK = "SELECT pg_try_advisory_lock(hashtextextended('identity.relay', 0))"
# Ignored on Unix sockets; over TCP the server drops the session (and the lock) of a vanished client.
RELAY_SESSION_KEEPALIVES = """
SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; SET tcp_keepalives_count = 3"""
# Channel notified by the AFTER INSERT trigger of sql/002_outbox_notify.sql.
RELAY_LISTEN = "LISTEN outbox"
# Rows of still-running transactions are invisible and are picked up by a later round; marking rows
# (not a high-water mark) is what makes a late commit with a lower id impossible to skip.
# The oldest rows, whole, up to the first that reaches `events` events (a row larger than that goes
# alone). Payloads stay JSON text: the relay sends each line's bytes as they are.
OUTBOX_UNPUBLISHED = """
SELECT id, event_types, message_keys, payloads, created_at
FROM (
    SELECT *, sum(cardinality(event_types)) OVER (ORDER BY id) - cardinality(event_types) AS before
    FROM (
        SELECT id, event_types, message_keys, payloads, created_at FROM outbox
        WHERE published_at IS NULL
        ORDER BY id
        LIMIT %(events)s
    ) AS oldest
) AS counted
WHERE before < %(events)s
ORDER BY id"""
# A publishing round holds the shared lock; an erasure takes it exclusively before it scrubs payloads.
OUTBOX_ROUND_LOCK = "SELECT pg_advisory_lock_shared(hashtextextended('identity.outbox', 0))"
OUTBOX_ROUND_UNLOCK = "SELECT pg_advisory_unlock_shared(hashtextextended('identity.outbox', 0))"
OUTBOX_ERASURE_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended('identity.outbox', 0))"
OUTBOX_MARK_PUBLISHED = "UPDATE outbox SET published_at = now() WHERE id = ANY(%s)"
OUTBOX_BACKLOG = "SELECT coalesce(sum(cardinality(event_types)), 0) FROM outbox WHERE published_at IS NULL"
# Bounded chunks keep each delete short; callers repeat until a chunk comes back short.
OUTBOX_PRUNE = """
DELETE FROM outbox
WHERE id IN (
    SELECT id FROM outbox
    WHERE published_at < now() - %s * interval '1 hour'
    ORDER BY published_at
    LIMIT %s
)"""

# --- invariants (identity check) --------------------------------------------------------------------

LIVE_CONTACTS = """
SELECT id, email, phone_number, linked_id, created_at, updated_at FROM contact WHERE deleted_at IS NULL"""
ALL_MERGE_BRIDGES = """
SELECT DISTINCT email, phone_number FROM merge_log WHERE email IS NOT NULL AND phone_number IS NOT NULL"""
# The link-graph invariants (one identity per component, the cap) are checked in Python: core/check.py.
CHECKS: dict[str, LiteralString] = {
    "secondary not linked straight to a live primary": """
        SELECT s.id FROM contact AS s
        LEFT JOIN contact AS p ON p.id = s.linked_id
        WHERE s.deleted_at IS NULL AND s.linked_id IS NOT NULL
          AND (p.id IS NULL OR p.deleted_at IS NOT NULL OR p.linked_id IS NOT NULL)
        ORDER BY s.id""",
    "primary is not the oldest row of its cluster": """
        SELECT p.id FROM contact AS p
        JOIN contact AS s ON s.linked_id = p.id AND s.deleted_at IS NULL
        WHERE p.deleted_at IS NULL AND p.linked_id IS NULL
          AND (s.created_at, s.id) < (p.created_at, p.id)
        GROUP BY p.id ORDER BY p.id""",
    "precedence disagrees with linked_id": """
        SELECT id FROM contact
        WHERE (link_precedence = 'primary') <> (linked_id IS NULL)
        ORDER BY id""",
}

# --- API clients, keys, rate limits and the audit log (sql/005) ---------------------------------------

INSERT_CLIENT = """
INSERT INTO api_client (name, scopes, rate_per_s, burst) VALUES (%s, %s, %s, %s)
ON CONFLICT (name) DO NOTHING
RETURNING id"""
INSERT_KEY = "INSERT INTO api_key (key_id, client_id, key_hash) VALUES (%s, %s, %s)"
ACTIVE_CLIENT_ID = "SELECT id FROM api_client WHERE name = %s AND revoked_at IS NULL FOR UPDATE"
# A rotation: the client's current keys keep working for the grace period, then expire.
EXPIRE_KEYS = """
UPDATE api_key SET expires_at = least(coalesce(expires_at, 'infinity'), now() + %s * interval '1 second')
WHERE client_id = %s"""
REVOKE_CLIENT = "UPDATE api_client SET revoked_at = now() WHERE name = %s AND revoked_at IS NULL"
LIST_CLIENTS = """
SELECT c.name, c.scopes, c.rate_per_s, c.burst, c.created_at, c.revoked_at,
       coalesce(array_agg(k.key_id ORDER BY k.created_at) FILTER (WHERE k.key_id IS NOT NULL
                AND (k.expires_at IS NULL OR k.expires_at > now())), '{}')
FROM api_client AS c LEFT JOIN api_key AS k ON k.client_id = c.id
GROUP BY c.id ORDER BY c.name"""
# Looked up by the key's public id; the caller compares the hash in constant time.
FIND_KEY = """
SELECT k.key_hash, k.expires_at, c.name, c.scopes, c.rate_per_s, c.burst, c.revoked_at IS NOT NULL
FROM api_key AS k JOIN api_client AS c ON c.id = k.client_id
WHERE k.key_id = %s"""
TAKE_TOKENS = "SELECT granted, remaining FROM take_tokens(%s, %s, %s, %s)"
INSERT_AUDIT = "INSERT INTO audit_log (client, action, ids) VALUES (%s, %s, %s)"
READ_AUDIT = """
SELECT at, client, action, ids FROM audit_log
WHERE at >= coalesce(%(since)s::timestamptz, '-infinity')
  AND (%(client)s::text IS NULL OR client = %(client)s)
ORDER BY at, id"""
