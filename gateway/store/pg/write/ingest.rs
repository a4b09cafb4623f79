//! Ingest on the PostgreSQL writer: claiming a batch's idempotency keys with one statement,
//! and the one-statement path for batches of plain ingests.
//!
//! Owns: the `idempotency` table's writes and the decision of what each keyed ingest answers.
//! Must not touch: delivery rows other than inserting new ones.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;

use uuid::Uuid;

use super::{Batch, Verdict, fail_all};
use crate::model::DeliveryState;
use crate::store::ops::{Op, Reply};
use crate::store::pg::rows::{INSERT_ROWS, NewRows};
use crate::store::pg::{CHANNEL, ms, pg_error};
use crate::store::{Faults, IngestOutcome, StoreError};

/// An ingest that needs nothing but inserts: no idempotency key to claim, no FIFO queue to
/// consult.
pub(super) fn plain_ingest(op: &Op) -> bool {
    matches!(op, Op::Ingest(w, _) if w.idempotency.is_none() && w.deliveries.iter().all(|d| d.fifo.is_none()))
}

/// The common batch, new events only, as one statement in its own (implicit) transaction: one
/// round trip and one commit for the whole batch, with the wake-up for the other nodes sent
/// beside it (pipelined; delivered after the insert commits).
pub(super) async fn plain_ingests(
    client: &deadpool_postgres::Object,
    ops: Vec<Op>,
    faults: &Faults,
) -> (Vec<Reply>, Result<(), StoreError>) {
    if faults.fail_commits.load(Ordering::Relaxed) {
        return fail_all(ops, StoreError::Storage("commit refused by the test fault switch".into()));
    }
    let mut events = Vec::with_capacity(ops.len());
    let mut deliveries = Vec::new();
    let mut outcomes = Vec::with_capacity(ops.len());
    let mut txs = Vec::with_capacity(ops.len());
    for op in ops {
        let Op::Ingest(w, tx) = op else { unreachable!("checked by plain_ingest") };
        outcomes.push(IngestOutcome::Created { event_id: w.event.id, deliveries: w.deliveries.len() });
        for d in w.deliveries {
            let due = match (d.state, d.next_attempt_at_ms) {
                (DeliveryState::Pending, Some(at)) => Some(at),
                _ => None,
            };
            deliveries.push((d, due));
        }
        events.push(w.event);
        txs.push(tx);
    }
    let rows = NewRows::new(&events, &deliveries);
    let result = async {
        let stmt = client.prepare_cached(INSERT_ROWS).await.map_err(pg_error)?;
        let params = rows.params();
        let (inserted, notified) =
            tokio::join!(client.execute(&stmt, &params), client.execute("SELECT pg_notify($1, '')", &[&CHANNEL]));
        inserted.map_err(pg_error)?;
        notified.map(drop).map_err(pg_error)
    }
    .await;
    let replies = txs.into_iter().zip(outcomes).map(|(tx, o)| Reply::Ingest(tx, Ok(o))).collect();
    (replies, result)
}

impl Batch<'_, '_> {
    /// One `INSERT … ON CONFLICT` for every key of the batch (sorted, so concurrent batches
    /// lock keys in the same order), then one read of the keys that were already held.
    pub(super) async fn claim_keys(&mut self, ops: &[Op], ttl: u64) -> Result<HashMap<usize, Verdict>, StoreError> {
        let (claims, repeats, first) = collect_claims(ops);
        let mut verdicts = HashMap::new();
        if claims.is_empty() {
            return Ok(verdicts);
        }
        let (won, mut held) = self.insert_claims(&claims, ttl).await?;
        let answer = |hash: &str, rec: &(String, Uuid, usize)| {
            Verdict::Answer(Ok(if rec.0 == hash {
                IngestOutcome::Replayed { event_id: rec.1, deliveries: rec.2 }
            } else {
                IngestOutcome::KeyReused
            }))
        };
        for c in &claims {
            let v = if won.contains(c.key.as_ref()) {
                held.insert(c.key.clone().into_owned(), (c.hash.to_owned(), c.event_id, c.deliveries));
                Verdict::Store
            } else {
                match held.get(c.key.as_ref()) {
                    Some(rec) => answer(c.hash, rec),
                    // Removed between the two statements (retention): the caller retries.
                    None => Verdict::Answer(Err(StoreError::Storage(
                        "the idempotency key changed during the request; retry".into(),
                    ))),
                }
            };
            verdicts.insert(c.index, v);
        }
        for c in &repeats {
            let v = match held.get(c.key.as_ref()) {
                Some(rec) => answer(c.hash, rec),
                None => verdicts.get(&claims[first[c.key.as_ref()]].index).cloned().unwrap_or(Verdict::Store),
            };
            verdicts.insert(c.index, v);
        }
        Ok(verdicts)
    }

    /// Inserts every first claim of a key (in key order); returns the keys this batch won and,
    /// for the others, the record each key stands for now: (request hash, event, deliveries).
    async fn insert_claims(&mut self, claims: &[Claim<'_>], ttl: u64) -> Result<(HashSet<String>, Held), StoreError> {
        let mut order: Vec<usize> = (0..claims.len()).collect();
        order.sort_by(|&a, &b| claims[a].key.cmp(&claims[b].key));
        let keys: Vec<&str> = order.iter().map(|&i| claims[i].key.as_ref()).collect();
        let hashes: Vec<&str> = order.iter().map(|&i| claims[i].hash).collect();
        let events: Vec<Uuid> = order.iter().map(|&i| claims[i].event_id).collect();
        let counts: Vec<i32> = order.iter().map(|&i| claims[i].deliveries as i32).collect();
        let times: Vec<i64> = order.iter().map(|&i| ms(claims[i].at_ms)).collect();
        // A key stored at or before its request's time less the TTL has expired and may be
        // claimed again.
        let stmt = self
            .txn
            .prepare_cached(
                "INSERT INTO idempotency (key, request_hash, event_id, deliveries, created_ms)
                 SELECT k, h, e, n, t
                 FROM unnest($1::text[], $2::text[], $3::uuid[], $4::int[], $5::bigint[]) AS u(k, h, e, n, t)
                 ON CONFLICT (key) DO UPDATE SET request_hash = EXCLUDED.request_hash, event_id = EXCLUDED.event_id,
                    deliveries = EXCLUDED.deliveries, created_ms = EXCLUDED.created_ms
                 WHERE idempotency.created_ms <= EXCLUDED.created_ms - $6
                 RETURNING key",
            )
            .await
            .map_err(pg_error)?;
        let ttl = i64::try_from(ttl).unwrap_or(i64::MAX);
        let won: HashSet<String> = self
            .txn
            .query(&stmt, &[&keys, &hashes, &events, &counts, &times, &ttl])
            .await
            .map_err(pg_error)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let lost: Vec<&str> = keys.iter().copied().filter(|k| !won.contains(*k)).collect();
        // The record each key stands for now: (request hash, event, deliveries).
        let mut held: Held = HashMap::new();
        if !lost.is_empty() {
            let rows = self
                .txn
                .query("SELECT key, request_hash, event_id, deliveries FROM idempotency WHERE key = ANY($1)", &[&lost])
                .await
                .map_err(pg_error)?;
            for r in rows {
                held.insert(r.get(0), (r.get(1), r.get(2), r.get::<_, i32>(3) as usize));
            }
        }
        Ok((won, held))
    }
}

/// The record a key stands for: (request hash, event, deliveries).
type Held = HashMap<String, (String, Uuid, usize)>;

struct Claim<'o> {
    index: usize,
    /// As stored: a tenant's keys are `tenant` NUL `key` in the store's contract, and
    /// `text` cannot hold a NUL, so it is stored as U+001F, which neither a tenant id
    /// nor a key (visible ASCII) contains.
    key: std::borrow::Cow<'o, str>,
    hash: &'o str,
    event_id: Uuid,
    deliveries: usize,
    /// The request's time on the gateway's clock: a key's life is measured on it.
    at_ms: u64,
}

/// The batch's idempotency claims: the first claim of each key, the repeats of a key within
/// the batch, and where each key's first claim is.
#[allow(clippy::type_complexity)]
fn collect_claims(ops: &[Op]) -> (Vec<Claim<'_>>, Vec<Claim<'_>>, HashMap<String, usize>) {
    let mut first: HashMap<String, usize> = HashMap::new();
    let mut claims: Vec<Claim<'_>> = Vec::new();
    let mut repeats: Vec<Claim<'_>> = Vec::new();
    for (index, op) in ops.iter().enumerate() {
        let Op::Ingest(w, _) = op else { continue };
        let Some(c) = &w.idempotency else { continue };
        let key = if c.key.contains('\0') {
            std::borrow::Cow::Owned(c.key.replace('\0', "\u{1f}"))
        } else {
            std::borrow::Cow::Borrowed(c.key.as_str())
        };
        let claim = Claim {
            index,
            key,
            hash: &c.request_hash,
            event_id: w.event.id,
            deliveries: w.deliveries.len(),
            at_ms: w.event.received_at_ms,
        };
        if first.contains_key(claim.key.as_ref()) {
            repeats.push(claim);
        } else {
            first.insert(claim.key.clone().into_owned(), claims.len());
            claims.push(claim);
        }
    }
    (claims, repeats, first)
}
