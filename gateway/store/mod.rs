//! Durable state: events, deliveries, the due index and idempotency keys, in one redb file (the
//! default) or in a PostgreSQL database shared by several nodes (`store::pg`).
//!
//! Owns: the only `redb` and `tokio_postgres` imports, both layouts, and the single writer (a
//! thread for redb, a task for PostgreSQL) that turns many concurrent writes into one commit
//! (group commit). [`Store`] is the one handle the rest of the gateway sees: writes go to the
//! writer as `ops::Op`s whatever the backend; reads go to the backend's read path.
//! Must not touch: HTTP, plugins or signing. Callers hand it finished records; it stores them
//! and answers reads.
//!
//! **Invariant:** a delivery has an entry in `due` exactly when its state is `pending`, keyed by
//! `(endpoint_id, next_attempt_at_ms, delivery_id)`. Both change in the same transaction.
//!
//! **Invariant:** `delivery_index` holds `(key, delivery_id)` for every delivery and each of
//! its keys: `s:<state>`, `e:<endpoint_id>`, `t:<trigger>`, `n:<tenant>`, and `f:<field>=<canonical value>`
//! per scalar resource field. The state key moves with the state, in the same transaction.
//! Listing intersects these in descending id order (ids are UUIDv7, so that is newest first
//! and a time range is an id range): no query scans the deliveries table.
//!
//! **Group commit:** every write goes through one writer loop (`store::writer`, the same for
//! both backends) that drains whatever has queued up (up to [`MAX_BATCH`] operations), has the
//! backend apply it all in one write transaction, commits once (redb: one fsync with
//! `Durability::Immediate`; PostgreSQL: one WAL flush) and only then answers each caller. Under
//! load, hundreds of ingest requests share one fsync instead of paying one each.
//!
//! **Backends.** Both keep the same records (JSON of `model`) and the same invariants; the
//! contract tests in `store::tests` run against each. PostgreSQL keeps the due entry and the
//! indexed fields as columns of the delivery's row and adds *leases*: a node owns a due delivery
//! it has claimed until `lease_until_ms`, so several nodes share one database without sending the
//! same attempt twice (see `store::pg` and ARCHITECTURE.md, "Storage").
//!
//! Layout: the two backends side by side, `redb` and `pg`, each with its reads and its side of
//! every write; what they share beside them: `ops` (the operations and replies), `writer` (the
//! one batch-draining loop), `rules` (pure: what an attempt does to a delivery, index keys,
//! FIFO turns), `types` (what callers hand in and get back), `charts` (the charts' buckets and
//! backlogs); `tests` runs the same contract against both.

mod charts;
mod ops;
pub mod pg;
pub mod redb;
mod rules;
mod types;
mod writer;

pub use types::*;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};

use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::model::{
    AttemptRecord, DeliveryRecord, EndpointHealth, EndpointRecord, EventRecord, TenantRecord, TokenRecord,
};
use ops::Op;
pub use redb::DB_FILE;

/// How long an ingest `Idempotency-Key` is remembered unless `retention.idempotency` says
/// otherwise ([`Store::set_idempotency_ttl`]).
pub const IDEMPOTENCY_TTL_MS: u64 = 24 * 3600 * 1000;

/// Settings the writer reads on every batch.
#[derive(Debug)]
pub(crate) struct Settings {
    idempotency_ttl_ms: AtomicU64,
    /// Seals the signing secrets of stored tenants and endpoints (`[signing] main_key`).
    main_key: std::sync::RwLock<Option<crate::seal::MainKey>>,
}

impl Settings {
    pub(crate) fn new() -> Settings {
        Settings { idempotency_ttl_ms: AtomicU64::new(IDEMPOTENCY_TTL_MS), main_key: std::sync::RwLock::new(None) }
    }
}

/// The most operations one commit carries. Large enough to amortise an fsync over a burst,
/// small enough that one transaction stays short and its callers are answered promptly.
pub const MAX_BATCH: usize = 1024;

/// Capacity of the queue in front of the writer. When it is full, writers wait: that is the
/// backpressure that keeps a flood of ingest requests from growing memory.
const QUEUE_CAPACITY: usize = 4096;

/// The page cache when none is configured (`server.cache_size`). redb's own default is 1 GiB,
/// which would let memory grow with the database.
pub const DEFAULT_CACHE_BYTES: usize = 64 << 20;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("storage failure: {0}")]
    Storage(String),
    #[error("the store is shut down")]
    Closed,
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// The database refused one operation's data (a value it cannot hold, a constraint): a
    /// batch that meets it is applied again one operation at a time, so that only the
    /// operation at fault fails.
    #[error("the database refused the operation: {0}")]
    Rejected(String),
}

/// A stored secret that cannot be opened: the configuration is wrong, not the store.
fn sealed(e: crate::seal::SealError) -> StoreError {
    StoreError::Storage(format!("{e}; set [signing] main_key to the key the secrets were sealed with"))
}

/// Switches that make the store fail on purpose, for tests of the failure paths (a full disk:
/// reads work, commits fail). Always off unless a test turns them on.
#[derive(Debug, Default)]
pub struct Faults {
    /// Every commit fails while set; the batch is discarded and its callers get an error.
    pub fail_commits: AtomicBool,
}

/// A cheap, cloneable handle to the store: the writer's queue and the backend's read path.
#[derive(Clone)]
pub struct Store {
    writer: mpsc::Sender<Op>,
    /// PostgreSQL: a second writer, on its own connection, for ingests without FIFO
    /// deliveries, so that new events commit beside (not behind) the batches that record
    /// attempts. Everything else, and every ingest that joins a FIFO queue, goes through
    /// `writer`, which keeps the queues' upkeep in one order.
    ingest_writer: Option<mpsc::Sender<Op>>,
    stats: Arc<WriterStats>,
    faults: Arc<Faults>,
    settings: Arc<Settings>,
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Redb(redb::Redb),
    Postgres(Box<pg::Pg>),
}

/// Counters kept by the writer: how many commits it made and how many operations they carried.
/// `operations / commits` is the group-commit factor.
#[derive(Debug, Default)]
pub struct WriterStats {
    pub commits: AtomicU64,
    pub operations: AtomicU64,
    /// Batches whose commit failed (every caller in them got an error).
    pub failed_commits: AtomicU64,
}

/// Waits for the writer to finish. Dropping every [`Store`] handle first lets it finish the
/// batch it holds, commit it and exit.
pub enum WriterThread {
    Redb(std::thread::JoinHandle<()>),
    /// The PostgreSQL writers are tasks; the channel closes when the last one is done.
    Postgres(std::sync::mpsc::Receiver<()>),
}

impl WriterThread {
    /// Blocks until the writer has exited. Call it off the async runtime (or after the runtime
    /// that runs a PostgreSQL writer has other threads to run it on); see [`WriterThread::finish`].
    pub fn join(self) {
        match self {
            WriterThread::Redb(h) => drop(h.join()),
            WriterThread::Postgres(done) => while done.recv().is_ok() {},
        }
    }

    /// [`WriterThread::join`] from async code.
    pub async fn finish(self) {
        let _ = tokio::task::spawn_blocking(move || self.join()).await;
    }
}

/// Where the store lives and how to open it, from `[storage]` and `[server]`.
pub struct OpenOptions<'a> {
    pub storage: &'a crate::config::StorageConfig,
    pub data_dir: &'a Path,
    pub cache_bytes: usize,
    pub faults: Arc<Faults>,
    /// PostgreSQL: apply the embedded migrations first (`serve` unless `--no-migrate`).
    pub migrate: bool,
}

impl Store {
    /// Opens (or creates) `data_dir/hookgate.redb` with the default cache and starts the writer.
    pub fn open(data_dir: &Path) -> Result<(Store, WriterThread), StoreError> {
        Self::open_with(data_dir, DEFAULT_CACHE_BYTES, Arc::default())
    }

    /// Opens the configured backend: redb in `data_dir`, or PostgreSQL (migrated first if
    /// `migrate`, and refused if its schema is not the one this binary knows).
    pub async fn open_configured(o: OpenOptions<'_>) -> Result<(Store, WriterThread), StoreError> {
        match o.storage {
            crate::config::StorageConfig::Redb => Self::open_with(o.data_dir, o.cache_bytes, o.faults),
            crate::config::StorageConfig::Postgres(pc) => pg::open(pc, o.faults, o.migrate).await,
        }
    }

    /// Opens (or creates) `data_dir/hookgate.redb`, keeping at most `cache_bytes` of pages in
    /// memory, and starts the writer thread. `faults` is for tests; pass `Arc::default()`.
    pub fn open_with(
        data_dir: &Path,
        cache_bytes: usize,
        faults: Arc<Faults>,
    ) -> Result<(Store, WriterThread), StoreError> {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let stats = Arc::new(WriterStats::default());
        let settings = Arc::new(Settings::new());
        let (redb, handle) = redb::open(data_dir, cache_bytes, faults.clone(), rx, stats.clone(), settings.clone())?;
        let backend = Backend::Redb(redb);
        Ok((Store { writer: tx, ingest_writer: None, stats, faults, settings, backend }, WriterThread::Redb(handle)))
    }

    /// Which backend this is: `redb` or `postgres`.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Redb(_) => "redb",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// The PostgreSQL backend, if this is one (leases, the node's identity, LISTEN).
    pub fn postgres(&self) -> Option<&pg::Pg> {
        match &self.backend {
            Backend::Redb(_) => None,
            Backend::Postgres(p) => Some(p),
        }
    }

    /// How long an ingest `Idempotency-Key` is remembered (`retention.idempotency`).
    pub fn set_idempotency_ttl(&self, ttl: std::time::Duration) {
        self.settings.idempotency_ttl_ms.store(ttl.as_millis() as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// The database file's size in bytes (0 if it cannot be read, and for PostgreSQL, whose
    /// size `pg_database_size` reports).
    pub fn file_size(&self) -> u64 {
        match &self.backend {
            Backend::Redb(r) => r.file_size(),
            Backend::Postgres(_) => 0,
        }
    }

    /// The fault switches this store obeys (tests only).
    pub fn faults(&self) -> &Arc<Faults> {
        &self.faults
    }

    /// Sends one operation to the writer and waits for its answer, which comes after the commit.
    async fn write<T>(&self, op: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Op) -> Result<T, StoreError> {
        Self::send(&self.writer, op).await
    }

    async fn send<T>(
        writer: &mpsc::Sender<Op>,
        op: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Op,
    ) -> Result<T, StoreError> {
        let (reply, rx) = oneshot::channel();
        writer.send(op(reply)).await.map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Stores an event and its pending deliveries durably, or replays an idempotent repeat.
    pub async fn ingest(&self, write: IngestWrite) -> Result<IngestOutcome, StoreError> {
        match &self.ingest_writer {
            Some(lane) if write.deliveries.iter().all(|d| d.fifo.is_none()) => {
                Self::send(lane, |reply| Op::Ingest(write, reply)).await
            }
            _ => self.write(|reply| Op::Ingest(write, reply)).await,
        }
    }

    /// Records how a pass through the attempt pipeline ended, durably.
    pub async fn finish(&self, finish: Finish) -> Result<(), StoreError> {
        self.finish_with(finish, Effects::default()).await
    }

    /// [`Store::finish`], writing `effects` in the same transaction.
    pub async fn finish_with(&self, finish: Finish, effects: Effects) -> Result<(), StoreError> {
        self.write(|reply| Op::Finish(finish, effects, reply)).await
    }

    /// Stores an endpoint's health (and the events announcing its change) in one transaction.
    pub async fn put_health(&self, effects: Effects) -> Result<(), StoreError> {
        self.write(|reply| Op::PutHealth(effects, reply)).await
    }

    /// One bounded retention pass; see [`PruneRequest`].
    pub async fn prune(&self, req: PruneRequest) -> Result<PruneReport, StoreError> {
        self.write(|reply| Op::Prune(req, reply)).await
    }

    pub async fn put_tenant(&self, mut r: TenantRecord) -> Result<(), StoreError> {
        if let Some(key) = self.main_key() {
            for s in r.secrets.iter_mut().filter(|s| !crate::seal::is_sealed(&s.secret)) {
                s.secret = key.seal(&s.secret);
            }
        }
        self.write(|reply| Op::PutTenant(r, reply)).await
    }

    /// Removes a tenant, its API endpoints, their health and its tokens; its deliveries stay.
    pub async fn delete_tenant(&self, id: String) -> Result<(), StoreError> {
        self.write(|reply| Op::DeleteTenant(id, reply)).await
    }

    pub async fn put_token(&self, r: TokenRecord) -> Result<(), StoreError> {
        self.write(|reply| Op::PutToken(r, reply)).await
    }

    pub async fn delete_token(&self, id: String) -> Result<(), StoreError> {
        self.write(|reply| Op::DeleteToken(id, reply)).await
    }

    /// Makes every delivery queued in the endpoint's FIFO queues due (ordering was turned off).
    pub async fn release_fifo(&self, endpoint_id: String) -> Result<usize, StoreError> {
        self.write(|reply| Op::ReleaseFifo(endpoint_id, reply)).await
    }

    /// Appends an attempt to a delivery and moves it to its next state, durably (a shorthand
    /// for [`Finish::Attempt`]).
    pub async fn record_attempt(
        &self,
        delivery_id: Uuid,
        attempt: AttemptRecord,
        next: Next,
        prepared: Option<ChainResult>,
    ) -> Result<(), StoreError> {
        self.finish(Finish::Attempt { delivery_id, attempt, next, prepared }).await
    }

    pub async fn put_endpoint(&self, mut e: EndpointRecord) -> Result<(), StoreError> {
        if let Some(key) = self.main_key() {
            for secret in e.secrets_mut().filter(|s| !crate::seal::is_sealed(s)) {
                *secret = key.seal(secret);
            }
        }
        self.write(|reply| Op::PutEndpoint(e, reply)).await
    }

    pub async fn delete_endpoint(&self, id: String) -> Result<(), StoreError> {
        self.write(|reply| Op::DeleteEndpoint(id, reply)).await
    }

    /// Puts failed deliveries back in the queue, due at `at_ms`, for one manual attempt each.
    /// Deliveries that are not `failed` (any more) or are at the attempt cap are left alone.
    /// Returns how many were queued.
    pub async fn requeue(&self, ids: Vec<Uuid>, at_ms: u64) -> Result<usize, StoreError> {
        self.write(|reply| Op::Requeue { ids, at_ms, reply }).await
    }

    /// Commit counters of the writer.
    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }

    /// Every stored tenant, its secrets opened (see [`Store::set_main_key`]).
    pub async fn tenants(&self) -> Result<Vec<TenantRecord>, StoreError> {
        let mut records = self.stored_tenants().await?;
        let key = self.main_key();
        for s in records.iter_mut().flat_map(|r| r.secrets.iter_mut()) {
            s.secret = crate::seal::open(key.as_ref(), &s.secret).map_err(sealed)?;
        }
        Ok(records)
    }

    async fn stored_tenants(&self) -> Result<Vec<TenantRecord>, StoreError> {
        match &self.backend {
            Backend::Redb(r) => r.all_json("tenants").await,
            Backend::Postgres(p) => p.all_json("tenants").await,
        }
    }

    /// The key that seals the secrets of stored tenants and endpoints from now on; `None`
    /// stores them in clear (and reads only clear ones).
    pub fn set_main_key(&self, key: Option<crate::seal::MainKey>) {
        *self.settings.main_key.write().expect("settings lock") = key;
    }

    fn main_key(&self) -> Option<crate::seal::MainKey> {
        self.settings.main_key.read().expect("settings lock").clone()
    }

    /// Re-seals every stored secret under the current main key: secrets stored in clear (or
    /// under `previous`, during a rotation) are written again sealed. Returns how many were
    /// written. Without a main key it does nothing.
    pub async fn seal_stored(&self, previous: Option<&crate::seal::MainKey>) -> Result<usize, StoreError> {
        let Some(key) = self.main_key() else { return Ok(0) };
        let reseal = |text: &str| -> Result<Option<String>, StoreError> {
            if crate::seal::is_sealed(text) && key.open(text).is_ok() {
                return Ok(None);
            }
            let clear = match previous {
                Some(old) if crate::seal::is_sealed(text) => old.open(text).map_err(sealed)?,
                _ => crate::seal::open(None, text).map_err(sealed)?,
            };
            Ok(Some(key.seal(&clear)))
        };
        let mut written = 0;
        for mut r in self.stored_tenants().await? {
            let mut changed = false;
            for s in &mut r.secrets {
                if let Some(new) = reseal(&s.secret)? {
                    s.secret = new;
                    changed = true;
                }
            }
            if changed {
                written += 1;
                self.write(|reply| Op::PutTenant(r, reply)).await?;
            }
        }
        for mut e in self.stored_endpoints().await? {
            let mut changed = false;
            for secret in e.secrets_mut() {
                if let Some(new) = reseal(secret)? {
                    *secret = new;
                    changed = true;
                }
            }
            if changed {
                written += 1;
                self.write(|reply| Op::PutEndpoint(e, reply)).await?;
            }
        }
        Ok(written)
    }

    pub async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        match &self.backend {
            Backend::Redb(r) => r.all_json("tokens").await,
            Backend::Postgres(p) => p.all_json("tokens").await,
        }
    }

    /// Every stored endpoint health record.
    pub async fn health_records(&self) -> Result<Vec<EndpointHealth>, StoreError> {
        match &self.backend {
            Backend::Redb(r) => r.all_json("endpoint_health").await,
            Backend::Postgres(p) => p.all_json("endpoint_health").await,
        }
    }

    /// Endpoints created through the API, in id order.
    /// Every stored endpoint, its secret opened (see [`Store::set_main_key`]).
    pub async fn endpoints(&self) -> Result<Vec<EndpointRecord>, StoreError> {
        let mut records = self.stored_endpoints().await?;
        let key = self.main_key();
        for s in records.iter_mut().flat_map(EndpointRecord::secrets_mut) {
            *s = crate::seal::open(key.as_ref(), s).map_err(sealed)?;
        }
        Ok(records)
    }

    async fn stored_endpoints(&self) -> Result<Vec<EndpointRecord>, StoreError> {
        match &self.backend {
            Backend::Redb(r) => r.all_json("endpoints").await,
            Backend::Postgres(p) => p.all_json("endpoints").await,
        }
    }

    /// Whether a pending delivery has its due entry (for a FIFO queue: whether it is the
    /// queue's head rather than waiting behind an older delivery).
    pub async fn is_due(&self, d: &DeliveryRecord) -> Result<bool, StoreError> {
        let Some(at) = d.next_attempt_at_ms else { return Ok(false) };
        let (endpoint, id) = (d.endpoint_id.clone(), d.id);
        match &self.backend {
            Backend::Redb(r) => r.is_due(endpoint, at, id).await,
            Backend::Postgres(p) => p.is_due(id, at).await,
        }
    }

    /// Whether the store answers reads, at the least cost (an unauthenticated probe).
    pub async fn ping(&self) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Redb(r) => r.ping().await,
            Backend::Postgres(p) => p.ping().await,
        }
    }

    /// When the oldest pending delivery was created, if any is pending.
    pub async fn oldest_pending_ms(&self) -> Result<Option<u64>, StoreError> {
        match &self.backend {
            Backend::Redb(r) => r.oldest_pending_ms().await,
            Backend::Postgres(p) => p.oldest_pending_ms().await,
        }
    }

    /// A page of deliveries matching `q`, newest first, answered from the indexes.
    pub async fn list_deliveries(&self, q: DeliveryQuery) -> Result<DeliveryPage, StoreError> {
        match &self.backend {
            Backend::Redb(r) => r.list_deliveries(q).await,
            Backend::Postgres(p) => p.list_deliveries(&q).await,
        }
    }

    pub async fn event(&self, id: Uuid) -> Result<Option<EventRecord>, StoreError> {
        match &self.backend {
            Backend::Redb(r) => r.event(id).await,
            Backend::Postgres(p) => p.record("events", id).await,
        }
    }

    pub async fn delivery(&self, id: Uuid) -> Result<Option<DeliveryRecord>, StoreError> {
        match &self.backend {
            Backend::Redb(r) => r.delivery(id).await,
            Backend::Postgres(p) => p.record("deliveries", id).await,
        }
    }

    /// A delivery and its event, read in one snapshot.
    pub async fn delivery_with_event(&self, id: Uuid) -> Result<Option<(DeliveryRecord, EventRecord)>, StoreError> {
        match &self.backend {
            Backend::Redb(r) => r.delivery_with_event(id).await,
            Backend::Postgres(p) => p.delivery_with_event(id).await,
        }
    }

    pub async fn deliveries(&self, ids: Vec<Uuid>) -> Result<Vec<DeliveryRecord>, StoreError> {
        match &self.backend {
            Backend::Redb(r) => r.deliveries(ids).await,
            Backend::Postgres(p) => p.deliveries(&ids).await,
        }
    }

    /// Finds deliveries due at or before `now_ms`, endpoint by endpoint, skipping `claimed` ones,
    /// taking one more of an endpoint's while `admit(endpoint)` says yes (at most
    /// `per_endpoint` each) and at most `global_free` in all, and reads their records in the same
    /// snapshot.
    ///
    /// `claimed` must be taken *before* this call: an id released after its record was
    /// committed must not be seen as unclaimed by a snapshot older than that commit.
    ///
    /// On PostgreSQL the deliveries returned are *leased* to this node (see `store::pg`): other
    /// nodes skip them until the lease ends, and their records are written back by `finish`.
    pub async fn scan_due(
        &self,
        now_ms: u64,
        claimed: HashSet<Uuid>,
        mut admit: impl FnMut(&str) -> bool + Send + 'static,
        limits: ScanLimits,
    ) -> Result<DueScan, StoreError> {
        match &self.backend {
            Backend::Redb(r) => r.scan_due(now_ms, claimed, admit, limits.global_free).await,
            Backend::Postgres(p) => p.scan_due(now_ms, &claimed, &mut admit, limits).await,
        }
    }

    /// How many deliveries are due or waiting for a retry (FIFO deliveries behind their queue's
    /// head are not counted).
    pub async fn pending_count(&self) -> Result<u64, StoreError> {
        match &self.backend {
            Backend::Redb(r) => r.pending_count().await,
            Backend::Postgres(p) => p.pending_count().await,
        }
    }

    /// Takes the lease of one delivery for a manual attempt, unless another node holds it (its
    /// attempt is in progress). Always `true` on redb, where this process is the only one.
    pub async fn try_lease(&self, id: Uuid, now_ms: u64) -> Result<bool, StoreError> {
        match &self.backend {
            Backend::Redb(_) => Ok(true),
            Backend::Postgres(p) => p.try_lease(id, now_ms).await,
        }
    }

    /// Keeps this node's leases on `ids` (deliveries it is still working on). Returns those
    /// it no longer holds (another node took them over after they ran out): what this node
    /// then writes about them is recorded as a late attempt only. No-op on redb.
    pub async fn renew_leases(&self, ids: Vec<Uuid>) -> Result<Vec<Uuid>, StoreError> {
        match &self.backend {
            Backend::Redb(_) => Ok(Vec::new()),
            Backend::Postgres(p) => p.renew_leases(&ids).await,
        }
    }

    /// Whether this node still holds the lease it claimed `id` with (see
    /// `pg::Pg::still_leased`). Always `true` on redb.
    pub async fn still_leased(&self, id: Uuid) -> Result<bool, StoreError> {
        match &self.backend {
            Backend::Redb(_) => Ok(true),
            Backend::Postgres(p) => p.still_leased(id).await,
        }
    }

    /// Gives up this node's leases on `ids` (passes that ended without a write), or on every
    /// delivery it holds when `ids` is `None` (shutdown), so other nodes need not wait for the
    /// leases to run out. No-op on redb.
    pub async fn release_leases(&self, ids: Option<Vec<Uuid>>) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Redb(_) => Ok(()),
            Backend::Postgres(p) => p.release_leases(ids.as_deref()).await,
        }
    }

    /// The redb backend (tests that damage the file on purpose).
    #[cfg(test)]
    pub(crate) fn redb(&self) -> &redb::Redb {
        let Backend::Redb(r) = &self.backend else { panic!("redb only") };
        r
    }
}

#[cfg(test)]
mod tests;
