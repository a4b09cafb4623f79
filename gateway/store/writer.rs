//! The writer loop, one for every backend: drain what has queued up, apply it as one batch,
//! answer every caller only after the commit.
//!
//! Owns: group commit (up to [`MAX_BATCH`] operations per commit), the writer's counters, and
//! the rule that a batch the database refused for one operation's data is applied again one
//! operation at a time, so that no request-derived value fails its batch-mates.
//! Must not touch: how a batch is applied (each backend's [`Apply`]).

use std::sync::atomic::Ordering;

use tokio::sync::mpsc;

use super::ops::{Body, Op, Reply};
use super::{MAX_BATCH, Settings, StoreError, WriterStats};

/// A backend's way of applying one batch in one transaction.
pub(crate) trait Apply {
    /// Whether this backend can refuse one operation's data (`StoreError::Rejected`), so that
    /// the loop must keep each batch's bodies to apply them again one at a time.
    const REFUSES_DATA: bool;

    /// Applies `ops` in one transaction and commits it. Replies are returned, not sent: no
    /// caller hears "stored" before the commit is durable. A storage failure abandons the
    /// whole transaction, so nothing of the batch is stored and every caller hears the error.
    fn apply(
        &mut self,
        ops: Vec<Op>,
        idempotency_ttl_ms: u64,
    ) -> impl std::future::Future<Output = (Vec<Reply>, Result<(), StoreError>)> + Send;
}

/// Runs until every sender of `rx` is gone and the last batch is answered.
pub(crate) async fn run<A: Apply>(
    mut backend: A,
    mut rx: mpsc::Receiver<Op>,
    stats: &WriterStats,
    settings: &Settings,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let count = batch.len() as u64;
        let ttl = settings.idempotency_ttl_ms.load(Ordering::Relaxed);
        // Kept so that, if the database refuses one operation's data, the others can be
        // applied without it.
        let bodies: Vec<Body> =
            if A::REFUSES_DATA && batch.len() > 1 { batch.iter().map(Op::body).collect() } else { Vec::new() };
        let (mut replies, mut result) = backend.apply(std::mem::take(&mut batch), ttl).await;
        if matches!(result, Err(StoreError::Rejected(_))) && !bodies.is_empty() {
            tracing::warn!(ops = count, "the database refused an operation of a batch; applying them one at a time");
            for (body, reply) in bodies.into_iter().zip(std::mem::take(&mut replies)) {
                let (alone, own) = backend.apply(vec![body.with(reply)], ttl).await;
                if let Err(e) = &own {
                    tracing::error!(error = %e, "an operation the database refused; its caller gets the error");
                }
                for r in alone {
                    r.send(&own);
                }
            }
            // Each operation was answered with its own outcome.
            result = Ok(());
        }
        match &result {
            Ok(()) => {
                stats.commits.fetch_add(1, Ordering::Relaxed);
                stats.operations.fetch_add(count, Ordering::Relaxed);
            }
            Err(e) => {
                stats.failed_commits.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, ops = count, "store commit failed; the batch's callers get an error");
            }
        }
        for reply in replies {
            reply.send(&result);
        }
    }
}
