//! The redb side of the charts: reading bucket ranges and a set of endpoints' backlog; and
//! the newest events (the Svix API's message list).
//!
//! Owns: read transactions over `tally_minute` / `tally_hour` and the per-endpoint due ranges.
//! Must not touch: writes (the writer adds buckets in `write::tally`) or what a bucket means
//! (`crate::tally`).

use redb::{Database, ReadableDatabase};

use super::Redb;
use super::schema::{DELIVERIES, DUE, tally_table};
use super::storage;
use crate::model::DeliveryRecord;
use crate::store::{Backlog, StoreError};
use crate::tally::{Counts, Resolution};

/// The most due entries a backlog read walks; past it the count is reported as capped.
pub(crate) const BACKLOG_CAP: u64 = 10_000;

impl Redb {
    pub(crate) async fn tally_series(
        &self,
        res: Resolution,
        scope: String,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<(u64, Counts)>, StoreError> {
        self.read(move |db| series(db, res, &scope, from_ms, to_ms)).await
    }

    pub(crate) async fn tally_totals(
        &self,
        res: Resolution,
        scopes: Vec<String>,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<(String, Counts)>, StoreError> {
        self.read(move |db| {
            let mut out = Vec::with_capacity(scopes.len());
            for scope in scopes {
                let mut total = Counts::default();
                for (_, c) in series(db, res, &scope, from_ms, to_ms)? {
                    total.add(&c);
                }
                out.push((scope, total));
            }
            Ok(out)
        })
        .await
    }

    pub(crate) async fn backlog_of(&self, endpoints: Vec<String>) -> Result<Backlog, StoreError> {
        self.read(move |db| backlog(db, &endpoints)).await
    }

    /// Up to `budget` events older than `before`, newest first, and the id of the last one.
    pub(crate) async fn events_before(
        &self,
        before: Option<uuid::Uuid>,
        budget: usize,
    ) -> Result<(Vec<crate::model::EventRecord>, Option<uuid::Uuid>), StoreError> {
        self.read(move |db| {
            let txn = db.begin_read().map_err(storage)?;
            let events = txn.open_table(super::schema::EVENTS).map_err(storage)?;
            let end = before.map_or(u128::MAX, |b| b.as_u128());
            let mut out = Vec::new();
            let mut last = None;
            for entry in events.range(..end).map_err(storage)?.rev().take(budget) {
                let (k, v) = entry.map_err(storage)?;
                last = Some(uuid::Uuid::from_u128(k.value()));
                // An unreadable record is skipped here; the log shows it to an operator.
                if let Ok(e) = serde_json::from_slice(v.value()) {
                    out.push(e);
                }
            }
            Ok((out, last))
        })
        .await
    }
}

/// The buckets of `scope` starting in `[from_ms, to_ms)`, oldest first (one range read).
fn series(
    db: &Database,
    res: Resolution,
    scope: &str,
    from_ms: u64,
    to_ms: u64,
) -> Result<Vec<(u64, Counts)>, StoreError> {
    let txn = db.begin_read().map_err(storage)?;
    let table = txn.open_table(tally_table(res)).map_err(storage)?;
    let mut out = Vec::new();
    for entry in table.range((scope, from_ms)..(scope, to_ms)).map_err(storage)? {
        let (k, v) = entry.map_err(storage)?;
        out.push((k.value().1, Counts::from_bytes(v.value())));
    }
    Ok(out)
}

/// Due deliveries of the given endpoints (as `pending_count` counts them: due or waiting for a
/// retry), walking at most [`BACKLOG_CAP`] entries, and when the oldest of them was created.
fn backlog(db: &Database, endpoints: &[String]) -> Result<Backlog, StoreError> {
    let txn = db.begin_read().map_err(storage)?;
    let due = txn.open_table(DUE).map_err(storage)?;
    let mut out = Backlog::default();
    let mut oldest: Option<u128> = None;
    'endpoints: for e in endpoints {
        for entry in due.range((e.as_str(), 0u64, 0u128)..=(e.as_str(), u64::MAX, u128::MAX)).map_err(storage)? {
            let id = entry.map_err(storage)?.0.value().2;
            oldest = Some(oldest.map_or(id, |o| o.min(id)));
            out.pending += 1;
            if out.pending >= BACKLOG_CAP {
                out.capped = true;
                break 'endpoints;
            }
        }
    }
    if let Some(id) = oldest {
        let deliveries = txn.open_table(DELIVERIES).map_err(storage)?;
        // Ids are UUIDv7: without a readable record, the id's own timestamp will do.
        let created = deliveries
            .get(id)
            .map_err(storage)?
            .and_then(|raw| serde_json::from_slice::<DeliveryRecord>(raw.value()).ok())
            .map_or((id >> 80) as u64, |d| d.created_at_ms);
        out.oldest_pending_ms = Some(created);
    }
    Ok(out)
}
