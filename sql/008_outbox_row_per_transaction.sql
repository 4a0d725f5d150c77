-- One outbox row per transaction, not one per event (docs/relay.md). A worker's batch of a thousand
-- events wrote a thousand rows, each indexed twice, and the relay's mark then rewrote each one whole:
-- `published_at` is in both partial indexes' predicates, so the mark is never a HOT update. That was a
-- quarter of PostgreSQL's time in the pipeline and two thirds of its WAL. A row now holds its
-- transaction's events in order: their types and keys as arrays, their CloudEvents as text, one JSON
-- document per line (JSON text holds no raw newline). A large row is compressed and stored out of
-- line, so the mark rewrites only its small inline part.
-- Altered in place: the table keeps its grants (docs/security.md), its indexes and its trigger.
ALTER TABLE outbox
    ADD COLUMN event_types text[],
    ADD COLUMN message_keys text[],
    ADD COLUMN payloads text;

-- jsonb's text: one line whatever the stored spelling.
UPDATE outbox
SET event_types = ARRAY[event_type], message_keys = ARRAY[message_key], payloads = payload::jsonb::text;

ALTER TABLE outbox
    DROP COLUMN event_type,
    DROP COLUMN message_key,
    DROP COLUMN payload,
    ALTER COLUMN event_types SET NOT NULL,
    ALTER COLUMN message_keys SET NOT NULL,
    ALTER COLUMN payloads SET NOT NULL,
    ADD CONSTRAINT outbox_events_check
        CHECK (cardinality(event_types) >= 1 AND cardinality(message_keys) = cardinality(event_types));

-- One row per output event, in publishing order (`ORDER BY outbox_id, position`): for operators and
-- the console. Only the relay reads the table itself.
CREATE VIEW outbox_event AS
SELECT o.id AS outbox_id, e.position, e.event_type, e.message_key, e.payload::json AS payload,
       o.created_at, o.published_at
FROM outbox AS o,
     unnest(o.event_types, o.message_keys, string_to_array(o.payloads, E'\n'))
         WITH ORDINALITY AS e(event_type, message_key, payload, position);
