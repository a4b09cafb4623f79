//! The charts' side of the [`Store`] handle: adding the dispatcher's tally and reading bucket
//! ranges and backlogs, on either backend; and the newest events of a tenant (the Svix API's
//! message list).
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

    /// Creates or replaces an event type.
    pub async fn put_event_type(&self, r: crate::model::EventTypeRecord) -> Result<(), StoreError> {
        self.write(|reply| Op::PutEventType(r, reply)).await
    }

    /// Every event type, by name.
    pub async fn event_types(&self) -> Result<Vec<crate::model::EventTypeRecord>, StoreError> {
        match &self.backend {
            Backend::Redb(r) => r.all_json("event_types").await,
            Backend::Postgres(p) => p.all_json("event_types").await,
        }
    }

    /// Events of `tenant` (`None`: the default tenant's), newest first, older than `before`:
    /// at most `limit`, visiting at most `budget` events (the table is in arrival order, not by
    /// tenant). `next` continues after the last event visited, when there may be more.
    pub async fn list_events(
        &self,
        tenant: Option<String>,
        before: Option<uuid::Uuid>,
        limit: usize,
        budget: usize,
    ) -> Result<(Vec<crate::model::EventRecord>, Option<uuid::Uuid>), StoreError> {
        let (visited, last) = match &self.backend {
            Backend::Redb(r) => r.events_before(before, budget).await?,
            Backend::Postgres(p) => p.events_before(before, budget).await?,
        };
        let full = visited.len() == budget;
        let mut out = Vec::new();
        let mut next = None;
        for e in visited {
            if e.tenant == tenant {
                out.push(e);
                if out.len() == limit {
                    next = out.last().map(|e| e.id);
                    break;
                }
            }
        }
        if next.is_none() && full {
            next = last;
        }
        Ok((out, next))
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
