-- The relay publishes each payload's text as it is. As json (text, checked on the way in) rather than
-- jsonb, the row keeps the very text the core wrote: json_to_recordset stores each payload's slice of
-- the batch document without building a binary form, and the relay reads it back without rendering it.
-- Rewrites the table, which the relay keeps small (published rows are pruned).
ALTER TABLE outbox ALTER COLUMN payload TYPE json USING payload::json;
