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

mod rows;
pub mod testing;
mod write;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::{Notify, mpsc};
use tokio_postgres::NoTls;
use tokio_postgres::types::ToSql;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{
    Backend, DeliveryPage, DeliveryQuery, DueItem, DueScan, Faults, IDEMPOTENCY_TTL_MS, Loaded, QUEUE_CAPACITY,
    ScanLimits, Settings, Store, StoreError, WriterStats, WriterThread,
};
use crate::config::PostgresConfig;
use crate::model::{DeliveryRecord, EventRecord};

/// The schema this binary reads and writes. `migrate` brings a database up to it; a database
/// at a newer version is refused (an older binary must not misread it).
pub const SCHEMA_VERSION: i32 = 1;

/// The embedded migrations, in order: `(version, SQL)`.
const MIGRATIONS: &[(i32, &str)] = &[(1, include_str!("001_init.sql"))];

/// The channel on which a node announces that something became due.
const CHANNEL: &str = "hookgate_due";

/// The channel on which a node announces that endpoints, tenants or tokens changed through
/// its API: every node reloads its copies from the database.
const SETTINGS_CHANNEL: &str = "hookgate_settings";

/// An advisory lock key ("hookgate" in ASCII, truncated), held while migrating so that nodes
/// starting together apply each migration once.
const MIGRATION_LOCK: i64 = 0x686f_6f6b_6761_7465;

/// How long a pool waits for a free connection or for a new one: a server that is down makes
/// requests fail (503) quickly instead of hanging.
const POOL_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) fn pg_error(e: impl std::fmt::Display) -> StoreError {
    StoreError::Storage(format!("postgres: {e}"))
}

/// Only the SQL error's text: tokio-postgres' errors never hold the connection URL.
fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    StoreError::Storage(format!("postgres: no connection: {e}"))
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
}

/// What `hookgate check` reports about a database.
#[derive(Debug, Clone, PartialEq)]
pub struct SchemaStatus {
    /// 0: no Hookgate schema yet.
    pub version: i32,
    pub server_version: String,
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
        .map_err(|e| StoreError::Storage(format!("cannot connect to PostgreSQL: {e}")))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

async fn schema_version(client: &impl tokio_postgres::GenericClient) -> Result<i32, StoreError> {
    let exists: bool =
        client.query_one("SELECT to_regclass('hookgate_schema') IS NOT NULL", &[]).await.map_err(pg_error)?.get(0);
    if !exists {
        return Ok(0);
    }
    let row = client.query_opt("SELECT version FROM hookgate_schema", &[]).await.map_err(pg_error)?;
    Ok(row.map_or(0, |r| r.get(0)))
}

/// The schema version of the database and the server's version (`hookgate check`).
pub async fn check(pc: &PostgresConfig) -> Result<SchemaStatus, StoreError> {
    let client = connect(pc).await?;
    let server_version: String = client.query_one("SHOW server_version", &[]).await.map_err(pg_error)?.get(0);
    Ok(SchemaStatus { version: schema_version(&client).await?, server_version })
}

/// Applies the embedded migrations the database lacks, under an advisory lock so that nodes
/// starting together apply each once. Returns the versions applied.
pub async fn migrate(pc: &PostgresConfig) -> Result<Vec<i32>, StoreError> {
    let mut client = connect(pc).await?;
    let txn = client.transaction().await.map_err(pg_error)?;
    // `IF NOT EXISTS` below would otherwise log a NOTICE at every start.
    txn.batch_execute("SET LOCAL client_min_messages = warning").await.map_err(pg_error)?;
    txn.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(pg_error)?;
    txn.batch_execute("CREATE TABLE IF NOT EXISTS hookgate_schema (version integer NOT NULL)")
        .await
        .map_err(pg_error)?;
    let current = schema_version(&txn).await?;
    if current > SCHEMA_VERSION {
        return Err(newer_schema(current));
    }
    let mut applied = Vec::new();
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        txn.batch_execute(sql).await.map_err(|e| StoreError::Storage(format!("migration {version} failed: {e}")))?;
        applied.push(*version);
    }
    if !applied.is_empty() {
        txn.execute("DELETE FROM hookgate_schema", &[]).await.map_err(pg_error)?;
        txn.execute("INSERT INTO hookgate_schema (version) VALUES ($1)", &[&SCHEMA_VERSION]).await.map_err(pg_error)?;
    }
    txn.commit().await.map_err(pg_error)?;
    Ok(applied)
}

fn newer_schema(version: i32) -> StoreError {
    StoreError::Storage(format!(
        "the database has Hookgate schema version {version}; this hookgate understands up to {SCHEMA_VERSION} (upgrade hookgate)"
    ))
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
    };
    let stats = Arc::new(WriterStats::default());
    let settings = Arc::new(Settings { idempotency_ttl_ms: AtomicU64::new(IDEMPOTENCY_TTL_MS) });
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    // Two writers (see `Store::ingest_writer`); each holds a sender of `done` until it ends.
    let mut lanes = Vec::new();
    for _ in 0..2 {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let (pool, stats, faults, settings, done) =
            (pool.clone(), stats.clone(), faults.clone(), settings.clone(), done_tx.clone());
        tokio::spawn(async move {
            write::writer_loop(pool, rx, &stats, &faults, &settings).await;
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

    /// Live nodes as of the last heartbeat.
    pub fn live_nodes(&self) -> usize {
        self.nodes.load(Ordering::Relaxed).max(1)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(pool_error)
    }

    pub(super) async fn all_json<T: serde::de::DeserializeOwned>(&self, table: &str) -> Result<Vec<T>, StoreError> {
        let client = self.client().await?;
        // `table` is one of our own table names, never user input.
        let rows = client.query(&format!("SELECT id, record FROM {table} ORDER BY id"), &[]).await.map_err(pg_error)?;
        rows.iter().map(|r| decode(r.get::<_, &[u8]>(1), r.get::<_, &str>(0))).collect()
    }

    pub(super) async fn record<T: serde::de::DeserializeOwned>(
        &self,
        table: &str,
        id: Uuid,
    ) -> Result<Option<T>, StoreError> {
        let client = self.client().await?;
        let stmt =
            client.prepare_cached(&format!("SELECT record FROM {table} WHERE id = $1")).await.map_err(pg_error)?;
        let row = client.query_opt(&stmt, &[&id]).await.map_err(pg_error)?;
        row.map(|r| decode(r.get::<_, &[u8]>(0), id)).transpose()
    }

    pub(super) async fn delivery_with_event(
        &self,
        id: Uuid,
    ) -> Result<Option<(DeliveryRecord, EventRecord)>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT d.record, e.record FROM deliveries d LEFT JOIN events e ON e.id = d.event_id WHERE d.id = $1",
            )
            .await
            .map_err(pg_error)?;
        let Some(row) = client.query_opt(&stmt, &[&id]).await.map_err(pg_error)? else {
            return Ok(None);
        };
        let d: DeliveryRecord = decode(row.get::<_, &[u8]>(0), id)?;
        let e =
            row.get::<_, Option<&[u8]>>(1).ok_or_else(|| StoreError::Corrupt(format!("delivery {id} has no event")))?;
        Ok(Some((d, decode(e, id)?)))
    }

    pub(super) async fn deliveries(&self, ids: &[Uuid]) -> Result<Vec<DeliveryRecord>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query("SELECT id, record FROM deliveries WHERE id = ANY($1) ORDER BY id", &[&ids])
            .await
            .map_err(pg_error)?;
        let mut by_id: std::collections::HashMap<Uuid, DeliveryRecord> = std::collections::HashMap::new();
        for r in rows {
            let id: Uuid = r.get(0);
            by_id.insert(id, decode(r.get::<_, &[u8]>(1), id)?);
        }
        // In the order asked, as the redb backend answers.
        Ok(ids.iter().filter_map(|id| by_id.remove(id)).collect())
    }

    pub(super) async fn is_due(&self, id: Uuid, at: u64) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let row = client.query_opt("SELECT due_ms FROM deliveries WHERE id = $1", &[&id]).await.map_err(pg_error)?;
        Ok(row.and_then(|r| r.get::<_, Option<i64>>(0)) == Some(ms(at)))
    }

    pub(super) async fn oldest_pending_ms(&self) -> Result<Option<u64>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt("SELECT id, record FROM deliveries WHERE state = 'pending' ORDER BY id LIMIT 1", &[])
            .await
            .map_err(pg_error)?;
        Ok(row.map(|r| {
            let id: Uuid = r.get(0);
            serde_json::from_slice::<DeliveryRecord>(r.get::<_, &[u8]>(1))
                .map_or((id.as_u128() >> 80) as u64, |d| d.created_at_ms)
        }))
    }

    pub(super) async fn pending_count(&self) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let n: i64 = client
            .query_one("SELECT count(*) FROM deliveries WHERE due_ms IS NOT NULL", &[])
            .await
            .map_err(pg_error)?
            .get(0);
        Ok(n as u64)
    }

    /// The log's listing: every filter is a condition on an indexed column (`keys` holds the
    /// trigger, tenant and resource-field keys, under a GIN index), newest first by id.
    pub(super) async fn list_deliveries(&self, q: &DeliveryQuery) -> Result<DeliveryPage, StoreError> {
        let mut page = DeliveryPage::default();
        let Some((lo, hi)) = q.id_bounds() else {
            return Ok(page);
        };
        let limit = q.limit.max(1);
        let (lo, hi) = (Uuid::from_u128(lo), Uuid::from_u128(hi));
        let mut conditions = vec!["id >= $1".to_owned(), "id <= $2".to_owned()];
        let mut params: Vec<Box<dyn ToSql + Sync + Send>> = vec![Box::new(lo), Box::new(hi)];
        if let Some(s) = q.state {
            params.push(Box::new(s.as_str().to_owned()));
            conditions.push(format!("state = ${}", params.len()));
        }
        if let Some(e) = &q.endpoint_id {
            params.push(Box::new(e.clone()));
            conditions.push(format!("endpoint_id = ${}", params.len()));
        }
        let keys: Vec<String> = q
            .fields
            .iter()
            .map(|(f, v)| super::schema::field_key(f, v))
            .chain(q.trigger.iter().map(|t| super::schema::trigger_key(t)))
            .chain(q.tenant.iter().map(|t| super::schema::tenant_key(t)))
            .collect();
        if !keys.is_empty() {
            params.push(Box::new(keys));
            conditions.push(format!("keys @> ${}", params.len()));
        }
        params.push(Box::new((limit + 1) as i64));
        let sql = format!(
            "SELECT id, record FROM deliveries WHERE {} ORDER BY id DESC LIMIT ${}",
            conditions.join(" AND "),
            params.len()
        );
        let client = self.client().await?;
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| &**p as &(dyn ToSql + Sync)).collect();
        let rows = client.query(&sql, &refs).await.map_err(pg_error)?;
        for r in rows.iter().take(limit) {
            let id: Uuid = r.get(0);
            page.deliveries.push(decode(r.get::<_, &[u8]>(1), id)?);
        }
        if rows.len() > limit {
            page.next = page.deliveries.last().map(|d| d.id);
        }
        Ok(page)
    }

    /// The due scan with leases; see the module header. Runs in one transaction: the rows it
    /// takes are stamped with this node's lease before the commit, and rows it looked at but
    /// did not take are released by the commit.
    pub(super) async fn scan_due(
        &self,
        now_ms: u64,
        claimed: &HashSet<Uuid>,
        admit: &mut (dyn FnMut(&str) -> bool + Send),
        limits: ScanLimits,
    ) -> Result<DueScan, StoreError> {
        let mut scan = DueScan::default();
        let mut client = self.client().await?;
        let txn = client.transaction().await.map_err(pg_error)?;
        // A claim is not an acknowledgement: it need not wait for the WAL flush. A database
        // crash that forgets recent leases frees those deliveries again, which costs what a
        // node crash costs (the attempts then in flight may be sent twice), and saves an fsync
        // per scheduler round.
        txn.batch_execute("SET LOCAL synchronous_commit = off").await.map_err(pg_error)?;
        let now = ms(now_ms);
        // Claimed rows are skipped below (they are normally leased by this node and not
        // returned at all), so they must not use up an endpoint's candidates.
        let per_endpoint = limits.per_endpoint.min(limits.global_free).saturating_add(claimed.len());
        let per_endpoint = i64::try_from(per_endpoint).unwrap_or(i64::MAX);
        // Endpoints with due rows, by a loose index scan (one index probe per endpoint), then
        // up to `per_endpoint` free due rows of each, oldest due first. Locked rows (another
        // node is claiming them right now) are skipped, never waited for.
        let candidates = txn
            .prepare_cached(
                "WITH RECURSIVE eps(ep) AS (
                    (SELECT endpoint_id FROM deliveries WHERE due_ms IS NOT NULL ORDER BY endpoint_id LIMIT 1)
                    UNION ALL
                    SELECT (SELECT endpoint_id FROM deliveries
                            WHERE due_ms IS NOT NULL AND endpoint_id > eps.ep ORDER BY endpoint_id LIMIT 1)
                    FROM eps WHERE eps.ep IS NOT NULL
                 )
                 SELECT d.id, d.endpoint_id, d.due_ms, h.others
                 FROM eps CROSS JOIN LATERAL (
                    -- Other nodes' live leases of the endpoint: leased rows were due when they
                    -- were claimed, so they sit at the head of its due range.
                    SELECT count(*) FILTER (WHERE lease_until_ms > $1 AND lease_owner <> $3) AS others
                    FROM (SELECT lease_until_ms, lease_owner FROM deliveries
                          WHERE due_ms IS NOT NULL AND endpoint_id = eps.ep ORDER BY due_ms, id LIMIT $4) head
                 ) h CROSS JOIN LATERAL (
                    SELECT id, endpoint_id, due_ms FROM deliveries
                    WHERE due_ms IS NOT NULL AND endpoint_id = eps.ep AND due_ms <= $1
                      AND (lease_until_ms IS NULL OR lease_until_ms <= $1)
                    ORDER BY due_ms, id LIMIT $2
                    FOR UPDATE SKIP LOCKED
                 ) d
                 WHERE eps.ep IS NOT NULL
                 ORDER BY d.endpoint_id, d.due_ms, d.id",
            )
            .await
            .map_err(pg_error)?;
        // How far into an endpoint's due range to count other nodes' leases.
        let window = i64::try_from(limits.cluster_per_endpoint.min(4096)).unwrap_or(4096).saturating_add(per_endpoint);
        let rows = txn.query(&candidates, &[&now, &per_endpoint, &self.node, &window]).await.map_err(pg_error)?;
        let mut taken: Vec<(Uuid, String, u64)> = Vec::new();
        let mut per_ep: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        for r in &rows {
            let id: Uuid = r.get(0);
            let ep: String = r.get(1);
            let due: i64 = r.get(2);
            let others: i64 = r.get(3);
            if claimed.contains(&id) {
                continue;
            }
            if taken.len() >= limits.global_free {
                break;
            }
            let mine = per_ep.entry(ep.clone()).or_default();
            // Other nodes' live leases count against the endpoint's cluster-wide bound.
            if others as usize + *mine >= limits.cluster_per_endpoint || !admit(&ep) {
                continue;
            }
            *mine += 1;
            taken.push((id, ep, due as u64));
        }
        if !taken.is_empty() {
            let ids: Vec<Uuid> = taken.iter().map(|t| t.0).collect();
            let lease_until = ms(now_ms.saturating_add(self.lease_ms));
            let stmt = txn
                .prepare_cached(
                    "UPDATE deliveries d SET lease_owner = $2, lease_until_ms = $3 WHERE d.id = ANY($1)
                     RETURNING d.id, d.record, (SELECT e.record FROM events e WHERE e.id = d.event_id)",
                )
                .await
                .map_err(pg_error)?;
            let rows = txn.query(&stmt, &[&ids, &self.node, &lease_until]).await.map_err(pg_error)?;
            let mut loaded: std::collections::HashMap<Uuid, Loaded> = std::collections::HashMap::new();
            for r in rows {
                let id: Uuid = r.get(0);
                loaded.insert(id, load(id, r.get(1), r.get(2)));
            }
            for (id, endpoint_id, due_ms) in taken {
                let loaded = loaded.remove(&id).unwrap_or(Loaded::NoDelivery);
                scan.items.push(DueItem { delivery_id: id, endpoint_id, due_ms, loaded });
            }
            self.leases_taken.fetch_add(scan.items.len() as u64, Ordering::Relaxed);
        }
        // When to look again: the next due time. A lease that runs out (its node died) is
        // found by the scheduler's poll (every few seconds on PostgreSQL): finding the next
        // lease end would mean visiting every row ever leased that vacuum has not cleaned yet.
        let next = txn
            .prepare_cached("SELECT due_ms FROM deliveries WHERE due_ms > $1 ORDER BY due_ms LIMIT 1")
            .await
            .map_err(pg_error)?;
        let next: Option<i64> = txn.query_opt(&next, &[&now]).await.map_err(pg_error)?.map(|r| r.get(0));
        scan.next_due_ms = next.map(|n| n as u64);
        txn.commit().await.map_err(pg_error)?;
        Ok(scan)
    }

    pub(super) async fn try_lease(&self, id: Uuid, now_ms: u64) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE deliveries SET lease_owner = $2, lease_until_ms = $3
                 WHERE id = $1 AND (lease_until_ms IS NULL OR lease_until_ms <= $4 OR lease_owner = $2)",
                &[&id, &self.node, &ms(now_ms.saturating_add(self.lease_ms)), &ms(now_ms)],
            )
            .await
            .map_err(pg_error)?;
        Ok(n == 1)
    }

    /// Extends this node's leases on `ids`.
    pub(super) async fn renew_leases(&self, ids: &[Uuid]) -> Result<(), StoreError> {
        let now = crate::model::now_ms();
        let client = self.client().await?;
        if !ids.is_empty() {
            client
                .execute(
                    "UPDATE deliveries SET lease_until_ms = $3 WHERE id = ANY($1) AND lease_owner = $2",
                    &[&ids, &self.node, &ms(now + self.lease_ms)],
                )
                .await
                .map_err(pg_error)?;
        }
        // The heartbeat: this node is alive; count the nodes that are (for rate limits).
        let stale = ms(now.saturating_sub(2 * self.lease_ms));
        client
            .execute(
                "INSERT INTO nodes (id, seen_ms) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET seen_ms = $2",
                &[&self.node, &ms(now)],
            )
            .await
            .map_err(pg_error)?;
        client.execute("DELETE FROM nodes WHERE seen_ms < $1", &[&stale]).await.map_err(pg_error)?;
        let live: i64 = client.query_one("SELECT count(*) FROM nodes", &[]).await.map_err(pg_error)?.get(0);
        self.nodes.store((live as usize).max(1), Ordering::Relaxed);
        Ok(())
    }

    pub(super) async fn release_leases(&self, ids: Option<&[Uuid]>) -> Result<(), StoreError> {
        let client = self.client().await?;
        match ids {
            Some(ids) => {
                client
                    .execute(
                        "UPDATE deliveries SET lease_owner = NULL, lease_until_ms = NULL
                         WHERE id = ANY($1) AND lease_owner = $2",
                        &[&ids, &self.node],
                    )
                    .await
            }
            None => {
                client
                    .execute(
                        "UPDATE deliveries SET lease_owner = NULL, lease_until_ms = NULL
                         WHERE due_ms IS NOT NULL AND lease_owner = $1",
                        &[&self.node],
                    )
                    .await
            }
        }
        .map_err(pg_error)?;
        if ids.is_none() {
            client.execute("DELETE FROM nodes WHERE id = $1", &[&self.node]).await.map_err(pg_error)?;
        }
        Ok(())
    }

    /// Listens on the wake-up channels until `stop`: `wake` is notified when another node made
    /// work due, `settings` when one changed endpoints, tenants or tokens. A lost connection is
    /// re-established with a growing pause (0.2 s to 5 s); both are notified after each
    /// reconnect, since announcements may have been missed meanwhile.
    pub fn spawn_listener(
        &self,
        wake: Arc<Notify>,
        settings: Arc<Notify>,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let config = self.config.clone();
        tokio::spawn(async move {
            let mut pause = Duration::from_millis(200);
            loop {
                let connected = listen_once(&config, &wake, &settings, &stop).await;
                if stop.is_cancelled() {
                    return;
                }
                if let Err(e) = connected {
                    tracing::warn!(error = %e, retry_in_ms = pause.as_millis() as u64, "LISTEN connection lost");
                } else {
                    pause = Duration::from_millis(200);
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(Duration::from_secs(5));
                wake.notify_one();
                settings.notify_one();
            }
        })
    }
}

/// One LISTEN connection's life: returns when it breaks (or at `stop`).
async fn listen_once(
    config: &tokio_postgres::Config,
    wake: &Notify,
    settings: &Notify,
    stop: &CancellationToken,
) -> Result<(), StoreError> {
    let (client, mut connection) = config.connect(NoTls).await.map_err(pg_error)?;
    let (tx, mut rx) = mpsc::unbounded_channel::<bool>();
    let driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                    if tx.send(n.channel() == SETTINGS_CHANNEL).is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            }
        }
    });
    let listening =
        client.batch_execute(&format!("LISTEN {CHANNEL}; LISTEN {SETTINGS_CHANNEL}")).await.map_err(pg_error);
    let result = match listening {
        Ok(()) => loop {
            tokio::select! {
                () = stop.cancelled() => break Ok(()),
                got = rx.recv() => match got {
                    Some(false) => wake.notify_one(),
                    Some(true) => settings.notify_one(),
                    None => break Err(StoreError::Storage("the LISTEN connection closed".into())),
                },
            }
        },
        Err(e) => Err(e),
    };
    driver.abort();
    result
}

/// A scanned row's records, or what is wrong with them.
fn load(id: Uuid, delivery: Option<&[u8]>, event: Option<&[u8]>) -> Loaded {
    let Some(raw) = delivery else { return Loaded::NoDelivery };
    let delivery: DeliveryRecord = match serde_json::from_slice(raw) {
        Ok(d) => d,
        Err(e) => return Loaded::Unreadable(format!("delivery record {id}: {e}")),
    };
    let Some(raw) = event else { return Loaded::NoEvent(Box::new(delivery)) };
    match serde_json::from_slice::<EventRecord>(raw) {
        Ok(event) => Loaded::Ready(Box::new(delivery), Box::new(event)),
        Err(e) => {
            let message = format!("event record {}: {e}", delivery.event_id);
            Loaded::UnreadableEvent(Box::new(delivery), message)
        }
    }
}
