-- Hookgate schema 1. Records are the JSON of gateway/model.rs, as in the redb file; the other
-- columns are what the queries need. See gateway/store/pg/mod.rs.

-- Events by id (UUIDv7: id order is arrival order).
CREATE TABLE events (
    id uuid PRIMARY KEY,
    received_at_ms bigint NOT NULL,
    record bytea NOT NULL
);

CREATE TABLE deliveries (
    id uuid PRIMARY KEY,
    event_id uuid NOT NULL,
    endpoint_id text NOT NULL,
    state text NOT NULL,
    -- The log's other filter keys: t:<trigger>, n:<tenant>, f:<field>=<canonical value>.
    keys text[] NOT NULL,
    -- Set exactly when the delivery has a due entry (pending, and the head of its FIFO queue).
    due_ms bigint,
    -- Set while a FIFO delivery is pending: its queue.
    fifo_queue text,
    -- The node attempting it, and until when (see the lease protocol in ARCHITECTURE.md).
    lease_owner uuid,
    lease_until_ms bigint,
    record bytea NOT NULL
)
-- Leases change no indexed column, so with room on the page their updates are HOT (no new
-- index entries); the queue churns, so vacuum sooner than the default 20 %.
WITH (fillfactor = 80, autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02);
CREATE INDEX deliveries_due ON deliveries (endpoint_id, due_ms, id) WHERE due_ms IS NOT NULL;
CREATE INDEX deliveries_due_time ON deliveries (due_ms) WHERE due_ms IS NOT NULL;
CREATE INDEX deliveries_state ON deliveries (state, id);
CREATE INDEX deliveries_endpoint ON deliveries (endpoint_id, id);
CREATE INDEX deliveries_keys ON deliveries USING gin (keys);
CREATE INDEX deliveries_event ON deliveries (event_id);
CREATE INDEX deliveries_fifo ON deliveries (endpoint_id, fifo_queue, id) WHERE fifo_queue IS NOT NULL;

-- Ingest Idempotency-Keys: the primary key makes a key unique across every node.
CREATE TABLE idempotency (
    key text PRIMARY KEY,
    request_hash text NOT NULL,
    event_id uuid NOT NULL,
    deliveries integer NOT NULL,
    created_ms bigint NOT NULL
);
CREATE INDEX idempotency_created ON idempotency (created_ms);

CREATE TABLE endpoints (id text PRIMARY KEY, record bytea NOT NULL);
CREATE TABLE endpoint_health (id text PRIMARY KEY, version bigint NOT NULL, record bytea NOT NULL);
CREATE TABLE tenants (id text PRIMARY KEY, record bytea NOT NULL);
CREATE TABLE tokens (id text PRIMARY KEY, tenant text NOT NULL, record bytea NOT NULL);

-- Node heartbeats: which nodes are alive (rate limits are shared between them).
CREATE TABLE nodes (id uuid PRIMARY KEY, seen_ms bigint NOT NULL);
