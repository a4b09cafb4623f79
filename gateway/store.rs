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

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::model::{AttemptRecord, DeliveryRecord, DeliveryState, EventRecord, PluginNote};

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
const IDEMPOTENCY_EXPIRY: TableDefinition<(u64, &str), ()> =
    TableDefinition::new("idempotency_expiry");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

const SCHEMA_VERSION: u64 = 1;

/// How long an ingest `Idempotency-Key` is remembered.
pub const IDEMPOTENCY_TTL_MS: u64 = 24 * 3600 * 1000;

/// The most operations one commit carries. Large enough to amortise an fsync over a burst,
/// small enough that one transaction stays short and its callers are answered promptly.
pub const MAX_BATCH: usize = 1024;

/// Capacity of the queue in front of the writer. When it is full, writers wait: that is the
/// backpressure that keeps a flood of ingest requests from growing memory.
const QUEUE_CAPACITY: usize = 4096;

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
    Ingest(
        IngestWrite,
        oneshot::Sender<Result<IngestOutcome, StoreError>>,
    ),
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
    /// Opens (or creates) `data_dir/hookgate.redb` and starts the writer thread.
    pub fn open(data_dir: &Path) -> Result<(Store, WriterThread), StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            StoreError::Storage(format!(
                "cannot create data_dir {}: {e}",
                data_dir.display()
            ))
        })?;
        let path: PathBuf = data_dir.join(DB_FILE);
        let db = Database::create(&path).map_err(|e| match e {
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
        Ok((
            Store {
                db,
                writer: tx,
                stats,
            },
            WriterThread(handle),
        ))
    }

    /// Stores an event and its pending deliveries durably, or replays an idempotent repeat.
    pub async fn ingest(&self, write: IngestWrite) -> Result<IngestOutcome, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.writer
            .send(Op::Ingest(write, reply))
            .await
            .map_err(|_| StoreError::Closed)?;
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
            .send(Op::Attempt {
                delivery_id,
                attempt,
                next,
                prepared,
                reply,
            })
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Ends a pending delivery without an attempt (`filtered`, or `failed` in a plugin).
    pub async fn settle(
        &self,
        delivery_id: Uuid,
        state: DeliveryState,
        note: PluginNote,
    ) -> Result<(), StoreError> {
        let (reply, rx) = oneshot::channel();
        self.writer
            .send(Op::Settle {
                delivery_id,
                state,
                note,
                reply,
            })
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
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
    pub async fn delivery_with_event(
        &self,
        id: Uuid,
    ) -> Result<Option<(DeliveryRecord, EventRecord)>, StoreError> {
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
        self.read(move |db| scan_due(db, now_ms, &in_flight, &free, global_free))
            .await
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
        let version = meta
            .get("schema_version")
            .map_err(storage)?
            .map(|v| v.value());
        match version {
            None => {
                meta.insert("schema_version", SCHEMA_VERSION)
                    .map_err(storage)?;
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
    serde_json::from_slice(v.value())
        .map(Some)
        .map_err(|e| StoreError::Corrupt(format!("{id}: {e}")))
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
            None => due
                .first()
                .map_err(storage)?
                .map(|(k, _)| k.value().0.to_owned()),
            Some(ep) => {
                let after = (ep.as_str(), u64::MAX, u128::MAX);
                let mut range = due
                    .range((Bound::Excluded(after), Bound::Unbounded))
                    .map_err(storage)?;
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
            scan.items.push(DueItem {
                delivery_id: id,
                endpoint_id: ep.clone(),
            });
            cap -= 1;
        }
        endpoint = Some(ep);
    }
    Ok(scan)
}

/// A reply to send once the batch's commit has succeeded or failed.
enum Reply {
    Ingest(
        oneshot::Sender<Result<IngestOutcome, StoreError>>,
        IngestOutcome,
    ),
    Attempt(
        oneshot::Sender<Result<(), StoreError>>,
        Result<(), StoreError>,
    ),
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
        if result.is_ok() {
            stats.commits.fetch_add(1, Ordering::Relaxed);
            stats.operations.fetch_add(ops, Ordering::Relaxed);
        }
        if let Err(e) = &result {
            tracing::error!(error = %e, ops = replies.len(), "store commit failed; the batch's callers get an error");
        }
        for reply in replies {
            match (reply, &result) {
                (Reply::Ingest(tx, outcome), Ok(())) => {
                    let _ = tx.send(Ok(outcome));
                }
                (Reply::Attempt(tx, r), Ok(())) => {
                    let _ = tx.send(r);
                }
                (Reply::Ingest(tx, _), Err(e)) => {
                    let _ = tx.send(Err(e.clone()));
                }
                (Reply::Attempt(tx, _), Err(e)) => {
                    let _ = tx.send(Err(e.clone()));
                }
            }
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
    txn.set_durability(Durability::Immediate)
        .map_err(|e| StoreError::Storage(e.to_string()))?;
    {
        let mut events = txn.open_table(EVENTS).map_err(storage)?;
        let mut deliveries = txn.open_table(DELIVERIES).map_err(storage)?;
        let mut due = txn.open_table(DUE).map_err(storage)?;
        let mut idem = txn.open_table(IDEMPOTENCY).map_err(storage)?;
        let mut idem_expiry = txn.open_table(IDEMPOTENCY_EXPIRY).map_err(storage)?;
        let mut failure = None;
        for op in ops {
            // After a storage failure the transaction is abandoned; the remaining operations
            // are only collected so that their callers hear about it.
            if failure.is_some() {
                match op {
                    Op::Ingest(_, tx) => replies.push(Reply::Ingest(tx, IngestOutcome::KeyReused)),
                    Op::Attempt { reply, .. } | Op::Settle { reply, .. } => {
                        replies.push(Reply::Attempt(reply, Ok(())))
                    }
                }
                continue;
            }
            match op {
                Op::Ingest(w, tx) => {
                    match apply_ingest(
                        &mut events,
                        &mut deliveries,
                        &mut due,
                        &mut idem,
                        &mut idem_expiry,
                        w,
                        now,
                    ) {
                        Ok(outcome) => replies.push(Reply::Ingest(tx, outcome)),
                        Err(e) => {
                            replies.push(Reply::Ingest(tx, IngestOutcome::KeyReused));
                            failure = Some(e);
                        }
                    }
                }
                Op::Settle {
                    delivery_id,
                    state,
                    note,
                    reply,
                } => {
                    let change = |d: &mut DeliveryRecord| {
                        d.state = state;
                        d.next_attempt_at_ms = None;
                        d.prepared = true;
                        d.note = Some(note);
                    };
                    match update_delivery(&mut deliveries, &mut due, delivery_id, change) {
                        Ok(r) => replies.push(Reply::Attempt(reply, r)),
                        Err(e) => {
                            replies.push(Reply::Attempt(reply, Ok(())));
                            failure = Some(e);
                        }
                    }
                }
                Op::Attempt {
                    delivery_id,
                    attempt,
                    next,
                    prepared,
                    reply,
                } => {
                    let change = |d: &mut DeliveryRecord| {
                        if let Some(p) = prepared {
                            d.prepared = true;
                            d.body = p.body;
                        }
                        d.attempts.push(attempt);
                        (d.state, d.next_attempt_at_ms) = match next {
                            Next::RetryAt(at) => (DeliveryState::Pending, Some(at)),
                            Next::Succeeded => (DeliveryState::Succeeded, None),
                            Next::Failed => (DeliveryState::Failed, None),
                        };
                    };
                    match update_delivery(&mut deliveries, &mut due, delivery_id, change) {
                        Ok(r) => replies.push(Reply::Attempt(reply, r)),
                        Err(e) => {
                            replies.push(Reply::Attempt(reply, Ok(())));
                            failure = Some(e);
                        }
                    }
                }
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        if prune {
            prune_idempotency(&mut idem, &mut idem_expiry, now)?;
        }
    }
    txn.commit().map_err(storage)
}

type Table<'t, K, V> = redb::Table<'t, K, V>;

fn apply_ingest(
    events: &mut Table<'_, u128, &[u8]>,
    deliveries: &mut Table<'_, u128, &[u8]>,
    due: &mut Table<'_, (&str, u64, u128), ()>,
    idem: &mut Table<'_, &str, &[u8]>,
    idem_expiry: &mut Table<'_, (u64, &str), ()>,
    w: IngestWrite,
    now: u64,
) -> Result<IngestOutcome, StoreError> {
    if let Some(claim) = &w.idempotency {
        let existing = idem
            .get(claim.key.as_str())
            .map_err(storage)?
            .map(|v| serde_json::from_slice::<IdempotencyRecord>(v.value()));
        if let Some(Ok(rec)) = existing {
            if now.saturating_sub(rec.created_ms) < IDEMPOTENCY_TTL_MS {
                return Ok(if rec.request_hash == claim.request_hash {
                    IngestOutcome::Replayed {
                        event_id: rec.event_id,
                        deliveries: rec.deliveries,
                    }
                } else {
                    IngestOutcome::KeyReused
                });
            }
            idem_expiry
                .remove((rec.created_ms, claim.key.as_str()))
                .map_err(storage)?;
        }
        let rec = IdempotencyRecord {
            request_hash: claim.request_hash.clone(),
            event_id: w.event.id,
            deliveries: w.deliveries.len(),
            created_ms: now,
        };
        idem.insert(claim.key.as_str(), to_json(&rec).as_slice())
            .map_err(storage)?;
        idem_expiry
            .insert((now, claim.key.as_str()), ())
            .map_err(storage)?;
    }
    events
        .insert(w.event.id.as_u128(), to_json(&w.event).as_slice())
        .map_err(storage)?;
    for d in &w.deliveries {
        deliveries
            .insert(d.id.as_u128(), to_json(d).as_slice())
            .map_err(storage)?;
        if let (DeliveryState::Pending, Some(at)) = (d.state, d.next_attempt_at_ms) {
            due.insert((d.endpoint_id.as_str(), at, d.id.as_u128()), ())
                .map_err(storage)?;
        }
    }
    Ok(IngestOutcome::Created {
        event_id: w.event.id,
        deliveries: w.deliveries.len(),
    })
}

/// Changes one delivery and keeps the due index in step with it (the module's invariant).
/// The outer `Result` is a storage failure (abandon the batch); the inner one is this
/// operation's own answer.
fn update_delivery(
    deliveries: &mut Table<'_, u128, &[u8]>,
    due: &mut Table<'_, (&str, u64, u128), ()>,
    id: Uuid,
    change: impl FnOnce(&mut DeliveryRecord),
) -> Result<Result<(), StoreError>, StoreError> {
    let Some(raw) = deliveries.get(id.as_u128()).map_err(storage)? else {
        return Ok(Err(StoreError::Corrupt(format!(
            "delivery {id} does not exist"
        ))));
    };
    let mut d: DeliveryRecord = match serde_json::from_slice(raw.value()) {
        Ok(d) => d,
        Err(e) => return Ok(Err(StoreError::Corrupt(format!("{id}: {e}")))),
    };
    drop(raw);
    if let Some(at) = d.next_attempt_at_ms {
        due.remove((d.endpoint_id.as_str(), at, id.as_u128()))
            .map_err(storage)?;
    }
    change(&mut d);
    if let (DeliveryState::Pending, Some(at)) = (d.state, d.next_attempt_at_ms) {
        due.insert((d.endpoint_id.as_str(), at, id.as_u128()), ())
            .map_err(storage)?;
    }
    deliveries
        .insert(id.as_u128(), to_json(&d).as_slice())
        .map_err(storage)?;
    Ok(Ok(()))
}

fn prune_idempotency(
    idem: &mut Table<'_, &str, &[u8]>,
    idem_expiry: &mut Table<'_, (u64, &str), ()>,
    now: u64,
) -> Result<(), StoreError> {
    let cutoff = now.saturating_sub(IDEMPOTENCY_TTL_MS);
    let mut expired = Vec::new();
    for entry in idem_expiry
        .range((Bound::Unbounded, Bound::Excluded((cutoff, ""))))
        .map_err(storage)?
        .take(10_000)
    {
        let (k, _) = entry.map_err(storage)?;
        let (created, key) = k.value();
        expired.push((created, key.to_owned()));
    }
    for (created, key) in expired {
        idem_expiry
            .remove((created, key.as_str()))
            .map_err(storage)?;
        idem.remove(key.as_str()).map_err(storage)?;
    }
    Ok(())
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
        store
            .ingest(IngestWrite {
                event: event(&ds),
                deliveries: ds.clone(),
                idempotency: None,
            })
            .await
            .unwrap();
        let scan = store
            .scan_due(1_000, HashSet::new(), |_| 3, 100)
            .await
            .unwrap();
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
        store
            .record_attempt(b_id, attempt(1), Next::RetryAt(9_000), None)
            .await
            .unwrap();
        let d = store.delivery(b_id).await.unwrap().unwrap();
        assert_eq!(
            (d.state, d.next_attempt_at_ms, d.attempts.len()),
            (DeliveryState::Pending, Some(9_000), 1)
        );
        store
            .record_attempt(b_id, attempt(2), Next::Succeeded, None)
            .await
            .unwrap();
        let d = store.delivery(b_id).await.unwrap().unwrap();
        assert_eq!(
            (d.state, d.next_attempt_at_ms),
            (DeliveryState::Succeeded, None)
        );
        assert_eq!(store.pending_count().await.unwrap(), 51);
        drop(store);
        writer.join();
    }

    #[tokio::test]
    async fn idempotency_keys_replay_and_conflict_within_one_batch_and_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (store, writer) = Store::open(dir.path()).unwrap();
        let claim = |hash: &str| {
            Some(IdempotencyClaim {
                key: "k1".into(),
                request_hash: hash.into(),
            })
        };
        let ev = Uuid::now_v7();
        let ds = vec![delivery(ev, "a", 1)];
        // Concurrent repeats land in one batch: exactly one is created.
        let writes = (0..20).map(|_| {
            let s = store.clone();
            let ds = ds.clone();
            let e = event(&ds);
            async move {
                s.ingest(IngestWrite {
                    event: e,
                    deliveries: ds,
                    idempotency: claim("h"),
                })
                .await
                .unwrap()
            }
        });
        let outcomes = futures_join_all(writes).await;
        let created = outcomes
            .iter()
            .filter(|o| matches!(o, IngestOutcome::Created { .. }))
            .count();
        assert_eq!(created, 1, "{outcomes:?}");
        assert!(outcomes.iter().all(|o| matches!(o, IngestOutcome::Created { event_id, .. } | IngestOutcome::Replayed { event_id, .. } if *event_id == ev)));
        drop(store);
        writer.join();
        let (store, writer) = Store::open(dir.path()).unwrap();
        let other = vec![delivery(Uuid::now_v7(), "a", 1)];
        let again = store
            .ingest(IngestWrite {
                event: event(&other),
                deliveries: other.clone(),
                idempotency: claim("h"),
            })
            .await
            .unwrap();
        assert_eq!(
            again,
            IngestOutcome::Replayed {
                event_id: ev,
                deliveries: 1
            }
        );
        let conflict = store
            .ingest(IngestWrite {
                event: event(&other),
                deliveries: other,
                idempotency: claim("other"),
            })
            .await
            .unwrap();
        assert_eq!(conflict, IngestOutcome::KeyReused);
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
            async move {
                s.ingest(IngestWrite {
                    event: e,
                    deliveries: ds,
                    idempotency: None,
                })
                .await
                .unwrap()
            }
        });
        let outcomes = futures_join_all(writes).await;
        assert!(
            outcomes
                .iter()
                .all(|o| matches!(o, IngestOutcome::Created { .. }))
        );
        let commits = store.stats().commits.load(Ordering::Relaxed);
        let ops = store.stats().operations.load(Ordering::Relaxed);
        assert_eq!(ops, 200);
        assert!(
            commits < 100,
            "200 concurrent ingests took {commits} commits"
        );
        assert_eq!(store.pending_count().await.unwrap(), 200);
        drop(store);
        writer.join();
    }

    async fn futures_join_all<F: std::future::Future + Send + 'static>(
        fs: impl Iterator<Item = F>,
    ) -> Vec<F::Output>
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
