-- The charts' time buckets (gateway/tally.rs): per resolution (0 minute, 1 hour), scope
-- ('*', 't:<tenant>', 'e:<endpoint>') and bucket start. Every column adds up, so each node
-- adds what it counted with one INSERT ... ON CONFLICT per second; nothing here is read by
-- delivery, and no chart scans the deliveries table.
CREATE TABLE tally (
    resolution smallint NOT NULL,
    scope text NOT NULL,
    bucket_ms bigint NOT NULL,
    succeeded bigint NOT NULL,
    failed bigint NOT NULL,
    retried bigint NOT NULL,
    attempts bigint NOT NULL,
    latency_ms_sum bigint NOT NULL,
    -- Attempts by duration, in the slots of tally::LATENCY_BOUNDS_MS.
    latency bigint[] NOT NULL,
    PRIMARY KEY (resolution, scope, bucket_ms)
);
