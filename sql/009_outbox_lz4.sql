-- The outbox's payloads compress with lz4 where the server has it (PostgreSQL's packages and images
-- do): a worker's row of a thousand events, about 450 kB, took pglz 5 ms to compress and takes lz4
-- under 2, to the same size (docs/benchmarks.md). A server built without lz4 keeps pglz. Either way
-- only values written from now on change: nothing is rewritten.
DO $$
BEGIN
    ALTER TABLE outbox ALTER COLUMN payloads SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'this server has no lz4: outbox payloads stay compressed with pglz';
END
$$;
