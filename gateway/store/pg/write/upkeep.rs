//! The PostgreSQL writer's rare paths, inside a batch's transaction: FIFO queue upkeep
//! (promotion, dropped heads, releasing a queue), retention passes, and the tables of
//! endpoints, tenants and tokens.
//!
//! Owns: the statements these run. Each first writes what the batch holds in memory
//! (`flush`), so it sees the batch's earlier changes.
//! Must not touch: commits (the writer loop owns them).

use uuid::Uuid;

use super::Batch;
use crate::model::DeliveryState;
use crate::store::pg::{ms, pg_error};
use crate::store::{PruneReport, PruneRequest, StoreError};

impl Batch<'_, '_> {
    /// Gives the first pending delivery of a FIFO queue its due entry (if it has none yet).
    pub(super) async fn promote(&mut self, endpoint: &str, queue: &str) -> Result<(), StoreError> {
        loop {
            self.flush().await?;
            let row = self
                .txn
                .query_opt(
                    "SELECT id, due_ms, record FROM deliveries WHERE endpoint_id = $1 AND fifo_queue = $2
                     ORDER BY id LIMIT 1 FOR UPDATE",
                    &[&endpoint, &queue],
                )
                .await
                .map_err(pg_error)?;
            let Some(row) = row else { return Ok(()) };
            let id = self.insert_row(&row);
            let r = self.rows.get_mut(&id).expect("just inserted");
            match &r.rec {
                Ok(next) if next.state == DeliveryState::Pending => {
                    if let (None, Some(at)) = (r.due, next.next_attempt_at_ms) {
                        r.due = Some(at);
                        r.dirty = true;
                        self.notify = true;
                    }
                    return Ok(());
                }
                // A queue entry without a readable pending delivery would block the queue.
                _ => {
                    self.rows.remove(&id);
                    self.txn
                        .execute("UPDATE deliveries SET fifo_queue = NULL WHERE id = $1", &[&id])
                        .await
                        .map_err(pg_error)?;
                }
            }
        }
    }

    /// A due entry whose delivery is unreadable or not pending: remove it (and the delivery's
    /// place in its FIFO queue, letting the next one go).
    pub(super) async fn drop_due(&mut self, endpoint: &str, due_ms: u64, id: Uuid) -> Result<(), StoreError> {
        self.flush().await?;
        self.rows.remove(&id);
        let row = self
            .txn
            .query_opt(
                "UPDATE deliveries SET due_ms = NULL, lease_owner = NULL, lease_until_ms = NULL
                 WHERE id = $1 AND endpoint_id = $2 AND due_ms = $3 RETURNING fifo_queue",
                &[&id, &endpoint, &ms(due_ms)],
            )
            .await
            .map_err(pg_error)?;
        if let Some(queue) = row.and_then(|r| r.get::<_, Option<String>>(0)) {
            self.txn
                .execute("UPDATE deliveries SET fifo_queue = NULL WHERE id = $1", &[&id])
                .await
                .map_err(pg_error)?;
            self.promote(endpoint, &queue).await?;
        }
        Ok(())
    }

    pub(super) async fn release_fifo(&mut self, endpoint: &str) -> Result<usize, StoreError> {
        self.flush().await?;
        let rows = self
            .txn
            .query(
                "SELECT id, due_ms, record FROM deliveries WHERE endpoint_id = $1 AND fifo_queue IS NOT NULL
                 ORDER BY id FOR UPDATE",
                &[&endpoint],
            )
            .await
            .map_err(pg_error)?;
        for r in &rows {
            let id = self.insert_row(r);
            let row = self.rows.get_mut(&id).expect("just inserted");
            match &mut row.rec {
                Ok(d) => {
                    d.fifo = None;
                    if let (DeliveryState::Pending, Some(at)) = (d.state, d.next_attempt_at_ms) {
                        row.due = Some(at);
                    }
                    row.dirty = true;
                }
                Err(_) => {
                    self.rows.remove(&id);
                    self.txn
                        .execute("UPDATE deliveries SET fifo_queue = NULL WHERE id = $1", &[&id])
                        .await
                        .map_err(pg_error)?;
                }
            }
        }
        if !rows.is_empty() {
            self.notify = true;
        }
        Ok(rows.len())
    }

    pub(super) async fn exec(&mut self, sql: &str, id: &str) -> Result<(), StoreError> {
        self.flush().await?;
        self.txn.execute(sql, &[&id]).await.map(drop).map_err(pg_error)
    }

    pub(super) async fn put_keyed(&mut self, table: &str, id: &str, record: Vec<u8>) -> Result<(), StoreError> {
        // `table` is one of our own table names.
        let sql = format!(
            "INSERT INTO {table} (id, record) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record"
        );
        self.txn.execute(&sql, &[&id, &record]).await.map(drop).map_err(pg_error)
    }

    pub(super) async fn put_token(&mut self, id: &str, tenant: &str, record: Vec<u8>) -> Result<(), StoreError> {
        self.txn
            .execute(
                "INSERT INTO tokens (id, tenant, record) VALUES ($1, $2, $3)
                 ON CONFLICT (id) DO UPDATE SET tenant = EXCLUDED.tenant, record = EXCLUDED.record",
                &[&id, &tenant, &record],
            )
            .await
            .map(drop)
            .map_err(pg_error)
    }

    pub(super) async fn delete_endpoint(&mut self, id: &str) -> Result<(), StoreError> {
        self.flush().await?;
        self.txn.execute("DELETE FROM endpoints WHERE id = $1", &[&id]).await.map_err(pg_error)?;
        self.txn.execute("DELETE FROM endpoint_health WHERE id = $1", &[&id]).await.map_err(pg_error)?;
        let scope = crate::tally::endpoint_scope(id);
        self.txn.execute("DELETE FROM tally WHERE scope = $1", &[&scope]).await.map_err(pg_error)?;
        Ok(())
    }

    /// Removes a tenant with its endpoints, their health and its tokens (its deliveries stay).
    pub(super) async fn delete_tenant(&mut self, id: &str) -> Result<(), StoreError> {
        self.flush().await?;
        let prefix = format!("{id}/");
        let t = self.txn;
        t.execute("DELETE FROM tenants WHERE id = $1", &[&id]).await.map_err(pg_error)?;
        t.execute("DELETE FROM endpoint_health WHERE starts_with(id, $1)", &[&prefix]).await.map_err(pg_error)?;
        t.execute("DELETE FROM endpoints WHERE starts_with(id, $1)", &[&prefix]).await.map_err(pg_error)?;
        t.execute("DELETE FROM tokens WHERE tenant = $1", &[&id]).await.map_err(pg_error)?;
        Ok(())
    }

    /// One bounded retention pass, with the same answers as the redb writer's.
    pub(super) async fn prune(&mut self, req: &PruneRequest) -> Result<PruneReport, StoreError> {
        self.flush().await?;
        let t = self.txn;
        t.execute(
            "DELETE FROM idempotency WHERE key IN
                (SELECT key FROM idempotency WHERE created_ms < $1 ORDER BY created_ms LIMIT 10000)",
            &[&ms(req.idempotency_cutoff_ms)],
        )
        .await
        .map_err(pg_error)?;
        let after = Uuid::from_u128(req.after.unwrap_or(0));
        let first = if req.after.is_some() { "id > $1" } else { "id >= $1" };
        let rows = t
            .query(
                &format!("SELECT id, received_at_ms FROM events WHERE {first} ORDER BY id LIMIT $2"),
                &[&after, &(req.max_events as i64)],
            )
            .await
            .map_err(pg_error)?;
        let mut report = PruneReport::default();
        let mut old: Vec<Uuid> = Vec::new();
        for r in &rows {
            let id: Uuid = r.get(0);
            let received: i64 = r.get(1);
            // Events are in arrival order: the rest are younger.
            if received as u64 >= req.cutoff_ms {
                report.next = None;
                break;
            }
            old.push(id);
            report.next = Some(id.as_u128());
        }
        if rows.len() < req.max_events && report.next.is_some() {
            // The table ended before the budget did: nothing is left to visit.
            report.next = None;
        }
        if !old.is_empty() {
            let n = t
                .execute("DELETE FROM deliveries WHERE event_id = ANY($1) AND state <> 'pending'", &[&old])
                .await
                .map_err(pg_error)?;
            report.deliveries = n;
            let n = t
                .execute(
                    "DELETE FROM events e WHERE e.id = ANY($1)
                     AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id)",
                    &[&old],
                )
                .await
                .map_err(pg_error)?;
            report.events = n;
        }
        // Rows this batch had read may be gone now.
        self.rows.clear();
        Ok(report)
    }
}
