-- contact_linked_idx held every live row, each primary's under a NULL key. With no statistics (a new
-- deployment, before autovacuum's first ANALYZE) the planner takes `deleted_at IS NULL` as selective,
-- and a generic plan made when the table held about a thousand rows found emails by reading that whole
-- index, then kept doing so as the table grew. Holding only secondaries, the index serves nothing but
-- what it is for, a primary's secondaries (`linked_id = $1`), and is a tenth of the size to maintain.
-- IF NOT EXISTS: an operator may have built it beforehand, CONCURRENTLY (docs/operations.md).
CREATE INDEX IF NOT EXISTS contact_secondaries_idx ON contact (linked_id)
    WHERE deleted_at IS NULL AND linked_id IS NOT NULL;
DROP INDEX contact_linked_idx;

-- The live rows of the identity whose primary is `primary_id`, through the primary key and the index
-- above: a filter on `coalesce(linked_id, id)` reads the whole table. A single SQL query, STABLE:
-- the planner inlines it into the calling statement.
CREATE FUNCTION identity_rows(primary_id bigint) RETURNS SETOF contact
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT * FROM contact WHERE id = primary_id AND linked_id IS NULL AND deleted_at IS NULL
    UNION ALL
    SELECT * FROM contact WHERE linked_id = primary_id AND deleted_at IS NULL
$$;
