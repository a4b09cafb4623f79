//! The PostgreSQL schema: its version, the embedded migrations and how they are applied.
//!
//! Owns: `SCHEMA_VERSION`, the migration list (`001_init.sql`, ...), the advisory lock that
//! lets nodes starting together migrate once, and `check`'s report.
//! Must not touch: rows. What the tables mean is in `pg`'s header and in the SQL itself.

use super::{connect, pg_error};
use crate::config::PostgresConfig;
use crate::store::StoreError;

/// The schema this binary reads and writes. `migrate` brings a database up to it; a database
/// at a newer version is refused (an older binary must not misread it).
pub const SCHEMA_VERSION: i32 = 4;

/// The embedded migrations, in order: `(version, SQL)`.
pub(super) const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("001_init.sql")),
    (2, include_str!("002_lease_token.sql")),
    (3, include_str!("003_tally.sql")),
    (4, include_str!("004_event_types.sql")),
];

/// An advisory lock key ("hookgate" in ASCII, truncated), held while migrating so that nodes
/// starting together apply each migration once.
pub(super) const MIGRATION_LOCK: i64 = 0x686f_6f6b_6761_7465;

/// What `hookgate check` reports about a database.
#[derive(Debug, Clone, PartialEq)]
pub struct SchemaStatus {
    /// 0: no Hookgate schema yet.
    pub version: i32,
    pub server_version: String,
}

pub(super) async fn schema_version(client: &impl tokio_postgres::GenericClient) -> Result<i32, StoreError> {
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

pub(super) fn newer_schema(version: i32) -> StoreError {
    StoreError::Storage(format!(
        "the database has Hookgate schema version {version}; this hookgate understands up to {SCHEMA_VERSION} (upgrade hookgate)"
    ))
}
