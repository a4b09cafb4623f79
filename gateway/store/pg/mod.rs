//! The PostgreSQL backend: the same records and invariants as the redb file, in a database that
//! several Hookgate nodes share.
//!
//! Owns: the connection pool, the embedded migrations and the schema version, the read path on
//! PostgreSQL, leases (which node is attempting which delivery), the node heartbeat and the
//! `LISTEN` connection that wakes this node when another one made something due.
//! Must not touch: HTTP, plugins, signing, or the order of the delivery stages. The writer (one
//! transaction per batch of operations, group commit) lives in `pg::write`.
//!
//! **Layout.** A delivery is one row: its JSON record plus the columns the queries need
//! (`state`, `endpoint_id`, `keys` for the log's filters, `due_ms`, `fifo_queue`, the lease).
//! The redb `due` table becomes `due_ms` (set exactly when the delivery has a due entry) and the
//! `fifo` table becomes `fifo_queue` (set while a FIFO delivery is pending).
//!
//! **Leases.** A due scan runs in one transaction: it picks due rows whose lease is free or run
//! out, endpoint by endpoint, with `FOR UPDATE SKIP LOCKED` (a row another node is claiming
//! at that moment is skipped, never waited for), and stamps the ones it takes with this node's
//! id and `lease_until_ms = now + lease`. Other nodes skip a leased row until the lease ends.
//! The node renews the leases of the passes it is still running (every `lease / 3`), and
//! `finish` clears the lease with the attempt's record. A node that dies stops renewing; its
//! deliveries come due for the others when their leases run out. The only duplicate sends are
//! attempts that were in flight at the crash.
//!
//! **Per-endpoint limits across nodes.** The scan counts other nodes' live leases of each
//! endpoint and takes at most `max_in_flight_per_endpoint` minus that. Two nodes scanning the
//! same endpoint in the same instant cannot see each other's uncommitted leases, so the bound
//! can be exceeded by what those scans take together, for at most one attempt's duration; the
//! heartbeat's node count divides each endpoint's rate limit between the live nodes.

mod leases;
mod read;
mod rows;
mod schema;
mod tally;
pub mod testing;
mod write;

pub use schema::{SCHEMA_VERSION, SchemaStatus, check, migrate};
use schema::{newer_schema, schema_version};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::mpsc;
use tokio_postgres::NoTls;
use uuid::Uuid;

use super::{Backend, Faults, QUEUE_CAPACITY, Settings, Store, StoreError, WriterStats, WriterThread};
use crate::config::PostgresConfig;

/// The channel on which a node announces that something became due.
const CHANNEL: &str = "hookgate_due";

/// The channel on which a node announces that endpoints, tenants or tokens changed through
/// its API: every node reloads its copies from the database.
const SETTINGS_CHANNEL: &str = "hookgate_settings";

/// How long a pool waits for a free connection or for a new one: a server that is down makes
/// requests fail (503) quickly instead of hanging.
const POOL_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) fn pg_error(e: impl std::error::Error + 'static) -> StoreError {
    // Data exceptions (22), integrity constraints (23) and program limits such as an index row
    // too large (54) are about what was written, not about the database being there.
    let refused = (&e as &dyn std::error::Error)
        .downcast_ref::<tokio_postgres::Error>()
        .and_then(tokio_postgres::Error::as_db_error)
        .is_some_and(|db| matches!(&db.code().code()[..2], "22" | "23" | "54"));
    let message = format!("postgres: {}", describe(&e));
    if refused { StoreError::Rejected(message) } else { StoreError::Storage(message) }
}

/// Only the SQL error's text: tokio-postgres' errors never hold the connection URL.
fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    StoreError::Storage(format!("postgres: no connection: {}", describe(&e)))
}

/// An error with what the server said: tokio-postgres shows a server's refusal as just "db
/// error" and keeps the message (`database "x" does not exist`, `password authentication
/// failed for user "y"`) in its source chain. Neither holds the URL or the password.
fn describe(e: &(dyn std::error::Error + '_)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = match c.downcast_ref::<tokio_postgres::error::DbError>() {
            // Not the detail: it can quote row values.
            Some(db) => format!("{}: {} (SQLSTATE {})", db.severity(), db.message(), db.code().code()),
            None => c.to_string(),
        };
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

/// The PostgreSQL side of a [`Store`]: the pool, this node's identity and its lease length.
#[derive(Clone)]
pub struct Pg {
    pool: Pool,
    config: tokio_postgres::Config,
    node: Uuid,
    lease_ms: u64,
    /// Live nodes as of the last heartbeat (at least 1).
    nodes: Arc<AtomicUsize>,
    /// Deliveries this node has leased that the scan reported, for `hookgate_leases`.
    leases_taken: Arc<AtomicU64>,
    /// The fencing tokens of the leases this node holds.
    fences: Arc<Fences>,
    /// The last count of due deliveries (see `pending_count`).
    pending: Arc<tokio::sync::Mutex<read::Cached>>,
    /// The longest a listing may run, in milliseconds (tests shorten it).
    listing_timeout_ms: Arc<AtomicU64>,
    /// When this node last renewed (or took) its leases, wall-clock ms: a pass that is about to
    /// send after a longer silence (the process was paused) checks its lease first.
    leases_fresh_ms: Arc<AtomicU64>,
}

/// The longest a delivery-log listing may run on PostgreSQL before it is cancelled (and
/// answered 503): listings are indexed, so only a pathological plan or a lock comes near it.
pub const LISTING_TIMEOUT: Duration = Duration::from_secs(5);

/// The fencing tokens of the leases this node holds, by delivery. A claim increments the row's
/// `lease_token`; a pass's final write changes the delivery only while the row still carries
/// this node's id and the token it was claimed with (see `write`). An entry goes when that
/// write commits, or when the lease is handed back.
#[derive(Debug, Default)]
pub(super) struct Fences {
    tokens: std::sync::Mutex<std::collections::HashMap<Uuid, i64>>,
    /// Leases a renewal found taken over: their passes must not send.
    lost: std::sync::Mutex<std::collections::HashSet<Uuid>>,
}

impl Fences {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<Uuid, i64>> {
        self.tokens.lock().expect("fences lock")
    }

    pub(super) fn mark_lost(&self, ids: &[Uuid]) {
        self.lost.lock().expect("fences lock").extend(ids.iter().copied());
    }

    pub(super) fn is_lost(&self, id: Uuid) -> bool {
        self.lost.lock().expect("fences lock").contains(&id)
    }

    pub(super) fn hold(&self, id: Uuid, token: i64) {
        self.lock().insert(id, token);
        self.lost.lock().expect("fences lock").remove(&id);
    }

    pub(super) fn token(&self, id: Uuid) -> Option<i64> {
        self.lock().get(&id).copied()
    }

    pub(super) fn tokens(&self, ids: &[Uuid]) -> Vec<(Uuid, i64)> {
        let held = self.lock();
        ids.iter().filter_map(|id| Some((*id, *held.get(id)?))).collect()
    }

    pub(super) fn drop_ids(&self, ids: &[Uuid]) {
        let mut held = self.lock();
        let mut lost = self.lost.lock().expect("fences lock");
        for id in ids {
            held.remove(id);
            lost.remove(id);
        }
    }

    pub(super) fn clear(&self) {
        self.lock().clear();
        self.lost.lock().expect("fences lock").clear();
    }
}

/// Builds the client config: the user's URL, plus what Hookgate relies on.
fn client_config(pc: &PostgresConfig) -> Result<tokio_postgres::Config, StoreError> {
    let mut c: tokio_postgres::Config =
        pc.url.parse().map_err(|e| StoreError::Storage(format!("storage.postgres_url is not a valid URL: {e}")))?;
    // A 2xx from ingest means committed: never let a server default of `off` weaken that.
    let options = format!("{} -c synchronous_commit=on", c.get_options().unwrap_or_default());
    c.options(options.trim());
    if c.get_application_name().is_none() {
        c.application_name("hookgate");
    }
    if c.get_connect_timeout().is_none() {
        c.connect_timeout(POOL_TIMEOUT);
    }
    c.keepalives(true);
    Ok(c)
}

fn pool(pc: &PostgresConfig, config: tokio_postgres::Config) -> Result<Pool, StoreError> {
    let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Pool::builder(manager)
        .max_size(pc.pool)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(POOL_TIMEOUT))
        .create_timeout(Some(POOL_TIMEOUT))
        .recycle_timeout(Some(POOL_TIMEOUT))
        .build()
        .map_err(pg_error)
}

/// Connects once, for `check` and `migrate`.
async fn connect(pc: &PostgresConfig) -> Result<tokio_postgres::Client, StoreError> {
    let (client, connection) = client_config(pc)?
        .connect(NoTls)
        .await
        .map_err(|e| StoreError::Storage(format!("cannot connect to PostgreSQL: {}", describe(&e))))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Opens the pool (migrating first if asked), checks the schema and starts the writer task.
pub(super) async fn open(
    pc: &PostgresConfig,
    faults: Arc<Faults>,
    migrate_first: bool,
) -> Result<(Store, WriterThread), StoreError> {
    if migrate_first {
        let applied = migrate(pc).await?;
        if !applied.is_empty() {
            tracing::info!(?applied, "applied PostgreSQL migrations");
        }
    }
    let config = client_config(pc)?;
    let pool = pool(pc, config.clone())?;
    let client = pool.get().await.map_err(pool_error)?;
    match schema_version(&**client).await? {
        SCHEMA_VERSION => {}
        0 => {
            return Err(StoreError::Storage(
                "the database has no Hookgate schema; run `hookgate migrate --config <file>` (or serve without --no-migrate)"
                    .into(),
            ));
        }
        v if v > SCHEMA_VERSION => return Err(newer_schema(v)),
        v => {
            return Err(StoreError::Storage(format!(
                "the database has Hookgate schema version {v}; run `hookgate migrate` to bring it to {SCHEMA_VERSION}"
            )));
        }
    }
    drop(client);
    let pg = Pg {
        pool: pool.clone(),
        config,
        node: Uuid::now_v7(),
        lease_ms: pc.lease.as_millis() as u64,
        nodes: Arc::new(AtomicUsize::new(1)),
        leases_taken: Arc::default(),
        fences: Arc::default(),
        pending: Arc::default(),
        listing_timeout_ms: Arc::new(AtomicU64::new(LISTING_TIMEOUT.as_millis() as u64)),
        leases_fresh_ms: Arc::new(AtomicU64::new(crate::model::now_ms())),
    };
    let stats = Arc::new(WriterStats::default());
    let settings = Arc::new(Settings::new());
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    // Two writers (see `Store::ingest_writer`); each holds a sender of `done` until it ends.
    let mut lanes = Vec::new();
    for _ in 0..2 {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let (pool, stats, faults, settings, done) =
            (pool.clone(), stats.clone(), faults.clone(), settings.clone(), done_tx.clone());
        let fence = write::Fence { node: pg.node, fences: pg.fences.clone() };
        let writer = write::Writer { pool, faults, fence };
        tokio::spawn(async move {
            crate::store::writer::run(writer, rx, &stats, &settings).await;
            drop(done);
        });
        lanes.push(tx);
    }
    drop(done_tx);
    let ingest_writer = lanes.pop();
    let writer = lanes.pop().expect("two lanes");
    let store = Store { writer, ingest_writer, stats, faults, settings, backend: Backend::Postgres(Box::new(pg)) };
    Ok((store, WriterThread::Postgres(done_rx)))
}

fn decode<T: serde::de::DeserializeOwned>(raw: &[u8], what: impl std::fmt::Display) -> Result<T, StoreError> {
    serde_json::from_slice(raw).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Pg {
    /// This node's identity in leases and heartbeats (new at every start).
    pub fn node(&self) -> Uuid {
        self.node
    }

    /// How long a claimed delivery stays this node's without a renewal.
    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms)
    }

    /// Shortens (or lengthens) [`LISTING_TIMEOUT`] for this node: for tests.
    pub fn set_listing_timeout(&self, timeout: Duration) {
        self.listing_timeout_ms.store(timeout.as_millis() as u64, Ordering::Relaxed);
    }

    /// Live nodes as of the last heartbeat.
    pub fn live_nodes(&self) -> usize {
        self.nodes.load(Ordering::Relaxed).max(1)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(pool_error)
    }
}
