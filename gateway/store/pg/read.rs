//! The read path on PostgreSQL: point reads and the delivery log's listing.
//!
//! Owns: read-only statements, each on a pooled connection, each returning owned records.
//! Must not touch: writes (`pg::write`) or leases (`pg::leases`).

use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::{Pg, decode, ms, pg_error};
use crate::model::{DeliveryRecord, EventRecord};
use crate::store::{DeliveryPage, DeliveryQuery, StoreError};

impl Pg {
    pub(in crate::store) async fn all_json<T: serde::de::DeserializeOwned>(
        &self,
        table: &str,
    ) -> Result<Vec<T>, StoreError> {
        let client = self.client().await?;
        // `table` is one of our own table names, never user input.
        let rows = client.query(&format!("SELECT id, record FROM {table} ORDER BY id"), &[]).await.map_err(pg_error)?;
        rows.iter().map(|r| decode(r.get::<_, &[u8]>(1), r.get::<_, &str>(0))).collect()
    }

    pub(in crate::store) async fn record<T: serde::de::DeserializeOwned>(
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

    pub(in crate::store) async fn delivery_with_event(
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

    pub(in crate::store) async fn deliveries(&self, ids: &[Uuid]) -> Result<Vec<DeliveryRecord>, StoreError> {
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

    pub(in crate::store) async fn is_due(&self, id: Uuid, at: u64) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let row = client.query_opt("SELECT due_ms FROM deliveries WHERE id = $1", &[&id]).await.map_err(pg_error)?;
        Ok(row.and_then(|r| r.get::<_, Option<i64>>(0)) == Some(ms(at)))
    }

    pub(in crate::store) async fn oldest_pending_ms(&self) -> Result<Option<u64>, StoreError> {
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

    /// The count of due deliveries, at most [`PENDING_COUNT_TTL`] old: `/metrics` is
    /// unauthenticated, and `count(*)` visits every due row, so however often it is asked, the
    /// database counts at most once per period (concurrent askers wait for one count).
    pub(in crate::store) async fn pending_count(&self) -> Result<u64, StoreError> {
        let mut cached = self.pending.lock().await;
        if let Some(n) = cached.fresh(std::time::Instant::now(), PENDING_COUNT_TTL) {
            return Ok(n);
        }
        let client = self.client().await?;
        let n: i64 = client
            .query_one("SELECT count(*) FROM deliveries WHERE due_ms IS NOT NULL", &[])
            .await
            .map_err(pg_error)?
            .get(0);
        cached.set(std::time::Instant::now(), n as u64);
        Ok(n as u64)
    }

    pub(in crate::store) async fn ping(&self) -> Result<(), StoreError> {
        self.client().await?.query_one("SELECT 1", &[]).await.map(drop).map_err(pg_error)
    }

    /// The log's listing: every filter is a condition on an indexed column (`keys` holds the
    /// trigger, tenant and resource-field keys, under a GIN index), newest first by id.
    pub(in crate::store) async fn list_deliveries(&self, q: &DeliveryQuery) -> Result<DeliveryPage, StoreError> {
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
        // No endpoint id holds a NUL, which `text` cannot carry: nothing matches.
        if q.endpoint_id.as_ref().is_some_and(|e| e.contains('\0')) {
            return Ok(page);
        }
        if let Some(e) = &q.endpoint_id {
            params.push(Box::new(e.clone()));
            conditions.push(format!("endpoint_id = ${}", params.len()));
        }
        let keys: Vec<String> = q
            .fields
            .iter()
            .map(|(f, v)| crate::store::rules::field_key(f, v))
            .chain(q.trigger.iter().map(|t| crate::store::rules::trigger_key(t)))
            .chain(q.tenant.iter().map(|t| crate::store::rules::tenant_key(t)))
            .map(|k| super::rows::pg_key(&k).into_owned())
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
        let mut client = self.client().await?;
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| &**p as &(dyn ToSql + Sync)).collect();
        // A listing is a request anyone with a token can make: it may not hold a connection
        // (or wait on a lock) past the bound, whatever its filters make the planner do.
        let txn = client.transaction().await.map_err(pg_error)?;
        let timeout = self.listing_timeout_ms.load(std::sync::atomic::Ordering::Relaxed);
        txn.batch_execute(&format!("SET LOCAL statement_timeout = {timeout}")).await.map_err(pg_error)?;
        let rows = txn.query(&sql, &refs).await.map_err(pg_error)?;
        txn.commit().await.map_err(pg_error)?;
        for r in rows.iter().take(limit) {
            let id: Uuid = r.get(0);
            page.deliveries.push(decode(r.get::<_, &[u8]>(1), id)?);
        }
        if rows.len() > limit {
            page.next = page.deliveries.last().map(|d| d.id);
        }
        Ok(page)
    }
}

/// How old `pending_count` may be.
pub(super) const PENDING_COUNT_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// A value and when it was read.
#[derive(Debug, Default)]
pub(super) struct Cached {
    at: Option<std::time::Instant>,
    value: u64,
}

impl Cached {
    /// The value, if it was read less than `ttl` before `now`.
    pub(super) fn fresh(&self, now: std::time::Instant, ttl: std::time::Duration) -> Option<u64> {
        self.at.filter(|at| now.saturating_duration_since(*at) < ttl).map(|_| self.value)
    }

    pub(super) fn set(&mut self, now: std::time::Instant, value: u64) {
        (self.at, self.value) = (Some(now), value);
    }
}

#[cfg(test)]
mod tests {
    use super::Cached;
    use std::time::{Duration, Instant};

    #[test]
    fn a_cached_count_is_fresh_for_its_period_only() {
        let mut c = Cached::default();
        let t0 = Instant::now();
        assert_eq!(c.fresh(t0, Duration::from_secs(1)), None, "nothing read yet");
        c.set(t0, 7);
        assert_eq!(c.fresh(t0 + Duration::from_millis(999), Duration::from_secs(1)), Some(7));
        assert_eq!(c.fresh(t0 + Duration::from_secs(1), Duration::from_secs(1)), None);
    }
}
