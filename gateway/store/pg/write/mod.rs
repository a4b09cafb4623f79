//! The PostgreSQL writer: each batch of the writer loop (`store::writer`) in one transaction.
//!
//! Owns: write transactions on PostgreSQL. The loop, shared with redb, drains whatever
//! operations have queued up (up to `MAX_BATCH`); this applies them in one transaction, and
//! every caller is answered only after the commit (`synchronous_commit = on`, so after the WAL
//! flush). The rules of each change are `store::rules`', shared with redb.
//! The work is shaped for round trips, not rows: the deliveries a batch changes are locked and
//! read with one statement, changed in memory, and written back with one; new events and
//! deliveries go in one multi-row `INSERT` each; idempotency keys are claimed with one
//! `INSERT … ON CONFLICT` (the primary key makes a key unique across every node).
//! Must not touch: reads for callers, leases other than ending them (`finish` ends the pass
//! that held one), or anything that does not go through an [`Op`].
//!
//! Rare paths (FIFO queues, retention, tenants) write what is pending first ("flush") and then
//! run their own statements, so they see the batch's earlier changes.
//!
//! Two rules keep one operation from costing others: a batch the database refuses for its
//! data (`StoreError::Rejected`) is applied again one operation at a time, and a pass's final
//! write is fenced by its lease (`Fence`): a node that lost the lease can only append its late
//! attempt.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use deadpool_postgres::Pool;
use deadpool_postgres::Transaction;
use uuid::Uuid;

mod ingest;
mod tally;
mod upkeep;

use ingest::{plain_ingest, plain_ingests};

use super::rows::{INSERT_ROWS, NewRows, fifo_queue};
use super::{CHANNEL, SETTINGS_CHANNEL, ms, pg_error, pool_error};
use crate::model::{DeliveryRecord, DeliveryState, EndpointHealth, EventRecord};
use crate::store::ops::{Op, Reply, split};
use crate::store::rules::{self, apply_attempt, apply_settle, to_json};
use crate::store::writer::Apply;
use crate::store::{Effects, Faults, Finish, IngestOutcome, IngestWrite, PruneReport, StoreError};

/// This node's identity and lease tokens, against which a pass's final write is checked.
pub(in crate::store::pg) struct Fence {
    pub node: Uuid,
    pub fences: std::sync::Arc<super::Fences>,
}

/// The PostgreSQL side of the writer loop: one pooled connection per batch.
pub(in crate::store::pg) struct Writer {
    pub pool: Pool,
    pub faults: std::sync::Arc<Faults>,
    pub fence: Fence,
}

impl Apply for Writer {
    // A value PostgreSQL cannot hold (a NUL in text, an over-long key) fails one operation.
    const REFUSES_DATA: bool = true;

    async fn apply(&mut self, ops: Vec<Op>, idempotency_ttl_ms: u64) -> (Vec<Reply>, Result<(), StoreError>) {
        apply_batch(&self.pool, ops, idempotency_ttl_ms, &self.faults, &self.fence).await
    }
}

/// Every operation's reply, carrying `e` (nothing of the batch was stored).
fn fail_all(ops: Vec<Op>, e: StoreError) -> (Vec<Reply>, Result<(), StoreError>) {
    let replies = ops
        .into_iter()
        .map(|op| match op {
            Op::Ingest(_, tx) => Reply::Ingest(tx, Err(e.clone())),
            Op::Finish(_, _, tx)
            | Op::PutEndpoint(_, tx)
            | Op::PutHealth(_, tx)
            | Op::PutTenant(_, tx)
            | Op::DeleteTenant(_, tx)
            | Op::PutToken(_, tx)
            | Op::DeleteToken(_, tx)
            | Op::DeleteEndpoint(_, tx)
            | Op::PutEventType(_, tx)
            | Op::AddTally { reply: tx, .. } => Reply::Unit(tx, Err(e.clone())),
            Op::Prune(_, tx) => Reply::Prune(tx, Err(e.clone())),
            Op::ReleaseFifo(_, tx) => Reply::Count(tx, Err(e.clone())),
            Op::Requeue { reply, .. } => Reply::Count(reply, Err(e.clone())),
        })
        .collect();
    (replies, Err(e))
}

async fn apply_batch(
    pool: &Pool,
    ops: Vec<Op>,
    ttl: u64,
    faults: &Faults,
    fence: &Fence,
) -> (Vec<Reply>, Result<(), StoreError>) {
    let mut client = match pool.get().await {
        Ok(c) => c,
        Err(e) => return fail_all(ops, pool_error(e)),
    };
    if ops.iter().all(plain_ingest) {
        return plain_ingests(&client, ops, faults).await;
    }
    let txn = match client.transaction().await {
        Ok(t) => t,
        Err(e) => return fail_all(ops, pg_error(e)),
    };
    // Endpoints, tenants and tokens created through one node's API: the others reload theirs.
    let changes_settings = ops.iter().any(Op::changes_settings);
    let mut b = Batch::new(&txn, fence);
    let verdicts = match b.prepare(&ops, ttl).await {
        Ok(v) => v,
        Err(e) => return fail_all(ops, e),
    };
    let mut failure: Option<StoreError> = None;
    let mut replies = Vec::with_capacity(ops.len());
    for (i, op) in ops.into_iter().enumerate() {
        // After a storage failure the transaction is abandoned; the remaining operations are
        // not applied, and their callers hear the failure through the commit result.
        let verdict = verdicts.get(&i).cloned();
        replies.push(b.apply(op, verdict, &mut failure).await);
    }
    if failure.is_none()
        && let Err(e) = b.flush().await
    {
        failure = Some(e);
    }
    if failure.is_none()
        && b.notify
        && let Err(e) = txn.execute("SELECT pg_notify($1, '')", &[&CHANNEL]).await
    {
        failure = Some(pg_error(e));
    }
    if failure.is_none()
        && changes_settings
        && let Err(e) = txn.execute("SELECT pg_notify($1, '')", &[&SETTINGS_CHANNEL]).await
    {
        failure = Some(pg_error(e));
    }
    if failure.is_none() && faults.fail_commits.load(Ordering::Relaxed) {
        failure = Some(StoreError::Storage("commit refused by the test fault switch".into()));
    }
    let finished = std::mem::take(&mut b.finished);
    drop(b);
    if let Some(e) = failure {
        // Dropping the transaction rolls it back: nothing of the batch is stored.
        drop(txn);
        return (replies, Err(e));
    }
    let committed = txn.commit().await.map_err(pg_error);
    if committed.is_ok() {
        // Those passes are over: their leases are settled (or were not theirs any more).
        fence.fences.drop_ids(&finished);
    }
    (replies, committed)
}

/// A delivery row as the batch sees it: its record (or why it cannot be read), its due entry,
/// and whether it must be written back.
struct Row {
    rec: Result<DeliveryRecord, String>,
    due: Option<u64>,
    dirty: bool,
    /// The write ends the pass that leased it.
    end_lease: bool,
    /// `(lease_owner, lease_token)` as read, where the query read them.
    lease: Option<(Option<Uuid>, i64)>,
}

/// What an ingest with an `Idempotency-Key` does, decided for the whole batch at once.
#[derive(Clone)]
enum Verdict {
    /// This ingest holds the key now: store it.
    Store,
    /// Answer without storing.
    Answer(Result<IngestOutcome, StoreError>),
}

struct Batch<'a, 't> {
    txn: &'a Transaction<'t>,
    fence: &'a Fence,
    /// Deliveries whose pass this batch ends: their fences go once it commits.
    finished: Vec<Uuid>,
    rows: HashMap<Uuid, Row>,
    new_events: Vec<EventRecord>,
    new_deliveries: Vec<(DeliveryRecord, Option<u64>)>,
    health: HashMap<String, EndpointHealth>,
    /// Something became due: tell the other nodes at commit.
    notify: bool,
}

impl<'a, 't> Batch<'a, 't> {
    /// Applies one operation of the batch; after a storage failure (in `failure`) it only
    /// answers, with the failure.
    async fn apply(&mut self, op: Op, verdict: Option<Verdict>, failure: &mut Option<StoreError>) -> Reply {
        let skip = failure.is_some();
        match op {
            Op::Ingest(w, tx) => {
                let r = if skip { Err(StoreError::Closed) } else { self.ingest(w, verdict).await };
                split(r, failure, |r| Reply::Ingest(tx, r))
            }
            Op::Finish(f, effects, tx) => {
                let r = if skip { Ok(Ok(())) } else { self.finish(f, effects).await };
                split(r, failure, |r| Reply::Unit(tx, r))
            }
            Op::PutHealth(effects, tx) => {
                let r = if skip { Ok(()) } else { self.effects(effects).await };
                split(r.map(Ok), failure, |r| Reply::Unit(tx, r))
            }
            Op::Prune(req, tx) => {
                let r = if skip { Ok(PruneReport::default()) } else { self.prune(&req).await };
                split(r.map(Ok), failure, |r| Reply::Prune(tx, r))
            }
            Op::PutTenant(r, tx) => {
                let r = if skip { Ok(()) } else { self.put_keyed("tenants", &r.id, to_json(&r)).await };
                split(r.map(Ok), failure, |r| Reply::Unit(tx, r))
            }
            Op::DeleteTenant(id, tx) => {
                let r = if skip { Ok(()) } else { self.delete_tenant(&id).await };
                split(r.map(Ok), failure, |r| Reply::Unit(tx, r))
            }
            Op::PutToken(r, tx) => {
                let r = if skip { Ok(()) } else { self.put_token(&r.id, &r.tenant, to_json(&r)).await };
                split(r.map(Ok), failure, |r| Reply::Unit(tx, r))
            }
            Op::DeleteToken(id, tx) => {
                let r = if skip { Ok(()) } else { self.exec("DELETE FROM tokens WHERE id = $1", &id).await };
                split(r.map(Ok), failure, |r| Reply::Unit(tx, r))
            }
            Op::ReleaseFifo(endpoint, tx) => {
                let r = if skip { Ok(0) } else { self.release_fifo(&endpoint).await };
                split(r.map(Ok), failure, |r| Reply::Count(tx, r))
            }
            Op::PutEndpoint(e, tx) => {
                let r = if skip { Ok(()) } else { self.put_keyed("endpoints", &e.id, to_json(&e)).await };
                split(r.map(Ok), failure, |r| Reply::Unit(tx, r))
            }
            Op::DeleteEndpoint(id, tx) => {
                // Its health goes with it; its deliveries (the history) stay.
                let r = if skip { Ok(()) } else { self.delete_endpoint(&id).await };
                split(r.map(Ok), failure, |r| Reply::Unit(tx, r))
            }
            Op::Requeue { ids, at_ms, reply } => {
                let r = if skip { Ok(0) } else { self.requeue(&ids, at_ms).await };
                split(r.map(Ok), failure, |r| Reply::Count(reply, r))
            }
            Op::PutEventType(r, tx) => {
                let r = if skip { Ok(()) } else { self.put_keyed("event_types", &r.name, to_json(&r)).await };
                split(r.map(Ok), failure, |r| Reply::Unit(tx, r))
            }
            Op::AddTally { rows, now_ms, reply } => {
                let r = if skip { Ok(()) } else { self.add_tally(&rows, now_ms).await };
                split(r.map(Ok), failure, |r| Reply::Unit(reply, r))
            }
        }
    }

    fn new(txn: &'a Transaction<'t>, fence: &'a Fence) -> Batch<'a, 't> {
        Batch {
            txn,
            fence,
            finished: Vec::new(),
            rows: HashMap::new(),
            new_events: Vec::new(),
            new_deliveries: Vec::new(),
            health: HashMap::new(),
            notify: false,
        }
    }

    /// Locks and reads every delivery the batch's attempts and resends change (one
    /// statement, in id order so that two nodes' writers never wait on each other in a cycle),
    /// and claims the batch's idempotency keys.
    async fn prepare(&mut self, ops: &[Op], ttl: u64) -> Result<HashMap<usize, Verdict>, StoreError> {
        let mut ids: Vec<Uuid> = Vec::new();
        for op in ops {
            match op {
                Op::Finish(Finish::Attempt { delivery_id, .. } | Finish::Settle { delivery_id, .. }, _, _) => {
                    ids.push(*delivery_id);
                }
                Op::Requeue { ids: r, .. } => ids.extend(r),
                _ => {}
            }
        }
        if !ids.is_empty() {
            ids.sort_unstable();
            ids.dedup();
            self.load_rows(
                "SELECT id, due_ms, record, lease_owner, lease_token FROM deliveries WHERE id = ANY($1) ORDER BY id FOR UPDATE",
                &ids,
            )
            .await?;
        }
        self.claim_keys(ops, ttl).await
    }

    async fn load_rows(&mut self, sql: &str, ids: &[Uuid]) -> Result<(), StoreError> {
        let stmt = self.txn.prepare_cached(sql).await.map_err(pg_error)?;
        for r in self.txn.query(&stmt, &[&ids]).await.map_err(pg_error)? {
            self.insert_row(&r);
        }
        Ok(())
    }

    /// Caches a `(id, due_ms, record[, lease_owner, lease_token])` row as read (clean).
    fn insert_row(&mut self, r: &tokio_postgres::Row) -> Uuid {
        let id: Uuid = r.get(0);
        let due: Option<i64> = r.get(1);
        let rec = serde_json::from_slice(r.get::<_, &[u8]>(2)).map_err(|e| format!("{id}: {e}"));
        let lease = (r.len() >= 5).then(|| (r.get(3), r.get(4)));
        self.rows.insert(id, Row { rec, due: due.map(|d| d as u64), dirty: false, end_lease: false, lease });
        id
    }

    /// Whether this node may settle `id`: the row still carries this node's id and the token
    /// of the claim its pass was made under. A write with no claim of this node's behind it
    /// (the store's own tests, tools) may settle a row that no node holds, never one that
    /// another node holds.
    async fn holds_lease(&mut self, id: Uuid) -> Result<bool, StoreError> {
        if !matches!(self.rows.get(&id), Some(Row { lease: Some(_), .. })) {
            // Read again with the lease columns; what this batch changed is written first.
            self.flush().await?;
            self.rows.remove(&id);
            self.load_rows(
                "SELECT id, due_ms, record, lease_owner, lease_token FROM deliveries WHERE id = ANY($1) FOR UPDATE",
                &[id],
            )
            .await?;
        }
        let Some(Row { lease: Some((owner, token)), .. }) = self.rows.get(&id) else {
            // No such row: the ordinary path reports it.
            return Ok(true);
        };
        Ok(match self.fence.fences.token(id) {
            Some(mine) => *owner == Some(self.fence.node) && *token == mine,
            None => owner.is_none_or(|o| o == self.fence.node),
        })
    }

    async fn ingest(
        &mut self,
        w: IngestWrite,
        verdict: Option<Verdict>,
    ) -> Result<Result<IngestOutcome, StoreError>, StoreError> {
        if let Some(Verdict::Answer(a)) = verdict {
            return Ok(a);
        }
        let outcome = IngestOutcome::Created { event_id: w.event.id, deliveries: w.deliveries.len() };
        self.new_events.push(w.event);
        for d in w.deliveries {
            let mut due = None;
            if let (DeliveryState::Pending, Some(at)) = (d.state, d.next_attempt_at_ms)
                && self.alone_in_queue(&d).await?
            {
                due = Some(at);
            }
            self.new_deliveries.push((d, due));
        }
        self.notify = true;
        Ok(Ok(outcome))
    }

    async fn finish(&mut self, f: Finish, effects: Effects) -> Result<Result<(), StoreError>, StoreError> {
        // Fencing: a pass whose lease another node has taken over since (this node was paused
        // past it, or its clock is off) happened, so its attempt is kept, but it changes
        // nothing else: not the state, the due time, the lease, nor health or announcements.
        if let Finish::Attempt { delivery_id, .. } | Finish::Settle { delivery_id, .. } = &f {
            let id = *delivery_id;
            self.finished.push(id);
            if !self.holds_lease(id).await? {
                tracing::warn!(delivery_id = %id, "a late result after the lease was lost: kept as an attempt only");
                return Ok(match f {
                    Finish::Attempt { attempt, .. } => {
                        self.update_delivery(id, false, |d| d.attempts.push(attempt)).await?
                    }
                    _ => Ok(()),
                });
            }
        }
        let own = match f {
            Finish::Attempt { delivery_id, attempt, next, prepared } => {
                self.update_delivery(delivery_id, true, |d| apply_attempt(d, attempt, next, prepared)).await?
            }
            Finish::Settle { delivery_id, state, note } => {
                self.update_delivery(delivery_id, true, |d| apply_settle(d, state, note)).await?
            }
            Finish::DropDue { endpoint_id, due_ms, delivery_id } => {
                self.drop_due(&endpoint_id, due_ms, delivery_id).await?;
                Ok(())
            }
        };
        self.effects(effects).await?;
        Ok(own)
    }

    async fn effects(&mut self, effects: Effects) -> Result<(), StoreError> {
        if let Some(h) = effects.health {
            match self.health.get(&h.endpoint_id) {
                Some(held) if held.version >= h.version => {}
                _ => {
                    self.health.insert(h.endpoint_id.clone(), h);
                }
            }
        }
        for w in effects.events {
            // Operational events carry no idempotency key, so this cannot be refused.
            self.ingest(w, None).await?.map(drop).ok();
        }
        Ok(())
    }

    /// Changes one delivery and keeps its due entry and FIFO queue in step (the store's
    /// invariants; the same rules as the redb writer's `update_delivery`).
    async fn update_delivery(
        &mut self,
        id: Uuid,
        end_lease: bool,
        change: impl FnOnce(&mut DeliveryRecord),
    ) -> Result<Result<(), StoreError>, StoreError> {
        if !self.rows.contains_key(&id) {
            self.load_rows("SELECT id, due_ms, record FROM deliveries WHERE id = ANY($1) FOR UPDATE", &[id]).await?;
        }
        let (mut d, mut due) = match self.rows.get(&id) {
            None => return Ok(Err(StoreError::Corrupt(format!("delivery {id} does not exist")))),
            Some(Row { rec: Err(e), .. }) => return Ok(Err(StoreError::Corrupt(e.clone()))),
            Some(Row { rec: Ok(d), due, .. }) => (d.clone(), *due),
        };
        let before = (d.state, d.next_attempt_at_ms);
        change(&mut d);
        let pending = (before.0 == DeliveryState::Pending, d.state == DeliveryState::Pending);
        let mut had_due = false;
        if rules::due_moves(before, &d) {
            had_due = due.take().is_some();
            if let (DeliveryState::Pending, Some(at)) = (d.state, d.next_attempt_at_ms) {
                let is_due = match rules::due_at_once(pending.0, had_due, &d) {
                    Some(is_due) => is_due,
                    None => self.alone_in_queue(&d).await?,
                };
                if is_due {
                    due = Some(at);
                }
            }
        }
        let promote = rules::promotes(&d, pending.0, had_due).map(|queue| (d.endpoint_id.clone(), queue.to_owned()));
        let row = self.rows.get_mut(&id).expect("loaded above");
        row.rec = Ok(d);
        row.due = due;
        row.dirty = true;
        row.end_lease |= end_lease;
        if let Some((endpoint, queue)) = promote {
            // The queue's head is final: the next delivery may go now.
            self.promote(&endpoint, &queue).await?;
        }
        Ok(Ok(()))
    }

    /// Whether a delivery joining its queue may have a due entry at once: always without a
    /// queue; with one, only if no other delivery is pending in it.
    async fn alone_in_queue(&mut self, d: &DeliveryRecord) -> Result<bool, StoreError> {
        let Some(queue) = &d.fifo else { return Ok(true) };
        self.flush().await?;
        let row = self
            .txn
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM deliveries WHERE endpoint_id = $1 AND fifo_queue = $2 AND id <> $3)",
                &[&d.endpoint_id, queue, &d.id],
            )
            .await
            .map_err(pg_error)?;
        Ok(!row.get::<_, bool>(0))
    }

    async fn requeue(&mut self, ids: &[Uuid], at_ms: u64) -> Result<usize, StoreError> {
        let mut queued = 0;
        for &id in ids {
            let eligible = matches!(self.rows.get(&id), Some(Row { rec: Ok(d), .. })
                if d.state == DeliveryState::Failed && d.attempts.len() < crate::model::MAX_ATTEMPTS);
            if !eligible {
                continue;
            }
            let r = self
                .update_delivery(id, false, |d| {
                    d.state = DeliveryState::Pending;
                    d.next_attempt_at_ms = Some(at_ms);
                    d.requeued = true;
                })
                .await?;
            queued += usize::from(r.is_ok());
        }
        if queued > 0 {
            self.notify = true;
        }
        Ok(queued)
    }

    /// Writes what the batch holds in memory: new events and deliveries (one multi-row
    /// `INSERT` each), changed deliveries (one `UPDATE … FROM unnest`) and health snapshots.
    async fn flush(&mut self) -> Result<(), StoreError> {
        let t = self.txn;
        if !self.new_events.is_empty() || !self.new_deliveries.is_empty() {
            let rows = NewRows::new(&std::mem::take(&mut self.new_events), &std::mem::take(&mut self.new_deliveries));
            let stmt = t.prepare_cached(INSERT_ROWS).await.map_err(pg_error)?;
            t.execute(&stmt, &rows.params()).await.map_err(pg_error)?;
        }
        let dirty: Vec<Uuid> = self.rows.iter().filter(|(_, r)| r.dirty).map(|(id, _)| *id).collect();
        if !dirty.is_empty() {
            let mut ids = Vec::with_capacity(dirty.len());
            let mut states = Vec::with_capacity(dirty.len());
            let mut due = Vec::with_capacity(dirty.len());
            let mut fifo = Vec::with_capacity(dirty.len());
            let mut records = Vec::with_capacity(dirty.len());
            let mut end_lease = Vec::with_capacity(dirty.len());
            for id in dirty {
                let row = self.rows.get_mut(&id).expect("listed above");
                let Ok(d) = &row.rec else { continue };
                ids.push(id);
                states.push(d.state.as_str());
                due.push(row.due.map(ms));
                fifo.push(fifo_queue(d).map(str::to_owned));
                records.push(to_json(d));
                end_lease.push(row.end_lease);
                row.dirty = false;
            }
            let stmt = t
                .prepare_cached(
                    "UPDATE deliveries d SET state = u.st, due_ms = u.due, fifo_queue = u.fq, record = u.rec,
                        lease_owner = CASE WHEN u.el THEN NULL ELSE d.lease_owner END,
                        lease_until_ms = CASE WHEN u.el THEN NULL ELSE d.lease_until_ms END
                     FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::text[], $5::bytea[], $6::bool[])
                        AS u(id, st, due, fq, rec, el)
                     WHERE d.id = u.id",
                )
                .await
                .map_err(pg_error)?;
            t.execute(&stmt, &[&ids, &states, &due, &fifo, &records, &end_lease]).await.map_err(pg_error)?;
        }
        if !self.health.is_empty() {
            let health = std::mem::take(&mut self.health);
            let ids: Vec<&str> = health.keys().map(String::as_str).collect();
            let versions: Vec<i64> = health.values().map(|h| ms(h.version)).collect();
            let records: Vec<Vec<u8>> = health.values().map(to_json).collect();
            // A snapshot is written unless a newer one is already stored.
            t.execute(
                "INSERT INTO endpoint_health (id, version, record)
                 SELECT * FROM unnest($1::text[], $2::bigint[], $3::bytea[])
                 ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version, record = EXCLUDED.record
                 WHERE endpoint_health.version < EXCLUDED.version",
                &[&ids, &versions, &records],
            )
            .await
            .map_err(pg_error)?;
        }
        Ok(())
    }
}
