//! The store's vocabulary: what callers hand it (writes, queries, scan bounds) and what it
//! answers (outcomes, pages, due items), the same for both backends.
//!
//! Owns: these types and the pure helpers on them (a query's index keys and id range).
//! Must not touch: storage. Nothing here reads or writes a database.

use uuid::Uuid;

use super::rules as schema;
use crate::model::{AttemptRecord, DeliveryRecord, DeliveryState, EndpointHealth, EventRecord, PluginNote};

/// What is written with the end of an attempt (or with a change by hand), in the same
/// transaction: the endpoint's new health and the operational events announcing a change.
#[derive(Debug, Clone, Default)]
pub struct Effects {
    pub health: Option<EndpointHealth>,
    pub events: Vec<IngestWrite>,
}

/// One retention pass: what is old enough to go, and where the previous pass stopped.
#[derive(Debug, Clone)]
pub struct PruneRequest {
    /// Events (and their final deliveries) received before this go.
    pub cutoff_ms: u64,
    /// Idempotency keys stored before this go.
    pub idempotency_cutoff_ms: u64,
    /// Continue after this event id.
    pub after: Option<u128>,
    /// Events visited at most (bounds the transaction).
    pub max_events: usize,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct PruneReport {
    pub events: u64,
    pub deliveries: u64,
    /// Where the next pass continues; `None`: nothing older than the cutoff is left to visit.
    pub next: Option<u128>,
}
/// A new event with its deliveries, written atomically by ingest.
#[derive(Debug, Clone)]
pub struct IngestWrite {
    pub event: EventRecord,
    pub deliveries: Vec<DeliveryRecord>,
    pub idempotency: Option<IdempotencyClaim>,
}

/// An ingest `Idempotency-Key` and the hash of the canonical request it came with.
#[derive(Debug, Clone)]
pub struct IdempotencyClaim {
    pub key: String,
    pub request_hash: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum IngestOutcome {
    /// Stored now.
    Created { event_id: Uuid, deliveries: usize },
    /// The key was seen within 24 h with the same request: nothing new was stored.
    Replayed { event_id: Uuid, deliveries: usize },
    /// The key was seen within 24 h with a different request.
    KeyReused,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct IdempotencyRecord {
    pub(crate) request_hash: String,
    pub(crate) event_id: Uuid,
    pub(crate) deliveries: usize,
    pub(crate) created_ms: u64,
}

/// What follows an attempt, decided by dispatch (`dispatch::attempt::decide_sent`) and applied
/// by the store (`store::rules::apply_attempt`) together with the attempt's record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Next {
    /// Pending again, due at these Unix milliseconds (the retry schedule's next step).
    RetryAt(u64),
    /// Final: the endpoint answered 2xx.
    Succeeded,
    /// Final: retries are exhausted, or the failure cannot be retried.
    Failed,
    /// The attempt is recorded but the delivery's state and schedule stay as they were: a
    /// manual resend that failed must not end (or reschedule) a delivery that is still
    /// pending its own retries, nor revive a failed one.
    Keep,
}

/// The plugin chain's result, stored with the first attempt so retries reuse it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainResult {
    /// The transformed body, or `None` when every plugin kept the envelope.
    pub body: Option<String>,
}

/// The durable end of one pass through the attempt pipeline. Every pass ends in exactly one of
/// these, so a due delivery never stays due without a record of why.
#[derive(Debug, Clone, PartialEq)]
pub enum Finish {
    /// An attempt was made: append it and move the delivery to `next`. `prepared` stores the
    /// plugin chain's result with the delivery's first attempt.
    Attempt { delivery_id: Uuid, attempt: AttemptRecord, next: Next, prepared: Option<ChainResult> },
    /// The delivery ends without an attempt: a plugin dropped or failed it, or its stored event
    /// cannot be read.
    Settle { delivery_id: Uuid, state: DeliveryState, note: PluginNote },
    /// A due entry whose delivery record is missing, unreadable or no longer pending: remove it
    /// so the scheduler stops finding it.
    DropDue { endpoint_id: String, due_ms: u64, delivery_id: Uuid },
}

/// A listing request: every given filter must match.
#[derive(Debug, Clone, Default)]
pub struct DeliveryQuery {
    pub state: Option<DeliveryState>,
    pub endpoint_id: Option<String>,
    pub trigger: Option<String>,
    pub tenant: Option<String>,
    /// Resource fields: (name, canonical JSON value).
    pub fields: Vec<(String, String)>,
    /// Created at or after (epoch ms).
    pub since_ms: Option<u64>,
    /// Created at or before (epoch ms).
    pub until_ms: Option<u64>,
    /// Continue after this delivery (exclusive): the previous page's cursor.
    pub after: Option<Uuid>,
    pub limit: usize,
}

impl DeliveryQuery {
    pub(super) fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.fields.iter().map(|(f, v)| schema::field_key(f, v)).collect();
        if let Some(e) = &self.endpoint_id {
            keys.push(schema::endpoint_key(e));
        }
        if let Some(t) = &self.trigger {
            keys.push(schema::trigger_key(t));
        }
        if let Some(s) = self.state {
            keys.push(schema::state_key(s));
        }
        if let Some(t) = &self.tenant {
            keys.push(schema::tenant_key(t));
        }
        keys
    }

    /// The id range this query may return, newest end first.
    pub(super) fn id_bounds(&self) -> Option<(u128, u128)> {
        // An id's top 48 bits are its milliseconds: times past them select nothing (since) or
        // everything (until), never a wrapped-around range.
        let max = u128::from(crate::model::MAX_TIME_MS);
        let lo = match self.since_ms.map(u128::from) {
            None => 0,
            Some(ms) if ms > max => return None,
            Some(ms) => ms << 80,
        };
        let mut hi = match self.until_ms.map(u128::from) {
            Some(ms) if ms < max => ((ms + 1) << 80) - 1,
            _ => u128::MAX,
        };
        if let Some(after) = self.after {
            hi = hi.min(after.as_u128().checked_sub(1)?);
        }
        (lo <= hi).then_some((lo, hi))
    }
}

/// A page of deliveries, newest first, and the cursor of the next page if there is one. A page
/// may hold fewer than `limit` deliveries (even none) while `next` is set: the request used up
/// its work budget; following `next` continues the search.
#[derive(Debug, Default)]
pub struct DeliveryPage {
    pub deliveries: Vec<DeliveryRecord>,
    pub next: Option<Uuid>,
}

/// One due delivery found by [`Store::scan_due`](super::Store::scan_due), with its records as of the scan.
#[derive(Debug)]
pub struct DueItem {
    pub delivery_id: Uuid,
    pub endpoint_id: String,
    /// The due time its entry is filed under (needed to remove the entry).
    pub due_ms: u64,
    pub loaded: Loaded,
}

/// What the scan found behind a due entry.
#[derive(Debug)]
pub enum Loaded {
    Ready(Box<DeliveryRecord>, Box<EventRecord>),
    /// The due entry has no delivery record.
    NoDelivery,
    /// The delivery record cannot be deserialised.
    Unreadable(String),
    /// The delivery's event is missing.
    NoEvent(Box<DeliveryRecord>),
    /// The delivery's event cannot be deserialised.
    UnreadableEvent(Box<DeliveryRecord>, String),
}

#[derive(Debug, Default)]
pub struct DueScan {
    pub items: Vec<DueItem>,
    /// The earliest due time after `now` among the endpoints scanned, for the scheduler's sleep.
    pub next_due_ms: Option<u64>,
}

/// An `admit` for [`Store::scan_due`](super::Store::scan_due) that takes at most `n` of each endpoint's deliveries.
pub fn per_endpoint(n: usize) -> impl FnMut(&str) -> bool + Send + 'static {
    let mut taken: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    move |ep| {
        let t = taken.entry(ep.to_owned()).or_default();
        *t += 1;
        *t <= n
    }
}

/// Bounds of one due scan.
#[derive(Debug, Clone, Copy)]
pub struct ScanLimits {
    /// Deliveries taken at most in all.
    pub global_free: usize,
    /// Deliveries of one endpoint taken at most (PostgreSQL also counts other nodes' leases
    /// against `cluster_per_endpoint`).
    pub per_endpoint: usize,
    /// Deliveries of one endpoint leased at once across every node (PostgreSQL only).
    pub cluster_per_endpoint: usize,
}

impl ScanLimits {
    /// No per-endpoint bound beyond `admit`: for tests and benches.
    pub fn global(n: usize) -> ScanLimits {
        ScanLimits { global_free: n, per_endpoint: n, cluster_per_endpoint: usize::MAX }
    }
}

/// Deliveries waiting on a set of endpoints (due, or waiting for a retry).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Backlog {
    pub pending: u64,
    /// The count stopped at the read's cap: there are at least `pending`.
    pub capped: bool,
    /// When the oldest of them was created.
    pub oldest_pending_ms: Option<u64>,
}
