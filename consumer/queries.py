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

# Taken in the order of the array: callers pass keys sorted, so every transaction locks in one order.
LOCK_KEYS = "SELECT count(pg_advisory_xact_lock(k)) FROM unnest(%s::bigint[]) AS k"
PROCESSED_EVENTS = """
SELECT p.source, p.event_id, p.payload_hash, p.result
FROM processed_event AS p
JOIN unnest(%s::text[], %s::text[]) AS k(source, event_id) USING (source, event_id)"""
MATCHING_PRIMARIES = """
SELECT DISTINCT coalesce(linked_id, id)
FROM contact
WHERE deleted_at IS NULL AND (email = ANY(%s::text[]) OR phone_number = ANY(%s::text[]))"""
# Row locks on the primaries serialize every change to a cluster; ORDER BY makes them one global order.
LOCK_PRIMARIES = "SELECT id FROM contact WHERE id = ANY(%s::bigint[]) ORDER BY id FOR NO KEY UPDATE"
LOCK_PRIMARIES_NOWAIT = LOCK_PRIMARIES + " NOWAIT"
CLUSTER_ROWS = """
SELECT id, email, phone_number, linked_id, created_at, updated_at
FROM contact
WHERE deleted_at IS NULL AND (id = ANY(%(ids)s::bigint[]) OR linked_id = ANY(%(ids)s::bigint[]))"""
CLOCK = "SELECT clock_timestamp()"
ALLOCATE_CONTACT_IDS = "SELECT nextval(pg_get_serial_sequence('contact', 'id')) FROM generate_series(1, %s)"
COPY_CONTACTS = """
COPY contact (id, email, phone_number, linked_id, link_precedence, created_at, updated_at, source,
              source_event_id) FROM STDIN"""
UPDATE_LINKS = """
UPDATE contact AS c
SET linked_id = v.linked_id, link_precedence = v.link_precedence, updated_at = v.updated_at
FROM unnest(%s::bigint[], %s::bigint[], %s::text[], %s::timestamptz[])
     AS v(id, linked_id, link_precedence, updated_at)
WHERE c.id = v.id"""
COPY_MERGES = """
COPY merge_log (source, source_event_id, email, phone_number, surviving_primary_id, demoted_primary_ids,
                relinked_contact_ids, merged_at) FROM STDIN"""
COPY_PROCESSED = "COPY processed_event (source, event_id, payload_hash, result) FROM STDIN"
COPY_OUTBOX = "COPY outbox (event_type, message_key, payload) FROM STDIN"

# --- reads ------------------------------------------------------------------------------------------

CLUSTER_OF_CONTACT = """
SELECT id, email, phone_number, linked_id, created_at, updated_at
FROM contact
WHERE deleted_at IS NULL AND coalesce(linked_id, id) = (
    SELECT coalesce(linked_id, id) FROM contact WHERE id = %s AND deleted_at IS NULL
)"""

# --- invariants (identity check) --------------------------------------------------------------------

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
    "email shared by two clusters": """
        SELECT min(id) FROM contact
        WHERE deleted_at IS NULL AND email IS NOT NULL
        GROUP BY email HAVING count(DISTINCT coalesce(linked_id, id)) > 1
        ORDER BY 1""",
    "phone number shared by two clusters": """
        SELECT min(id) FROM contact
        WHERE deleted_at IS NULL AND phone_number IS NOT NULL
        GROUP BY phone_number HAVING count(DISTINCT coalesce(linked_id, id)) > 1
        ORDER BY 1""",
    "precedence disagrees with linked_id": """
        SELECT id FROM contact
        WHERE (link_precedence = 'primary') <> (linked_id IS NULL)
        ORDER BY id""",
}
