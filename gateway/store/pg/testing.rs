//! Throwaway databases for tests and benchmarks.
//!
//! Owns: creating a fresh, empty database on a server the caller names (the test suite's
//! `HOOKGATE_TEST_POSTGRES_URL`, started by `.ci/run`), so that tests running in parallel never
//! share state.
//! Must not touch: anything the gateway does at run time; only tests and benches call this.

use tokio_postgres::NoTls;
use uuid::Uuid;

use super::pg_error;
use crate::store::StoreError;

/// The variable that names the test server (a superuser URL on a throwaway cluster).
pub const ENV: &str = "HOOKGATE_TEST_POSTGRES_URL";

/// Creates a new database on the server of `base` and returns `base` with its name.
pub async fn fresh_database(base: &str) -> Result<String, StoreError> {
    let mut url = url::Url::parse(base).map_err(|e| StoreError::Storage(format!("{ENV}: {e}")))?;
    let (client, connection) = tokio_postgres::connect(base, NoTls).await.map_err(pg_error)?;
    let driver = tokio::spawn(connection);
    let name = format!("hookgate_test_{}", Uuid::now_v7().simple());
    client.batch_execute(&format!("CREATE DATABASE {name}")).await.map_err(pg_error)?;
    drop(client);
    let _ = driver.await;
    url.set_path(&format!("/{name}"));
    Ok(url.to_string())
}

/// A `PostgresConfig` for `url` with the defaults of `config/default.toml`.
pub fn config(url: &str) -> crate::config::PostgresConfig {
    crate::config::PostgresConfig { url: url.to_owned(), pool: 16, lease: std::time::Duration::from_secs(30) }
}
