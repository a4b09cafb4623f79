//! Durable state: events, deliveries, the due index and idempotency keys, in one redb file.
//!
//! Owns: the only `redb` import, the table layout, and the single writer thread that turns many
//! concurrent writes into one commit (group commit).
//! Must not touch: HTTP, plugins or signing. Callers hand it finished records; it stores them
//! and answers reads.
//!
//! **Invariant:** a delivery has an entry in `due` exactly when its state is `pending`, keyed by
//! `(endpoint_id, next_attempt_at_ms, delivery_id)`. Both change in the same transaction.
//!
//! **Invariant:** `delivery_index` holds `(key, delivery_id)` for every delivery and each of
//! its keys: `s:<state>`, `e:<endpoint_id>`, `t:<trigger>`, and `f:<field>=<canonical value>`
//! per scalar resource field. The state key moves with the state, in the same transaction.
//! Listing intersects these in descending id order (ids are UUIDv7, so that is newest first
//! and a time range is an id range): no query scans the deliveries table.
//!
//! **Group commit:** every write goes through one thread that drains whatever has queued up
//! (up to [`MAX_BATCH`] operations), applies it all in one write transaction, commits once with
//! `Durability::Immediate` (one fsync) and only then answers each caller. Under load, hundreds
//! of ingest requests share one fsync instead of paying one each.
//!
//! redb transactions are blocking: writes run on the writer thread and reads run inside
//! `spawn_blocking`, so no async task ever blocks on the disk.

use std::collections::HashSet;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::model::{AttemptRecord, DeliveryRecord, DeliveryState, EndpointRecord, EventRecord, PluginNote};

/// Events by id (UUIDv7 as u128, so the table is in arrival order) → JSON `EventRecord`.
const EVENTS: TableDefinition<u128, &[u8]> = TableDefinition::new("events");
/// Deliveries by id (UUIDv7 as u128) → JSON `DeliveryRecord`, attempts included.
const DELIVERIES: TableDefinition<u128, &[u8]> = TableDefinition::new("deliveries");
/// The due index: `(endpoint_id, due_ms, delivery_id)`. Grouped by endpoint first so that one
/// endpoint's backlog never hides another endpoint's due work from the scheduler.
const DUE: TableDefinition<(&str, u64, u128), ()> = TableDefinition::new("due");
/// Ingest `Idempotency-Key` → JSON `IdempotencyRecord`.
const IDEMPOTENCY: TableDefinition<&str, &[u8]> = TableDefinition::new("idempotency");
/// `(created_ms, key)` for pruning idempotency keys older than [`IDEMPOTENCY_TTL_MS`].
const IDEMPOTENCY_EXPIRY: TableDefinition<(u64, &str), ()> = TableDefinition::new("idempotency_expiry");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Secondary indexes of deliveries: `(key, delivery_id)`; see the module header.
const DELIVERY_INDEX: TableDefinition<(&str, u128), ()> = TableDefinition::new("delivery_index");
/// Endpoints created through the API, by id → JSON `EndpointRecord`.
const ENDPOINTS: TableDefinition<&str, &[u8]> = TableDefinition::new("endpoints");

const SCHEMA_VERSION: u64 = 1;

/// How long an ingest `Idempotency-Key` is remembered.
pub const IDEMPOTENCY_TTL_MS: u64 = 24 * 3600 * 1000;

/// The most operations one commit carries. Large enough to amortise an fsync over a burst,
/// small enough that one transaction stays short and its callers are answered promptly.
pub const MAX_BATCH: usize = 1024;

/// Capacity of the queue in front of the writer. When it is full, writers wait: that is the
/// backpressure that keeps a flood of ingest requests from growing memory.
const QUEUE_CAPACITY: usize = 4096;

/// The page cache when none is configured (`server.cache_size`). redb's own default is 1 GiB,
/// which would let memory grow with the database.
pub const DEFAULT_CACHE_BYTES: usize = 64 << 20;

/// The file inside `data_dir`.
pub const DB_FILE: &str = "hookgate.redb";

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("storage failure: {0}")]
    Storage(String),
    #[error("the store is shut down")]
    Closed,
    #[error("corrupt record: {0}")]
    Corrupt(String),
}

fn storage<E: Into<redb::Error>>(e: E) -> StoreError {
    StoreError::Storage(e.into().to_string())
}

/// A new event with its deliveries, written atomically by ingest.
#[derive(Debug)]
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
struct IdempotencyRecord {
    request_hash: String,
    event_id: Uuid,
    deliveries: usize,
    created_ms: u64,
}

/// What follows an attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Next {
    RetryAt(u64),
    Succeeded,
    Failed,
    /// State and schedule stay as they are (a failed manual resend).
    Keep,
}

/// A listing request: every given filter must match.
#[derive(Debug, Clone, Default)]
pub struct DeliveryQuery {
    pub state: Option<DeliveryState>,
    pub endpoint_id: Option<String>,
    pub trigger: Option<String>,
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
    fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.fields.iter().map(|(f, v)| field_key(f, v)).collect();
        if let Some(e) = &self.endpoint_id {
            keys.push(format!("e:{e}"));
        }
        if let Some(t) = &self.trigger {
            keys.push(format!("t:{t}"));
        }
        if let Some(s) = self.state {
            keys.push(state_key(s));
        }
        keys
    }

    /// The id range this query may return, newest end first.
    fn id_bounds(&self) -> Option<(u128, u128)> {
        let lo = self.since_ms.map_or(0, |ms| u128::from(ms) << 80);
        let mut hi = self.until_ms.map_or(u128::MAX, |ms| ((u128::from(ms) + 1) << 80) - 1);
        if let Some(after) = self.after {
            hi = hi.min(after.as_u128().checked_sub(1)?);
        }
        (lo <= hi).then_some((lo, hi))
    }
}

fn state_key(s: DeliveryState) -> String {
    format!("s:{}", s.as_str())
}

fn field_key(field: &str, canonical_value: &str) -> String {
    format!("f:{field}={canonical_value}")
}

/// A page of deliveries, newest first, and the cursor of the next page if there is one. A page
/// may hold fewer than `limit` deliveries (even none) while `next` is set: the request used up
/// its work budget; following `next` continues the search.
#[derive(Debug, Default)]
pub struct DeliveryPage {
    pub deliveries: Vec<DeliveryRecord>,
    pub next: Option<Uuid>,
}

/// One due delivery found by [`Store::scan_due`].
#[derive(Debug, Clone, PartialEq)]
pub struct DueItem {
    pub delivery_id: Uuid,
    pub endpoint_id: String,
}

#[derive(Debug, Default)]
pub struct DueScan {
    pub items: Vec<DueItem>,
    /// The earliest due time after `now` among the endpoints scanned, for the scheduler's sleep.
    pub next_due_ms: Option<u64>,
}

enum Op {
    Ingest(IngestWrite, oneshot::Sender<Result<IngestOutcome, StoreError>>),
    Attempt {
        delivery_id: Uuid,
        attempt: AttemptRecord,
        next: Next,
        prepared: Option<Prepared>,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    Settle {
        delivery_id: Uuid,
        state: DeliveryState,
        note: PluginNote,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    PutEndpoint(EndpointRecord, oneshot::Sender<Result<(), StoreError>>),
    DeleteEndpoint(String, oneshot::Sender<Result<(), StoreError>>),
    Requeue {
        ids: Vec<Uuid>,
        at_ms: u64,
        reply: oneshot::Sender<Result<usize, StoreError>>,
    },
}

/// The plugin chain's result, stored with the first attempt so retries reuse it.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// The transformed body, or `None` when every plugin kept the envelope.
    pub body: Option<String>,
}

/// A cheap, cloneable handle to the database and its writer thread.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    writer: mpsc::Sender<Op>,
    stats: Arc<WriterStats>,
}

/// Counters kept by the writer thread: how many commits it made and how many operations they
/// carried. `operations / commits` is the group-commit factor.
#[derive(Debug, Default)]
pub struct WriterStats {
    pub commits: AtomicU64,
    pub operations: AtomicU64,
}

/// Joins the writer thread. Dropping every [`Store`] handle first lets the thread finish the
/// batch it holds, commit it and exit.
pub struct WriterThread(std::thread::JoinHandle<()>);

impl WriterThread {
    pub fn join(self) {
        let _ = self.0.join();
    }
}

impl Store {
    /// Opens (or creates) `data_dir/hookgate.redb` with the default cache and starts the writer.
    pub fn open(data_dir: &Path) -> Result<(Store, WriterThread), StoreError> {
        Self::open_with_cache(data_dir, DEFAULT_CACHE_BYTES)
    }

    /// Opens (or creates) `data_dir/hookgate.redb`, keeping at most `cache_bytes` of pages in
    /// memory, and starts the writer thread.
    pub fn open_with_cache(data_dir: &Path, cache_bytes: usize) -> Result<(Store, WriterThread), StoreError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| StoreError::Storage(format!("cannot create data_dir {}: {e}", data_dir.display())))?;
        let path: PathBuf = data_dir.join(DB_FILE);
        let db = Database::builder().set_cache_size(cache_bytes).create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Storage(format!(
                "{} is already open in another process (is another hookgate running on this data_dir?)",
                path.display()
            )),
            e => StoreError::Storage(format!("cannot open {}: {e}", path.display())),
        })?;
        init_schema(&db)?;
        let db = Arc::new(db);
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let writer_db = db.clone();
        let stats = Arc::new(WriterStats::default());
        let writer_stats = stats.clone();
        let handle = std::thread::Builder::new()
            .name("hookgate-store-writer".into())
            .spawn(move || writer_loop(&writer_db, rx, &writer_stats))
            .map_err(|e| StoreError::Storage(format!("cannot start the writer thread: {e}")))?;
        Ok((Store { db, writer: tx, stats }, WriterThread(handle)))
    }

    /// Stores an event and its pending deliveries durably, or replays an idempotent repeat.
    pub async fn ingest(&self, write: IngestWrite) -> Result<IngestOutcome, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.writer.send(Op::Ingest(write, reply)).await.map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Appends an attempt to a delivery and moves it to its next state, durably. `prepared`
    /// stores the plugin chain's result along with the delivery's first attempt.
    pub async fn record_attempt(
        &self,
        delivery_id: Uuid,
        attempt: AttemptRecord,
        next: Next,
        prepared: Option<Prepared>,
    ) -> Result<(), StoreError> {
        let (reply, rx) = oneshot::channel();
        self.writer
            .send(Op::Attempt { delivery_id, attempt, next, prepared, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Ends a pending delivery without an attempt (`filtered`, or `failed` in a plugin).
    pub async fn settle(&self, delivery_id: Uuid, state: DeliveryState, note: PluginNote) -> Result<(), StoreError> {
        let (reply, rx) = oneshot::channel();
        self.writer.send(Op::Settle { delivery_id, state, note, reply }).await.map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    pub async fn put_endpoint(&self, e: EndpointRecord) -> Result<(), StoreError> {
        let (reply, rx) = oneshot::channel();
        self.writer.send(Op::PutEndpoint(e, reply)).await.map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    pub async fn delete_endpoint(&self, id: String) -> Result<(), StoreError> {
        let (reply, rx) = oneshot::channel();
        self.writer.send(Op::DeleteEndpoint(id, reply)).await.map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Endpoints created through the API, in id order.
    pub async fn endpoints(&self) -> Result<Vec<EndpointRecord>, StoreError> {
        self.read(|db| {
            let txn = db.begin_read().map_err(storage)?;
            let t = txn.open_table(ENDPOINTS).map_err(storage)?;
            let mut out = Vec::new();
            for entry in t.iter().map_err(storage)? {
                let (_, v) = entry.map_err(storage)?;
                out.push(serde_json::from_slice(v.value()).map_err(|e| StoreError::Corrupt(e.to_string()))?);
            }
            Ok(out)
        })
        .await
    }

    /// Puts failed deliveries back in the queue, due at `at_ms`, for one manual attempt each.
    /// Deliveries that are not `failed` (any more) or are at the attempt cap are left alone.
    /// Returns how many were queued.
    pub async fn requeue(&self, ids: Vec<Uuid>, at_ms: u64) -> Result<usize, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.writer.send(Op::Requeue { ids, at_ms, reply }).await.map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// A page of deliveries matching `q`, newest first, answered from the indexes.
    pub async fn list_deliveries(&self, q: DeliveryQuery) -> Result<DeliveryPage, StoreError> {
        self.read(move |db| list_deliveries(db, &q)).await
    }

    /// Commit counters of the writer thread.
    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }

    pub async fn event(&self, id: Uuid) -> Result<Option<EventRecord>, StoreError> {
        self.read(move |db| get_json(db, EVENTS, id)).await
    }

    pub async fn delivery(&self, id: Uuid) -> Result<Option<DeliveryRecord>, StoreError> {
        self.read(move |db| get_json(db, DELIVERIES, id)).await
    }

    /// A delivery and its event, read in one snapshot.
    pub async fn delivery_with_event(&self, id: Uuid) -> Result<Option<(DeliveryRecord, EventRecord)>, StoreError> {
        self.read(move |db| {
            let Some(d) = get_json::<DeliveryRecord>(db, DELIVERIES, id)? else {
                return Ok(None);
            };
            let e = get_json::<EventRecord>(db, EVENTS, d.event_id)?
                .ok_or_else(|| StoreError::Corrupt(format!("delivery {id} has no event")))?;
            Ok(Some((d, e)))
        })
        .await
    }

    pub async fn deliveries(&self, ids: Vec<Uuid>) -> Result<Vec<DeliveryRecord>, StoreError> {
        self.read(move |db| {
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(d) = get_json(db, DELIVERIES, id)? {
                    out.push(d);
                }
            }
            Ok(out)
        })
        .await
    }

    /// Finds deliveries due at or before `now_ms`, endpoint by endpoint, skipping those already
    /// in flight and taking at most `free(endpoint)` per endpoint and `global_free` in all.
    pub async fn scan_due(
        &self,
        now_ms: u64,
        in_flight: HashSet<Uuid>,
        free: impl Fn(&str) -> usize + Send + 'static,
        global_free: usize,
    ) -> Result<DueScan, StoreError> {
        self.read(move |db| scan_due(db, now_ms, &in_flight, &free, global_free)).await
    }

    /// How many deliveries are pending.
    pub async fn pending_count(&self) -> Result<u64, StoreError> {
        self.read(|db| {
            let txn = db.begin_read().map_err(storage)?;
            let due = txn.open_table(DUE).map_err(storage)?;
            due.len().map_err(storage)
        })
        .await
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| StoreError::Storage(format!("read task failed: {e}")))?
    }
}

fn init_schema(db: &Database) -> Result<(), StoreError> {
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
        // Create every table up front so readers never meet a missing one.
        txn.open_table(EVENTS).map_err(storage)?;
        txn.open_table(DELIVERIES).map_err(storage)?;
        txn.open_table(DUE).map_err(storage)?;
        txn.open_table(IDEMPOTENCY).map_err(storage)?;
        txn.open_table(IDEMPOTENCY_EXPIRY).map_err(storage)?;
        txn.open_table(DELIVERY_INDEX).map_err(storage)?;
        txn.open_table(ENDPOINTS).map_err(storage)?;
    }
    txn.commit().map_err(storage)
}

fn get_json<T: serde::de::DeserializeOwned>(
    db: &Database,
    table: TableDefinition<u128, &[u8]>,
    id: Uuid,
) -> Result<Option<T>, StoreError> {
    let txn = db.begin_read().map_err(storage)?;
    let t = txn.open_table(table).map_err(storage)?;
    let Some(v) = t.get(id.as_u128()).map_err(storage)? else {
        return Ok(None);
    };
    serde_json::from_slice(v.value()).map(Some).map_err(|e| StoreError::Corrupt(format!("{id}: {e}")))
}

/// The most index seeks one listing request may make. Filters whose index sets are large and
/// interleave without intersecting cost a seek per step; past this budget the page returns what
/// it found with a cursor to continue from, so no request runs long (about 5 ms here).
const SEEK_BUDGET: usize = 4096;

fn list_deliveries(db: &Database, q: &DeliveryQuery) -> Result<DeliveryPage, StoreError> {
    let mut page = DeliveryPage::default();
    let Some((lo, hi)) = q.id_bounds() else {
        return Ok(page);
    };
    let limit = q.limit.max(1);
    let txn = db.begin_read().map_err(storage)?;
    let deliveries = txn.open_table(DELIVERIES).map_err(storage)?;
    let keys = q.keys();
    let mut ids: Vec<u128> = Vec::with_capacity(limit + 1);
    if keys.is_empty() {
        for entry in deliveries.range(lo..=hi).map_err(storage)?.rev().take(limit + 1) {
            ids.push(entry.map_err(storage)?.0.value());
        }
    } else {
        let index = txn.open_table(DELIVERY_INDEX).map_err(storage)?;
        // Leapfrog intersection: the candidate is the newest id every index may still hold;
        // each index either confirms it or lowers it to its own next id. Every step is one
        // B-tree seek, so the work follows the number of matches, not the table size.
        let mut candidate = hi;
        let mut seeks = 0;
        'search: while ids.len() <= limit {
            let mut confirmed = 0;
            while confirmed < keys.len() {
                confirmed = 0;
                if seeks >= SEEK_BUDGET {
                    // Nothing matches above `candidate`: the next page resumes there.
                    page.next = candidate.checked_add(1).map(Uuid::from_u128);
                    break 'search;
                }
                for key in &keys {
                    seeks += 1;
                    let found =
                        index.range((key.as_str(), lo)..=(key.as_str(), candidate)).map_err(storage)?.next_back();
                    let Some(entry) = found else { break 'search };
                    let id = entry.map_err(storage)?.0.value().1;
                    if id == candidate {
                        confirmed += 1;
                    } else {
                        candidate = id;
                    }
                }
            }
            ids.push(candidate);
            if candidate == lo {
                break;
            }
            candidate -= 1;
        }
    }
    if ids.len() > limit {
        ids.truncate(limit);
        page.next = ids.last().map(|id| Uuid::from_u128(*id));
    }

    for id in ids {
        if let Some(v) = deliveries.get(id).map_err(storage)? {
            page.deliveries.push(serde_json::from_slice(v.value()).map_err(|e| StoreError::Corrupt(e.to_string()))?);
        }
    }
    Ok(page)
}

fn scan_due(
    db: &Database,
    now_ms: u64,
    in_flight: &HashSet<Uuid>,
    free: &dyn Fn(&str) -> usize,
    global_free: usize,
) -> Result<DueScan, StoreError> {
    let txn = db.begin_read().map_err(storage)?;
    let due = txn.open_table(DUE).map_err(storage)?;
    let mut scan = DueScan::default();
    let mut endpoint: Option<String> = None;
    // Visit each endpoint present in the index: jump past the previous endpoint's last key.
    loop {
        let next = match &endpoint {
            None => due.first().map_err(storage)?.map(|(k, _)| k.value().0.to_owned()),
            Some(ep) => {
                let after = (ep.as_str(), u64::MAX, u128::MAX);
                let mut range = due.range((Bound::Excluded(after), Bound::Unbounded)).map_err(storage)?;
                match range.next() {
                    Some(entry) => Some(entry.map_err(storage)?.0.value().0.to_owned()),
                    None => None,
                }
            }
        };
        let Some(ep) = next else { break };
        let mut cap = free(&ep).min(global_free.saturating_sub(scan.items.len()));
        let lo = (ep.as_str(), 0u64, 0u128);
        let hi = (ep.as_str(), u64::MAX, u128::MAX);
        for entry in due.range(lo..=hi).map_err(storage)? {
            let (key, _) = entry.map_err(storage)?;
            let (_, due_ms, id) = key.value();
            if due_ms > now_ms {
                scan.next_due_ms = Some(scan.next_due_ms.map_or(due_ms, |n| n.min(due_ms)));
                break;
            }
            let id = Uuid::from_u128(id);
            // In-flight entries sit at the head of their endpoint's range; there are at most
            // `max_in_flight_per_endpoint` of them, so skipping them is cheap.
            if in_flight.contains(&id) {
                continue;
            }
            if cap == 0 {
                break;
            }
            scan.items.push(DueItem { delivery_id: id, endpoint_id: ep.clone() });
            cap -= 1;
        }
        endpoint = Some(ep);
    }
    Ok(scan)
}

/// A reply to send once the batch's commit has succeeded or failed.
enum Reply {
    Ingest(oneshot::Sender<Result<IngestOutcome, StoreError>>, IngestOutcome),
    Unit(oneshot::Sender<Result<(), StoreError>>, Result<(), StoreError>),
    Count(oneshot::Sender<Result<usize, StoreError>>, usize),
}

impl Reply {
    fn send(self, commit: &Result<(), StoreError>) {
        match (self, commit) {
            (Reply::Ingest(tx, outcome), Ok(())) => drop(tx.send(Ok(outcome))),
            (Reply::Unit(tx, r), Ok(())) => drop(tx.send(r)),
            (Reply::Count(tx, n), Ok(())) => drop(tx.send(Ok(n))),
            (Reply::Ingest(tx, _), Err(e)) => drop(tx.send(Err(e.clone()))),
            (Reply::Unit(tx, _), Err(e)) => drop(tx.send(Err(e.clone()))),
            (Reply::Count(tx, _), Err(e)) => drop(tx.send(Err(e.clone()))),
        }
    }
}

fn writer_loop(db: &Database, mut rx: mpsc::Receiver<Op>, stats: &WriterStats) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut last_prune = 0u64;
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let now = crate::model::now_ms();
        let prune = now.saturating_sub(last_prune) > 60_000;
        if prune {
            last_prune = now;
        }
        let mut replies = Vec::with_capacity(batch.len());
        let ops = batch.len() as u64;
        let result = apply_batch(db, batch.drain(..), &mut replies, now, prune);
        match &result {
            Ok(()) => {
                stats.commits.fetch_add(1, Ordering::Relaxed);
                stats.operations.fetch_add(ops, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::error!(error = %e, ops, "store commit failed; the batch's callers get an error")
            }
        }
        for reply in replies {
            reply.send(&result);
        }
    }
}

/// Applies every operation in one transaction and commits it. Replies are collected, not sent:
/// no caller hears "stored" before the commit is durable.
fn apply_batch(
    db: &Database,
    ops: impl Iterator<Item = Op>,
    replies: &mut Vec<Reply>,
    now: u64,
    prune: bool,
) -> Result<(), StoreError> {
    let mut txn = db.begin_write().map_err(storage)?;
    txn.set_durability(Durability::Immediate).map_err(|e| StoreError::Storage(e.to_string()))?;
    {
        let mut t = Tables::open(&txn)?;
        let mut failure: Option<StoreError> = None;
        for op in ops {
            // After a storage failure the transaction is abandoned; the remaining operations
            // only get a placeholder so that their callers hear about it.
            if failure.is_some() {
                replies.push(match op {
                    Op::Ingest(_, tx) => Reply::Ingest(tx, IngestOutcome::KeyReused),
                    Op::Attempt { reply, .. }
                    | Op::Settle { reply, .. }
                    | Op::PutEndpoint(_, reply)
                    | Op::DeleteEndpoint(_, reply) => Reply::Unit(reply, Ok(())),
                    Op::Requeue { reply, .. } => Reply::Count(reply, 0),
                });
                continue;
            }
            let applied = match op {
                Op::Ingest(w, tx) => t.ingest(w, now).map(|o| replies.push(Reply::Ingest(tx, o))),
                Op::Settle { delivery_id, state, note, reply } => t
                    .update_delivery(delivery_id, |d| {
                        d.state = state;
                        d.next_attempt_at_ms = None;
                        // A filtered delivery is final; a failed chain runs again on a resend
                        // (the plugin may have been fixed).
                        d.prepared = state == DeliveryState::Filtered;
                        d.note = Some(note);
                    })
                    .map(|r| replies.push(Reply::Unit(reply, r))),
                Op::Attempt { delivery_id, attempt, next, prepared, reply } => t
                    .update_delivery(delivery_id, |d| {
                        if let Some(p) = prepared {
                            d.prepared = true;
                            d.body = p.body;
                        }
                        d.attempts.push(attempt);
                        d.requeued = false;
                        // An attempt was made, so no plugin verdict stands any more.
                        d.note = None;
                        match next {
                            Next::RetryAt(at) => (d.state, d.next_attempt_at_ms) = (DeliveryState::Pending, Some(at)),
                            Next::Succeeded => (d.state, d.next_attempt_at_ms) = (DeliveryState::Succeeded, None),
                            Next::Failed => (d.state, d.next_attempt_at_ms) = (DeliveryState::Failed, None),
                            Next::Keep => {}
                        }
                    })
                    .map(|r| replies.push(Reply::Unit(reply, r))),
                Op::PutEndpoint(e, reply) => t
                    .endpoints
                    .insert(e.id.as_str(), to_json(&e).as_slice())
                    .map_err(storage)
                    .map(|_| replies.push(Reply::Unit(reply, Ok(())))),
                Op::DeleteEndpoint(id, reply) => {
                    t.endpoints.remove(id.as_str()).map_err(storage).map(|_| replies.push(Reply::Unit(reply, Ok(()))))
                }
                Op::Requeue { ids, at_ms, reply } => {
                    t.requeue(&ids, at_ms).map(|n| replies.push(Reply::Count(reply, n)))
                }
            };
            if let Err(e) = applied {
                failure = Some(e);
                // The caller of the failed operation hears about it through the commit result.
                replies.push(Reply::Count(oneshot::channel().0, 0));
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        if prune {
            t.prune_idempotency(now)?;
        }
    }
    txn.commit().map_err(storage)
}

/// Every table a write transaction touches, opened once per batch.
struct Tables<'t> {
    events: redb::Table<'t, u128, &'static [u8]>,
    deliveries: redb::Table<'t, u128, &'static [u8]>,
    due: redb::Table<'t, (&'static str, u64, u128), ()>,
    index: redb::Table<'t, (&'static str, u128), ()>,
    idem: redb::Table<'t, &'static str, &'static [u8]>,
    idem_expiry: redb::Table<'t, (u64, &'static str), ()>,
    endpoints: redb::Table<'t, &'static str, &'static [u8]>,
}

impl<'t> Tables<'t> {
    fn open(txn: &'t redb::WriteTransaction) -> Result<Tables<'t>, StoreError> {
        Ok(Tables {
            events: txn.open_table(EVENTS).map_err(storage)?,
            deliveries: txn.open_table(DELIVERIES).map_err(storage)?,
            due: txn.open_table(DUE).map_err(storage)?,
            index: txn.open_table(DELIVERY_INDEX).map_err(storage)?,
            idem: txn.open_table(IDEMPOTENCY).map_err(storage)?,
            idem_expiry: txn.open_table(IDEMPOTENCY_EXPIRY).map_err(storage)?,
            endpoints: txn.open_table(ENDPOINTS).map_err(storage)?,
        })
    }

    fn ingest(&mut self, w: IngestWrite, now: u64) -> Result<IngestOutcome, StoreError> {
        if let Some(claim) = &w.idempotency {
            let existing = self
                .idem
                .get(claim.key.as_str())
                .map_err(storage)?
                .map(|v| serde_json::from_slice::<IdempotencyRecord>(v.value()));
            if let Some(Ok(rec)) = existing {
                if now.saturating_sub(rec.created_ms) < IDEMPOTENCY_TTL_MS {
                    return Ok(if rec.request_hash == claim.request_hash {
                        IngestOutcome::Replayed { event_id: rec.event_id, deliveries: rec.deliveries }
                    } else {
                        IngestOutcome::KeyReused
                    });
                }
                self.idem_expiry.remove((rec.created_ms, claim.key.as_str())).map_err(storage)?;
            }
            let rec = IdempotencyRecord {
                request_hash: claim.request_hash.clone(),
                event_id: w.event.id,
                deliveries: w.deliveries.len(),
                created_ms: now,
            };
            self.idem.insert(claim.key.as_str(), to_json(&rec).as_slice()).map_err(storage)?;
            self.idem_expiry.insert((now, claim.key.as_str()), ()).map_err(storage)?;
        }
        self.events.insert(w.event.id.as_u128(), to_json(&w.event).as_slice()).map_err(storage)?;
        for d in &w.deliveries {
            let id = d.id.as_u128();
            self.deliveries.insert(id, to_json(d).as_slice()).map_err(storage)?;
            if let (DeliveryState::Pending, Some(at)) = (d.state, d.next_attempt_at_ms) {
                self.due.insert((d.endpoint_id.as_str(), at, id), ()).map_err(storage)?;
            }
            let mut keys = vec![state_key(d.state), format!("e:{}", d.endpoint_id), format!("t:{}", d.trigger)];
            keys.extend(d.resource.iter().map(|(f, v)| field_key(f, v)));
            for key in &keys {
                self.index.insert((key.as_str(), id), ()).map_err(storage)?;
            }
        }
        Ok(IngestOutcome::Created { event_id: w.event.id, deliveries: w.deliveries.len() })
    }

    /// Changes one delivery and keeps the due index and the state index in step with it (the
    /// module's invariants). The outer `Result` is a storage failure (abandon the batch); the
    /// inner one is this operation's own answer.
    fn update_delivery(
        &mut self,
        id: Uuid,
        change: impl FnOnce(&mut DeliveryRecord),
    ) -> Result<Result<(), StoreError>, StoreError> {
        let Some(mut d) = self.read_delivery(id)? else {
            return Ok(Err(StoreError::Corrupt(format!("delivery {id} does not exist"))));
        };
        let key = id.as_u128();
        let before = (d.state, d.next_attempt_at_ms);
        change(&mut d);
        if before.1 != d.next_attempt_at_ms || before.0 != d.state {
            if let Some(at) = before.1 {
                self.due.remove((d.endpoint_id.as_str(), at, key)).map_err(storage)?;
            }
            if let (DeliveryState::Pending, Some(at)) = (d.state, d.next_attempt_at_ms) {
                self.due.insert((d.endpoint_id.as_str(), at, key), ()).map_err(storage)?;
            }
        }
        if before.0 != d.state {
            self.index.remove((state_key(before.0).as_str(), key)).map_err(storage)?;
            self.index.insert((state_key(d.state).as_str(), key), ()).map_err(storage)?;
        }
        self.deliveries.insert(key, to_json(&d).as_slice()).map_err(storage)?;
        Ok(Ok(()))
    }

    fn read_delivery(&self, id: Uuid) -> Result<Option<DeliveryRecord>, StoreError> {
        let Some(raw) = self.deliveries.get(id.as_u128()).map_err(storage)? else {
            return Ok(None);
        };
        serde_json::from_slice(raw.value()).map(Some).map_err(|e| StoreError::Corrupt(format!("{id}: {e}")))
    }

    fn requeue(&mut self, ids: &[Uuid], at_ms: u64) -> Result<usize, StoreError> {
        let mut queued = 0;
        for &id in ids {
            let eligible = self
                .read_delivery(id)?
                .is_some_and(|d| d.state == DeliveryState::Failed && d.attempts.len() < crate::model::MAX_ATTEMPTS);
            if !eligible {
                continue;
            }
            let r = self.update_delivery(id, |d| {
                d.state = DeliveryState::Pending;
                d.next_attempt_at_ms = Some(at_ms);
                d.requeued = true;
            })?;
            queued += usize::from(r.is_ok());
        }
        Ok(queued)
    }

    fn prune_idempotency(&mut self, now: u64) -> Result<(), StoreError> {
        let cutoff = now.saturating_sub(IDEMPOTENCY_TTL_MS);
        let mut expired = Vec::new();
        for entry in
            self.idem_expiry.range((Bound::Unbounded, Bound::Excluded((cutoff, "")))).map_err(storage)?.take(10_000)
        {
            let (k, _) = entry.map_err(storage)?;
            let (created, key) = k.value();
            expired.push((created, key.to_owned()));
        }
        for (created, key) in expired {
            self.idem_expiry.remove((created, key.as_str())).map_err(storage)?;
            self.idem.remove(key.as_str()).map_err(storage)?;
        }
        Ok(())
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    // Our records contain only strings, numbers and UUIDs: serialising them cannot fail.
    serde_json::to_vec(v).expect("records serialise")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DeliveryState;

    fn delivery(event: Uuid, ep: &str, at: u64) -> DeliveryRecord {
        DeliveryRecord {
            id: Uuid::now_v7(),
            event_id: event,
            endpoint_id: ep.into(),
            idempotency_key: Uuid::new_v4(),
            trigger: "t".into(),
            state: DeliveryState::Pending,
            created_at_ms: at,
            next_attempt_at_ms: Some(at),
            attempts: vec![],
            prepared: false,
            body: None,
            note: None,
            resource: vec![],
            requeued: false,
        }
    }

    fn event(deliveries: &[DeliveryRecord]) -> EventRecord {
        EventRecord {
            id: deliveries.first().map_or_else(Uuid::now_v7, |d| d.event_id),
            received_at_ms: 1,
            trigger: "t".into(),
            payload: "{}".into(),
            delivery_ids: deliveries.iter().map(|d| d.id).collect(),
        }
    }

    fn attempt(n: u32) -> AttemptRecord {
        AttemptRecord {
            number: n,
            started_at_ms: 0,
            duration_ms: 1,
            status_code: Some(500),
            error: None,
            response_body: String::new(),
            manual: false,
        }
    }

    #[tokio::test]
    async fn due_scan_is_per_endpoint_and_respects_limits() {
        let dir = tempfile::tempdir().unwrap();
        let (store, writer) = Store::open(dir.path()).unwrap();
        let ev = Uuid::now_v7();
        // Endpoint "a" has a large backlog due first; "b" has one delivery due later.
        let mut ds: Vec<_> = (0..50).map(|i| delivery(ev, "a", 100 + i)).collect();
        ds.push(delivery(ev, "b", 500));
        ds.push(delivery(ev, "c", 5_000));
        let b_id = ds[50].id;
        store.ingest(IngestWrite { event: event(&ds), deliveries: ds.clone(), idempotency: None }).await.unwrap();
        let scan = store.scan_due(1_000, HashSet::new(), |_| 3, 100).await.unwrap();
        let got: Vec<&str> = scan.items.iter().map(|i| i.endpoint_id.as_str()).collect();
        assert_eq!(got, ["a", "a", "a", "b"], "a's backlog must not hide b");
        assert_eq!(scan.items[3].delivery_id, b_id);
        assert_eq!(scan.next_due_ms, Some(5_000));
        // In-flight deliveries are skipped; the global limit caps the total.
        let in_flight: HashSet<Uuid> = ds[..3].iter().map(|d| d.id).collect();
        let scan = store.scan_due(1_000, in_flight, |_| 3, 2).await.unwrap();
        let ids: Vec<Uuid> = scan.items.iter().map(|i| i.delivery_id).collect();
        assert_eq!(ids, [ds[3].id, ds[4].id]);
        // Recording a retry moves the due entry; success removes it.
        store.record_attempt(b_id, attempt(1), Next::RetryAt(9_000), None).await.unwrap();
        let d = store.delivery(b_id).await.unwrap().unwrap();
        assert_eq!((d.state, d.next_attempt_at_ms, d.attempts.len()), (DeliveryState::Pending, Some(9_000), 1));
        store.record_attempt(b_id, attempt(2), Next::Succeeded, None).await.unwrap();
        let d = store.delivery(b_id).await.unwrap().unwrap();
        assert_eq!((d.state, d.next_attempt_at_ms), (DeliveryState::Succeeded, None));
        assert_eq!(store.pending_count().await.unwrap(), 51);
        drop(store);
        writer.join();
    }

    #[tokio::test]
    async fn idempotency_keys_replay_and_conflict_within_one_batch_and_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (store, writer) = Store::open(dir.path()).unwrap();
        let claim = |hash: &str| Some(IdempotencyClaim { key: "k1".into(), request_hash: hash.into() });
        let ev = Uuid::now_v7();
        let ds = vec![delivery(ev, "a", 1)];
        // Concurrent repeats land in one batch: exactly one is created.
        let writes = (0..20).map(|_| {
            let s = store.clone();
            let ds = ds.clone();
            let e = event(&ds);
            async move { s.ingest(IngestWrite { event: e, deliveries: ds, idempotency: claim("h") }).await.unwrap() }
        });
        let outcomes = futures_join_all(writes).await;
        let created = outcomes.iter().filter(|o| matches!(o, IngestOutcome::Created { .. })).count();
        assert_eq!(created, 1, "{outcomes:?}");
        assert!(outcomes.iter().all(|o| matches!(o, IngestOutcome::Created { event_id, .. } | IngestOutcome::Replayed { event_id, .. } if *event_id == ev)));
        drop(store);
        writer.join();
        let (store, writer) = Store::open(dir.path()).unwrap();
        let other = vec![delivery(Uuid::now_v7(), "a", 1)];
        let again = store
            .ingest(IngestWrite { event: event(&other), deliveries: other.clone(), idempotency: claim("h") })
            .await
            .unwrap();
        assert_eq!(again, IngestOutcome::Replayed { event_id: ev, deliveries: 1 });
        let conflict = store
            .ingest(IngestWrite { event: event(&other), deliveries: other, idempotency: claim("other") })
            .await
            .unwrap();
        assert_eq!(conflict, IngestOutcome::KeyReused);
        drop(store);
        writer.join();
    }

    /// Interleaving filters without matches exhaust the seek budget: pages come back short with
    /// a cursor, and following the cursors still finds the one match, exactly once.
    #[tokio::test]
    async fn listing_resumes_after_the_seek_budget() {
        let dir = tempfile::tempdir().unwrap();
        let (store, writer) = Store::open(dir.path()).unwrap();
        let ev = Uuid::now_v7();
        // 3 x SEEK_BUDGET deliveries alternating endpoints a/b; only the oldest "a" failed.
        let mut ds: Vec<DeliveryRecord> = (0..3 * SEEK_BUDGET)
            .map(|i| {
                let mut d = delivery(ev, if i % 2 == 0 { "a" } else { "b" }, 1);
                d.state = if i % 2 == 1 || i == 0 { DeliveryState::Failed } else { DeliveryState::Succeeded };
                d.next_attempt_at_ms = None;
                d
            })
            .collect();
        ds.sort_by_key(|d| d.id);
        let target = ds[0].id;
        store.ingest(IngestWrite { event: event(&ds), deliveries: ds, idempotency: None }).await.unwrap();
        let mut q = DeliveryQuery {
            endpoint_id: Some("a".into()),
            state: Some(DeliveryState::Failed),
            limit: 10,
            ..DeliveryQuery::default()
        };
        let (mut found, mut pages) = (Vec::new(), 0);
        loop {
            let page = store.list_deliveries(q.clone()).await.unwrap();
            pages += 1;
            found.extend(page.deliveries.iter().map(|d| d.id));
            match page.next {
                Some(next) => q.after = Some(next),
                None => break,
            }
        }
        assert_eq!(found, [target]);
        assert!(pages > 1, "the budget must have cut at least one page short");
        drop(store);
        writer.join();
    }

    /// Group commit: many concurrent writers share commits instead of paying one fsync each.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_ingests_share_commits() {
        let dir = tempfile::tempdir().unwrap();
        let (store, writer) = Store::open(dir.path()).unwrap();
        let writes = (0..200).map(|_| {
            let s = store.clone();
            let ds = vec![delivery(Uuid::now_v7(), "a", 1)];
            let e = event(&ds);
            async move { s.ingest(IngestWrite { event: e, deliveries: ds, idempotency: None }).await.unwrap() }
        });
        let outcomes = futures_join_all(writes).await;
        assert!(outcomes.iter().all(|o| matches!(o, IngestOutcome::Created { .. })));
        let commits = store.stats().commits.load(Ordering::Relaxed);
        let ops = store.stats().operations.load(Ordering::Relaxed);
        assert_eq!(ops, 200);
        assert!(commits < 100, "200 concurrent ingests took {commits} commits");
        assert_eq!(store.pending_count().await.unwrap(), 200);
        drop(store);
        writer.join();
    }

    async fn futures_join_all<F: std::future::Future + Send + 'static>(fs: impl Iterator<Item = F>) -> Vec<F::Output>
    where
        F::Output: Send + 'static,
    {
        let handles: Vec<_> = fs.map(tokio::spawn).collect();
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.unwrap());
        }
        out
    }
}
