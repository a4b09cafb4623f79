//! The charts' side of the [`Store`] handle: adding the dispatcher's tally and reading bucket
//! ranges and backlogs, on either backend.
//!
//! Owns: the dispatch between backends for these calls (each backend's statements live in its
//! own `tally` modules).
//! Must not touch: what a bucket means (`crate::tally`) or how a chart is drawn (`api`).

use super::ops::Op;
use super::{Backend, Backlog, Store, StoreError};
use crate::tally::{Counts, Resolution, Row};

impl Store {
    /// Adds counted rows to their buckets through the group commit (and drops the touched
    /// scopes' buckets past their keep at `now_ms`).
    pub async fn add_tally(&self, rows: Vec<Row>, now_ms: u64) -> Result<(), StoreError> {
        self.write(|reply| Op::AddTally { rows, now_ms, reply }).await
    }

    /// The stored buckets of one scope starting in `[from_ms, to_ms)`, oldest first; buckets
    /// with nothing counted are absent.
    pub async fn tally_series(
        &self,
        res: Resolution,
        scope: String,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<(u64, Counts)>, StoreError> {
        match &self.backend {
            Backend::Redb(r) => r.tally_series(res, scope, from_ms, to_ms).await,
            Backend::Postgres(p) => p.tally_series(res, &scope, from_ms, to_ms).await,
        }
    }

    /// Each scope's buckets in `[from_ms, to_ms)` added up, in the order asked.
    pub async fn tally_totals(
        &self,
        res: Resolution,
        scopes: Vec<String>,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<(String, Counts)>, StoreError> {
        match &self.backend {
            Backend::Redb(r) => r.tally_totals(res, scopes, from_ms, to_ms).await,
            Backend::Postgres(p) => p.tally_totals(res, &scopes, from_ms, to_ms).await,
        }
    }

    /// The deliveries due or waiting for a retry on these endpoints (internal ids), counted up
    /// to a cap, and when the oldest was created.
    pub async fn backlog_of(&self, endpoints: Vec<String>) -> Result<Backlog, StoreError> {
        match &self.backend {
            Backend::Redb(r) => r.backlog_of(endpoints).await,
            Backend::Postgres(p) => p.backlog_of(&endpoints).await,
        }
    }
}
