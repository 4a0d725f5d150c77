-- pgbench script: one checkout event per transaction, the statements the core runs for a new customer
-- (advisory locks, idempotency and cluster lookups, primary row lock, contact, processed_event and outbox
-- inserts), for bench/pipeline_bench.py to compare with the batched pipeline on the same PostgreSQL.
\set n random(1, 1000000000)
BEGIN;
SELECT count(pg_advisory_xact_lock(k)) FROM unnest(ARRAY[hashtextextended('event:' || :n, 0), hashtextextended('email:' || :n, 0), hashtextextended('phone:' || :n, 0)]) AS k;
SELECT source, event_id, payload_hash, result FROM processed_event WHERE source = 'pgbench' AND event_id = :n::text;
SELECT id FROM contact WHERE id IN (SELECT coalesce(linked_id, id) FROM contact WHERE deleted_at IS NULL AND (email = 'pgbench' || :n || '@example.com' OR phone_number = '+1999' || :n)) ORDER BY id FOR NO KEY UPDATE;
SELECT id, email, phone_number, linked_id, created_at, updated_at FROM contact WHERE deleted_at IS NULL AND (email = 'pgbench' || :n || '@example.com' OR phone_number = '+1999' || :n);
INSERT INTO contact (email, phone_number, link_precedence, created_at, updated_at, source, source_event_id) VALUES ('pgbench' || :n || '@example.com', '+1999' || :n, 'primary', now(), now(), 'pgbench', :n::text);
INSERT INTO processed_event (source, event_id, payload_hash, result) VALUES ('pgbench', :n::text, '\x00', '{"outcome": "created_primary", "contactId": 1, "contact": {}, "merge": null}') ON CONFLICT DO NOTHING;
INSERT INTO outbox (event_types, message_keys, payloads) VALUES (ARRAY['identity.resolved'], ARRAY[:n::text], '{"specversion": "1.0", "id": "00000000-0000-5000-8000-000000000000", "source": "urn.identity-reconciliation", "type": "identity.resolved", "time": "2026-01-01T00.00.00Z", "subject": "1", "datacontenttype": "application/json", "data": {"sourceEventId": "00000000-0000-4000-8000-000000000000", "sourceEventSource": "urn.checkout-events", "outcome": "created_primary", "contactId": 1, "contact": {"primaryContatctId": 1, "primaryContactId": 1, "emails": ["ada.lovelace.1@example.com"], "phoneNumbers": ["+155500000001"], "secondaryContactIds": []}}}');
END;
