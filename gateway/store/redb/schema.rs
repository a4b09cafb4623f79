//! The on-disk layout: table definitions, index key formats and schema creation.
//!
//! Owns: every `TableDefinition` and the schema version (the text of index keys is
//! `store::rules`', shared with PostgreSQL).
//! Must not touch: transactions beyond creating the tables once at open; reads live in
//! `store::redb::read`, writes in `store::redb::write`.

use redb::{Database, TableDefinition};

use super::storage;
use crate::store::StoreError;

/// Events by id (UUIDv7 as u128, so the table is in arrival order) → JSON `EventRecord`.
pub(crate) const EVENTS: TableDefinition<u128, &[u8]> = TableDefinition::new("events");
/// Deliveries by id (UUIDv7 as u128) → JSON `DeliveryRecord`, attempts included.
pub(crate) const DELIVERIES: TableDefinition<u128, &[u8]> = TableDefinition::new("deliveries");
/// The due index: `(endpoint_id, due_ms, delivery_id)`. Grouped by endpoint first so that one
/// endpoint's backlog never hides another endpoint's due work from the scheduler.
pub(crate) const DUE: TableDefinition<(&str, u64, u128), ()> = TableDefinition::new("due");
/// Ingest `Idempotency-Key` → JSON `IdempotencyRecord`.
pub(crate) const IDEMPOTENCY: TableDefinition<&str, &[u8]> = TableDefinition::new("idempotency");
/// `(created_ms, key)` for pruning idempotency keys older than `IDEMPOTENCY_TTL_MS`.
pub(crate) const IDEMPOTENCY_EXPIRY: TableDefinition<(u64, &str), ()> = TableDefinition::new("idempotency_expiry");
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Secondary indexes of deliveries: `(key, delivery_id)`; see the module header of `store`.
pub(crate) const DELIVERY_INDEX: TableDefinition<(&str, u128), ()> = TableDefinition::new("delivery_index");
/// Endpoints created through the API, by id → JSON `EndpointRecord`.
pub(crate) const ENDPOINTS: TableDefinition<&str, &[u8]> = TableDefinition::new("endpoints");

/// Endpoint health (circuit, enabled, recent results) by endpoint id → JSON `EndpointHealth`.
pub(crate) const ENDPOINT_HEALTH: TableDefinition<&str, &[u8]> = TableDefinition::new("endpoint_health");
/// FIFO queues: `(endpoint_id, queue, delivery_id)` for every pending delivery of an endpoint
/// with `ordering = "fifo"`. Only the first entry of a queue (its oldest delivery) has a `due`
/// entry; the next one gets it when that delivery is final.
pub(crate) const FIFO: TableDefinition<(&str, &str, u128), ()> = TableDefinition::new("fifo");

/// Tenants created through the API, by id → JSON `TenantRecord`.
pub(crate) const TENANTS: TableDefinition<&str, &[u8]> = TableDefinition::new("tenants");
/// Tenant-scoped tokens, by token id → JSON `TokenRecord` (the token's SHA-256, never the token).
pub(crate) const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("tokens");

/// Event types of the Svix-compatible API, by name → JSON `EventTypeRecord`.
pub(crate) const EVENT_TYPES: TableDefinition<&str, &[u8]> = TableDefinition::new("event_types");

/// The charts' buckets (`tally`), one table per resolution: `(scope, bucket_start_ms)` →
/// `tally::Counts::to_bytes`. Grouped by scope first, so one chart is one range read.
pub(crate) const TALLY_MINUTE: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("tally_minute");
pub(crate) const TALLY_HOUR: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("tally_hour");

/// The table of a resolution's buckets.
pub(crate) fn tally_table(
    res: crate::tally::Resolution,
) -> TableDefinition<'static, (&'static str, u64), &'static [u8]> {
    match res {
        crate::tally::Resolution::Minute => TALLY_MINUTE,
        crate::tally::Resolution::Hour => TALLY_HOUR,
    }
}

pub(crate) const SCHEMA_VERSION: u64 = 1;

/// Creates every table and checks the schema version, so readers never meet a missing table
/// and an older binary never misreads a newer file.
pub(super) fn init(db: &Database) -> Result<(), StoreError> {
    use redb::ReadableTable;
    let txn = db.begin_write().map_err(storage)?;
    {
        let mut meta = txn.open_table(META).map_err(storage)?;
        let version = meta.get("schema_version").map_err(storage)?.map(|v| v.value());
        match version {
            None => {
                meta.insert("schema_version", SCHEMA_VERSION).map_err(storage)?;
            }
            Some(SCHEMA_VERSION) => {}
            Some(v) => {
                return Err(StoreError::Storage(format!(
                    "the database has schema version {v}; this hookgate understands {SCHEMA_VERSION}"
                )));
            }
        }
        txn.open_table(EVENTS).map_err(storage)?;
        txn.open_table(DELIVERIES).map_err(storage)?;
        txn.open_table(DUE).map_err(storage)?;
        txn.open_table(IDEMPOTENCY).map_err(storage)?;
        txn.open_table(IDEMPOTENCY_EXPIRY).map_err(storage)?;
        txn.open_table(DELIVERY_INDEX).map_err(storage)?;
        txn.open_table(ENDPOINTS).map_err(storage)?;
        txn.open_table(ENDPOINT_HEALTH).map_err(storage)?;
        txn.open_table(FIFO).map_err(storage)?;
        txn.open_table(TENANTS).map_err(storage)?;
        txn.open_table(TOKENS).map_err(storage)?;
        // Added after schema 1 shipped: opening creates them in an older file.
        txn.open_table(TALLY_MINUTE).map_err(storage)?;
        txn.open_table(TALLY_HOUR).map_err(storage)?;
        txn.open_table(EVENT_TYPES).map_err(storage)?;
    }
    txn.commit().map_err(storage)
}
