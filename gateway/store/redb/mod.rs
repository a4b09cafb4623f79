//! The redb backend: one file in `data_dir`, one writer thread, reads off the async runtime.
//!
//! Owns: opening the file (and its schema check), the writer thread running `store::writer`
//! with `write::Writer`, and [`Redb`], the read side the `Store` handle calls, method for
//! method beside `store::pg::Pg`.
//! Must not touch: the rules of a write (those are `store::rules`) or anything the other
//! backend does.
//!
//! redb transactions are blocking: writes run on the writer thread and reads run inside
//! `spawn_blocking`, so no async task ever blocks on the disk. The due scan reads each due
//! delivery's records in its own snapshot, so one hop feeds a whole round of attempts.
//!
//! Layout: `schema` (tables), `read` (point reads, listing, the due scan), `write` (the
//! writer's side of each operation).

pub(crate) mod read;
pub(crate) mod schema;
mod tally;
pub(crate) mod write;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::Database;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::ops::Op;
use super::{DeliveryPage, DeliveryQuery, DueScan, Faults, Settings, StoreError, WriterStats};
use crate::model::{DeliveryRecord, EventRecord};
use schema::{DELIVERIES, EVENTS};

/// The file inside `data_dir`.
pub const DB_FILE: &str = "hookgate.redb";

pub(crate) fn storage<E: Into<redb::Error>>(e: E) -> StoreError {
    StoreError::Storage(e.into().to_string())
}

/// An open redb file: the read side.
#[derive(Clone)]
pub struct Redb {
    db: Arc<Database>,
    path: PathBuf,
}

/// Opens (or creates) `data_dir/hookgate.redb`, keeping at most `cache_bytes` of pages in
/// memory, and starts the writer thread on `rx`.
pub(crate) fn open(
    data_dir: &Path,
    cache_bytes: usize,
    faults: Arc<Faults>,
    rx: mpsc::Receiver<Op>,
    stats: Arc<WriterStats>,
    settings: Arc<Settings>,
) -> Result<(Redb, std::thread::JoinHandle<()>), StoreError> {
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
    schema::init(&db)?;
    let db = Arc::new(db);
    let writer = write::Writer { db: db.clone(), faults };
    // The loop is async (it is the same loop as PostgreSQL's), but everything it awaits here is
    // the queue: a current-thread runtime on the writer's own thread runs it, and the blocking
    // commits never touch the gateway's runtime.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| StoreError::Storage(format!("cannot start the writer thread: {e}")))?;
    let handle = std::thread::Builder::new()
        .name("hookgate-store-writer".into())
        .spawn(move || runtime.block_on(super::writer::run(writer, rx, &stats, &settings)))
        .map_err(|e| StoreError::Storage(format!("cannot start the writer thread: {e}")))?;
    Ok((Redb { db, path }, handle))
}

impl Redb {
    /// Runs a read off the async runtime.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| StoreError::Storage(format!("read task failed: {e}")))?
    }

    /// The database file's size in bytes (0 if it cannot be read).
    pub fn file_size(&self) -> u64 {
        std::fs::metadata(&self.path).map_or(0, |m| m.len())
    }

    /// Every record of a keyed table (`tenants`, `tokens`, `endpoint_health`, `endpoints`).
    pub(crate) async fn all_json<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        table: &'static str,
    ) -> Result<Vec<T>, StoreError> {
        let def = match table {
            "tenants" => schema::TENANTS,
            "tokens" => schema::TOKENS,
            "endpoint_health" => schema::ENDPOINT_HEALTH,
            "endpoints" => schema::ENDPOINTS,
            "event_types" => schema::EVENT_TYPES,
            other => return Err(StoreError::Storage(format!("no keyed table {other:?}"))),
        };
        self.read(move |db| read::all_json(db, def)).await
    }

    pub(crate) async fn is_due(&self, endpoint: String, at: u64, id: Uuid) -> Result<bool, StoreError> {
        self.read(move |db| read::is_due(db, &endpoint, at, id)).await
    }

    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        self.read(|db| redb::ReadableDatabase::begin_read(db).map(drop).map_err(storage)).await
    }

    pub(crate) async fn oldest_pending_ms(&self) -> Result<Option<u64>, StoreError> {
        self.read(read::oldest_pending_ms).await
    }

    pub(crate) async fn list_deliveries(&self, q: DeliveryQuery) -> Result<DeliveryPage, StoreError> {
        self.read(move |db| read::list_deliveries(db, &q)).await
    }

    pub(crate) async fn event(&self, id: Uuid) -> Result<Option<EventRecord>, StoreError> {
        self.read(move |db| read::get_json(db, EVENTS, id)).await
    }

    pub(crate) async fn delivery(&self, id: Uuid) -> Result<Option<DeliveryRecord>, StoreError> {
        self.read(move |db| read::get_json(db, DELIVERIES, id)).await
    }

    pub(crate) async fn delivery_with_event(
        &self,
        id: Uuid,
    ) -> Result<Option<(DeliveryRecord, EventRecord)>, StoreError> {
        self.read(move |db| read::delivery_with_event(db, id)).await
    }

    pub(crate) async fn deliveries(&self, ids: Vec<Uuid>) -> Result<Vec<DeliveryRecord>, StoreError> {
        self.read(move |db| read::deliveries(db, &ids)).await
    }

    pub(crate) async fn scan_due(
        &self,
        now_ms: u64,
        claimed: HashSet<Uuid>,
        mut admit: impl FnMut(&str) -> bool + Send + 'static,
        global_free: usize,
    ) -> Result<DueScan, StoreError> {
        self.read(move |db| read::scan_due(db, now_ms, &claimed, &mut admit, global_free)).await
    }

    pub(crate) async fn pending_count(&self) -> Result<u64, StoreError> {
        self.read(read::due_count).await
    }

    /// Writes a due entry with no delivery behind it, as a damaged file could hold.
    #[cfg(test)]
    pub(crate) fn insert_orphan_due(&self, endpoint_id: &str, due_ms: u64, id: Uuid) {
        let txn = self.db.begin_write().unwrap();
        txn.open_table(schema::DUE).unwrap().insert((endpoint_id, due_ms, id.as_u128()), ()).unwrap();
        txn.commit().unwrap();
    }

    /// Writes a FIFO queue entry and a due entry with no delivery behind them.
    #[cfg(test)]
    pub(crate) fn insert_orphan_head(&self, endpoint_id: &str, queue: &str, id: Uuid) {
        let txn = self.db.begin_write().unwrap();
        txn.open_table(schema::FIFO).unwrap().insert((endpoint_id, queue, id.as_u128()), ()).unwrap();
        txn.open_table(schema::DUE).unwrap().insert((endpoint_id, 1, id.as_u128()), ()).unwrap();
        txn.commit().unwrap();
    }
}
