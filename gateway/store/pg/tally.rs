//! The charts on PostgreSQL: reading bucket ranges from `tally` and a set of endpoints'
//! backlog; and the newest events (the Svix API's message list).
//!
//! Owns: read-only statements over `tally` and the due index for a backlog.
//! Must not touch: writes (the writer adds buckets in `write::tally`) or what a bucket means
//! (`crate::tally`).

use super::{Pg, ms, pg_error};
use crate::model::DeliveryRecord;
use crate::store::{Backlog, StoreError};
use crate::tally::{Counts, Resolution, SLOTS};

/// The most due entries a backlog read counts; past it the count is reported as capped.
const BACKLOG_CAP: i64 = 10_000;

const COLUMNS: &str = "succeeded, failed, retried, attempts, latency_ms_sum, latency";

/// A row's counts from [`COLUMNS`], starting at column `at`.
fn counts(r: &tokio_postgres::Row, at: usize) -> Counts {
    let n = |i: usize| r.get::<_, i64>(at + i).max(0) as u64;
    let mut latency = [0u64; SLOTS];
    for (slot, v) in latency.iter_mut().zip(r.get::<_, Vec<i64>>(at + 5)) {
        *slot = v.max(0) as u64;
    }
    Counts { succeeded: n(0), failed: n(1), retried: n(2), attempts: n(3), latency_ms_sum: n(4), latency }
}

impl Pg {
    pub(in crate::store) async fn tally_series(
        &self,
        res: Resolution,
        scope: &str,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<(u64, Counts)>, StoreError> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT bucket_ms, {COLUMNS} FROM tally WHERE resolution = $1 AND scope = $2 AND bucket_ms >= $3 AND bucket_ms < $4 ORDER BY bucket_ms"
        );
        let stmt = client.prepare_cached(&sql).await.map_err(pg_error)?;
        let rows = client.query(&stmt, &[&res.code(), &scope, &ms(from_ms), &ms(to_ms)]).await.map_err(pg_error)?;
        Ok(rows.iter().map(|r| (r.get::<_, i64>(0) as u64, counts(r, 1))).collect())
    }

    pub(in crate::store) async fn tally_totals(
        &self,
        res: Resolution,
        scopes: &[String],
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<(String, Counts)>, StoreError> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT scope, {COLUMNS} FROM tally WHERE resolution = $1 AND scope = ANY($2) AND bucket_ms >= $3 AND bucket_ms < $4"
        );
        let stmt = client.prepare_cached(&sql).await.map_err(pg_error)?;
        let rows = client.query(&stmt, &[&res.code(), &scopes, &ms(from_ms), &ms(to_ms)]).await.map_err(pg_error)?;
        let mut out: Vec<(String, Counts)> = scopes.iter().map(|s| (s.clone(), Counts::default())).collect();
        for r in &rows {
            let scope: &str = r.get(0);
            if let Some((_, total)) = out.iter_mut().find(|(s, _)| s == scope) {
                total.add(&counts(r, 1));
            }
        }
        Ok(out)
    }

    pub(in crate::store) async fn backlog_of(&self, endpoints: &[String]) -> Result<Backlog, StoreError> {
        let client = self.client().await?;
        let pending: i64 = client
            .query_one(
                "SELECT count(*) FROM (SELECT 1 FROM deliveries
                   WHERE due_ms IS NOT NULL AND endpoint_id = ANY($1) LIMIT $2) d",
                &[&endpoints, &BACKLOG_CAP],
            )
            .await
            .map_err(pg_error)?
            .get(0);
        let mut out = Backlog { pending: pending as u64, capped: pending >= BACKLOG_CAP, oldest_pending_ms: None };
        let oldest = client
            .query_opt(
                "SELECT id, record FROM deliveries WHERE due_ms IS NOT NULL AND endpoint_id = ANY($1) ORDER BY id LIMIT 1",
                &[&endpoints],
            )
            .await
            .map_err(pg_error)?;
        if let Some(r) = oldest {
            // Ids are UUIDv7: without a readable record, the id's own timestamp will do.
            let id: uuid::Uuid = r.get(0);
            let record = serde_json::from_slice::<DeliveryRecord>(r.get::<_, &[u8]>(1)).ok();
            out.oldest_pending_ms = Some(record.map_or((id.as_u128() >> 80) as u64, |d| d.created_at_ms));
        }
        Ok(out)
    }

    /// Up to `budget` events older than `before`, newest first, and the id of the last one.
    pub(in crate::store) async fn events_before(
        &self,
        before: Option<uuid::Uuid>,
        budget: usize,
    ) -> Result<(Vec<crate::model::EventRecord>, Option<uuid::Uuid>), StoreError> {
        let client = self.client().await?;
        let end = before.unwrap_or(uuid::Uuid::max());
        let rows = client
            .query("SELECT id, record FROM events WHERE id < $1 ORDER BY id DESC LIMIT $2", &[&end, &(budget as i64)])
            .await
            .map_err(pg_error)?;
        let last = rows.last().map(|r| r.get::<_, uuid::Uuid>(0));
        let events = rows.iter().filter_map(|r| serde_json::from_slice(r.get::<_, &[u8]>(1)).ok()).collect();
        Ok((events, last))
    }
}
