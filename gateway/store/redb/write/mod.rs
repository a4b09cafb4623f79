//! The redb writer: one write transaction per batch, committed with
//! `Durability::Immediate` (one fsync) before any caller hears back.
//!
//! Owns: redb write transactions and the table upkeep of every [`Op`] (the rules themselves are
//! `store::rules`', shared with PostgreSQL; the loop that drains the queue is `store::writer`).
//! Must not touch: reads for callers (that is `store::redb::read`). It runs on the writer's own
//! thread. FIFO queue upkeep lives in `write::fifo`, retention and tenant removal in
//! `write::upkeep`.

mod fifo;
mod tally;
mod upkeep;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use redb::{Database, Durability, ReadableTable};
use uuid::Uuid;

use super::schema::{
    DELIVERIES, DELIVERY_INDEX, DUE, ENDPOINT_HEALTH, ENDPOINTS, EVENTS, FIFO, IDEMPOTENCY, IDEMPOTENCY_EXPIRY,
    TENANTS, TOKENS,
};
use super::storage;
use crate::model::{DeliveryRecord, DeliveryState, EndpointHealth, EndpointRecord};
use crate::store::ops::{Op, Reply, split};
use crate::store::rules::{self, apply_attempt, apply_settle, index_keys, state_key, to_json};
use crate::store::writer::Apply;
use crate::store::{Effects, Faults, Finish, IdempotencyRecord, IngestOutcome, IngestWrite, PruneReport, StoreError};

/// The redb side of the writer loop.
pub(crate) struct Writer {
    pub db: Arc<Database>,
    pub faults: Arc<Faults>,
}

impl Apply for Writer {
    // redb stores whatever bytes it is given: only storage fails, and that fails the batch.
    const REFUSES_DATA: bool = false;

    async fn apply(&mut self, ops: Vec<Op>, idempotency_ttl_ms: u64) -> (Vec<Reply>, Result<(), StoreError>) {
        let mut replies = Vec::with_capacity(ops.len());
        let committed = apply_batch(&self.db, ops.into_iter(), &mut replies, idempotency_ttl_ms, &self.faults);
        (replies, committed)
    }
}

/// Applies every operation in one transaction and commits it. Replies are collected, not sent:
/// no caller hears "stored" before the commit is durable. A storage failure abandons the whole
/// transaction, so nothing of the batch is stored and every caller hears the error.
fn apply_batch(
    db: &Database,
    ops: impl Iterator<Item = Op>,
    replies: &mut Vec<Reply>,
    idempotency_ttl_ms: u64,
    faults: &Faults,
) -> Result<(), StoreError> {
    let mut txn = db.begin_write().map_err(storage)?;
    txn.set_durability(Durability::Immediate).map_err(|e| StoreError::Storage(e.to_string()))?;
    let mut failure: Option<StoreError> = None;
    {
        let mut t = Tables::open(&txn)?;
        for op in ops {
            // After a storage failure the transaction is abandoned; the remaining operations
            // are not applied, and their callers hear the failure through the commit result.
            let skip = failure.is_some();
            let reply = match op {
                Op::Ingest(w, tx) => {
                    let r = if skip { Err(StoreError::Closed) } else { t.ingest(w, idempotency_ttl_ms) };
                    split(r, &mut failure, |r| Reply::Ingest(tx, r))
                }
                Op::Finish(f, effects, tx) => {
                    let r = if skip { Ok(Ok(())) } else { t.finish(f, effects) };
                    split(r, &mut failure, |r| Reply::Unit(tx, r))
                }
                Op::PutHealth(effects, tx) => {
                    let r = if skip { Ok(()) } else { t.effects(effects) };
                    split(r.map(Ok), &mut failure, |r| Reply::Unit(tx, r))
                }
                Op::Prune(req, tx) => {
                    let r = if skip { Ok(PruneReport::default()) } else { t.prune(&req) };
                    split(r.map(Ok), &mut failure, |r| Reply::Prune(tx, r))
                }
                Op::PutTenant(r, tx) => {
                    let r = if skip { Ok(()) } else { put_json(&mut t.tenants, &r.id, &r) };
                    split(r.map(Ok), &mut failure, |r| Reply::Unit(tx, r))
                }
                Op::DeleteTenant(id, tx) => {
                    let r = if skip { Ok(()) } else { t.delete_tenant(&id) };
                    split(r.map(Ok), &mut failure, |r| Reply::Unit(tx, r))
                }
                Op::PutToken(r, tx) => {
                    let r = if skip { Ok(()) } else { put_json(&mut t.tokens, &r.id, &r) };
                    split(r.map(Ok), &mut failure, |r| Reply::Unit(tx, r))
                }
                Op::DeleteToken(id, tx) => {
                    let r = if skip { Ok(()) } else { t.tokens.remove(id.as_str()).map(drop).map_err(storage) };
                    split(r.map(Ok), &mut failure, |r| Reply::Unit(tx, r))
                }
                Op::ReleaseFifo(endpoint, tx) => {
                    let r = if skip { Ok(0) } else { t.release_fifo(&endpoint) };
                    split(r.map(Ok), &mut failure, |r| Reply::Count(tx, r))
                }
                Op::PutEndpoint(e, tx) => {
                    let r = if skip { Ok(()) } else { t.put_endpoint(&e) };
                    split(r.map(Ok), &mut failure, |r| Reply::Unit(tx, r))
                }
                Op::DeleteEndpoint(id, tx) => {
                    let r = if skip {
                        Ok(())
                    } else {
                        // Its health and chart buckets go with it; its deliveries (the history) stay.
                        t.endpoints
                            .remove(id.as_str())
                            .and_then(|_| t.health.remove(id.as_str()))
                            .map(drop)
                            .map_err(storage)
                            .and_then(|()| tally::remove_scope(&txn, &crate::tally::endpoint_scope(&id)))
                    };
                    split(r.map(Ok), &mut failure, |r| Reply::Unit(tx, r))
                }
                Op::Requeue { ids, at_ms, reply } => {
                    let r = if skip { Ok(0) } else { t.requeue(&ids, at_ms) };
                    split(r.map(Ok), &mut failure, |r| Reply::Count(reply, r))
                }
                Op::PutEventType(r, tx) => {
                    let r = if skip { Ok(()) } else { put_event_type(&txn, &r) };
                    split(r.map(Ok), &mut failure, |r| Reply::Unit(tx, r))
                }
                Op::AddTally { rows, now_ms, reply } => {
                    let r = if skip { Ok(()) } else { tally::add_rows(&txn, &rows, now_ms) };
                    split(r.map(Ok), &mut failure, |r| Reply::Unit(reply, r))
                }
            };
            replies.push(reply);
        }
    }
    if failure.is_none() && faults.fail_commits.load(Ordering::Relaxed) {
        failure = Some(StoreError::Storage("commit refused by the test fault switch".into()));
    }
    if let Some(e) = failure {
        // Dropping the transaction without committing discards every change of the batch.
        drop(txn);
        return Err(e);
    }
    txn.commit().map_err(storage)
}

/// Stores an event type (the Svix-compatible API's), by name.
fn put_event_type(txn: &redb::WriteTransaction, r: &crate::model::EventTypeRecord) -> Result<(), StoreError> {
    put_json(&mut txn.open_table(super::schema::EVENT_TYPES).map_err(storage)?, &r.name, r)
}

/// Stores `value`'s JSON under `key`.
fn put_json(
    table: &mut redb::Table<'_, &'static str, &'static [u8]>,
    key: &str,
    value: &impl serde::Serialize,
) -> Result<(), StoreError> {
    table.insert(key, to_json(value).as_slice()).map(drop).map_err(storage)
}

/// Every table a write transaction touches, opened once per batch.
struct Tables<'t> {
    events: redb::Table<'t, u128, &'static [u8]>,
    deliveries: redb::Table<'t, u128, &'static [u8]>,
    due: redb::Table<'t, (&'static str, u64, u128), ()>,
    index: redb::Table<'t, (&'static str, u128), ()>,
    idem: redb::Table<'t, &'static str, &'static [u8]>,
    idem_expiry: redb::Table<'t, (u64, &'static str), ()>,
    endpoints: redb::Table<'t, &'static str, &'static [u8]>,
    health: redb::Table<'t, &'static str, &'static [u8]>,
    fifo: redb::Table<'t, (&'static str, &'static str, u128), ()>,
    tenants: redb::Table<'t, &'static str, &'static [u8]>,
    tokens: redb::Table<'t, &'static str, &'static [u8]>,
}

impl<'t> Tables<'t> {
    fn open(txn: &'t redb::WriteTransaction) -> Result<Tables<'t>, StoreError> {
        Ok(Tables {
            events: txn.open_table(EVENTS).map_err(storage)?,
            deliveries: txn.open_table(DELIVERIES).map_err(storage)?,
            due: txn.open_table(DUE).map_err(storage)?,
            index: txn.open_table(DELIVERY_INDEX).map_err(storage)?,
            idem: txn.open_table(IDEMPOTENCY).map_err(storage)?,
            idem_expiry: txn.open_table(IDEMPOTENCY_EXPIRY).map_err(storage)?,
            endpoints: txn.open_table(ENDPOINTS).map_err(storage)?,
            health: txn.open_table(ENDPOINT_HEALTH).map_err(storage)?,
            fifo: txn.open_table(FIFO).map_err(storage)?,
            tenants: txn.open_table(TENANTS).map_err(storage)?,
            tokens: txn.open_table(TOKENS).map_err(storage)?,
        })
    }

    fn ingest(
        &mut self,
        w: IngestWrite,
        idempotency_ttl_ms: u64,
    ) -> Result<Result<IngestOutcome, StoreError>, StoreError> {
        if let Some(claim) = &w.idempotency {
            // A key's life is measured on the clock that stamped the request (the gateway's,
            // which tests move), not the writer's: the same time the event carries.
            let now = w.event.received_at_ms;
            let existing = self
                .idem
                .get(claim.key.as_str())
                .map_err(storage)?
                .map(|v| serde_json::from_slice::<IdempotencyRecord>(v.value()));
            if let Some(Ok(rec)) = existing {
                if now.saturating_sub(rec.created_ms) < idempotency_ttl_ms {
                    return Ok(Ok(if rec.request_hash == claim.request_hash {
                        IngestOutcome::Replayed { event_id: rec.event_id, deliveries: rec.deliveries }
                    } else {
                        IngestOutcome::KeyReused
                    }));
                }
                self.idem_expiry.remove((rec.created_ms, claim.key.as_str())).map_err(storage)?;
            }
            let rec = IdempotencyRecord {
                request_hash: claim.request_hash.clone(),
                event_id: w.event.id,
                deliveries: w.deliveries.len(),
                created_ms: now,
            };
            self.idem.insert(claim.key.as_str(), to_json(&rec).as_slice()).map_err(storage)?;
            self.idem_expiry.insert((now, claim.key.as_str()), ()).map_err(storage)?;
        }
        self.events.insert(w.event.id.as_u128(), to_json(&w.event).as_slice()).map_err(storage)?;
        for d in &w.deliveries {
            let id = d.id.as_u128();
            self.deliveries.insert(id, to_json(d).as_slice()).map_err(storage)?;
            if let (DeliveryState::Pending, Some(at)) = (d.state, d.next_attempt_at_ms) {
                if let Some(queue) = &d.fifo {
                    self.fifo.insert((d.endpoint_id.as_str(), queue.as_str(), id), ()).map_err(storage)?;
                }
                if self.alone_in_queue(d)? {
                    self.due.insert((d.endpoint_id.as_str(), at, id), ()).map_err(storage)?;
                }
            }
            for key in &index_keys(d) {
                self.index.insert((key.as_str(), id), ()).map_err(storage)?;
            }
        }
        Ok(Ok(IngestOutcome::Created { event_id: w.event.id, deliveries: w.deliveries.len() }))
    }

    fn finish(&mut self, f: Finish, effects: Effects) -> Result<Result<(), StoreError>, StoreError> {
        let own = self.finish_one(f)?;
        // The health change and the operational events belong to the attempt: they commit with
        // it or not at all.
        self.effects(effects)?;
        Ok(own)
    }

    fn effects(&mut self, effects: Effects) -> Result<(), StoreError> {
        if let Some(h) = effects.health {
            self.put_health(&h)?;
        }
        for w in effects.events {
            // Operational events carry no idempotency key, so this cannot be refused.
            self.ingest(w, 0)?.map(drop).ok();
        }
        Ok(())
    }

    /// Writes a health snapshot unless a newer one is already stored.
    fn put_health(&mut self, h: &EndpointHealth) -> Result<(), StoreError> {
        let stored = self
            .health
            .get(h.endpoint_id.as_str())
            .map_err(storage)?
            .and_then(|v| serde_json::from_slice::<EndpointHealth>(v.value()).ok());
        if stored.is_none_or(|s| s.version < h.version) {
            self.health.insert(h.endpoint_id.as_str(), to_json(h).as_slice()).map_err(storage)?;
        }
        Ok(())
    }

    fn finish_one(&mut self, f: Finish) -> Result<Result<(), StoreError>, StoreError> {
        match f {
            Finish::Attempt { delivery_id, attempt, next, prepared } => {
                self.update_delivery(delivery_id, |d| apply_attempt(d, attempt, next, prepared))
            }
            Finish::Settle { delivery_id, state, note } => {
                self.update_delivery(delivery_id, |d| apply_settle(d, state, note))
            }
            Finish::DropDue { endpoint_id, due_ms, delivery_id } => {
                self.due.remove((endpoint_id.as_str(), due_ms, delivery_id.as_u128())).map_err(storage)?;
                self.drop_fifo_orphan(&endpoint_id, delivery_id)?;
                Ok(Ok(()))
            }
        }
    }

    fn put_endpoint(&mut self, e: &EndpointRecord) -> Result<(), StoreError> {
        self.endpoints.insert(e.id.as_str(), to_json(e).as_slice()).map(drop).map_err(storage)
    }

    /// Changes one delivery and keeps the due index and the state index in step with it (the
    /// store's invariants). The outer `Result` is a storage failure (abandon the batch); the
    /// inner one is this operation's own answer.
    fn update_delivery(
        &mut self,
        id: Uuid,
        change: impl FnOnce(&mut DeliveryRecord),
    ) -> Result<Result<(), StoreError>, StoreError> {
        let mut d = match self.read_delivery(id)? {
            Ok(Some(d)) => d,
            Ok(None) => return Ok(Err(StoreError::Corrupt(format!("delivery {id} does not exist")))),
            Err(e) => return Ok(Err(e)),
        };
        let key = id.as_u128();
        let before = (d.state, d.next_attempt_at_ms);
        change(&mut d);
        let pending = (before.0 == DeliveryState::Pending, d.state == DeliveryState::Pending);
        if let Some(queue) = d.fifo.clone() {
            // Joining (a bulk resend) or leaving its queue moves with the state.
            match pending {
                (false, true) => {
                    self.fifo.insert((d.endpoint_id.as_str(), queue.as_str(), key), ()).map_err(storage)?;
                }
                (true, false) => {
                    self.fifo.remove((d.endpoint_id.as_str(), queue.as_str(), key)).map_err(storage)?;
                }
                _ => {}
            }
        }
        let mut had_due = false;
        if rules::due_moves(before, &d) {
            had_due = match before.1 {
                Some(at) => self.due.remove((d.endpoint_id.as_str(), at, key)).map_err(storage)?.is_some(),
                None => false,
            };
            if let (DeliveryState::Pending, Some(at)) = (d.state, d.next_attempt_at_ms) {
                let due = match rules::due_at_once(pending.0, had_due, &d) {
                    Some(due) => due,
                    None => self.alone_in_queue(&d)?,
                };
                if due {
                    self.due.insert((d.endpoint_id.as_str(), at, key), ()).map_err(storage)?;
                }
            }
        }
        if let Some(queue) = rules::promotes(&d, pending.0, had_due) {
            // The queue's head is final: the next delivery may go now.
            self.promote(&d.endpoint_id, queue)?;
        }
        if before.0 != d.state {
            self.index.remove((state_key(before.0).as_str(), key)).map_err(storage)?;
            self.index.insert((state_key(d.state).as_str(), key), ()).map_err(storage)?;
        }
        self.deliveries.insert(key, to_json(&d).as_slice()).map_err(storage)?;
        Ok(Ok(()))
    }

    /// The outer `Result` is a storage failure; the inner one an unreadable record.
    #[allow(clippy::type_complexity)]
    fn read_delivery(&self, id: Uuid) -> Result<Result<Option<DeliveryRecord>, StoreError>, StoreError> {
        let Some(raw) = self.deliveries.get(id.as_u128()).map_err(storage)? else {
            return Ok(Ok(None));
        };
        Ok(serde_json::from_slice(raw.value()).map(Some).map_err(|e| StoreError::Corrupt(format!("{id}: {e}"))))
    }

    fn requeue(&mut self, ids: &[Uuid], at_ms: u64) -> Result<usize, StoreError> {
        let mut queued = 0;
        for &id in ids {
            let eligible = self
                .read_delivery(id)?
                .ok()
                .flatten()
                .is_some_and(|d| d.state == DeliveryState::Failed && d.attempts.len() < crate::model::MAX_ATTEMPTS);
            if !eligible {
                continue;
            }
            let r = self.update_delivery(id, |d| {
                d.state = DeliveryState::Pending;
                d.next_attempt_at_ms = Some(at_ms);
                d.requeued = true;
            })?;
            queued += usize::from(r.is_ok());
        }
        Ok(queued)
    }
}
