//! What the dispatcher counts for the charts: each recorded pass becomes a [`Sample`] in the
//! in-memory tally, and a background task hands the tally to the store every
//! [`TALLY_FLUSH`].
//!
//! Owns: turning a recorded write into a sample, and the flush loop.
//! Must not touch: how buckets are cut or stored (`tally`, `store`). Counting never waits on
//! the store: a pass adds to a map under a mutex; only the flush writes, once a second, as one
//! operation of the group commit.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Ctx;
use crate::model::DeliveryState;
use crate::store::{Finish, Next};
use crate::tally::Sample;

/// How often the tally goes to the store: the charts lag delivery by at most this (and a
/// crash loses at most this much of the counts, never a delivery).
pub const TALLY_FLUSH: Duration = Duration::from_secs(1);

/// What a pass's durable write counts: the attempt it records (with its duration), whether a
/// retry follows a failure, and the final state it reaches for the first time.
pub(super) fn sample(finish: &Finish, newly_final: Option<DeliveryState>) -> Sample {
    let mut s = Sample {
        succeeded: newly_final == Some(DeliveryState::Succeeded),
        failed: newly_final == Some(DeliveryState::Failed),
        ..Sample::default()
    };
    if let Finish::Attempt { attempt, next, .. } = finish {
        s.attempt_ms = Some(attempt.duration_ms);
        s.retried = attempt.error.is_some() && matches!(next, Next::RetryAt(_));
    }
    s
}

/// Hands the tally to the store every [`TALLY_FLUSH`] until `stop`, and once more after it.
pub(super) async fn flush_loop(ctx: Arc<Ctx>, stop: CancellationToken) {
    loop {
        let stopped = tokio::select! {
            () = stop.cancelled() => true,
            () = tokio::time::sleep(TALLY_FLUSH) => false,
        };
        flush(&ctx).await;
        if stopped {
            return;
        }
    }
}

/// Writes what was counted since the last flush. A refused write puts the counts back for the
/// next flush (bounded: see `Tally::restore`).
pub(super) async fn flush(ctx: &Ctx) {
    let rows = ctx.tally.take();
    if rows.is_empty() {
        return;
    }
    if let Err(e) = ctx.store.add_tally(rows.clone(), ctx.clock.now_ms()).await {
        tracing::warn!(error = %e, "cannot store the charts' counts; keeping them for the next flush");
        ctx.tally.restore(rows);
    }
}
